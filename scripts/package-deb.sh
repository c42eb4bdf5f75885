#!/usr/bin/env bash
# Builds the Debian package: target/debian/sense-ingest_<version>_<arch>.deb (under $CARGO_TARGET_DIR when set).
#
#   bash scripts/package-deb.sh                 # cargo build --release --locked, then package
#   SENSE_INGEST_RELEASE_BIN=path/to/sense-ingest bash scripts/package-deb.sh   # package this binary instead
#
# Needs cargo (unless SENSE_INGEST_RELEASE_BIN is set), dpkg-deb, dpkg and objdump; runs as any user
# (dpkg-deb --root-owner-group makes every file root:root). The last line of stdout is the package's path.
#
# Contents: /usr/bin/sense-ingest, the hardened unit (/usr/lib/systemd/system/sense-ingest.service), the sysctl
# snippet (/usr/lib/sysctl.d/99-sense-ingest.conf), the example overlay /etc/sense-ingest/overlay.yaml (a
# conffile), the licence files, and the maintainer scripts in packaging/deb/: postinst creates the system user
# `sense-ingest` and /var/lib/sense-ingest (0750), and starts the service only when
# /etc/sense-ingest/butler-sos.yaml exists and systemd runs the machine; postrm purge removes the user and
# /var/lib/sense-ingest.
set -euo pipefail
cd "$(dirname "$0")/.."

name=package-deb
# version, target_dir and bin (SENSE_INGEST_RELEASE_BIN or a release build), checked.
. scripts/release-bin.sh
arch=$(dpkg --print-architecture)

# Depends: from the shared libraries the binary links (objdump -p) and the newest symbol versions it uses.
libc=0
libgcc=0
for lib in $(objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}'); do
  case "$lib" in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*.so.*) libc=1 ;;
    libgcc_s.so.1) libgcc=1 ;;
    *) echo "package-deb: $bin needs $lib; add its Debian package to Depends in this script" >&2; exit 1 ;;
  esac
done
depends=()
if [ "$libc" = 1 ]; then
  glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
  depends+=("libc6 (>= $glibc)")
fi
if [ "$libgcc" = 1 ]; then
  gcc=$(objdump -T "$bin" | { grep -o 'GCC_[0-9][0-9.]*' || true; } | sed 's/^GCC_//' | sort -uV | tail -n 1 | cut -d. -f1,2)
  depends+=("libgcc-s1${gcc:+ (>= $gcc)}")
fi
# useradd, userdel, groupadd, groupdel in the maintainer scripts.
depends+=(passwd)
depends=$(IFS=,; echo "${depends[*]}" | sed 's/,/, /g')

out="$target_dir/debian"
deb="$out/sense-ingest_${version}_${arch}.deb"
stage="$out/sense-ingest_${version}_${arch}"
rm -rf "$stage" "$deb"
mkdir -p "$stage"

# Files. The debug line tables of the release profile are stripped (symbol names stay for backtraces).
install -D -m 0755 "$bin" "$stage/usr/bin/sense-ingest"
strip --strip-debug "$stage/usr/bin/sense-ingest"
install -D -m 0644 packaging/sense-ingest.service "$stage/usr/lib/systemd/system/sense-ingest.service"
install -D -m 0644 packaging/99-sense-ingest.conf "$stage/usr/lib/sysctl.d/99-sense-ingest.conf"
# 0750 from the start; postinst gives it to group sense-ingest (the config holds secrets).
install -d -m 0750 "$stage/etc/sense-ingest"
install -m 0644 packaging/overlay.yaml "$stage/etc/sense-ingest/overlay.yaml"
install -d -m 0755 "$stage/usr/share/doc/sense-ingest"
{
  echo "sense-ingest $version"
  echo "License: MIT (the sense-ingest sources)."
  echo "Third-party licences: /usr/share/doc/sense-ingest/licenses/"
} > "$stage/usr/share/doc/sense-ingest/copyright"
chmod 0644 "$stage/usr/share/doc/sense-ingest/copyright"
install -d -m 0755 "$stage/usr/share/doc/sense-ingest/licenses"
install -m 0644 licenses/* "$stage/usr/share/doc/sense-ingest/licenses/"

# Control files.
install -d -m 0755 "$stage/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
echo /etc/sense-ingest/overlay.yaml > "$stage/DEBIAN/conffiles"
installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sense-ingest
Version: $version
Architecture: $arch
Maintainer: sense-ingest maintainers <sense-ingest@localhost>
Installed-Size: $installed_kib
Depends: $depends
Section: net
Priority: optional
Description: Qlik Sense user events (UDP) to InfluxDB, MQTT and New Relic
 A drop-in replacement for the user-event receiver of Butler SOS: it reads the
 Butler SOS config file and writes the same InfluxDB points, MQTT messages and
 New Relic events, counting every datagram received into exactly one outcome.
 .
 Put your Butler SOS file at /etc/sense-ingest/butler-sos.yaml, then run
 systemctl enable --now sense-ingest.
CONTROL
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"

dpkg-deb --build --root-owner-group "$stage" "$deb" >&2
rm -rf "$stage"
echo "$deb"
