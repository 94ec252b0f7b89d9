#!/usr/bin/env bash
# Installs edge-metrics-exporter as systemd services.
#
#   sudo ./install.sh                      # the exporter, asking what else is wanted
#   sudo ./install.sh --yes --shelly-server --config-server-url http://cfg:8080
#
# What it does, each step only when needed (running it again upgrades in place):
#   * the binary to PREFIX/bin (default /usr/local/bin), from --binary, else
#     target/release/edge-metrics-exporter, else built with `cargo build --release`;
#   * the account (default edge-metrics, a system user), added to the i2c and video
#     groups when they exist (INA260 over /dev/i2c-*, vcgencmd over /dev/vcio);
#   * /etc/edge-metrics-exporter/config.yaml from config.yaml.template (kept when
#     it exists: the exporter edits it at run time);
#   * /etc/default/edge-metrics-exporter (kept when it exists);
#   * the units from deploy/systemd, and drop-ins: rapl.conf where the machine
#     has RAPL, tegrastats-sudo.conf with the sudoers line when asked;
#   * optionally shelly-server.service and edge-metrics-config-server.service;
#   * then daemon-reload, enable and (re)start, unless --no-start.
#
# --root DIR installs into DIR instead of / (packaging, tests): no account is
# created and systemctl is not called.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root=""
prefix="/usr/local"
user="edge-metrics"
binary=""
config_server_url=""
device_type="auto"
tegrastats_sudo=""
shelly_server=""
config_server_service=""
start=1
assume_yes=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --binary PATH              the binary to install
  --prefix DIR               where bin/ goes (default /usr/local)
  --root DIR                 install into DIR instead of /
  --user NAME                account of the exporter (default edge-metrics)
  --config-server-url URL    CONFIG_SERVER_URL of the exporter (default: off)
  --device-type TYPE         device_type of a new config.yaml (default: auto)
  --tegrastats-sudo          let the exporter run tegrastats as root (Jetson)
  --shelly-server            also install shelly-server.service
  --config-server-service    also install edge-metrics-config-server.service
  --no-start                 install and enable, but do not start
  --yes                      ask nothing; what was not asked for is not done
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        --root) root="${2%/}"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --config-server-url) config_server_url="$2"; shift 2 ;;
        --device-type) device_type="$2"; shift 2 ;;
        --tegrastats-sudo) tegrastats_sudo=1; shift ;;
        --shelly-server) shelly_server=1; shift ;;
        --config-server-service) config_server_service=1; shift ;;
        --no-start) start=0; shift ;;
        --yes|-y) assume_yes=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# Asks a yes/no question when there is someone to ask; otherwise "no".
ask() {
    local question="$1" answer
    if [ "$assume_yes" = 1 ] || [ ! -t 0 ]; then
        return 1
    fi
    read -r -p "$question [y/N] " answer || return 1
    [[ "$answer" =~ ^[Yy] ]]
}

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo ./install.sh), or with --root DIR to stage the files"
fi
case "$user" in
    ''|*[!a-z0-9_-]*) die "--user must be a plain account name, got '$user'" ;;
esac
case "$device_type" in
    ''|*[!a-z_]*) die "--device-type must be a device type such as auto or jetson_orin, got '$device_type'" ;;
esac
case "$config_server_url" in
    *[[:space:]]*) die "--config-server-url must not contain spaces" ;;
esac

# The binary.
if [ -z "$binary" ]; then
    binary="$here/target/release/edge-metrics-exporter"
    if [ ! -x "$binary" ]; then
        command -v cargo >/dev/null || die "no binary: pass --binary PATH or install Rust and run cargo build --release"
        say "building the release binary"
        (cd "$here" && cargo build --release --locked)
    fi
fi
[ -x "$binary" ] || die "$binary is not an executable"
"$binary" --version >/dev/null || die "$binary does not run on this machine (wrong architecture?)"

# With --root, the machine looked at is the one under it.
is_jetson() {
    [ -e "$root/etc/nv_tegra_release" ] || grep -qi jetson "$root/proc/device-tree/model" 2>/dev/null
}
has_rapl() {
    compgen -G "$root/sys/class/powercap/intel-rapl:*" >/dev/null
}

if [ -z "$tegrastats_sudo" ] && is_jetson \
    && ask "Let the exporter run tegrastats through sudo (more fields: EMC, IRAM)?"; then
    tegrastats_sudo=1
fi
if [ -z "$shelly_server" ] && ask "Install shelly-server (the hub Shelly plugs connect to) too?"; then
    shelly_server=1
fi
if [ -z "$config_server_service" ] && ask "Install the central config-server on this machine too?"; then
    config_server_service=1
fi
if [ -z "$config_server_url" ] && [ "$assume_yes" = 0 ] && [ -t 0 ]; then
    read -r -p "Config server URL (empty: none, use config.yaml alone): " config_server_url || true
fi
config_server_url="${config_server_url:-off}"

