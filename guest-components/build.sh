#!/usr/bin/env bash
# Builds the wasmesh guest components (wasm32-wasip2) and copies them into one folder.
#
#   guest-components/build.sh [OUT_DIR]
#
# OUT_DIR defaults to $HOME/.cache/wasmesh/components; the build cache lives outside the
# clone, in $WASMESH_GUEST_TARGET_DIR (default $HOME/.cache/wasmesh/guest-target).
# Prints OUT_DIR on success.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$HOME/.cache/wasmesh/components}"
export CARGO_TARGET_DIR="${WASMESH_GUEST_TARGET_DIR:-$HOME/.cache/wasmesh/guest-target}"

components=(chat hello loop_forever memory_bomb tensor_flood unknown_model embeddings unknown_import openai spin_llm)

cargo build --locked --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" --workspace >&2
# `hello` (no_std) is a workspace of its own, so no other crate's std features reach it.
cargo build --locked --release --target wasm32-wasip2 --manifest-path "$here/hello/Cargo.toml" >&2

mkdir -p "$out_dir"
for name in "${components[@]}"; do
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$name.wasm" "$out_dir/$name.wasm"
done
echo "$out_dir"
