#!/usr/bin/env bash
# End-to-end benchmark of sense-ingest against the raw receive baseline, in one invocation, on loopback only.
#
#   scripts/bench-e2e.sh [--rate N] [--duration DUR] [--readers N] [--hosts H] [--tick DUR] [--max-age DUR]
#                        [--backends] [--engine-src head|worktree] [--results DIR] [--skip-build]
#
# Phases, all at the same offered rate, duration, host count and tick:
#   a. raw baseline: `loadgen drain` (recvmmsg, --readers threads) fed by `loadgen flood`
#      -> drain CPU ns/datagram, kernel drops, loss (sent - received).
#   b. the engine with `backend: recvmmsg`, c. with `backend: io_uring`, each fed by
#      `loadgen flood --mock-influx ... --measure-pid <engine pid>`
#      -> exact loss at the mock, end-to-end latency p50/p90/p99/p99.9/max, engine CPU ns/event, RSS; then SIGTERM,
#      which must exit 0.
#   d. (--backends) the raw drain with each backend: recvmmsg, io_uring (multishot), tokio-uring (recv_from), and
#      io_uring multishot with SINGLE_ISSUER|DEFER_TASKRUN (as the engine's io_uring reader sets its ring up).
# Prints a summary (with engine CPU/event / drain CPU/datagram per backend) and keeps every JSON report and log in
# the results dir (default /tmp/bench-results/<UTC timestamp>).
#
# Options (or the environment variable in brackets):
#   --rate N          datagrams/s offered [RATE, default 10000]
#   --duration DUR    send schedule per phase, e.g. 10s [DURATION, default 10s]
#   --readers N       engine readerThreads and drain --threads [READERS, default 2]
#   --hosts H         simulated proxy hosts = source sockets (flows) [HOSTS, default 4]
#   --tick DUR        flood --tick (0s = exact pacing) [TICK, default 0s]
#   --max-age DUR     engine batch.maxAge (flush interval) [MAX_AGE, default: the engine's default]
#   --drain-wait DUR  flood --drain-wait [DRAIN_WAIT, default 5s]
#   --backends        also run phase d [BACKENDS=1]
#   --engine-src S    head: build the engine from a clean `git archive HEAD` (reproducible, ignores uncommitted
#                     engine edits); worktree: build it from the working tree [ENGINE_SRC, default head]
#   --results DIR     where reports go [RESULTS_DIR]
#   --nice N          run drain, engine and flood at this nice level, e.g. -19 so that other work on the machine
#                     (compiles) gets only what is left over [NICE, default 0 = unchanged]
#   --wait-quiet S    before each phase, wait up to S seconds for the machine to be quiet (other load < 15% of
#                     the CPUs over 2 s); the load seen is recorded in busy.txt either way [WAIT_QUIET, default 0]
#   --skip-build      use the binaries already built (ENGINE_BIN / LOADGEN_BIN override the paths)
#
# Everything it starts is stopped by pid on exit (also on Ctrl-C). Each phase is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RATE=${RATE:-10000}
DURATION=${DURATION:-10s}
READERS=${READERS:-2}
HOSTS=${HOSTS:-4}
TICK=${TICK:-0s}
MAX_AGE=${MAX_AGE:-}
DRAIN_WAIT=${DRAIN_WAIT:-5s}
BACKENDS=${BACKENDS:-0}
ENGINE_SRC=${ENGINE_SRC:-head}
SKIP_BUILD=${SKIP_BUILD:-0}
RESULTS_DIR=${RESULTS_DIR:-}
WAIT_QUIET=${WAIT_QUIET:-0}
NICE=${NICE:-0}

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --readers) READERS=$2; shift 2 ;;
    --hosts) HOSTS=$2; shift 2 ;;
    --tick) TICK=$2; shift 2 ;;
    --max-age) MAX_AGE=$2; shift 2 ;;
    --drain-wait) DRAIN_WAIT=$2; shift 2 ;;
    --backends) BACKENDS=1; shift ;;
    --engine-src) ENGINE_SRC=$2; shift 2 ;;
    --results) RESULTS_DIR=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-e2e: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$ENGINE_SRC" in head|worktree) ;; *) echo "bench-e2e: --engine-src must be head or worktree" >&2; exit 2 ;; esac
[[ "$RATE" =~ ^[1-9][0-9]*$ ]] || { echo "bench-e2e: --rate must be a positive integer" >&2; exit 2; }

# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
# Whole seconds (rounded down, plus one) in a loadgen duration, for the timeouts below.
dur_s() { python3 -c 'import sys; print(int(float(sys.argv[1])) + 1)' "$(dur_secs "$1")"; }
DUR_S=$(dur_s "$DURATION")
WAIT_S=$(dur_s "$DRAIN_WAIT")

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR=${RESULTS_DIR:-/tmp/bench-results/$STAMP}
mkdir -p "$RESULTS_DIR"
echo "bench-e2e: results in $RESULTS_DIR"

