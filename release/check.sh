#!/usr/bin/env bash
# Checks the release builds in dist/ (run after release/build.sh):
#   * each static binary is statically linked, runs (the foreign ones under
#     qemu-user: qemu-aarch64, qemu-arm for armv7 and armv6): --version, `parse` on
#     the whole tegrastats corpus giving exactly the reviewed golden output, and
#     `serve --demo` answering a scrape;
#   * with --install (as root, CI): the amd64 .deb installs (account, config,
#     units that pass systemd-analyze verify), runs, and purges cleanly; the armhf
#     .deb (no armhf system to install it on here) is checked the same way with
#     dpkg --force-architecture, its binary run under qemu-arm;
#   * with --image (after release/image.sh): the amd64 image is under 20 MB, runs
#     as a non-root user, has the OCI labels, and its exported filesystem's
#     entrypoint (chroot) answers --version and serves /metrics on a fixture tree
#     at --path.sysfs; the manifest list covers every image built.
# Prints the sizes it finds; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

install_deb=0
check_image=0
arches=()
for arg in "$@"; do
    case "$arg" in
        --install) install_deb=1 ;;
        --image) check_image=1 ;;
        aarch64|x86_64|armv7|armv6) arches+=("$arg") ;;
        *) echo "release/check.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
if [ ${#arches[@]} -eq 0 ]; then
    # Every architecture release/build.sh left in dist/.
    for arch in aarch64 x86_64 armv7 armv6; do
        compgen -G "dist/edge-metrics-exporter-*-$arch-linux-musl*" >/dev/null && arches+=("$arch")
    done
fi
[ ${#arches[@]} -gt 0 ] || { echo "release/check.sh: nothing in dist/ (run release/build.sh)" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# metrics_with PORT PATTERN: polls /metrics for up to 20 s until a line matches;
# the last answer is left in $body.
metrics_with() {
    body=""
    for _ in $(seq 1 100); do
        body="$(curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null || true)"
        grep -q "$2" <<<"$body" && return 0
        sleep 0.2
    done
    return 1
}

# The corpus's `line` column, one line per record.
tail -n +2 tests/fixtures/tegrastats/corpus.tsv | awk -F'\t' '{print $NF}' >"$work/corpus.txt"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

binary_of() {
    case "$1" in
        armv7|armv6) echo "dist/edge-metrics-exporter-$version-$1-linux-musleabihf" ;;
        *) echo "dist/edge-metrics-exporter-$version-$1-linux-musl" ;;
    esac
}
# How to run a binary of `arch` here: directly, or under qemu-user (for armv6
# with an ARM1176 CPU model, the Pi 1's, so ARMv7-only instructions would fault).
runner_of() {
    case "$1" in
        "$(uname -m)") ;;
        aarch64) echo qemu-aarch64 ;;
        armv7) echo qemu-arm ;;
        armv6) echo "qemu-arm -cpu arm1176" ;;
    esac
}