# The config a new install gets, checked before anything is written: the template
# with the board detected and every metric it has collected from the start
# (auto-discovery adds them as true; switch off what you do not want).
new_config="$(mktemp)"
trap 'rm -f "$new_config"' EXIT
sed -e "s/^device_type: linux\$/device_type: $device_type/" \
    -e 's/^new_metrics_enabled: false$/new_metrics_enabled: true  # install.sh: every metric the device has/' \
    "$here/config.yaml.template" >"$new_config"
if [ "$tegrastats_sudo" = 1 ]; then
    printf '\n# install.sh --tegrastats-sudo\ntegrastats:\n  sudo: true\n' >>"$new_config"
fi
"$binary" check-config --config "$new_config" >/dev/null \
    || die "the config.yaml it would install does not validate (see above)"

bindir="$prefix/bin"
installed="$bindir/edge-metrics-exporter"
unitdir="/etc/systemd/system"
confdir="/etc/edge-metrics-exporter"

say "binary -> $root$installed"
install -D -m 0755 "$binary" "$root$installed.new"
mv -f "$root$installed.new" "$root$installed"

if [ -z "$root" ]; then
    if ! id -u "$user" >/dev/null 2>&1; then
        say "account $user"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user"
    fi
    for group in i2c video; do
        if getent group "$group" >/dev/null; then
            usermod -a -G "$group" "$user"
        fi
    done
fi

say "config -> $root$confdir/config.yaml"
install -d -m 0750 "$root$confdir"
if [ ! -e "$root$confdir/config.yaml" ]; then
    install -m 0640 "$new_config" "$root$confdir/config.yaml"
else
    say "  kept the existing config.yaml"
fi
if [ -z "$root" ]; then
    # The exporter rewrites config.yaml (atomically, through files beside it).
    chown -R "$user:$user" "$confdir"
fi

install -d -m 0755 "$root/etc/default"
render_default() {
    local name="$1"
    if [ ! -e "$root/etc/default/$name" ]; then
        sed "s|{{CONFIG_SERVER_URL}}|$config_server_url|g" "$here/deploy/default/$name" \
            >"$root/etc/default/$name"
        chmod 0640 "$root/etc/default/$name"
    else
        say "  kept the existing /etc/default/$name"
    fi
}
render_unit() {
    local template="$1" unit="$2"
    say "unit -> $root$unitdir/$unit"
    install -d -m 0755 "$root$unitdir"
    sed -e "s|{{BINARY}}|$installed|g" -e "s|{{USER}}|$user|g" \
        "$here/deploy/systemd/$template" >"$root$unitdir/$unit.new"
    chmod 0644 "$root$unitdir/$unit.new"
    mv -f "$root$unitdir/$unit.new" "$root$unitdir/$unit"
}
dropin() {
    local file="$1" dir="$root$unitdir/edge-metrics-exporter.service.d"
    install -d -m 0755 "$dir"
    install -m 0644 "$here/deploy/systemd/$file" "$dir/$file"
    say "drop-in -> $dir/$file"
}

units=(edge-metrics-exporter.service)
render_default edge-metrics-exporter
render_unit edge-metrics-exporter.service.template edge-metrics-exporter.service
if has_rapl; then
    dropin rapl.conf
fi
if [ "$tegrastats_sudo" = 1 ]; then
    tegrastats="$(command -v tegrastats || echo /usr/bin/tegrastats)"
    sudoers="$root/etc/sudoers.d/edge-metrics-exporter"
    install -d -m 0750 "$root/etc/sudoers.d"
    printf '# install.sh --tegrastats-sudo: the exporter runs tegrastats as root.\n%s ALL=(root) NOPASSWD: %s\n' \
        "$user" "$tegrastats" >"$sudoers.new"
    chmod 0440 "$sudoers.new"
    if command -v visudo >/dev/null; then
        visudo -cqf "$sudoers.new" || die "the sudoers line did not pass visudo -c"
    fi
    mv -f "$sudoers.new" "$sudoers"
    say "sudoers -> $sudoers"
    dropin tegrastats-sudo.conf
fi
if [ "$shelly_server" = 1 ]; then
    render_default shelly-server
    render_unit shelly-server.service.template shelly-server.service
    units+=(shelly-server.service)
fi
if [ "$config_server_service" = 1 ]; then
    render_default edge-metrics-config-server
    render_unit edge-metrics-config-server.service.template edge-metrics-config-server.service
    units+=(edge-metrics-config-server.service)
fi

if [ -n "$root" ]; then
    say "staged in $root (no account created, systemctl not called)"
    exit 0
fi
if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: units installed, not started"
    exit 0
fi
systemctl daemon-reload
systemctl enable "${units[@]}"
if [ "$start" = 1 ]; then
    systemctl restart "${units[@]}"
    say "running: $(systemctl is-active "${units[@]}" | tr '\n' ' ')"
    say "metrics: curl -s http://localhost:9102/metrics | head;  health: $installed health"
fi
