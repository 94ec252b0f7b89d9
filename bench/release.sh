#!/usr/bin/env bash
# The release builds side by side: file size, resident memory after a minute of
# collection every second and a scrape every second, and saturated /metrics
# throughput (wrk, 10 s), for the host's glibc build and each x86_64 binary in dist/.
# (aarch64 binaries only get their size: under qemu-user their memory and speed
# are qemu's.)
# Usage: bench/release.sh [seconds of the memory run, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
printf '%-58s %12s\n' binary bytes
for f in target/release/edge-metrics-exporter dist/edge-metrics-exporter-*-linux-musl; do
  [ -f "$f" ] && printf '%-58s %12s\n' "$f" "$(stat -c %s "$f")"
done
echo
port=19402
for f in target/release/edge-metrics-exporter dist/edge-metrics-exporter-*-x86_64-linux-musl; do
  [ -f "$f" ] || continue
  (
    export BIN=$f
    source bench/lib.sh
    start_exporter "$port" $((port - 1))
    for _ in $(seq 1 "$secs"); do curl -s -o /dev/null "$url"; sleep 1; done
    kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/$pid/status; }
    echo "$f after ${secs}s: VmRSS $(kb VmRSS) kB (RssAnon $(kb RssAnon) kB, RssFile $(kb RssFile) kB), VmHWM $(kb VmHWM) kB"
    rps=$(wrk -t2 -c16 -d10s "$url" | awk '/Requests\/sec/ {print $2}')
    echo "    ${rps} req/s saturated (wrk, 2 threads, 16 connections, 10 s)"
  )
  port=$((port + 10))
done
