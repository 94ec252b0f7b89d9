#!/usr/bin/env bash
# /metrics latency and throughput with wrk on loopback, about 200 samples.
# Usage: bench/metrics.sh [seconds per run, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
bench/make-fixture.sh "$work/root"
cat > "$work/config.yaml" <<YAML
interval: 1
port: 19102
reload_port: 19101
new_metrics_enabled: true
hostname: bench
path:
  procfs: $work/root/proc
  sysfs: $work/root/sys
YAML
./target/release/edge-metrics-exporter --config "$work/config.yaml" 2>"$work/log" &
pid=$!
sleep 3
samples=$(curl -s http://127.0.0.1:19102/metrics | grep -vc '^#')
bytes=$(curl -s http://127.0.0.1:19102/metrics | wc -c)
echo "samples per scrape: $samples ($bytes bytes, text 0.0.4)"
echo
echo "== paced: 2 connections, 4 ms pause after each response (about 500 req/s), ${secs}s"
wrk -t1 -c2 -d"${secs}s" --latency -s bench/paced.lua http://127.0.0.1:19102/metrics
echo
echo "== saturated: 2 threads, 16 connections, ${secs}s"
wrk -t2 -c16 -d"${secs}s" --latency http://127.0.0.1:19102/metrics
echo
grep -E 'VmRSS|VmHWM' /proc/$pid/status
