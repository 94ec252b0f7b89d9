#!/usr/bin/env bash
# The units under a real systemd: debootstraps a minimal Debian, installs the
# release binary there with install.sh (exporter, shelly-server, config-server),
# boots it with systemd-nspawn and checks from inside, with the hardening on:
#   * all three services reach "active" as Type=notify (READY=1 arrived);
#   * /ready answers, host metrics are served, the config dir is the account's;
#   * `device_type: auto` finds the (pretend) Jetson and the tegrastats child (a
#     replaying fake) runs under the hardening;
#   * `systemctl reload` reaches the exporter (SIGHUP → a successful reload);
#   * a frozen exporter (SIGSTOP) is killed by the watchdog and restarted.
# Needs root, debootstrap and systemd-nspawn (.ci/run installs them).
# DEBOOTSTRAP_CACHE (a tarball path) shares the Debian tree with tests/apt/upgrade.sh.
#   tests/systemd/boot.sh [BINARY]     (default: the x86_64 release build in dist/)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib/debian-rootfs.sh

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
binary="${1:-dist/edge-metrics-exporter-$version-x86_64-linux-musl}"
[ -x "$binary" ] || { echo "boot.sh: $binary missing (release/build.sh x86_64)" >&2; exit 1; }
needs boot.sh debootstrap systemd-nspawn

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
debian_rootfs "$rootfs"

# A Jetson as far as the exporter can tell: /etc/nv_tegra_release for `auto`, and a
# tegrastats on PATH that replays a recording, so the tegrastats child runs under
# the unit's hardening too.
echo "# R36 (release), REVISION: 4.3" >"$rootfs/etc/nv_tegra_release"
install -m 0755 bench/fake-tegrastats.sh "$rootfs/usr/local/bin/tegrastats"
install -D -m 0644 recordings/orin-nx-jp6.log "$rootfs/usr/local/share/orin-nx-jp6.log"
bash install.sh --root "$rootfs" --binary "$binary" --yes --shelly-server --config-server-service >/dev/null
echo "FAKE_TEGRASTATS_RECORDING=/usr/local/share/orin-nx-jp6.log" >>"$rootfs/etc/default/edge-metrics-exporter"
chroot "$rootfs" useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin edge-metrics
chroot "$rootfs" chown -R edge-metrics:edge-metrics /etc/edge-metrics-exporter

# Runs inside once the services have started: writes key=value lines, powers off.
cat >"$rootfs/usr/local/bin/probe" <<'EOF'
#!/bin/sh
units="edge-metrics-exporter shelly-server edge-metrics-config-server"
sleep 5
for u in $units; do
    echo "active_$u=$(systemctl is-active "$u")"
    echo "type_$u=$(systemctl show -p Type --value "$u")"
done
echo "ready=$(curl -s localhost:9102/ready)"
echo "host_samples=$(curl -s localhost:9102/metrics | grep -c '^host_')"
echo "jetson_rails=$(curl -s localhost:9102/metrics | grep -c '^jetson_power_.*_watts{')"
echo "tegrastats_up=$(curl -s localhost:9102/metrics | sed -n 's/^edge_exporter_tegrastats_up //p')"
echo "shelly_build_info=$(curl -s localhost:8766/telemetry | grep -c '^edge_exporter_build_info')"
echo "config_owner=$(stat -c %U /etc/edge-metrics-exporter/config.yaml)"
systemctl reload edge-metrics-exporter
sleep 2
echo "reloads_ok=$(curl -s localhost:9102/metrics | sed -n 's/^edge_exporter_config_reloads_total{outcome="success"} //p')"
pid=$(systemctl show -p MainPID --value edge-metrics-exporter)
kill -STOP "$pid"
sleep 42
echo "restarts=$(systemctl show -p NRestarts --value edge-metrics-exporter)"
echo "active_after=$(systemctl is-active edge-metrics-exporter)"
echo "watchdog_logged=$(journalctl -u edge-metrics-exporter --no-pager | grep -c 'Watchdog timeout')"
echo "done=1"
EOF
chmod 0755 "$rootfs/usr/local/bin/probe"
cat >"$rootfs/etc/systemd/system/probe.service" <<'EOF'
[Unit]
After=edge-metrics-exporter.service shelly-server.service edge-metrics-config-server.service
[Service]
Type=oneshot
TimeoutStartSec=300
ExecStart=/bin/sh -c '/usr/local/bin/probe >/results 2>&1; systemctl poweroff'
[Install]
WantedBy=multi-user.target
EOF
chroot "$rootfs" systemctl enable edge-metrics-exporter shelly-server \
    edge-metrics-config-server probe >/dev/null 2>&1

echo "==> boot (systemd-nspawn)"
started=$SECONDS
timeout 240 systemd-nspawn -q --register=no --keep-unit -D "$rootfs" -b >"$work/boot.log" 2>&1 || true
echo "    $((SECONDS - started)) s"
[ -f "$rootfs/results" ] || { echo "no results; the boot log ends:"; tail -30 "$work/boot.log"; exit 1; }
sed 's/^/    /' "$rootfs/results"

value() { sed -n "s/^$1=//p" "$rootfs/results"; }
fail=0
expect() {
    local key="$1" want="$2" got
    got="$(value "$key")"
    if [ "$got" != "$want" ]; then
        echo "FAIL: $key is '$got', want '$want'"
        fail=1
    fi
}
for u in edge-metrics-exporter shelly-server edge-metrics-config-server; do
    expect "active_$u" active
    expect "type_$u" notify
done
expect ready '{"checks":{"collectors":"ok","config":"ok (local)","config_sync":"disabled","plug_hub":"disabled"},"status":"ready"}'
expect shelly_build_info 1
expect tegrastats_up 1
expect config_owner edge-metrics
expect reloads_ok 1
expect restarts 1
expect active_after active
expect watchdog_logged 1
expect done 1
[ "$(value host_samples)" -gt 0 ] 2>/dev/null || { echo "FAIL: no host samples"; fail=1; }
[ "$(value jetson_rails)" -gt 0 ] 2>/dev/null || { echo "FAIL: no Jetson rails"; fail=1; }
if [ "$fail" = 1 ]; then
    echo "--- exporter journal / boot log tail"
    tail -40 "$work/boot.log"
    exit 1
fi
echo "==> the units run under systemd: ready, Jetson detected, tegrastats child, reload, watchdog restart"
