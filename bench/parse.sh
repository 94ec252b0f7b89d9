#!/usr/bin/env bash
# `parse` end to end: the release binary reads the tegrastats corpus (66 real
# lines, every board and release) repeated 3,000 times (198,000 lines, 67 MB) from
# a file and writes its JSON (343 MB) to /dev/null, then to a file on the same
# disk. Prints the best and median of ROUNDS runs of each, in lines per second.
# Usage: bench/parse.sh [ROUNDS] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
bin="${2:-target/release/edge-metrics-exporter}"
[[ -n "${2:-}" ]] || cargo build --release --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tail -n +2 tests/fixtures/tegrastats/corpus.tsv | awk -F'\t' '{print $NF}' >"$work/corpus.txt"
for _ in $(seq 3000); do cat "$work/corpus.txt"; done >"$work/input.txt"
lines="$(wc -l <"$work/input.txt")"
run() {
  local label="$1" out="$2" times=() start end
  for _ in $(seq "$rounds"); do
    start="$(date +%s.%N)"
    "$bin" parse "$work/input.txt" >"$out" 2>/dev/null
    end="$(date +%s.%N)"
    times+=("$(echo "$end - $start" | bc -l)")
  done
  local sorted best median
  sorted="$(printf '%s\n' "${times[@]}" | sort -n)"
  best="$(echo "$sorted" | head -1)"
  median="$(echo "$sorted" | sed -n "$(( (rounds + 1) / 2 ))p")"
  printf '%-14s best %.3f s (%.0f lines/s), median %.3f s (%.0f lines/s)\n' "$label" \
    "$best" "$(echo "$lines / $best" | bc -l)" "$median" "$(echo "$lines / $median" | bc -l)"
}
printf 'parse: %d lines\n' "$lines"
run "to /dev/null" /dev/null
run "to a file" "$work/out.json"
printf 'JSON: %s bytes\n' "$(wc -c <"$work/out.json")"
