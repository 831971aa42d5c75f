#!/usr/bin/env bash
# The test command of the README, and what CI runs (.ci/run calls this).
# Installs what is missing (deploy/setup.sh), builds the guest components, builds
# the workspace once, then runs every test against the real llama.cpp, the real
# Wasmtime host and the real components.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmesh/target}"
export WASMESH_COMPONENTS="${WASMESH_COMPONENTS:-$HOME/.cache/wasmesh/components}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

bash deploy/setup.sh
bash guest-components/build.sh "$WASMESH_COMPONENTS"

# One build of everything the tests need (the e2e tests run the `wasmesh` binary).
cargo build --locked -p wasmesh
cargo test --locked --workspace --no-run
cargo test --locked --workspace -- --test-threads "${WASMESH_TEST_THREADS:-2}"
