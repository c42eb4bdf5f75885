#!/usr/bin/env bash
# A real farm's load: the engine's CPU and context switches per second while idle, then at a trickle (20 events/s).
#
# Usage: scripts/bench-idle.sh [--backend io_uring|recvmmsg] [--idle 60s] [--rate 20] [--duration 20s]
#                              [--warmup 0s] [--max-age DUR] [--settle 5] [--results DIR] [--skip-build]
#
# One run: `loadgen flood` serves a mock InfluxDB 1.x, the engine starts on a plain Butler SOS file writing to it
# (plus `sense-ingest: {backend, readerThreads: 2, spool on}`, the metrics endpoint on, everything else default),
# waits --settle seconds (start-up work), then the idle window is measured for --idle (nothing is sent), then
# flood sends --rate datagrams/s for --warmup + --duration and the load window is measured from --warmup after the
# first send until flood has its last event (drain wait 1 s). A warm-up leaves out what only the first minutes of
# a long-running engine pay: first touches of the receive ring's buffers and of the slabs (page faults), growing
# buffers. --max-age sets sense-ingest.batch.maxAge (default: the engine's, 200ms). CPU is the sum over every thread of /proc/PID/task/*/schedstat (run time
# in ns, so a 0.01 % figure is not lost in 10 ms clock ticks); context switches the sum of voluntary +
# nonvoluntary switches in /proc/PID/task/*/status. Reports go to --results (summary.txt, flood.json, the
# engine log) and the summary is printed.
#
# Binaries: release builds of the working tree in $CARGO_TARGET_DIR (default target/), or ENGINE_BIN / LOADGEN_BIN
# with --skip-build. Everything it starts is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BACKEND=io_uring
IDLE=60s
RATE=20
DURATION=20s
WARMUP=0s
MAX_AGE=""
SETTLE=5
SKIP_BUILD=0
RESULTS_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --max-age) MAX_AGE=$2; shift 2 ;;
    --settle) SETTLE=$2; shift 2 ;;
    --results) RESULTS_DIR=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-idle: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$BACKEND" in io_uring|recvmmsg) ;; *) echo "bench-idle: --backend must be io_uring or recvmmsg" >&2; exit 2 ;; esac
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
IDLE_S=$(dur_secs "$IDLE")
DUR_S=$(dur_secs "$DURATION")
WARM_S=$(dur_secs "$WARMUP")
FLOOD_DURATION=$(python3 -c "print(f'{$WARM_S + $DUR_S:.3f}s')")

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$SKIP_BUILD" != 1 ]; then
  echo "bench-idle: building sense-ingest and loadgen (release, working tree)"
  cargo build --release -q -p sense-ingest -p loadgen --bins
fi
ENGINE_BIN=${ENGINE_BIN:-$TARGET/release/sense-ingest}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET/release/loadgen}
for b in "$ENGINE_BIN" "$LOADGEN_BIN"; do [ -x "$b" ] || { echo "bench-idle: missing $b" >&2; exit 1; }; done

RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-results/idle-$(date -u +%Y%m%dT%H%M%SZ)-$BACKEND}
mkdir -p "$RESULTS_DIR"
UDP=$(free_port udp)
TCP=$(free_port tcp)
{
  butler_influx_config "$UDP" "$TCP"
  cat <<EOF
  prometheus:
    enable: true
    host: 127.0.0.1
    port: 0
sense-ingest:
  backend: $BACKEND
  readerThreads: 2
  spool:
    enable: true
    dir: $RESULTS_DIR/spool
EOF
  if [ -n "$MAX_AGE" ]; then
    printf '  batch:\n    maxAge: %s\n' "$MAX_AGE"
  fi
} >"$RESULTS_DIR/engine.yaml"

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The flood waits until the idle window is over: settle + idle + a margin for the engine's start.
START_DELAY=$(python3 -c "print(f'{$SETTLE + $IDLE_S + 3:.3f}s')")
FLOOD_T0=$(date +%s.%N)
timeout --foreground --signal=TERM 600 "$LOADGEN_BIN" flood --target "127.0.0.1:$UDP" --rate "$RATE" \
  --duration "$FLOOD_DURATION" --hosts 4 --mock-influx "127.0.0.1:$TCP" --start-delay "$START_DELAY" --drain-wait 1s -q \
  --json "$RESULTS_DIR/flood.json" >"$RESULTS_DIR/flood.txt" 2>"$RESULTS_DIR/flood.log" &