# ---- processes we started (stopped by pid on exit) ----
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null || true
  done
  sleep 0.5
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build ----
HEAD_SHA=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)
if [ "$SKIP_BUILD" != 1 ]; then
  echo "bench-e2e: building loadgen (release, working tree)"
  cargo build --release -q -p loadgen
  if [ "$ENGINE_SRC" = head ]; then
    SRC=/tmp/bench-build/src-$HEAD_SHA
    if [ ! -d "$SRC" ]; then
      mkdir -p "$SRC.tmp" && git archive HEAD | tar -x -C "$SRC.tmp" && mv "$SRC.tmp" "$SRC"
    fi
    # The workspace's Cargo.lock must match every member: use the working tree's loadgen (the measuring tool,
    # built above from the same files); the engine itself is exactly HEAD.
    rm -rf "$SRC/loadgen" && cp -r loadgen "$SRC/loadgen"
    echo "bench-e2e: building sense-ingest (release) from commit $HEAD_SHA in $SRC"
    (cd "$SRC" && CARGO_TARGET_DIR=/tmp/bench-build/target cargo build --release -q --locked --bin sense-ingest)
    echo "$HEAD_SHA (clean export of HEAD)" >/tmp/bench-build/target/release/sense-ingest.source
  else
    echo "bench-e2e: building sense-ingest (release, working tree${DIRTY:+, with uncommitted changes})"
    cargo build --release -q --bin sense-ingest
    echo "$HEAD_SHA (working tree${DIRTY:+ with uncommitted engine changes})" >target/release/sense-ingest.source
  fi
fi
ENGINE_BIN=${ENGINE_BIN:-$( [ "$ENGINE_SRC" = head ] && echo /tmp/bench-build/target/release/sense-ingest || echo "$ROOT/target/release/sense-ingest")}
LOADGEN_BIN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
for b in "$ENGINE_BIN" "$LOADGEN_BIN"; do [ -x "$b" ] || { echo "bench-e2e: missing $b" >&2; exit 1; }; done

{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: engine $(cat "$ENGINE_BIN.source" 2>/dev/null || echo "unknown: $ENGINE_BIN was not built by this script"); HEAD is $HEAD_SHA"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cpus"
  echo "kernel: $(uname -r)"
  echo "uptime_before: $(uptime)"
  echo "params: rate=$RATE duration=$DURATION readers=$READERS hosts=$HOSTS tick=$TICK max_age=${MAX_AGE:-default} drain_wait=$DRAIN_WAIT nice=$NICE"
} > "$RESULTS_DIR/env.txt"
sed -n "1,3p" "$RESULTS_DIR/env.txt"

# Every measured process runs under `nice -n $NICE` (a no-op at 0).
NICE_CMD=(nice -n "$NICE")
FLOOD_COMMON=(--rate "$RATE" --duration "$DURATION" --hosts "$HOSTS" --tick "$TICK" -q)

# Waits until FILE has COUNT lines matching PATTERN, or fails after SECONDS (or when PID died).
wait_for_lines() {
  local file=$1 pattern=$2 count=$3 seconds=$4 pid=$5
  local end=$((SECONDS + seconds))
  local n
  while n=$(grep -c -- "$pattern" "$file" 2>/dev/null || true); [ "${n:-0}" -lt "$count" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "bench-e2e: process $pid exited early; log $file:" >&2; tail -20 "$file" >&2; return 1; }
    [ $SECONDS -lt $end ] || { echo "bench-e2e: no '$pattern' in $file after ${seconds}s" >&2; tail -20 "$file" >&2; return 1; }
    sleep 0.05
  done
}

# (The loadgen commands run under `timeout --foreground`: a plain `timeout` passes a TERM on to the command *and*
# to its own process group, and loadgen takes a second signal as "exit at once with 130".)
# Stops PID (a child of this shell) with SIGTERM and waits up to SECONDS; sets STOP_RC to its exit status
# (KILLED if it had to be killed).
stop_pid() {
  local pid=$1 seconds=$2 end
  kill -TERM "$pid" 2>/dev/null || true
  end=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    STOP_RC=KILLED
    return
  fi
  STOP_RC=0
  wait "$pid" || STOP_RC=$?
}

# Percent of all CPUs busy over 2 s (from /proc/stat).
cpu_busy_pct() { python3 -c '
import time
def snap():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f), idle
t0, i0 = snap(); time.sleep(2); t1, i1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0))))'; }

