#!/usr/bin/env bash
# Memory during a destination outage: the engine's RSS while its InfluxDB is unreachable, with the disk spool on.
#
#   scripts/bench-outage.sh [--rate N] [--duration DUR] [--engine BIN] [--loadgen BIN]
#
# Starts the engine (io_uring, 2 readers) with InfluxDB v1 pointed at a loopback port nothing listens on and the
# spool in a temp dir, floods it with `loadgen flood` (no mock: every event has to wait), prints RSS and the
# spool's size on disk every 2 s, then stops the engine with SIGTERM (exit status printed) and shows its
# spool/summary lines. Loopback only. Defaults: 10000/s for 12s, target/release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=10000
DURATION=12s
ENGINE=target/release/sense-ingest
LOADGEN=target/release/loadgen
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --engine) ENGINE=$2; shift 2 ;;
    --loadgen) LOADGEN=$2; shift 2 ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
for b in "$ENGINE" "$LOADGEN"; do [ -x "$b" ] || { echo "bench-outage: missing $b (cargo build --release --workspace)" >&2; exit 1; }; done
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
DIR=$(mktemp -d /tmp/bench-outage.XXXXXX)
UDP=$(free_port udp)
DEAD=$(free_port tcp) # bound and released: nothing listens there during the run
{
  butler_influx_config "$UDP" "$DEAD"
  cat <<YAML
sense-ingest:
  backend: io_uring
  readerThreads: 2
  spool:
    dir: $DIR/spool
YAML
} >"$DIR/cfg.yaml"
NO_COLOR=1 "$ENGINE" run --config "$DIR/cfg.yaml" >"$DIR/engine.out" 2>"$DIR/engine.log" &
EP=$!
trap 'kill $EP 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q listening "$DIR/engine.log" && break; sleep 0.1; done
echo "bench-outage: engine pid $EP, InfluxDB at 127.0.0.1:$DEAD (down), $RATE/s for $DURATION; files in $DIR"
"$LOADGEN" flood --target "127.0.0.1:$UDP" --rate "$RATE" --duration "$DURATION" --hosts 4 -q --start-delay 1s \
  --drain-wait 1s >"$DIR/flood.txt" 2>&1 &
FP=$!
t=0
while kill -0 $FP 2>/dev/null; do
  sleep 2; t=$((t + 2))
  echo "  t=${t}s rss_kib=$(awk '/VmRSS/{print $2}' /proc/$EP/status) hwm_kib=$(awk '/VmHWM/{print $2}' /proc/$EP/status) spool=$(du -sh "$DIR/spool" | cut -f1)"
done
kill -TERM $EP
set +e; wait $EP; rc=$?; set -e
trap - EXIT
echo "bench-outage: engine exited $rc after SIGTERM"
grep -E "spool|kind=\"final\"" "$DIR/engine.log" | grep -v "sender totals" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220
