#!/usr/bin/env bash
# Resident memory of the exporter collecting every second and scraped every second.
# Usage: bench/memory.sh [seconds, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
source bench/lib.sh
start_exporter 19202 19201
echo "samples per scrape: $(curl -s "$url" | grep -vc '^#')"
start=$(date +%s)
next_report=$start
while (( $(date +%s) - start < secs )); do
  curl -s -o /dev/null "$url"
  now=$(date +%s)
  if (( now >= next_report )); then
    printf 't=%4ss  %s  %s\n' $((now - start)) "$(grep VmRSS /proc/$pid/status | tr -s ' ')" "$(grep VmHWM /proc/$pid/status | tr -s ' ')"
    next_report=$((now + 60))
  fi
  sleep 1
done
printf 'end t=%ss  %s  %s\n' "$secs" "$(grep VmRSS /proc/$pid/status | tr -s ' ')" "$(grep VmHWM /proc/$pid/status | tr -s ' ')"
