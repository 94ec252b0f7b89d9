#!/usr/bin/env bash
# Behaves like tegrastats for benchmarks: `--interval MS`, then prints one recorded
# line every MS milliseconds (the first after one interval, as tegrastats does),
# looping over a recording.
set -euo pipefail
ms=1000
[[ ${1:-} == --interval ]] && ms=$2
recording=${FAKE_TEGRASTATS_RECORDING:-$(dirname "$0")/../recordings/agx-orin-jp6.log}
mapfile -t lines < <(grep -v '^#' "$recording")
secs=$(awk -v ms="$ms" 'BEGIN { printf "%.3f", ms / 1000 }')
while true; do
  for line in "${lines[@]}"; do
    sleep "$secs"
    printf '%s\n' "$line"
  done
done
