#!/usr/bin/env bash
# The config server under load: 10,000 devices with a 200-metric config each;
# GET and PUT throughput with wrk, then 10,000 devices polling every 30 s.
# Usage: bench/config-server.sh [seconds per run, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
work=$(mktemp -d)
port=18480
./target/release/edge-metrics-exporter config-server --address 127.0.0.1 --port $port \
  --db "$work/configs.db" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
base="http://127.0.0.1:$port"

cpu_ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
rss() { grep VmRSS /proc/$pid/status | awk '{print $2 " kB"}'; }

echo "== seeding 10,000 devices (one PUT each, keep-alive, 4 clients)"
python3 - "$port" <<'PY'
import http.client, json, sys, threading, time
port = int(sys.argv[1])
metrics = {f"bench_metric_{i:03d}_watts": i % 3 == 0 for i in range(1, 201)}
body = json.dumps({"device_type": "jetson_orin", "interval": 1, "metrics": metrics})
def seed(lo, hi):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for n in range(lo, hi):
        c.request("PUT", f"/config/dev-{n}", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status in (200, 201), r.status
start = time.time()
threads = [threading.Thread(target=seed, args=(1 + k * 2500, 1 + (k + 1) * 2500)) for k in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"seeded in {time.time() - start:.1f} s ({10000 / (time.time() - start):.0f} PUT/s); config {len(body)} bytes")
PY
echo "database: $(du -h "$work/configs.db" | cut -f1) (+ WAL $(du -h "$work/configs.db-wal" 2>/dev/null | cut -f1)); server RSS $(rss)"
echo
echo "== GET /config/{id}: 2 threads, 16 connections, ${secs}s"
wrk -t2 -c16 -d"${secs}s" --latency -s bench/config-get.lua "$base"
echo
echo "== 10,000 devices polling every 30 s (about 333 conditional GETs/s), ${secs}s"
before=$(cpu_ticks)
wrk -t1 -c10 -d"${secs}s" --latency -s bench/config-poll.lua "$base"
after=$(cpu_ticks)
hz=$(getconf CLK_TCK)
echo "server CPU during the poll run: $(( (after - before) * 100 / hz / secs ))% of one core; RSS $(rss)"
sleep 6
echo "devices with a recorded last contact: $(curl -s "$base/devices" | python3 -c 'import json,sys; print(sum(1 for d in json.load(sys.stdin)["devices"] if d["last_contact"]))')"
echo
# Last: every PUT makes a new revision, after which the polls above would no
# longer be answered 304.
echo "== PUT /config/{id}: 2 threads, 8 connections, ${secs}s"
wrk -t2 -c8 -d"${secs}s" --latency -s bench/config-put.lua "$base"
echo
echo "server RSS after the PUT run: $(rss); database $(du -h "$work/configs.db" | cut -f1)"
