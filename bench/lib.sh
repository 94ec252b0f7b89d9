# Shared by the benchmark scripts: builds the release binary and starts it on a
# synthetic fixture of about 200 samples. Sets $pid, $work and $url.
# Usage: start_exporter METRICS_PORT API_PORT   ($BIN: another binary to start;
# $EXTRA_CONFIG: more config.yaml, $EXTRA_ARGS: more flags)
start_exporter() {
  local port=$1 api_port=$2
  local bin=${BIN:-./target/release/edge-metrics-exporter}
  [ -n "${BIN:-}" ] || cargo build --release -q
  work=$(mktemp -d)
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
  bench/make-fixture.sh "$work/root"
  cat > "$work/config.yaml" <<YAML
interval: 1
port: $port
reload_port: $api_port
new_metrics_enabled: true
hostname: bench
path:
  procfs: $work/root/proc
  sysfs: $work/root/sys
${EXTRA_CONFIG:-}
YAML
  # shellcheck disable=SC2086
  CONFIG_SERVER_URL=off "$bin" --config "$work/config.yaml" ${EXTRA_ARGS:-} 2>"$work/log" &
  pid=$!
  url="http://127.0.0.1:$port/metrics"
  sleep 3
}