for arch in "${arches[@]}"; do
    bin="$(binary_of "$arch")"
    [ -x "$bin" ] || fail "$bin missing (run release/build.sh $arch)"
    read -r -a run <<<"$(runner_of "$arch") $bin"
    if [ "${#run[@]}" -gt 1 ]; then
        command -v "${run[0]}" >/dev/null || fail "${run[0]} missing (apt-get install qemu-user)"
    fi
    echo "==> $arch: ${run[*]}"
    file "$bin" | grep -q "statically linked" || fail "$bin is not statically linked: $(file "$bin")"

    "${run[@]}" --version | grep -qx "edge-metrics-exporter $version" \
        || fail "--version: $("${run[@]}" --version)"

    "${run[@]}" parse <"$work/corpus.txt" >"$work/parse-$arch.jsonl" 2>"$work/parse-$arch.err"
    [ ! -s "$work/parse-$arch.err" ] || fail "parse wrote errors: $(head -3 "$work/parse-$arch.err")"
    cmp -s "$work/parse-$arch.jsonl" tests/fixtures/tegrastats/corpus.parse.jsonl \
        || fail "parse output differs from the golden file: $(diff "$work/parse-$arch.jsonl" tests/fixtures/tegrastats/corpus.parse.jsonl | head -5)"
    echo "    parse: $(wc -l <"$work/parse-$arch.jsonl") corpus lines, identical to the golden file"

    port="$(free_port)"
    api="$(free_port)"
    mkdir -p "$work/$arch"
    printf 'listen_address: 127.0.0.1\nport: %s\nreload_port: %s\ninterval: 0.5\nnew_metrics_enabled: true\n' "$port" "$api" \
        >"$work/$arch/config.yaml"
    CONFIG_SERVER_URL=off "${run[@]}" serve --demo --config "$work/$arch/config.yaml" \
        >"$work/$arch/log" 2>&1 &
    pids+=($!)
    metrics_with "$port" '^jetson_power_vdd_gpu_soc_watts' \
        || fail "serve --demo did not serve Jetson metrics: $(tail -5 "$work/$arch/log")"
    rss="$(grep '^process_resident_memory_bytes' <<<"$body" | awk '{print $2}')"
    kill "${pids[-1]}"
    wait "${pids[-1]}" 2>/dev/null || true
    echo "    serve --demo: $(grep -c '^jetson_' <<<"$body") jetson samples; RSS $rss bytes"
    echo "    size: $(stat -c %s "$bin") bytes"
done

if [ "$install_deb" = 1 ]; then
    deb="dist/edge-metrics-exporter_${version}_amd64.deb"
    [ -f "$deb" ] || fail "$deb missing"
    echo "==> dpkg -i $deb"
    dpkg-deb --info "$deb" >/dev/null
    DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
    /usr/bin/edge-metrics-exporter --version | grep -qx "edge-metrics-exporter $version" || fail "installed binary"
    getent passwd edge-metrics >/dev/null || fail "no edge-metrics account"
    [ "$(stat -c %U /etc/edge-metrics-exporter/config.yaml)" = edge-metrics ] || fail "config owner"
    /usr/bin/edge-metrics-exporter check-config --config /etc/edge-metrics-exporter/config.yaml >/dev/null \
        || fail "the installed config does not validate"
    said="$(systemd-analyze verify /lib/systemd/system/edge-metrics-exporter.service \
        /lib/systemd/system/shelly-server.service /lib/systemd/system/edge-metrics-config-server.service 2>&1)" \
        || fail "systemd-analyze verify: $said"
    [ -z "$said" ] || fail "systemd-analyze verify: $said"
    DEBIAN_FRONTEND=noninteractive dpkg --purge edge-metrics-exporter >/dev/null
    [ ! -e /usr/bin/edge-metrics-exporter ] || fail "binary left after purge"
    [ ! -e /etc/edge-metrics-exporter ] || fail "config left after purge"
    ! getent passwd edge-metrics >/dev/null || fail "account left after purge"
    echo "    installed, verified, purged"

    armhf="dist/edge-metrics-exporter_${version}_armhf.deb"
    if [ -f "$armhf" ]; then
        # No armhf system runs here (no binfmt_misc for a qemu chroot): the same
        # maintainer scripts run on this host with dpkg --force-architecture (they
        # never run the binary), and the installed binary runs under qemu-arm.
        echo "==> dpkg --force-architecture -i $armhf"
        dpkg-deb --field "$armhf" Architecture | grep -qx armhf || fail "$armhf: Architecture"
        list() { dpkg-deb --contents "$1" | awk '{print $NF}' | sort; }
        [ "$(list "$armhf")" = "$(list "$deb")" ] || fail "armhf and amd64 packages hold different files: $(diff <(list "$armhf") <(list "$deb") | head -5)"
        for script in postinst prerm postrm; do
            cmp -s <(dpkg-deb --ctrl-tarfile "$armhf" | tar -xO "./$script") "deploy/debian/$script" \
                || fail "armhf $script differs from deploy/debian/$script"
        done
        DEBIAN_FRONTEND=noninteractive dpkg --force-architecture -i "$armhf" >/dev/null 2>&1
        file /usr/bin/edge-metrics-exporter | grep -q "ARM, EABI5" || fail "the installed binary is not armhf"
        qemu-arm /usr/bin/edge-metrics-exporter --version | grep -qx "edge-metrics-exporter $version" \
            || fail "installed armhf binary under qemu-arm"
        getent passwd edge-metrics >/dev/null || fail "no edge-metrics account (armhf)"
        qemu-arm /usr/bin/edge-metrics-exporter check-config --config /etc/edge-metrics-exporter/config.yaml >/dev/null \
            || fail "the config the armhf package installed does not validate"
        DEBIAN_FRONTEND=noninteractive dpkg --force-architecture --purge edge-metrics-exporter >/dev/null 2>&1
        [ ! -e /usr/bin/edge-metrics-exporter ] || fail "binary left after purge (armhf)"
        ! getent passwd edge-metrics >/dev/null || fail "account left after purge (armhf)"
        echo "    same files and scripts as amd64; installed, run under qemu-arm, purged"
    fi