FLOOD=$!
PIDS+=("$FLOOD")
sleep 0.5 # the mock InfluxDB is up before the engine contacts it
NO_COLOR=1 "$ENGINE_BIN" run --config "$RESULTS_DIR/engine.yaml" >"$RESULTS_DIR/engine.out" 2>"$RESULTS_DIR/engine.log" &
ENGINE=$!
PIDS+=("$ENGINE")
for _ in $(seq 1 200); do
  [ "$(grep -c 'listening' "$RESULTS_DIR/engine.log" || true)" -ge 3 ] && break
  kill -0 "$ENGINE" 2>/dev/null || { echo "bench-idle: the engine exited:" >&2; tail "$RESULTS_DIR/engine.log" >&2; exit 1; }
  sleep 0.05
done

{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock)" ] && echo ' (with uncommitted engine changes)')"
  echo "uptime_before: $(uptime)"
  echo "params: backend=$BACKEND idle=$IDLE rate=$RATE duration=$DURATION warmup=$WARMUP max_age=${MAX_AGE:-default} settle=${SETTLE}s"
} >"$RESULTS_DIR/env.txt"

python3 - "$ENGINE" "$FLOOD" "$FLOOD_T0" "$START_DELAY" "$SETTLE" "$IDLE_S" "$RESULTS_DIR" "$WARM_S" <<'PY' | tee "$RESULTS_DIR/summary.txt"
import json, os, sys, time
pid, flood = int(sys.argv[1]), int(sys.argv[2])
flood_t0, start_delay = float(sys.argv[3]), float(sys.argv[4].rstrip("s"))
settle, idle_s, d, warm_s = float(sys.argv[5]), float(sys.argv[6]), sys.argv[7], float(sys.argv[8])

def snap():
    cpu_ns = 0
    switches = 0
    per = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            ns = int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
            st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/task/{t}/status") if ":" in l)
            n = int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
            name = st["Name"].strip()
            cpu_ns += ns
            switches += n
            c, s = per.get(name, (0, 0))
            per[name] = (c + ns, s + n)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return time.monotonic(), cpu_ns, switches, per

# Per thread name: context switches and CPU microseconds in the window.
def window(a, b):
    dt = b[0] - a[0]
    by = {k: (b[3][k][1] - a[3].get(k, (0, 0))[1], (b[3][k][0] - a[3].get(k, (0, 0))[0]) // 1000) for k in b[3]}
    top = ", ".join(f"{k}={n} ({us} us)" for k, (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1]) if n or us)
    return dt, 100.0 * (b[1] - a[1]) / 1e9 / dt, (b[2] - a[2]) / dt, top

print(open(os.path.join(d, "env.txt")).read().rstrip())
time.sleep(settle)
a = snap(); time.sleep(idle_s); b = snap()
dt, cpu, cs, top = window(a, b)
print(f"idle:  {dt:.1f} s, cpu {cpu:.4f} % of one core, {cs:.2f} context switches/s; switches (CPU) by thread: {top or 'none'}")
wait = flood_t0 + start_delay + warm_s - time.time()
if wait > 0:
    time.sleep(wait)
c = snap()
while os.path.exists(f"/proc/{flood}") and open(f"/proc/{flood}/stat").read().split(") ", 1)[1][0] != "Z":
    time.sleep(0.05)
e = snap()
dt, cpu, cs, top = window(c, e)
f = json.load(open(os.path.join(d, "flood.json"))) if os.path.exists(os.path.join(d, "flood.json")) else None
if f:
    s = f["sinks"][0]
    lat = s["latency_us"]
    print(f"load:  {f['rate_per_s']}/s for {f.get('duration_s', '?')} s (warm-up {warm_s:g} s), {dt:.1f} s window, cpu {cpu:.4f} % of one core, "
          f"{cs:.2f} context switches/s; sent {f['sent']}, lost {s['lost']}, latency p50 {lat['p50_us']/1000:.1f} ms "
          f"p99 {lat['p99_us']/1000:.1f} ms; switches (CPU) by thread: {top or 'none'}")
else:
    print(f"load:  {dt:.1f} s window, cpu {cpu:.4f} %, {cs:.2f} context switches/s (no flood report); by thread: {top}")
print(f"uptime_after: {os.popen('uptime').read().strip()}")
PY
