#!/usr/bin/env bash
# Fleet configuration at scale: 10,000 devices with a 200-metric config each, in
# 20 groups of 500 (assigned) plus one group every device matches by its rules.
# Times a group change (every member's effective config recomputed, checked and
# stored as a new revision in one transaction), then GET /config throughput with
# wrk while the groups exist.
# Usage: bench/config-groups.sh [seconds for the GET run, default 20]
#        BIN=path/to/binary bench/config-groups.sh   (another build, e.g. the static musl one)
#        ROUNDS=N (the big change N times), HISTORY_KEEP=N (--history-keep, default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
bin=${BIN:-./target/release/edge-metrics-exporter}
[ -n "${BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
port=18481
"$bin" config-server --address 127.0.0.1 --port $port \
  --db "$work/configs.db" --history-keep "${HISTORY_KEEP:-100}" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
base="http://127.0.0.1:$port"
rss() { grep VmRSS /proc/$pid/status | awk '{print $2 " kB"}'; }

python3 - "$port" "$pid" "${ROUNDS:-1}" "$work/configs.db" <<'PY'
import http.client, json, os, sys, threading, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(l.split()[1] for l in f if l.startswith("VmRSS")) + " kB"
def db():
    size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0
    return f"{size(sys.argv[4]) / 1e6:.0f} MB + WAL {size(sys.argv[4] + '-wal') / 1e6:.0f} MB"
metrics = {f"bench_metric_{i:03d}_watts": i % 3 == 0 for i in range(1, 201)}
body = json.dumps({"device_type": "jetson_orin", "interval": 1, "metrics": metrics})

def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=120)

def call(c, method, path, payload=None, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, payload, h)
    r = c.getresponse()
    data = r.read()
    return r.status, r.getheader("ETag"), data

def parallel(work, n=10000, clients=4):
    def run(lo, hi):
        c = conn()
        for i in range(lo, hi):
            work(c, i)
    step = n // clients
    threads = [threading.Thread(target=run, args=(1 + k * step, 1 + (k + 1) * step)) for k in range(clients)]
    [t.start() for t in threads]; [t.join() for t in threads]

c = conn()
for g in range(20):
    s, _, d = call(c, "PUT", f"/groups/g{g:02d}", json.dumps({"metrics": {f"bench_metric_{g + 1:03d}_watts": True}}))
    assert s == 201, d

start = time.time()
def seed(c, n):
    s, _, d = call(c, "PUT", f"/config/dev-{n}", body)
    assert s in (200, 201), d
parallel(seed)
print(f"seeded 10,000 devices in {time.time() - start:.1f} s; config {len(body)} bytes; RSS {rss()}")

start = time.time()
def assign(c, n):
    s, _, d = call(c, "PUT", f"/devices/dev-{n}/groups", json.dumps([f"g{n % 20:02d}"]))
    assert s == 200, d
parallel(assign)
print(f"assigned 10,000 devices to 20 groups in {time.time() - start:.1f} s; RSS {rss()}")

def change(name, doc, members):
    c = conn()
    times = []
    for k in range(3):
        s, tag, _ = call(c, "GET", f"/groups/{name}")
        doc = dict(doc, interval=[1, 2, 5][k])
        t = time.time()
        s, _, d = call(c, "PUT", f"/groups/{name}", json.dumps(doc), {"If-Match": tag} if tag else {})
        times.append(time.time() - t)
        assert s in (200, 201), d
        assert json.loads(d)["members"] == members, d
    print(f"group change, {members} members: " + ", ".join(f"{x * 1000:.0f} ms" for x in times)
          + f" ({min(times) / members * 1e6:.0f} us per member); RSS {rss()}; database {db()}")

change("g00", {"metrics": {"bench_metric_001_watts": True, "bench_metric_050_watts": False}}, 500)
# The whole fleet by a match rule (first creation, then changes).
c = conn()
t = time.time()
s, _, d = call(c, "PUT", "/groups/all", json.dumps({"match": {"hostname": "dev-*"}, "metrics": {"bench_metric_002_watts": False}}))
assert s == 201, d
print(f"a group matching all 10,000 devices created in {(time.time() - t) * 1000:.0f} ms; RSS {rss()}")
for _ in range(int(sys.argv[3])):
    change("all", {"match": {"hostname": "dev-*"}, "metrics": {"bench_metric_002_watts": False}}, 10000)
s, _, d = call(conn(), "GET", "/config/dev-20")
cfg = json.loads(d)
assert cfg["metrics"]["bench_metric_001_watts"] is True and cfg["metrics"]["bench_metric_002_watts"] is False, cfg["metrics"]
assert cfg["interval"] == 5, cfg["interval"]
PY
echo "server RSS: $(rss); database $(du -h "$work/configs.db" | cut -f1) (+ WAL $(du -h "$work/configs.db-wal" 2>/dev/null | cut -f1))"
echo
echo "== GET /config/{id}: 2 threads, 16 connections, ${secs}s, 10,000 devices in 21 groups"
wrk -t2 -c16 -d"${secs}s" --latency -s bench/config-get.lua "$base"
echo "server RSS after: $(rss)"
