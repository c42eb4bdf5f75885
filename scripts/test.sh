#!/usr/bin/env bash
# Installs what the tests need, then runs every test of the workspace.
#
# The integration tests start real servers as child processes on free loopback ports in temp dirs:
# InfluxDB 1.x (`influxd`, Debian package `influxdb`), Mosquitto (`mosquitto`) and Prometheus (`prometheus`, with
# `promtool`). The container test builds and runs the image with `podman`, `runc` and `debootstrap` (for the local
# base image). This script installs those packages when they are missing (as root, or through sudo), and keeps the
# Prometheus package's own service from running: the tests start their own. Nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/influxd ] || command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# openssl makes the MQTT TLS test's certificates (present on Debian images, installed if not).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
# The container tools are installed with their recommended packages (as tested here).
containers=()
command -v podman >/dev/null 2>&1 || containers+=(podman)
[ -x /usr/sbin/runc ] || command -v runc >/dev/null 2>&1 || containers+=(runc)
[ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null 2>&1 || containers+=(debootstrap)
if [ $((${#missing[@]} + ${#containers[@]})) -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]} ${containers[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # No service of these packages starts during the install (policy-rc.d answers "not allowed"), unless the
  # machine has its own policy-rc.d already.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 0755 "$policy"
  fi
  status=0
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      status=$?
  fi
  if [ "$status" -eq 0 ] && [ ${#containers[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${containers[@]}" >/dev/null || status=$?
  fi
  [ -z "$policy" ] || $sudo rm -f "$policy"
  [ "$status" -eq 0 ] || exit "$status"
fi

# The Debian package of Prometheus enables (and, under systemd, would start) its own service on port 9090.
if [ -x /usr/bin/prometheus ] && command -v systemctl >/dev/null 2>&1 &&
  systemctl is-enabled --quiet prometheus 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    $sudo systemctl disable prometheus >/dev/null 2>&1 || true
  fi
fi

# The API docs build without a warning (every public item documented, no broken link).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

# Every test binary runs even when an earlier one fails (--no-fail-fast); the last line sums them all.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
read -r passed failed ignored < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) {
    if ($(i + 1) ~ /^passed/) p += $i
    if ($(i + 1) ~ /^failed/) f += $i
    if ($(i + 1) ~ /^ignored/) g += $i
  } } END { print p + 0, f + 0, g + 0 }' "$log")
if [ "$status" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "PASS: ${passed} passed, 0 failed, ${ignored} skipped"
else
  echo "FAIL: ${passed} passed, ${failed} failed, ${ignored} skipped (cargo exit status ${status})"
  exit 1
fi
