#!/usr/bin/env bash
# What sampling the Jetson rails at a high rate costs: the release binary on a copy of
# the Orin Nano fixture extended to 8 rails (three INA3221 chips: 3 + 3 + 2 channels),
# `power.sample_interval: 0.01` (100 Hz), against the same tree without the chips.
# Prints the CPU share of one core and the resident memory of each after SECONDS.
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

tree() { # DIR WITH_RAILS
  cp -a tests/fixtures/linux/jetson-orin-nano "$1"
  rm -rf "$1/sys/bus/i2c/drivers/ina3221"/* "$1/sys/class/hwmon"/*
  [ "$2" = yes ] || return 0
  local n=0
  for chip in 1-0040 1-0041 1-0042; do
    local dev="$1/sys/devices/platform/bus@0/c240000.i2c/i2c-1/$chip"
    local hw="$dev/hwmon/hwmon$n"
    mkdir -p "$hw"
    echo ina3221 > "$hw/name"
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

run() { # NAME WITH_RAILS PORT
  local root="$work/$1"
  tree "$root" "$2"
  echo "VDD_IN 1000mW/1000mW" > "$work/$1.log"
  cat > "$work/$1.yaml" <<YAML
device_type: jetson_orin
interval: 1
port: $3
reload_port: $(($3 + 1))
hostname: bench
new_metrics_enabled: true
path:
  procfs: $root/proc
  sysfs: $root/sys
  rootfs: $root
tegrastats:
  replay: $work/$1.log
  nvpmodel_command: /bin/true
power:
  sample_interval: 0.01
YAML
  CONFIG_SERVER_URL=off "$bin" --config "$work/$1.yaml" >/dev/null 2>"$work/$1.err" &
  pids+=($!)
  last=$!
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run rails yes 19302; with=$last
run none no 19312; without=$last
sleep 3
t0=$(date +%s.%N); a0=$(ticks "$with"); b0=$(ticks "$without")
sleep "$secs"
t1=$(date +%s.%N); a1=$(ticks "$with"); b1=$(ticks "$without")
samples=$(curl -s http://127.0.0.1:19302/metrics | awk '/^edge_exporter_power_samples_total/ {print $2}')
rails=$(curl -s http://127.0.0.1:19302/metrics | grep -c '^jetson_power_rail_[0-9]_[0-9]_joules_total' || true)
awk -v a="$((a1 - a0))" -v b="$((b1 - b0))" -v hz="$hz" -v t0="$t0" -v t1="$t1" \
    -v ra="$(awk '/VmRSS/ {print $2}' /proc/$with/status)" -v rb="$(awk '/VmRSS/ {print $2}' /proc/$without/status)" \
    -v n="$samples" -v rails="$rails" 'BEGIN {
  s = t1 - t0
  printf "over %.0f s, %s rails read %s times (%.1f Hz)\n", s, rails, n, n / (s + 3)
  printf "with rails at 100 Hz:  CPU %.2f %% of one core, RSS %d kB\n", 100 * a / hz / s, ra
  printf "without rails:         CPU %.2f %% of one core, RSS %d kB\n", 100 * b / hz / s, rb
  printf "sampling costs:        CPU %.2f %% of one core, RSS %+d kB\n", 100 * (a - b) / hz / s, ra - rb
}'
