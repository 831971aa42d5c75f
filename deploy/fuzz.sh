#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target under fuzz/ for a bounded time, starting
# from the corpus kept in the repository, two at a time (one per core). A crash fails
# the run and leaves its input under fuzz/artifacts/TARGET/: turn it into a regression
# test next to the parser, fix the parser, and add the input to fuzz/corpus/TARGET/.
#
#   bash deploy/fuzz.sh                 # every target, WASMESH_FUZZ_SECS (60) each
#   bash deploy/fuzz.sh gguf_header 600 # one target, ten minutes
#
# libFuzzer needs nightly's -Z flags: the `nightly` toolchain when rustup has it,
# otherwise the stable compiler with RUSTC_BOOTSTRAP=1 (the same flags; no download).
# Instrumentation is coverage only (-s none): the crates fuzzed forbid `unsafe`, so
# AddressSanitizer would find nothing the Rust checks do not; debug assertions
# (overflow checks) stay on.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[fuzz]\033[0m %s\n' "$*"; }

export CARGO_TARGET_DIR="${WASMESH_FUZZ_TARGET:-$HOME/.cache/wasmesh/fuzz-target}"
secs="${2:-${WASMESH_FUZZ_SECS:-60}}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz 0.13.1 (from crates.io)"
    cargo install --locked cargo-fuzz --version 0.13.1
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] && targets=("$1") || mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)

log "building ${#targets[@]} targets"
cargo "${toolchain[@]}" fuzz build -s none --debug-assertions

run() {
    local target=$1 corpus=fuzz/corpus/$1 work
    work=$(mktemp -d)
    # New inputs go to a scratch folder: the corpus in the repository changes only by hand.
    if cargo "${toolchain[@]}" fuzz run -s none --debug-assertions "$target" "$work" "$corpus" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$work.log" 2>&1; then
        log "$target: no crash in ${secs} s ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work.log" | grep -o '[0-9]*$' || echo '?') runs)"
        rm -rf "$work" "$work.log"
    else
        log "$target: FAILED; its log:"
        tail -n 40 "$work.log"
        rm -rf "$work"
        return 1
    fi
}

failed=0
pids=()
for target in "${targets[@]}"; do
    run "$target" &
    pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || { log "a target crashed: see its input under fuzz/artifacts/"; exit 1; }
log "every target ran ${secs} s without a crash"
