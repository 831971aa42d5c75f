#!/usr/bin/env bash
# Benchmark set-up: everything deploy/setup.sh installs, plus wasmtime-cli of the
# same version as the host's Wasmtime (for the `wasmtime serve` anchor) and
# llama.cpp's llama-server from the engine's llama.cpp sources (the anchor of
# `cargo bench --bench engine`), installed under ~/.cache/wasmesh/tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
# nginx, the anchor of the router's hop in `cargo bench --bench routing`.
if ! [ -x /usr/sbin/nginx ]; then
  echo "[bench setup] installing nginx-light (Debian)"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -q nginx-light; else sudo apt-get install -y -q nginx-light; fi
fi
WASMTIME_VERSION=48.0.8
tools="${WASMESH_CACHE:-$HOME/.cache/wasmesh}/tools"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
  echo "[bench setup] installing wasmtime-cli $WASMTIME_VERSION (a release build: several minutes)"
  cargo install --locked --root "$tools" wasmtime-cli@"$WASMTIME_VERSION"
fi
"$tools/bin/wasmtime" --version
cargo fetch --locked >/dev/null
bash benches/build-llama-server.sh
bash guest-components/build.sh
