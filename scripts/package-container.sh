#!/usr/bin/env bash
# Builds the container image localhost/sense-ingest:latest with podman, from a prebuilt release binary.
#
#   bash scripts/package-container.sh                 # cargo build --release --locked, then build the image
#   SENSE_INGEST_RELEASE_BIN=path/to/sense-ingest bash scripts/package-container.sh   # use this binary instead
#   SENSE_INGEST_IMAGE=localhost/sense-ingest:test bash scripts/package-container.sh  # another name (tests)
#
# Needs root, podman, runc and (only when the base image is missing) debootstrap. No registry is needed: the base
# image localhost/debian-bookworm-minbase is made here when missing, with `debootstrap --variant=minbase bookworm`
# from the Debian mirror this machine's apt uses, and `podman import`; it is kept for the next build (remove it
# with `podman rmi localhost/debian-bookworm-minbase`). The image itself is packaging/Dockerfile, built from a
# context folder holding only the binary, the licences and packaging/container.yaml (see the Dockerfile for the
# same with Docker). Containers run with `--runtime runc` (crun refuses hosts with hybrid cgroups).
# The last line of stdout is the image's name.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SENSE_INGEST_IMAGE:-localhost/sense-ingest:latest}
base=localhost/debian-bookworm-minbase
name=package-container
for tool in podman runc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$name: needs $tool (Debian package $tool)" >&2; exit 1; }
done
# version, target_dir and bin (SENSE_INGEST_RELEASE_BIN or a release build), checked.
. scripts/release-bin.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Debian mirror apt uses here (deb822 .sources or one-line .list), for a suite named bookworm.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; suites = ""; comps = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites = " " $i " " }
          if ($i ~ /^Components:/) { comps = " " $i " " }
        }
        if (suites ~ /[ \t]bookworm[ \t]/ && comps ~ /[ \t]main[ \t]/) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
  done
}

if ! podman image exists "$base"; then
  command -v debootstrap >/dev/null 2>&1 || { echo "$name: needs debootstrap to make $base" >&2; exit 1; }
  mirror=$(debian_mirror | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "package-container: making $base with debootstrap from $mirror" >&2
  # ca-certificates: the system CA bundle that TLS to MQTT, InfluxDB and New Relic uses without a caFile.
  debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$mirror" >&2
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
  tar -C "$work/rootfs" --numeric-owner -c . | podman import --message "debootstrap --variant=minbase bookworm" - "$base" >&2
  rm -rf "$work/rootfs"
fi

mkdir -p "$work/context"
install -m 0755 "$bin" "$work/context/sense-ingest"
strip --strip-debug "$work/context/sense-ingest"
cp -r licenses "$work/context/licenses"
install -m 0644 packaging/container.yaml "$work/context/container.yaml"
# --format docker: the OCI image format has no HEALTHCHECK.
podman build --format docker --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host \
  --build-arg "BASE=$base" --label "org.opencontainers.image.version=$version" \
  -f packaging/Dockerfile -t "$image" "$work/context" >&2
echo "$image"
