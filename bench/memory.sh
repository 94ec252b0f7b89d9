#!/usr/bin/env bash
# Resident memory of the exporter collecting every second and scraped every second.
# Usage: bench/memory.sh [seconds, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
cargo build --release -q
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
bench/make-fixture.sh "$work/root"
cat > "$work/config.yaml" <<YAML
interval: 1
port: 19202
reload_port: 19201
new_metrics_enabled: true
hostname: bench
path:
  procfs: $work/root/proc
  sysfs: $work/root/sys
YAML
./target/release/edge-metrics-exporter --config "$work/config.yaml" 2>"$work/log" &
pid=$!
sleep 2
echo "samples per scrape: $(curl -s http://127.0.0.1:19202/metrics | grep -vc '^#')"
start=$(date +%s)
next_report=$start
while (( $(date +%s) - start < secs )); do
  curl -s -o /dev/null http://127.0.0.1:19202/metrics
  now=$(date +%s)
  if (( now >= next_report )); then
    printf 't=%4ss  %s  %s\n' $((now - start)) "$(grep VmRSS /proc/$pid/status | tr -s ' ')" "$(grep VmHWM /proc/$pid/status | tr -s ' ')"
    next_report=$((now + 60))
  fi
  sleep 1
done
printf 'end t=%ss  %s  %s\n' "$secs" "$(grep VmRSS /proc/$pid/status | tr -s ' ')" "$(grep VmHWM /proc/$pid/status | tr -s ' ')"