fi

if [ "$check_image" = 1 ]; then
    image="localhost/edge-metrics-exporter:$version"
    echo "==> $image-amd64"
    size="$(podman image inspect --format '{{.Size}}' "$image-amd64")" || fail "no image $image-amd64 (run release/image.sh)"
    [ "$size" -lt 20000000 ] || fail "image is $size bytes, over 20 MB"
    user="$(podman image inspect --format '{{.Config.User}}' "$image-amd64")"
    case "$user" in ""|0|0:*|root|root:*) fail "image runs as root ($user)" ;; esac
    for label in version source licenses; do
        got="$(podman image inspect --format "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$image-amd64")"
        [ -n "$got" ] || fail "label org.opencontainers.image.$label missing"
    done
    podman image inspect --format '{{.Config.ExposedPorts}}' "$image-amd64" | grep -q 9102 || fail "9102 not exposed"
    # The exported filesystem, its entrypoint run with chroot as the image's user
    # (podman run cannot start containers on every machine this runs on).
    rootfs="$work/image-rootfs"
    mkdir -p "$rootfs"
    container="$(podman create "$image-amd64")"
    podman export "$container" | tar -x -C "$rootfs"
    podman rm "$container" >/dev/null
    entry="$(podman image inspect --format '{{index .Config.Entrypoint 0}}' "$image-amd64")"
    chroot --userspec="$user" "$rootfs" "$entry" --version | grep -qx "edge-metrics-exporter $version" \
        || fail "the image's entrypoint --version"
    cp -a tests/fixtures/linux/x86-laptop "$rootfs/fixture"
    port="$(free_port)"
    api="$(free_port)"
    # Free ports for this run; the exporter adds what it discovers to the file.
    state="$rootfs/var/lib/edge-metrics-exporter"
    printf 'listen_address: 127.0.0.1\nport: %s\nreload_port: %s\nnew_metrics_enabled: true\n' "$port" "$api" \
        >"$state/config.yaml"
    chown "$user" "$state/config.yaml"
    CONFIG_SERVER_URL=off chroot --userspec="$user" "$rootfs" "$entry" serve \
        --config=/var/lib/edge-metrics-exporter/config.yaml \
        --path.sysfs=/fixture/sys --path.procfs=/fixture/proc >"$work/image.log" 2>&1 &
    pids+=($!)
    metrics_with "$port" '^host_' || fail "the image's exporter served no host metrics: $(tail -5 "$work/image.log")"
    for _ in $(seq 1 50); do
        grep -q '^metrics:' "$state/config.yaml" && break
        sleep 0.2
    done
    grep -q '^metrics:' "$state/config.yaml" || fail "the image's user could not write its config (discovery)"
    kill "${pids[-1]}"
    wait "${pids[-1]}" 2>/dev/null || true
    echo "    $size bytes, user $user, labels; chroot: --version, $(grep -c '^host_' <<<"$body") host samples from the fixture tree"
    platforms="$(podman manifest inspect "$image" | python3 -c 'import json,sys; print(" ".join(sorted(m["platform"]["architecture"] + m["platform"].get("variant", "") for m in json.load(sys.stdin)["manifests"])))')"
    echo "    manifest list $image: $platforms"
    [ -n "$platforms" ] || fail "empty manifest list"
fi
echo "==> release checks passed"
