#!/usr/bin/env bash
# Resident memory of the exporter collecting every second and scraped every second.
# Usage: bench/memory.sh [--orin] [seconds, default 600]   ($BIN: another binary)
#   default  the synthetic tree of bench/lib.sh (about 200 samples), host metrics only
#   --orin   the same tree with everything on: the AGX Orin tegrastats replay (--demo),
#            the embedded Shelly hub listening, remote write to a receiver that is not
#            there (so its disk buffer fills), and a measured run open
# Every minute: VmRSS and VmHWM, and VmRSS split into the heap and stacks (RssAnon)
# and the binary's own pages (RssFile, shared with the page cache).
set -euo pipefail
cd "$(dirname "$0")/.."
orin=
if [ "${1:-}" = --orin ]; then orin=1; shift; fi
secs=${1:-600}
source bench/lib.sh
if [ -n "$orin" ]; then
  export EXTRA_CONFIG="shelly:
  listen: 127.0.0.1:19208
remote_write:
  url: http://127.0.0.1:9/api/v1/write
  interval: 5
"
  export EXTRA_ARGS=--demo
fi
start_exporter 19202 19201
if [ -n "$orin" ]; then
  curl -s -X POST http://127.0.0.1:19201/runs -d '{"name": "memory"}' >/dev/null
fi
echo "samples per scrape: $(curl -s "$url" | grep -vc '^#')"
report() {
  local s=/proc/$pid/status
  printf '%s  %s  %s  %s  %s\n' "$1" "$(grep VmRSS $s | tr -s ' ')" "$(grep VmHWM $s | tr -s ' ')" \
    "$(grep RssAnon $s | tr -s ' ')" "$(grep RssFile $s | tr -s ' ')"
}
start=$(date +%s)
next_report=$start
while (( $(date +%s) - start < secs )); do
  curl -s -o /dev/null "$url"
  now=$(date +%s)
  if (( now >= next_report )); then
    report "$(printf 't=%4ss' $((now - start)))"
    next_report=$((now + 60))
  fi
  sleep 1
done
report "end t=${secs}s"
