#!/usr/bin/env bash
# What sampling the power sources costs, at the rate they keep while no run is open
# (`power.sample_interval: 0.1`, 10 Hz) and while a run is measured
# (`power.run_sample_interval: 0.01`, 100 Hz).
#
# One release binary per source on a copy of its fixture, and one beside it on the same
# fixture with the source switched off, all collecting every second:
#   rails  the Orin Nano fixture extended to 8 rails (three INA3221 hwmon chips: 3 + 3 + 2)
#   ina260 the Raspberry Pi 5 fixture's INA260 (hwmon `ina2xx`, update_interval 35 ms, so
#          28.6 reads a second at most)
#   rapl   the LattePanda 3 Delta fixture's RAPL zones (4 counters)
# CPU from /proc/<pid>/stat over SECONDS with no run open, then over SECONDS with a run
# open on each (POST /runs), the source's share being the difference to its twin. The
# run's trace points and the RSS are printed too.
# Usage: bench/energy-sampling.sh [seconds, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cargo build --release -q
bin=./target/release/edge-metrics-exporter
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)

rails_tree() { # DIR WITH_RAILS
  cp -a tests/fixtures/linux/jetson-orin-nano "$1"
  rm -rf "$1/sys/bus/i2c/drivers/ina3221"/* "$1/sys/class/hwmon"/*
  [ "$2" = yes ] || return 0
  local n=0
  for chip in 1-0040 1-0041 1-0042; do
    local dev="$1/sys/devices/platform/bus@0/c240000.i2c/i2c-1/$chip"
    local hw="$dev/hwmon/hwmon$n"
    mkdir -p "$hw"
    echo ina3221 > "$hw/name"
    echo 1 > "$hw/update_interval"
    for k in 1 2 3; do
      [ "$chip" = 1-0042 ] && [ "$k" = 3 ] && continue
      echo "RAIL_${n}_$k" > "$hw/in${k}_label"
      echo 5000 > "$hw/in${k}_input"
      echo $((500 * k)) > "$hw/curr${k}_input"
      echo 1 > "$hw/in${k}_enable"
    done
    ln -s "../../../../devices/platform/bus@0/c240000.i2c/i2c-1/$chip" "$1/sys/bus/i2c/drivers/ina3221/$chip"
    n=$((n + 1))
  done
}

# start NAME FIXTURE-DIR PORT EXTRA-YAML: an exporter on a copy of the fixture.
start() {
  local root="$work/$1"
  cat > "$work/$1.yaml" <<YAML
interval: 1
port: $3
reload_port: $(($3 + 1))
hostname: bench
new_metrics_enabled: true
path:
  procfs: $root/proc
  sysfs: $root/sys
  rootfs: $root
power:
  sample_interval: 0.1
  run_sample_interval: 0.01
$4
YAML
  CONFIG_SERVER_URL=off "$bin" --config "$work/$1.yaml" >/dev/null 2>"$work/$1.err" &
  pids+=($!)
  eval "pid_$1=$!"
}

echo "VDD_IN 1000mW/1000mW" > "$work/tegrastats.log"
jetson="device_type: jetson_orin
tegrastats:
  replay: $work/tegrastats.log
  nvpmodel_command: /bin/true"
rails_tree "$work/rails" yes
rails_tree "$work/rails_off" no
start rails "$work/rails" 19302 "$jetson"
start rails_off "$work/rails_off" 19312 "$jetson"
cp -a tests/fixtures/linux/raspberry-pi-5 "$work/ina260"
cp -a tests/fixtures/linux/raspberry-pi-5 "$work/ina260_off"
pi="device_type: raspberry_pi
pmic:
  enabled: false"
start ina260 "$work/ina260" 19322 "$pi"
start ina260_off "$work/ina260_off" 19332 "$pi
ina2xx: []"
cp -a tests/fixtures/linux/lattepanda-3-delta "$work/rapl"
cp -a tests/fixtures/linux/lattepanda-3-delta "$work/rapl_off"
start rapl "$work/rapl" 19342 "device_type: lattepanda"
start rapl_off "$work/rapl_off" 19352 "device_type: lattepanda
rapl:
  enabled: false"
sleep 3
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { cat "$work"/*.err >&2; echo "an exporter did not start" >&2; exit 1; }
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
names=(rails rails_off ina260 ina260_off rapl rapl_off)

# measure PHASE: CPU ticks of every exporter over $secs.
measure() {
  local -A t0
  for n in "${names[@]}"; do local v="pid_$n"; t0[$n]=$(ticks "${!v}"); done
  local s0; s0=$(date +%s.%N)
  sleep "$secs"
  local s1; s1=$(date +%s.%N)
  for n in "${names[@]}"; do
    local v="pid_$n"
    local d=$(( $(ticks "${!v}") - t0[$n] ))
    awk -v d="$d" -v hz="$hz" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.3f", 100 * d / hz / (s1 - s0) }' > "$work/cpu.$1.$n"
    rss "${!v}" > "$work/rss.$1.$n"
  done
}

measure idle
declare -A ids
for n in rails ina260 rapl; do
  port=$(grep '^reload_port' "$work/$n.yaml" | awk '{print $2}')
  ids[$n]=$(curl -sf -X POST -d '{"name":"bench"}' "http://127.0.0.1:$port/runs" | sed 's/.*"id":"\([0-9]*\)".*/\1/')
done
measure run
for n in rails ina260 rapl; do
  port=$(grep '^reload_port' "$work/$n.yaml" | awk '{print $2}')
  curl -sf -X POST "http://127.0.0.1:$port/runs/${ids[$n]}/stop" > "$work/report.$n.json"
  curl -sf "http://127.0.0.1:$port/runs/${ids[$n]}/trace" | tail -n +2 | wc -l > "$work/points.$n"
done

printf '%-8s %-22s %-22s %-10s %-12s %s\n' source "10 Hz (no run)" "100 Hz (run open)" samples "trace points" "RSS with / without, run open"
for n in rails ina260 rapl; do
  awk -v a="$(cat "$work/cpu.idle.$n")" -v b="$(cat "$work/cpu.idle.${n}_off")" \
      -v c="$(cat "$work/cpu.run.$n")" -v d="$(cat "$work/cpu.run.${n}_off")" \
      -v s="$(grep -o '"samples":[0-9]*' "$work/report.$n.json" | head -1 | cut -d: -f2)" \
      -v p="$(cat "$work/points.$n")" -v n="$n" \
      -v r="$(cat "$work/rss.run.$n")" -v q="$(cat "$work/rss.run.${n}_off")" 'BEGIN {
    printf "%-8s %6.2f %% (%5.2f - %5.2f) %6.2f %% (%5.2f - %5.2f) %-10s %-12s %d / %d kB\n", n, a - b, a, b, c - d, c, d, s, p, r, q
  }'
done
echo "(CPU: percent of one core, the source's exporter minus its twin without the source; over ${secs} s each)"
