#!/usr/bin/env bash
# /metrics latency and throughput with wrk on loopback, about 200 samples.
# Usage: bench/metrics.sh [seconds per run, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
source bench/lib.sh
start_exporter 19102 19101
samples=$(curl -s "$url" | grep -vc '^#')
bytes=$(curl -s "$url" | wc -c)
echo "samples per scrape: $samples ($bytes bytes, text 0.0.4)"
echo
echo "== paced: 2 connections, 4 ms pause after each response (about 500 req/s), ${secs}s"
wrk -t1 -c2 -d"${secs}s" --latency -s bench/paced.lua "$url"
echo
echo "== saturated: 2 threads, 16 connections, ${secs}s"
wrk -t2 -c16 -d"${secs}s" --latency "$url"
echo
gz=$(curl -s -H 'Accept-Encoding: gzip' "$url" | wc -c)
echo "== gzip (Accept-Encoding: gzip, as Prometheus sends it): $gz bytes instead of $bytes"
echo "== gzip paced: 2 connections, 4 ms pause, ${secs}s"
wrk -t1 -c2 -d"${secs}s" --latency -s bench/paced.lua -H 'Accept-Encoding: gzip' "$url"
echo
echo "== gzip saturated: 2 threads, 16 connections, ${secs}s"
wrk -t2 -c16 -d"${secs}s" --latency -H 'Accept-Encoding: gzip' "$url"
echo
grep -E 'VmRSS|VmHWM' /proc/$pid/status
