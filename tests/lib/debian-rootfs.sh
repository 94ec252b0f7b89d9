# Sourced by the scripts that need a minimal Debian tree (tests/systemd/boot.sh,
# tests/apt/upgrade.sh). debian_rootfs DIR makes one in DIR: bookworm, minbase
# plus systemd, dbus, curl and adduser, from the machine's Debian mirror. With
# DEBOOTSTRAP_CACHE set to a tarball path, the first call saves the tree there and
# later calls unpack it (one debootstrap per CI run, not one per script).
# needs NAME TOOL…: stops NAME with a clear error unless run as root with every
# tool on the PATH.
needs() {
    local name="$1" tool
    shift
    [ "$(id -u)" = 0 ] || { echo "$name: run as root" >&2; exit 1; }
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$name: $tool missing (.ci/run installs it)" >&2; exit 1; }
    done
}

debian_rootfs() {
    local rootfs="$1" started=$SECONDS mirror log
    if [ -n "${DEBOOTSTRAP_CACHE:-}" ] && [ -s "$DEBOOTSTRAP_CACHE" ]; then
        mkdir -p "$rootfs"
        tar -xpf "$DEBOOTSTRAP_CACHE" -C "$rootfs"
        echo "==> Debian bookworm from $DEBOOTSTRAP_CACHE ($((SECONDS - started)) s)"
        return
    fi
    mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "==> debootstrap bookworm ($mirror)"
    log="$(mktemp)"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,adduser \
        bookworm "$rootfs" "$mirror" >"$log" 2>&1 \
        || { tail -20 "$log"; rm -f "$log"; return 1; }
    rm -f "$log"
    echo "    $((SECONDS - started)) s"
    if [ -n "${DEBOOTSTRAP_CACHE:-}" ]; then
        mkdir -p "$(dirname "$DEBOOTSTRAP_CACHE")"
        tar -cpf "$DEBOOTSTRAP_CACHE.tmp" -C "$rootfs" . && mv "$DEBOOTSTRAP_CACHE.tmp" "$DEBOOTSTRAP_CACHE"
    fi
}
