#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, from its seeds, with cargo-fuzz
# (libFuzzer and AddressSanitizer). Stable Rust is enough: RUSTC_BOOTSTRAP lets it
# take the sanitizer flags cargo-fuzz passes.
#
#   fuzz/run.sh [SECONDS]            # each target (default 30)
#   fuzz/run.sh --setup [SECONDS]    # first install cargo-fuzz
#
# FUZZ_SEED=N fixes libFuzzer's random seed (CI does, so that whether a change
# lands does not depend on luck); unset, every run explores differently.
# A crash stops the run with its input in fuzz/artifacts/<target>/ (reproduce with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <that file>`).
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--setup" ]; then
    shift
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
targets=(tegrastats_line config shelly_frame api_body web_config hub_status)
# Every target in one cargo run first (their last crates build side by side), so
# that each `cargo fuzz run` below only starts its binary.
echo "==> cargo fuzz build"
started=$SECONDS
cargo fuzz build
echo "    built in $((SECONDS - started)) s"
for target in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    log="$(mktemp)"
    echo "==> $target for ${seconds}s"
    status=0
    cargo fuzz run "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
        >"$log" 2>&1 || status=$?
    grep -E "stat::number_of_executed_units|DONE|SUMMARY|panicked" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    rm -rf "$corpus" "$log"
done
echo "==> fuzzing passed"
