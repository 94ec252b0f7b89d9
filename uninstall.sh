#!/usr/bin/env bash
# Removes what install.sh installed: stops and disables the services, removes
# the units, drop-ins, sudoers line and binary. The config, the environment
# files, the state directories and the account stay unless --purge.
#
#   sudo ./uninstall.sh [--purge] [--prefix /usr/local] [--root DIR] [--user NAME]
set -euo pipefail

root=""
prefix="/usr/local"
user="edge-metrics"
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) purge=1; shift ;;
        --prefix) prefix="$2"; shift 2 ;;
        --root) root="${2%/}"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { printf '==> %s\n' "$*"; }
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "uninstall.sh: run as root (sudo ./uninstall.sh)" >&2
    exit 1
fi

units=(edge-metrics-exporter.service shelly-server.service edge-metrics-config-server.service)
unitdir="$root/etc/systemd/system"
if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for unit in "${units[@]}"; do
        if [ -e "$unitdir/$unit" ]; then
            say "stopping $unit"
            systemctl disable --now "$unit" || true
        fi
    done
fi
for unit in "${units[@]}"; do
    rm -f "$unitdir/$unit"
done
rm -rf "$unitdir/edge-metrics-exporter.service.d"
rm -f "$root/etc/sudoers.d/edge-metrics-exporter"
rm -f "$root$prefix/bin/edge-metrics-exporter"
if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "removed the services and the binary"

if [ "$purge" = 1 ]; then
    rm -rf "$root/etc/edge-metrics-exporter" \
        "$root/var/lib/edge-metrics-exporter" \
        "$root/var/lib/private/edge-metrics-config-server" \
        "$root/var/lib/edge-metrics-config-server"
    rm -f "$root/etc/default/edge-metrics-exporter" \
        "$root/etc/default/shelly-server" \
        "$root/etc/default/edge-metrics-config-server"
    if [ -z "$root" ] && id -u "$user" >/dev/null 2>&1; then
        userdel "$user" || true
    fi
    say "purged the config, environment files, state and the account $user"
else
    say "kept /etc/edge-metrics-exporter, /etc/default/* and /var/lib/* (--purge removes them)"
fi
