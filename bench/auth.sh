#!/usr/bin/env bash
# What a password costs a scrape: the release exporter with a web config whose
# users have bcrypt cost COST (default 10), scraped over loopback. Times
#   * a scrape with a credential that passed before (the keyed cache: no bcrypt),
#   * a wrong password for a real user (one bcrypt each),
#   * an unknown user (the decoy hash: one bcrypt each, the same cost),
# and prints the medians. Usage: bench/auth.sh [COST] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cost=${1:-10}
rounds=${2:-25}
bin=${BIN:-./target/release/edge-metrics-exporter}
[ -n "${BIN:-}" ] || cargo build --release -q
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
# The hash: htpasswd when installed (apache2-utils), else Python's bcrypt
if command -v htpasswd >/dev/null; then
  hash=$(htpasswd -nbBC "$cost" "" scrape-pass | tr -d ':\n')
else
  python3 -m pip install --quiet --disable-pip-version-check bcrypt >/dev/null
  hash=$(python3 -c "import bcrypt,sys; print(bcrypt.hashpw(b'scrape-pass', bcrypt.gensalt($cost)).decode())")
fi
printf 'basic_auth_users:\n  prometheus: %s\n' "$hash" >"$work/web.yml"
port=18591
cat >"$work/config.yaml" <<YAML
interval: 1
port: $port
reload_port: 18592
hostname: bench
YAML
CONFIG_SERVER_URL=off "$bin" --config "$work/config.yaml" --web.config.file "$work/web.yml" 2>"$work/log" &
pid=$!
sleep 2
python3 - "$port" "$rounds" "$cost" <<'PY'
import base64, http.client, statistics, sys, time
port, rounds, cost = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def scrape(user, password):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    t = time.perf_counter()
    c.request("GET", "/metrics", headers={"Authorization": f"Basic {auth}"})
    r = c.getresponse(); r.read()
    return r.status, (time.perf_counter() - t) * 1000
status, first = scrape("prometheus", "scrape-pass")
assert status == 200, status
runs = {"remembered credential": [], "wrong password": [], "unknown user": []}
for i in range(rounds):
    s, t = scrape("prometheus", "scrape-pass"); assert s == 200; runs["remembered credential"].append(t)
    s, t = scrape("prometheus", f"wrong-{i}"); assert s == 401; runs["wrong password"].append(t)
    s, t = scrape(f"nobody-{i}", "wrong"); assert s == 401; runs["unknown user"].append(t)
print(f"bcrypt cost {cost}: first scrape with the credential {first:.1f} ms")
for name, ts in runs.items():
    print(f"  {name:<22} median {statistics.median(ts):7.2f} ms   p90 {sorted(ts)[int(len(ts) * 0.9)]:7.2f} ms")
PY
