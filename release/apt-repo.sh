#!/usr/bin/env bash
# A signed apt repository of the .debs, in dist/apt/, with Debian's own tools
# (apt-ftparchive from apt-utils, gpg):
#
#   release/apt-repo.sh --key KEYID                 # the .debs in dist/
#   release/apt-repo.sh --key KEYID some/*.deb      # these .debs
#
# KEYID names a secret key in gpg's keyring (GNUPGHOME as usual; APT_SIGNING_KEY
# works too). Packages are added to the pool, so a repository rebuilt with a newer
# version keeps the older ones, as mirrors do; apt picks the newest. Output:
#
#   dist/apt/pool/main/e/edge-metrics-exporter/*.deb
#   dist/apt/dists/stable/main/binary-{amd64,arm64,armhf}/Packages(.gz)
#   dist/apt/dists/stable/Release, InRelease (clearsigned), Release.gpg (detached)
#   dist/apt/edge-metrics-exporter.gpg           the public key, for signed-by
#
# Serve dist/apt/ from any web server (or file://); on each device:
#   deb [signed-by=/usr/share/keyrings/edge-metrics-exporter.gpg] https://HOST/apt stable main
set -euo pipefail
cd "$(dirname "$0")/.."

key="${APT_SIGNING_KEY:-}"
debs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --key) key="${2:-}"; shift 2 ;;
        --key=*) key="${1#--key=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "release/apt-repo.sh: unknown option $1" >&2; exit 2 ;;
        *) debs+=("$1"); shift ;;
    esac
done
[ -n "$key" ] || { echo "release/apt-repo.sh: --key KEYID (a gpg secret key) is required" >&2; exit 2; }
for tool in apt-ftparchive gpg; do
    command -v "$tool" >/dev/null || { echo "release/apt-repo.sh: $tool missing (apt-get install apt-utils gnupg)" >&2; exit 1; }
done
gpg --batch --list-secret-keys "$key" >/dev/null 2>&1 \
    || { echo "release/apt-repo.sh: no secret key $key in gpg's keyring" >&2; exit 1; }
if [ ${#debs[@]} -eq 0 ]; then
    shopt -s nullglob
    debs=(dist/edge-metrics-exporter_*.deb)
fi
[ ${#debs[@]} -gt 0 ] || { echo "release/apt-repo.sh: no .deb (run release/build.sh)" >&2; exit 1; }

repo=dist/apt
pool="$repo/pool/main/e/edge-metrics-exporter"
mkdir -p "$pool"
for deb in "${debs[@]}"; do
    dpkg-deb --field "$deb" Package Version Architecture >/dev/null \
        || { echo "release/apt-repo.sh: $deb is not a .deb" >&2; exit 1; }
    cp "$deb" "$pool/"
done

arches=(amd64 arm64 armhf)
release="$(mktemp)"
trap 'rm -f "$release"' EXIT
(
    cd "$repo"
    for arch in "${arches[@]}"; do
        dir="dists/stable/main/binary-$arch"
        mkdir -p "$dir"
        apt-ftparchive --arch "$arch" packages pool >"$dir/Packages"
        gzip -9n -c "$dir/Packages" >"$dir/Packages.gz"
        echo "    $arch: $(grep -c '^Package:' "$dir/Packages" || true) package(s)"
    done
    rm -f dists/stable/Release dists/stable/InRelease dists/stable/Release.gpg
    # Written aside, then moved in: the Release file lists the hashes of what
    # is under dists/stable.
    apt-ftparchive \
        -o APT::FTPArchive::Release::Origin=edge-metrics-exporter \
        -o APT::FTPArchive::Release::Label=edge-metrics-exporter \
        -o APT::FTPArchive::Release::Suite=stable \
        -o APT::FTPArchive::Release::Codename=stable \
        -o "APT::FTPArchive::Release::Architectures=${arches[*]}" \
        -o APT::FTPArchive::Release::Components=main \
        -o "APT::FTPArchive::Release::Description=edge-metrics-exporter packages" \
        release dists/stable >"$release"
)
mv "$release" "$repo/dists/stable/Release"
chmod 0644 "$repo/dists/stable/Release"
gpg --batch --yes --local-user "$key" --clearsign \
    -o "$repo/dists/stable/InRelease" "$repo/dists/stable/Release"
gpg --batch --yes --local-user "$key" --armor --detach-sign \
    -o "$repo/dists/stable/Release.gpg" "$repo/dists/stable/Release"
# The public key as a binary keyring: what apt's signed-by reads.
gpg --batch --yes --export "$key" >"$repo/edge-metrics-exporter.gpg"
echo "==> $repo: $(find "$repo/pool" -name '*.deb' | wc -l) package file(s), signed by $key"
