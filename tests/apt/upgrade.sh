#!/usr/bin/env bash
# The apt repository end to end, as a device would use it: a throwaway signing
# key, release/apt-repo.sh over the amd64 .deb in dist/, a debootstrapped Debian
# (bookworm) that knows only that repository (file://, signed-by), then:
#   * apt-get installs the package (apt checked the InRelease signature);
#   * the config and a conffile are edited;
#   * the package is rebuilt with a higher version, the repository regenerated,
#     and apt-get upgrades to it, keeping both edits;
#   * a repository whose InRelease was tampered with is refused.
# Needs root, debootstrap, systemd-nspawn, apt-utils and gnupg (.ci/run installs
# them). DEBOOTSTRAP_CACHE (a tarball path) shares the Debian tree with
# tests/systemd/boot.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib/debian-rootfs.sh

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
deb="dist/edge-metrics-exporter_${version}_amd64.deb"
[ -f "$deb" ] || { echo "upgrade.sh: $deb missing (release/build.sh x86_64)" >&2; exit 1; }
needs upgrade.sh debootstrap systemd-nspawn apt-ftparchive gpg

work="$(mktemp -d)"
saved_repo="$work/saved-apt"
cleanup() {
    # dist/apt as it was before the test.
    rm -rf dist/apt
    [ ! -d "$saved_repo" ] || mv "$saved_repo" dist/apt
    gpgconf --homedir "$work/gnupg" --kill all 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
[ ! -d dist/apt ] || mv dist/apt "$saved_repo"
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "==> a throwaway signing key"
export GNUPGHOME="$work/gnupg"
install -d -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key \
    "edge-metrics-exporter test <test@localhost.invalid>" ed25519 sign 1d
key="$(gpg --batch --list-secret-keys --with-colons | awk -F: '/^fpr:/ {print $10; exit}')"

echo "==> release/apt-repo.sh (version $version)"
bash release/apt-repo.sh --key "$key" "$deb"

rootfs="$work/rootfs"
debian_rootfs "$rootfs"
# Only our repository: the test needs nothing else from a mirror.
rm -f "$rootfs/etc/apt/sources.list" "$rootfs"/etc/apt/sources.list.d/*
install -D -m 0644 dist/apt/edge-metrics-exporter.gpg "$rootfs/usr/share/keyrings/edge-metrics-exporter.gpg"
echo "deb [signed-by=/usr/share/keyrings/edge-metrics-exporter.gpg] file:///srv/apt stable main" \
    >"$rootfs/etc/apt/sources.list.d/edge-metrics-exporter.list"

inside() {
    local rc=0
    systemd-nspawn -q --pipe --register=no --keep-unit -D "$rootfs" \
        --bind-ro="$PWD/dist/apt:/srv/apt" \
        --setenv=DEBIAN_FRONTEND=noninteractive /bin/sh -c "$1" </dev/null 2>"$work/nspawn.err" || rc=$?
    # systemd-nspawn's own notice about the tree's mount propagation is noise.
    grep -v 'Attempted to remove disk file system' "$work/nspawn.err" >&2 || true
    return "$rc"
}

echo "==> apt-get install from file:///srv/apt"
inside "apt-get update -qq && apt-get install -y -qq edge-metrics-exporter >/dev/null" \
    || fail "install from the repository"
installed="$(inside "dpkg-query -W -f '\${Version}' edge-metrics-exporter")"
[ "$installed" = "$version" ] || fail "installed version $installed, want $version"
said="$(inside "/usr/bin/edge-metrics-exporter --version" 2>&1)"
grep -qx "edge-metrics-exporter $version" <<<"$said" || fail "the installed binary: $said"
echo "    $installed installed"

# The operator's edits: the config the exporter owns, and a conffile.
inside "sed -i 's/^interval: .*/interval: 7/' /etc/edge-metrics-exporter/config.yaml && \
        echo '# edited on this device' >>/etc/edge-metrics-exporter/config.yaml && \
        echo 'EDGE_EXPORTER_LOG_LEVEL=debug' >>/etc/default/edge-metrics-exporter"

echo "==> a rebuilt, higher version"
newer="$version+rebuild1"
repack="$work/repack"
dpkg-deb -R "$deb" "$repack"
sed -i "s/^Version: .*/Version: $newer/" "$repack/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$repack" "$work/edge-metrics-exporter_${newer}_amd64.deb" >/dev/null
bash release/apt-repo.sh --key "$key" "$work/edge-metrics-exporter_${newer}_amd64.deb"
[ "$(find dist/apt/pool -name '*.deb' | wc -l)" = 2 ] || fail "the pool should keep both versions"

echo "==> apt-get upgrade"
inside "apt-get update -qq && apt-get upgrade -y -qq >/dev/null" || fail "upgrade"
installed="$(inside "dpkg-query -W -f '\${Version}' edge-metrics-exporter")"
[ "$installed" = "$newer" ] || fail "after the upgrade $installed, want $newer"
inside "grep -qx 'interval: 7' /etc/edge-metrics-exporter/config.yaml && \
        grep -qx '# edited on this device' /etc/edge-metrics-exporter/config.yaml" \
    || fail "the edited config.yaml was not kept"
inside "grep -qx 'EDGE_EXPORTER_LOG_LEVEL=debug' /etc/default/edge-metrics-exporter" \
    || fail "the edited conffile was not kept"
inside "/usr/bin/edge-metrics-exporter check-config --config /etc/edge-metrics-exporter/config.yaml >/dev/null" \
    || fail "the kept config does not validate"
echo "    upgraded to $installed; config.yaml and /etc/default edits kept"

echo "==> a tampered repository is refused"
sed -i 's/^Label: edge-metrics-exporter$/Label: someone else/' dist/apt/dists/stable/InRelease
grep -q '^Label: someone else$' dist/apt/dists/stable/InRelease || fail "could not tamper with InRelease"
if inside "apt-get update -qq 2>&1" >"$work/tampered.log"; then
    grep -qi "signature\|NO_PUBKEY\|BADSIG\|not signed" "$work/tampered.log" \
        || fail "apt accepted a tampered InRelease: $(cat "$work/tampered.log")"
fi
grep -qi "signature\|BADSIG\|not signed" "$work/tampered.log" \
    || fail "no signature error for a tampered InRelease: $(cat "$work/tampered.log")"
echo "    $(grep -i -m1 'signature\|BADSIG' "$work/tampered.log" | cut -c1-120)"
echo "==> the apt repository works: install, upgrade keeping edits, signature checked"
