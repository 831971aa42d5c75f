#!/usr/bin/env bash
# Unpacks llama-cpp-sys-2 and llama-cpp-2 (the exact releases the workspace pins) into
# vendor/ and applies wasmesh's patches over them (deploy/patches/). Cargo builds the
# patched copies through `[patch.crates-io]` in Cargo.toml, so this runs before any cargo
# command on a fresh clone (deploy/setup.sh calls it first).
#
# The patches add per-sequence LoRA adapters to llama.cpp (`llama_set_adapter_lora_seq`:
# sequences with different adapters share one decode step) and its llama-cpp-2 wrapper
# (`LlamaContext::lora_adapter_set_seq`). ARCHITECTURE.md ("Mixed-LoRA batching") says why.
#
# To move to a new llama.cpp release: change the versions and sha256 sums below (from the
# new Cargo.lock entries, with the [patch] section commented out), run this script, fix
# any hunk `patch` rejects in vendor/, then write the patch again with
# `diff -ruN` against a clean unpack (or `git diff` inside vendor/<crate>).
#
# Idempotent: a stamp in each unpacked crate holds the crate's and the patch's sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[vendor]\033[0m %s\n' "$*"; }

unpack() { # name version sha256
  local name=$1 version=$2 sha=$3
  local patch="deploy/patches/$name.patch" dest="vendor/$name"
  local stamp
  stamp="$sha $(sha256sum "$patch" | cut -d' ' -f1)"
  if [ -f "$dest/.wasmesh-patched" ] && [ "$(cat "$dest/.wasmesh-patched")" = "$stamp" ]; then
    return
  fi
  local crate="" tmp
  tmp=$(mktemp -d)
  for c in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate"; do
    [ -f "$c" ] && crate=$c && break
  done
  if [ -z "$crate" ]; then
    say "downloading $name $version from crates.io"
    crate="$tmp/$name-$version.crate"
    curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/$name/$name-$version.crate"
  fi
  if ! echo "$sha  $crate" | sha256sum -c --status; then
    echo "error: $crate does not match its sha256 ($sha); refusing to build from it" >&2
    rm -rf "$tmp"
    exit 1
  fi
  tar xzf "$crate" -C "$tmp"
  if ! patch -s -p1 -d "$tmp/$name-$version" < "$patch"; then
    echo "error: $patch does not apply to $name $version; see the top of deploy/vendor-llama.sh" >&2
    rm -rf "$tmp"
    exit 1
  fi
  echo "$stamp" > "$tmp/$name-$version/.wasmesh-patched"
  rm -rf "$dest"
  mkdir -p vendor
  mv "$tmp/$name-$version" "$dest"
  rm -rf "$tmp"
  say "$dest: $name $version with $patch"
}

unpack llama-cpp-sys-2 0.1.161 e9bea77fde41bbc15a278891cd5edd2ba07c5260d162614b41080ba1f100b39b
unpack llama-cpp-2 0.1.160 b98e9f0971b7454a25a550f0bd4577f35b94570be32f8f8dc08d94f4cb2873fe
