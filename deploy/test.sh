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
# A test whose prerequisite (model, component, PostgreSQL...) is missing fails here, never
# skips: the harness treats a set CI as "must have everything" (wasmesh_tests::prerequisites).
export CI="${CI:-true}"

bash deploy/setup.sh
bash guest-components/build.sh "$WASMESH_COMPONENTS"

# The house rules the compiler does not check: forbidden arrows between crates, rooms of
# one concern, one parser per text (ARCHITECTURE.md). Seconds, no compile.
bash deploy/check-house.sh

# One build of everything, with one feature set: `cargo test --no-run` also builds the
# `wasmesh` binary the end-to-end tests run (the CLI has integration tests of its own),
# and no dev-dependency turns on a feature the binary lacks, so neither this nor a later
# `cargo build -p wasmesh` (deploy/demo.sh) rebuilds dependencies with other features.
# WASMESH_CARGO_TIMINGS=1 writes cargo's build-time report under $CARGO_TARGET_DIR/cargo-timings.
cargo test --locked --workspace --no-run ${WASMESH_CARGO_TIMINGS:+--timings}

# Builds that must not rot: the CLI without llama.cpp (only the `wasmesh` crate itself is
# rebuilt: its dependencies resolve to the same features), and clippy with warnings as
# errors (it type-checks every crate and dependency once more, without code generation).
cargo build --locked -p wasmesh --no-default-features
# Puts the full binary (with llama.cpp, already built above: nothing recompiles) back at
# target/debug/wasmesh for the end-to-end tests.
cargo build --locked -p wasmesh
cargo clippy --locked --workspace --all-targets -- -D warnings

cargo test --locked --workspace -- --test-threads "${WASMESH_TEST_THREADS:-2}"

# Every fuzz target for a minute from the corpus in fuzz/corpus/, two at a time; a crash
# fails the run (deploy/fuzz.sh says how to turn it into a regression test).
bash deploy/fuzz.sh
