#!/usr/bin/env bash
# Builds a synthetic procfs/sysfs tree large enough for about 200 samples:
# 48 cores (status, frequency), 40 thermal zones, 5 hwmon chips with 8
# sensors each, a battery. Usage: bench/make-fixture.sh DIR
set -euo pipefail
root=${1:?usage: make-fixture.sh DIR}
rm -rf "$root"
mkdir -p "$root/proc" "$root/sys/devices/system/cpu" "$root/sys/class/thermal" "$root/sys/class/hwmon" "$root/sys/class/power_supply/BAT0"
cores=48
{
  echo "cpu  $((cores*1000)) 0 $((cores*500)) $((cores*8000)) 0 0 0 0 0 0"
  for i in $(seq 0 $((cores-1))); do echo "cpu$i 1000 0 500 8000 0 0 0 0 0 0"; done
} > "$root/proc/stat"
printf 'MemTotal: 4000000 kB\nMemFree: 1000000 kB\nMemAvailable: 2500000 kB\nSwapCached: 0 kB\nSwapTotal: 1000000 kB\nSwapFree: 900000 kB\n' > "$root/proc/meminfo"
echo "0-$((cores-1))" > "$root/sys/devices/system/cpu/online"
for i in $(seq 0 $((cores-1))); do
  mkdir -p "$root/sys/devices/system/cpu/cpu$i/cpufreq"
  echo $((1000000 + i*10000)) > "$root/sys/devices/system/cpu/cpu$i/cpufreq/scaling_cur_freq"
done
for z in $(seq 0 39); do
  d="$root/sys/class/thermal/thermal_zone$z"; mkdir -p "$d"
  echo "zone-$z" > "$d/type"; echo $((40000 + z*250)) > "$d/temp"
done
for h in 0 1 2 3 4; do
  d="$root/sys/class/hwmon/hwmon$h"; mkdir -p "$d"; echo "chip$h" > "$d/name"
  for s in 1 2 3 4; do echo $((30000 + s*1000)) > "$d/temp${s}_input"; echo $((5000 + s)) > "$d/in${s}_input"; done
done
printf 'Battery\n' > "$root/sys/class/power_supply/BAT0/type"
echo 12000000 > "$root/sys/class/power_supply/BAT0/voltage_now"
echo 90 > "$root/sys/class/power_supply/BAT0/capacity"
