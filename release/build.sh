#!/usr/bin/env bash
# Release builds: static Linux binaries (musl, cargo-zigbuild) and Debian packages.
#
#   release/build.sh                 # aarch64 and x86_64
#   release/build.sh aarch64         # one architecture
#   release/build.sh armv7 armv6     # 32-bit Raspberry Pi OS (Pi 2/3/4/Zero 2) and
#                                    # Pi 1/Zero: needs the Rust standard library of
#                                    # those targets (rustup target add), which the
#                                    # machines CI runs on cannot download
#   release/build.sh --setup ...     # first install the tools (rustup targets,
#                                    # ziglang from PyPI, cargo-zigbuild)
#
# Output in dist/:
#   edge-metrics-exporter-VERSION-ARCH-linux-musl    static executable, any glibc/distro
#                                                    (ARCH aarch64, x86_64, armv7, armv6;
#                                                    the arm ones are -linux-musleabihf)
#   edge-metrics-exporter_VERSION_DEBARCH.deb        /usr/bin binary, units, config template
#                                                    (arm64, amd64, armhf = armv7)
#   SHA256SUMS
set -euo pipefail
cd "$(dirname "$0")/.."

setup=0
arches=()
for arg in "$@"; do
    case "$arg" in
        --setup) setup=1 ;;
        aarch64|x86_64|armv7|armv6) arches+=("$arg") ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "release/build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(aarch64 x86_64)

# The Rust target and the file name's suffix of each architecture.
target_of() {
    case "$1" in
        aarch64|x86_64) echo "$1-unknown-linux-musl" ;;
        armv7) echo armv7-unknown-linux-musleabihf ;;   # Pi 2/3/4/Zero 2 on a 32-bit OS
        armv6) echo arm-unknown-linux-musleabihf ;;     # Pi 1 and Zero (ARMv6, VFP)
    esac
}
suffix_of() {
    case "$1" in
        armv7|armv6) echo linux-musleabihf ;;
        *) echo linux-musl ;;
    esac
}

if [ "$setup" = 1 ]; then
    for arch in "${arches[@]}"; do
        rustup target add "$(target_of "$arch")" || {
            echo "release/build.sh: rustup cannot install the standard library for $(target_of "$arch") here" >&2
            exit 1
        }
    done
    python3 -m pip install --quiet --disable-pip-version-check ziglang
    command -v cargo-zigbuild >/dev/null || cargo install cargo-zigbuild --locked
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
mkdir -p dist

deb_arch() {
    case "$1" in
        aarch64) echo arm64 ;;
        x86_64) echo amd64 ;;
        armv7) echo armhf ;;
    esac
}

# The .deb: the same files install.sh puts in place, at Debian's paths.
package() {
    local arch="$1" binary="$2"
    local debarch stage
    debarch="$(deb_arch "$arch")"
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' RETURN
    install -D -m 0755 "$binary" "$stage/usr/bin/edge-metrics-exporter"
    local units="$stage/lib/systemd/system" share="$stage/usr/share/edge-metrics-exporter"
    install -d "$units" "$share" "$stage/etc/default" "$stage/DEBIAN" \
        "$stage/usr/share/doc/edge-metrics-exporter"
    for unit in edge-metrics-exporter shelly-server edge-metrics-config-server; do
        sed -e 's|{{BINARY}}|/usr/bin/edge-metrics-exporter|g' -e 's|{{USER}}|edge-metrics|g' \
            "deploy/systemd/$unit.service.template" >"$units/$unit.service"
        chmod 0644 "$units/$unit.service"
    done
    install -m 0644 deploy/systemd/rapl.conf deploy/systemd/tegrastats-sudo.conf "$share/"
    install -m 0644 config.yaml.template "$share/config.yaml.template"
    sed 's|{{CONFIG_SERVER_URL}}|off|' deploy/default/edge-metrics-exporter \
        >"$stage/etc/default/edge-metrics-exporter"
    install -m 0644 deploy/default/shelly-server deploy/default/edge-metrics-config-server \
        "$stage/etc/default/"
    install -m 0644 README.md "$stage/usr/share/doc/edge-metrics-exporter/"
    gzip -9n -c deploy/debian/changelog >"$stage/usr/share/doc/edge-metrics-exporter/changelog.Debian.gz"
    install -m 0644 deploy/debian/copyright "$stage/usr/share/doc/edge-metrics-exporter/copyright"
    local size
    size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
    sed -e "s|{{VERSION}}|$version|" -e "s|{{ARCH}}|$debarch|" -e "s|{{SIZE}}|$size|" \
        deploy/debian/control >"$stage/DEBIAN/control"
    printf '/etc/default/edge-metrics-exporter\n/etc/default/shelly-server\n/etc/default/edge-metrics-config-server\n' \
        >"$stage/DEBIAN/conffiles"
    for script in postinst prerm postrm; do
        install -m 0755 "deploy/debian/$script" "$stage/DEBIAN/$script"
    done
    local deb="dist/edge-metrics-exporter_${version}_${debarch}.deb"
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
    echo "$deb"
}

# All targets in one cargo run: the `dist` profile (Cargo.toml) ends each binary
# with whole-program LTO on one codegen unit, a single-threaded step; in one run
# those steps overlap on the cores (two targets: 5 min instead of 9, BENCHMARKS.md).
targets=()
for arch in "${arches[@]}"; do
    targets+=(--target "$(target_of "$arch")")
done
echo "==> cargo zigbuild --profile dist ${targets[*]}"
started=$SECONDS
cargo zigbuild --profile dist --locked "${targets[@]}"
echo "    built in $((SECONDS - started)) s"
for arch in "${arches[@]}"; do
    target="$(target_of "$arch")"
    out="dist/edge-metrics-exporter-$version-$arch-$(suffix_of "$arch")"
    cp "${CARGO_TARGET_DIR:-target}/$target/dist/edge-metrics-exporter" "$out"
    echo "==> $target: $out ($(stat -c %s "$out") bytes)"
    file "$out" 2>/dev/null | sed 's/^/    /' || true
    # armv6 has no .deb: Debian's armhf is ARMv7 (Raspberry Pi OS's armhf
    # packages for the Pi 1/Zero are its own); the static binary serves them.
    if [ -n "$(deb_arch "$arch")" ]; then
        deb="$(package "$arch" "$out")"
        echo "    $deb ($(stat -c %s "$deb") bytes)"
    fi
done
(cd dist && sha256sum edge-metrics-exporter-*-linux-* edge-metrics-exporter_*.deb >SHA256SUMS)
echo "==> dist/SHA256SUMS"
