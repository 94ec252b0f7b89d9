#!/usr/bin/env bash
# Scrape latency side by side: this exporter (one long-lived tegrastats child) and
# an exporter that runs tegrastats once per scrape, as the Python original did.
# Both read the same fake tegrastats (bench/fake-tegrastats.sh).
# Usage: bench/tegrastats-scrape.sh [seconds per run, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
work=$(mktemp -d)
trap 'kill $ours $theirs 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
fake=$PWD/bench/fake-tegrastats.sh
cat > "$work/config.yaml" <<YAML
device_type: jetson_orin
interval: 1
port: 19302
reload_port: 19301
new_metrics_enabled: true
hostname: bench
tegrastats:
  command: $fake
YAML
./target/release/edge-metrics-exporter --config "$work/config.yaml" 2>"$work/log" &
ours=$!
python3 bench/per-scrape-exporter.py 19303 "$fake" 100 &
theirs=$!
sleep 4
echo "== this exporter (long-lived tegrastats, interval 1 s): 1 connection, ${secs}s"
wrk -t1 -c1 -d"${secs}s" --latency http://127.0.0.1:19302/metrics | sed -n '/Latency Distribution/,/Requests\/sec/p'
echo
echo "== tegrastats run per scrape (--interval 100 ms): 1 connection, ${secs}s"
wrk -t1 -c1 -d"${secs}s" --latency --timeout 10s http://127.0.0.1:19303/metrics | sed -n '/Latency Distribution/,/Requests\/sec/p'