# Before phase NAME: waits up to WAIT_QUIET seconds for < 15% busy; records what it saw in busy.txt.
quiet_gate() {
  local name=$1 end busy
  end=$((SECONDS + WAIT_QUIET))
  busy=$(cpu_busy_pct)
  while [ "$busy" -ge 15 ] && [ $SECONDS -lt $end ]; do
    sleep 3
    busy=$(cpu_busy_pct)
  done
  echo "$name busy_before_pct=$busy loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS_DIR/busy.txt"
  [ "$busy" -lt 15 ] || echo "bench-e2e: [$name] WARNING: machine is ${busy}% busy with other work; results will be noisy" >&2
}

# Raw drain with BACKEND (and extra drain options) at RATE; reports NAME-drain.json and NAME-flood.json.
run_drain() {
  local name=$1 backend=$2 port pid
  shift 2
  quiet_gate "$name"
  port=$(free_port udp)
  echo "bench-e2e: [$name] loadgen drain --backend $backend --threads $READERS <- flood $RATE/s x $DURATION"
  "${NICE_CMD[@]}" timeout --foreground --signal=TERM $((DUR_S + 60)) "$LOADGEN_BIN" drain --listen "127.0.0.1:$port" --threads "$READERS" \
    --backend "$backend" "$@" --json "$RESULTS_DIR/$name-drain.json" >"$RESULTS_DIR/$name-drain.txt" 2>"$RESULTS_DIR/$name-drain.log" &
  pid=$!
  PIDS+=("$pid")
  wait_for_lines "$RESULTS_DIR/$name-drain.log" "drain listening" 1 10 "$pid"
  "${NICE_CMD[@]}" timeout --foreground --signal=TERM $((DUR_S + 30)) "$LOADGEN_BIN" flood --target "127.0.0.1:$port" "${FLOOD_COMMON[@]}" \
    --json "$RESULTS_DIR/$name-flood.json" >"$RESULTS_DIR/$name-flood.txt" 2>"$RESULTS_DIR/$name-flood.log"
  sleep 1 # the receive side catches up (drops are counted by the kernel, not by waiting)
  stop_pid "$pid" 10
  [ "$STOP_RC" = 0 ] || { echo "bench-e2e: [$name] drain exited $STOP_RC" >&2; return 1; }
  grep -h "fall" "$RESULTS_DIR/$name-drain.log" || true
}

# The engine with BACKEND, fed by flood with the mock InfluxDB; reports NAME-flood.json, NAME-engine.log.
run_engine() {
  local name=$1 backend=$2 udp tcp cfg pid
  quiet_gate "$name"
  udp=$(free_port udp)
  tcp=$(free_port tcp)
  cfg="$RESULTS_DIR/$name.yaml"
  {
    butler_influx_config "$udp" "$tcp"
    cat <<EOF
sense-ingest:
  backend: $backend
  readerThreads: $READERS
EOF
  } >"$cfg"
  if [ -n "$MAX_AGE" ]; then printf '  batch:\n    maxAge: %s\n' "$MAX_AGE" >>"$cfg"; fi
  echo "bench-e2e: [$name] sense-ingest backend=$backend readerThreads=$READERS <- flood $RATE/s x $DURATION (mock InfluxDB)"
  NO_COLOR=1 "${NICE_CMD[@]}" "$ENGINE_BIN" run --config "$cfg" >"$RESULTS_DIR/$name-engine.out" 2>"$RESULTS_DIR/$name-engine.log" &
  pid=$!
  PIDS+=("$pid")
  wait_for_lines "$RESULTS_DIR/$name-engine.log" "listening" "$READERS" 20 "$pid"
  grep -h "listening" "$RESULTS_DIR/$name-engine.log" | sed 's/\x1b\[[0-9;]*m//g' | head -"$READERS" | sed 's/^/    /'
  if [ "$backend" = io_uring ] && ! grep -q 'io_uring' <(grep "listening" "$RESULTS_DIR/$name-engine.log"); then
    echo "bench-e2e: [$name] WARNING: the engine did not start io_uring readers (see $name-engine.log)" >&2
  fi
  "${NICE_CMD[@]}" timeout --foreground --signal=TERM $((DUR_S + WAIT_S + 40)) "$LOADGEN_BIN" flood --target "127.0.0.1:$udp" "${FLOOD_COMMON[@]}" \
    --mock-influx "127.0.0.1:$tcp" --start-delay 1s --drain-wait "$DRAIN_WAIT" --measure-pid "$pid" \
    --json "$RESULTS_DIR/$name-flood.json" >"$RESULTS_DIR/$name-flood.txt" 2>"$RESULTS_DIR/$name-flood.log"
  stop_pid "$pid" 20
  echo "$STOP_RC" >"$RESULTS_DIR/$name-engine.exit"
  [ "$STOP_RC" = 0 ] || echo "bench-e2e: [$name] WARNING: the engine exited $STOP_RC after SIGTERM (expected 0)" >&2
}

