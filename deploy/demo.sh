#!/usr/bin/env bash
# The main job of the README: installs what is missing, builds, and runs the demo
# fabric on loopback (`wasmesh up`) on the embedded defaults. Extra arguments go to
# `wasmesh up` (e.g. --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmesh/target}"
export WASMESH_COMPONENTS="${WASMESH_COMPONENTS:-$HOME/.cache/wasmesh/components}"

bash deploy/setup.sh
bash guest-components/build.sh "$WASMESH_COMPONENTS"
# The dev profile optimizes every dependency (llama.cpp, Wasmtime) and shares its
# build cache with the tests, so the demo and the tests build once between them.
cargo build --locked -p wasmesh
exec "$CARGO_TARGET_DIR/debug/wasmesh" up "$@"
