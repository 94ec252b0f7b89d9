#!/usr/bin/env bash
# Checks the release builds in dist/ (run after release/build.sh):
#   * each static binary is statically linked, runs (aarch64 under qemu-user):
#     --version, `parse` on the whole tegrastats corpus giving exactly the
#     reviewed golden output, and `serve --demo` answering a scrape;
#   * with --install (as root, CI): the amd64 .deb installs (account, config,
#     units that pass systemd-analyze verify), runs, and purges cleanly.
# Prints the sizes it finds; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

install_deb=0
arches=()
for arg in "$@"; do
    case "$arg" in
        --install) install_deb=1 ;;
        aarch64|x86_64) arches+=("$arg") ;;
        *) echo "release/check.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[ ${#arches[@]} -gt 0 ] || arches=(aarch64 x86_64)
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The corpus's `line` column, one line per record.
tail -n +2 tests/fixtures/tegrastats/corpus.tsv | awk -F'\t' '{print $NF}' >"$work/corpus.txt"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

for arch in "${arches[@]}"; do
    bin="dist/edge-metrics-exporter-$version-$arch-linux-musl"
    [ -x "$bin" ] || fail "$bin missing (run release/build.sh $arch)"
    run=("$bin")
    if [ "$arch" != "$(uname -m)" ]; then
        command -v "qemu-$arch" >/dev/null || fail "qemu-$arch missing (apt-get install qemu-user)"
        run=("qemu-$arch" "$bin")
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
    body=""
    for _ in $(seq 1 100); do
        body="$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null || true)"
        grep -q '^jetson_power_vdd_gpu_soc_watts' <<<"$body" && break
        sleep 0.2
    done
    grep -q '^jetson_power_vdd_gpu_soc_watts' <<<"$body" \
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
fi
echo "==> release checks passed"
