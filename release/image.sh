#!/usr/bin/env bash
# OCI images of the exporter, from the static binaries release/build.sh wrote to
# dist/, with podman (or buildah) from Debian:
#
#   release/image.sh                 # every architecture with a binary in dist/
#   release/image.sh amd64           # one architecture
#   release/image.sh --archive       # also a multi-arch OCI archive in dist/
#
# Each image is `FROM scratch`: the binary as /usr/bin/edge-metrics-exporter, the
# CA certificates (Debian's ca-certificates bundle, for an https:// config server or
# remote write), /etc/passwd and /etc/group naming the non-root account it runs as
# (edge-metrics, 65532), a writable /var/lib/edge-metrics-exporter for config.yaml
# and the remote-write buffer, EXPOSE 9102 and the OCI labels. Tags:
#
#   localhost/edge-metrics-exporter:VERSION-amd64|arm64|armv7   one per architecture
#   localhost/edge-metrics-exporter:VERSION                     manifest list over them
#   dist/edge-metrics-exporter-VERSION-oci.tar                  with --archive
#
# IMAGE_SOURCE sets org.opencontainers.image.source (default: the git remote).
# No RUN step: building an arm image needs no emulation.
set -euo pipefail
cd "$(dirname "$0")/.."

archive=0
arches=()
for arg in "$@"; do
    case "$arg" in
        --archive) archive=1 ;;
        amd64|arm64|armv7) arches+=("$arg") ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "release/image.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if command -v podman >/dev/null; then
    build=(podman build) manifest=(podman manifest) images=(podman)
elif command -v buildah >/dev/null; then
    build=(buildah bud) manifest=(buildah manifest) images=(buildah)
else
    echo "release/image.sh: podman or buildah is needed (apt-get install podman)" >&2
    exit 1
fi
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "release/image.sh: $ca missing (apt-get install ca-certificates)" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
license="$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)"
source_url="${IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null || echo unknown)}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
image=localhost/edge-metrics-exporter
uid=65532

binary_of() {
    case "$1" in
        amd64) echo "dist/edge-metrics-exporter-$version-x86_64-linux-musl" ;;
        arm64) echo "dist/edge-metrics-exporter-$version-aarch64-linux-musl" ;;
        armv7) echo "dist/edge-metrics-exporter-$version-armv7-linux-musleabihf" ;;
    esac
}
platform_of() {
    case "$1" in
        amd64) echo linux/amd64 ;;
        arm64) echo linux/arm64 ;;
        armv7) echo linux/arm/v7 ;;
    esac
}

if [ ${#arches[@]} -eq 0 ]; then
    for arch in amd64 arm64 armv7; do
        [ -x "$(binary_of "$arch")" ] && arches+=("$arch")
    done
fi
[ ${#arches[@]} -gt 0 ] || { echo "release/image.sh: no binary in dist/ (run release/build.sh)" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
# What every image holds besides the binary.
install -d "$context/rootfs/etc/ssl/certs" "$context/rootfs/var/lib" "$context/state"
install -m 0644 "$ca" "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
# Nothing in the image needs a loader; a host program mounted in (a Jetson's
# tegrastats, with the host's /usr/lib) finds its loader through /lib.
ln -s usr/lib "$context/rootfs/lib"
printf 'root:x:0:0:root:/root:/sbin/nologin\nedge-metrics:x:%s:%s:edge-metrics-exporter:/var/lib/edge-metrics-exporter:/sbin/nologin\n' \
    "$uid" "$uid" >"$context/rootfs/etc/passwd"
printf 'root:x:0:\nedge-metrics:x:%s:\n' "$uid" >"$context/rootfs/etc/group"
chmod 0644 "$context/rootfs/etc/passwd" "$context/rootfs/etc/group"
cat >"$context/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=$uid:$uid state/ /var/lib/edge-metrics-exporter/
COPY edge-metrics-exporter /usr/bin/edge-metrics-exporter
USER $uid:$uid
WORKDIR /var/lib/edge-metrics-exporter
EXPOSE 9102
ENTRYPOINT ["/usr/bin/edge-metrics-exporter"]
CMD ["serve", "--config=/var/lib/edge-metrics-exporter/config.yaml"]
LABEL org.opencontainers.image.title="edge-metrics-exporter" \\
      org.opencontainers.image.description="Prometheus exporter for power and health of edge devices" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$revision" \\
      org.opencontainers.image.source="$source_url" \\
      org.opencontainers.image.licenses="$license"
EOF

"${manifest[@]}" rm "$image:$version" >/dev/null 2>&1 || true
"${manifest[@]}" create "$image:$version" >/dev/null
for arch in "${arches[@]}"; do
    binary="$(binary_of "$arch")"
    [ -x "$binary" ] || { echo "release/image.sh: $binary missing (release/build.sh)" >&2; exit 1; }
    install -m 0755 "$binary" "$context/edge-metrics-exporter"
    tag="$image:$version-$arch"
    echo "==> $tag ($(platform_of "$arch"))"
    started=$SECONDS
    "${build[@]}" --quiet --platform "$(platform_of "$arch")" --timestamp 0 \
        -t "$tag" -f "$context/Containerfile" "$context" >/dev/null
    "${manifest[@]}" add "$image:$version" "containers-storage:$tag" >/dev/null
    size="$("${images[@]}" image inspect --format '{{.Size}}' "$tag" 2>/dev/null || echo '?')"
    echo "    built in $((SECONDS - started)) s, $size bytes"
done
echo "==> $image:$version: manifest list over ${arches[*]}"
if [ "$archive" = 1 ]; then
    out="dist/edge-metrics-exporter-$version-oci.tar"
    rm -f "$out"
    "${manifest[@]}" push --quiet --all --format oci "$image:$version" "oci-archive:$out:$version" >/dev/null
    echo "==> $out ($(stat -c %s "$out") bytes)"
fi