run_drain a-drain recvmmsg
run_engine b-engine-recvmmsg recvmmsg
run_engine c-engine-io_uring io_uring
if [ "$BACKENDS" = 1 ]; then
  run_drain d-drain-recvmmsg recvmmsg
  run_drain d-drain-io_uring io_uring
  run_drain d-drain-tokio-uring tokio-uring
  run_drain d-drain-io_uring-defer io_uring --uring-defer-taskrun
fi
echo "uptime_after: $(uptime)" >>"$RESULTS_DIR/env.txt"

# ---- summary ----
python3 - "$RESULTS_DIR" <<'PY' | tee "$RESULTS_DIR/summary.txt"
import json, os, sys
d = sys.argv[1]
def load(name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None
def ms(us): return f"{us/1000:.3f}"
print(open(os.path.join(d, "env.txt")).read().rstrip())
if os.path.exists(os.path.join(d, "busy.txt")):
    print("other load before each phase (% of all CPUs):", "; ".join(l.split(" loadavg")[0] for l in open(os.path.join(d, "busy.txt")).read().split("\n") if l))
print()
base = load("a-drain-drain.json")
base_flood = load("a-drain-flood.json")
base_ns = base and base.get("cpu_ns_per_datagram")
print("raw receive (loadgen drain), same rate/hosts/tick:")
print(f"  {'run':<24} {'backend':<12} {'sent':>10} {'received':>10} {'lost':>8} {'k.drops':>8} {'cpu ns/dgram':>12} {'dgrams/wake':>11}")
rows = [("a-drain", "a-drain")] + [(f"d-drain-{b}", f"d-drain-{b}") for b in ("recvmmsg", "io_uring", "tokio-uring", "io_uring-defer")]
for label, name in rows:
    r, f = load(f"{name}-drain.json"), load(f"{name}-flood.json")
    if not r or not f: continue
    lost = f["sent"] - r["received"]
    be = r["backend"] + ("" if r["backend"] == r["backend_requested"] else f" (asked {r['backend_requested']})")
    print(f"  {label:<24} {be:<12} {f['sent']:>10} {r['received']:>10} {lost:>8} {r['kernel_drops']!s:>8} {r['cpu_ns_per_datagram']!s:>12} {r['avg_batch']:>11}")
print()
print("engine (sense-ingest -> mock InfluxDB v1), exact loss at the mock, latency = intended send -> sink receipt (ms):")
print(f"  {'backend':<10} {'sent':>10} {'lost':>7} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8} {'cpu ns/ev':>9} {'/drain':>6} {'RSS MiB':>7} {'HWM MiB':>7} {'exit':>4} {'lag p99':>8} {'eng cpu s':>9} {'gen cpu s':>9}")
for b in ("recvmmsg", "io_uring"):
    f = load(f"{'b' if b == 'recvmmsg' else 'c'}-engine-{b}-flood.json")
    if not f: continue
    s = f["sinks"][0]; l = s["latency_us"]
    ns = f.get("engine_cpu_ns_per_event")
    ratio = f"{ns/base_ns:.2f}" if ns and base_ns else "n/a"
    ex = open(os.path.join(d, f"{'b' if b == 'recvmmsg' else 'c'}-engine-{b}-engine.exit")).read().strip()
    rss = f["engine_rss_kib"] / 1024 if f.get("engine_rss_kib") else float("nan")
    hwm = f["engine_hwm_kib"] / 1024 if f.get("engine_hwm_kib") else float("nan")
    print(f"  {b:<10} {f['sent']:>10} {s['lost']:>7} {ms(l['p50_us']):>8} {ms(l['p90_us']):>8} {ms(l['p99_us']):>8} {ms(l['p999_us']):>8} {ms(l['max_us']):>8} {ns!s:>9} {ratio:>6} {rss:>7.1f} {hwm:>7.1f} {ex:>4} {ms(f['send_lag_us']['p99_us']):>8} {f.get('engine_cpu_s')!s:>9} {f.get('loadgen_cpu_s')!s:>9}")
print()
print(f"/drain = engine CPU per event / raw recvmmsg drain CPU per datagram (run a-drain: {base_ns} ns) in this run.")
print("lag p99 = flood send lag (intended send -> sendmmsg returned); eng/gen cpu s = engine / loadgen (sender + mock)")
print("CPU seconds from the first send to the end of the drain wait (2 cores = 2 CPU-s per wall second).")
if base_flood:
    print(f"sender: achieved {base_flood['achieved_rate_per_s']:.0f}/s of {base_flood['rate_per_s']}/s in the drain phase, send lag p99 {ms(base_flood['send_lag_us']['p99_us'])} ms")
PY
