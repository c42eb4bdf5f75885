#!/usr/bin/env bash
# The floor under the engine's trickle figure: what a bare C receiver (scripts/floor/trickle-rx.c: ppoll, one
# recvmmsg, nothing else, one SO_REUSEPORT socket per thread) costs when `loadgen flood` sends --rate datagrams/s
# for --duration, on this machine, now. Run it next to scripts/bench-idle.sh (same --rate and thread count as the
# engine's readerThreads): the engine cannot cost less at that rate than this line, plus its batches' wake-ups.
# --nap MS measures the other way to take a trickle: after a wake-up that found datagrams, sleep MS and drain again
# (one wake-up per nap rather than per datagram), back to waiting on the socket once a drain finds nothing.
#
# Usage: scripts/bench-trickle-floor.sh [--rate 20] [--duration 20s] [--threads 2] [--nap MS] [--skip-build]
#
# Builds trickle-rx with the system C compiler into a temp dir; loadgen is a release build of the working tree in
# $CARGO_TARGET_DIR (default target/), or LOADGEN_BIN with --skip-build. Everything it starts is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RATE=20
DURATION=20s
THREADS=2
NAP_MS=0
SKIP_BUILD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --nap) NAP_MS=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-trickle-floor: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
DUR_S=$(dur_secs "$DURATION")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$SKIP_BUILD" != 1 ]; then
  cargo build --release -q -p loadgen --bins
fi
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET/release/loadgen}
[ -x "$LOADGEN_BIN" ] || { echo "bench-trickle-floor: missing $LOADGEN_BIN" >&2; exit 1; }

WORK=$(mktemp -d)
RX_PID=""
cleanup() {
  [ -n "$RX_PID" ] && kill "$RX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cc -O2 -pthread -o "$WORK/trickle-rx" "$ROOT/scripts/floor/trickle-rx.c"
PORT=$(free_port udp)
# The window opens at the first datagram; a receiver that never gets one is stopped a minute after the schedule.
timeout --signal=TERM "$(python3 -c "print(int($DUR_S) + 60)")" \
  "$WORK/trickle-rx" "$PORT" "$THREADS" "$DUR_S" "$NAP_MS" > "$WORK/out" 2> "$WORK/err" &
RX_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/err" && break; sleep 0.05; done
grep -q listening "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
# Sends a little longer than the window, which opens at the first datagram.
FLOOD_S=$(python3 -c "print(f'{$DUR_S + 2:.3f}s')")
"$LOADGEN_BIN" flood --target "127.0.0.1:$PORT" --rate "$RATE" --duration "$FLOOD_S" > /dev/null 2>&1
wait "$RX_PID" || { echo "bench-trickle-floor: the receiver got no datagram (or failed)" >&2; cat "$WORK/err" >&2; exit 1; }
RX_PID=""
echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "params: rate=$RATE duration=$DURATION threads=$THREADS nap_ms=$NAP_MS"
cat "$WORK/out"
