#!/usr/bin/env bash
# Herald side by side with nats-server (WebSocket listener) and Socket.IO 4, in one run.
#
#   bench/compare.sh            full run (about 6 minutes after the build): writes the section of BENCHMARKS.md
#                               between <!-- compare:begin --> and <!-- compare:end -->, and
#                               bench/compare.svg
#   bench/compare.sh --quick    smoke run (about 2 minutes after the build): same scenarios, shorter and smaller;
#                               writes target/bench-compare/BENCHMARKS.md instead
#
# Installs what is missing (nats-server from apt, socket.io from npm into bench/peers/), builds
# herald --release, then for each server and each scenario: starts the server alone on core 1
# (taskset -c 1), runs `herald-bench SCENARIO` on core 0 against it, and stops it. A fresh server
# per scenario keeps one scenario's leftovers (buffers, allocator caches) out of the next, which
# matters most for the idle-memory figure. Raw results: target/bench-compare/*.json.
#
# Environment: HERALD_BENCH_PORT (default 7400); nats uses 9222 (bench/peers/nats-ws.conf) and
# Socket.IO 9300. Stops every process it started, also on Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PEERS="$ROOT/bench/peers"
OUT="$ROOT/target/bench-compare"
BIN="$ROOT/target/release/herald"
BENCH="$ROOT/target/release/herald-bench"
HERALD_PORT="${HERALD_BENCH_PORT:-7400}"
NATS_PORT=9222
SIO_PORT=9300
export DEBIAN_FRONTEND=noninteractive

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [[ $QUICK == 1 ]]; then
  DURATION=2s; LAT_DURATION=3s; WARMUP=1s; CONNECTIONS=1000; DRAIN=3s
else
  DURATION=8s; LAT_DURATION=10s; WARMUP=2s; CONNECTIONS=10000; DRAIN=5s
fi
LAT_RATE=500000      # deliveries/s for Herald and NATS (the goal's figure)
SIO_LAT_RATE=50000   # Socket.IO peaks near 100k/s on one core: half of that, not 5x over

log() { printf '\n== %s\n' "$*"; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- installs
APT_UPDATED=0
apt_install() {
  local sudo=()
  [[ $EUID -ne 0 ]] && sudo=(sudo)
  if [[ $APT_UPDATED == 0 ]]; then
    "${sudo[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}
command -v nats-server >/dev/null || { log "installing nats-server (apt)"; apt_install nats-server; }
command -v node >/dev/null || { log "installing node and npm (apt)"; apt_install nodejs npm; }
command -v taskset >/dev/null || apt_install util-linux
if [[ ! -f "$PEERS/node_modules/socket.io/package.json" ]]; then
  log "installing socket.io (npm, into bench/peers/)"
  (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
fi

log "building herald --release"
cargo build --release --quiet -p herald -p herald-bench --bins

# Both processes hold many sockets in the idle scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < CONNECTIONS + 1000 )); then
  CONNECTIONS=$(( $(ulimit -n) - 1000 ))
  echo "open-file limit $(ulimit -n): idle scenario uses $CONNECTIONS connections"
fi

for port in "$HERALD_PORT" "$NATS_PORT" "$SIO_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use: stop what listens there (or set HERALD_BENCH_PORT)"
  fi
done

rm -rf "$OUT"
mkdir -p "$OUT"

# ---------------------------------------------------------------- servers
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_server TARGET: starts it on core 1, sets SERVER_PID and URL.
start_server() {
  local target=$1 logf="$OUT/$1.server.log"
  case "$target" in
    herald)
      RUST_LOG=warn taskset -c 1 "$BIN" --listen "127.0.0.1:$HERALD_PORT" >>"$logf" 2>&1 &
      SERVER_PID=$!; URL="ws://127.0.0.1:$HERALD_PORT/ws"; wait_port "$HERALD_PORT" ;;
    nats)
      taskset -c 1 nats-server -c "$PEERS/nats-ws.conf" >>"$logf" 2>&1 &
      SERVER_PID=$!; URL="ws://127.0.0.1:$NATS_PORT"; wait_port "$NATS_PORT" ;;
    socketio)
      (cd "$PEERS" && PORT=$SIO_PORT exec taskset -c 1 node socketio-server.mjs) >>"$logf" 2>&1 &
      SERVER_PID=$!; URL="ws://127.0.0.1:$SIO_PORT/socket.io/?EIO=4&transport=websocket"
      wait_port "$SIO_PORT" ;;
  esac || die "$target did not start; see $logf"
}

FAILED=()
RUNS=0
# run TARGET SCENARIO [bench options]
run() {
  local target=$1 scenario=$2; shift 2
  RUNS=$((RUNS + 1))
  start_server "$target"
  log "$target $scenario"
  if ! taskset -c 0 "$BENCH" "$scenario" --target "$target" --url "$URL" \
      --server-pid "$SERVER_PID" --json "$OUT/$(printf %02d "$RUNS")-$target-$scenario.json" "$@" \
      2>&1 | tee -a "$OUT/bench.log"; then
    FAILED+=("$target $scenario")
  fi
  stop_server
}

# ---------------------------------------------------------------- the run
STARTED=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for target in herald nats socketio; do
  run "$target" fanout --duration "$DURATION" --drain "$DRAIN"
  run "$target" fanin --duration "$DURATION" --drain "$DRAIN"
  if [[ $target != socketio ]]; then   # rooms have no wildcards
    run "$target" topics --duration "$DURATION" --drain "$DRAIN"
  fi
  rate=$LAT_RATE
  [[ $target == socketio ]] && rate=$SIO_LAT_RATE
  run "$target" latency --rate "$rate" --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
  run "$target" idle --connections "$CONNECTIONS"
  if [[ $target != socketio ]]; then   # the table of loads: Herald and NATS
    run "$target" latency --label "1M/s" --rate 1000000 --subscribers 100 \
      --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
    run "$target" latency --label "200k/s" --rate 200000 --subscribers 100 \
      --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
    run "$target" latency --label "100k pub/s" --rate 1000000 --subscribers 10 \
      --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
    run "$target" latency --label "quiet" --rate 1000 --subscribers 10 \
      --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
    run "$target" overload --label "overload" --duration "$DURATION" --drain "$DRAIN"
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the report
if [[ $QUICK == 1 ]]; then
  MD="$OUT/BENCHMARKS.md"; SVG="$OUT/compare.svg"; CMD="bench/compare.sh --quick"
else
  MD="$ROOT/BENCHMARKS.md"; SVG="$ROOT/bench/compare.svg"; CMD="bench/compare.sh"
fi
SIO_VERSION=$(node -p "require('$PEERS/node_modules/socket.io/package.json').version")
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
NOTES=()
[[ $QUICK == 0 && -f "$ROOT/bench/notes.md" ]] && NOTES=(--notes "$ROOT/bench/notes.md")
"$BENCH" report "$OUT"/*-*.json --out "$MD" --svg "$SVG" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --command "$CMD" \
  --fact "Servers: herald $REV (release build), $(nats-server --version), socket.io $SIO_VERSION on node $(node --version)" \
  --fact "Load average (1/5/15 min) at start $LOAD_BEFORE, at end $LOAD_AFTER: other work on the machine makes figures noisy; compare ratios within one run" \
  --fact "Runs: throughput $DURATION each, closed loop with 512 messages in flight per subscriber; latency $LAT_DURATION at a fixed rate after $WARMUP warm-up; overload $DURATION flat out; a fresh server per run" \
  "${NOTES[@]}"

log "done in $(( SECONDS - STARTED )) s: $MD, $SVG; raw results in $OUT"
if (( ${#FAILED[@]} )); then
  echo "failed runs: ${FAILED[*]}" >&2
  exit 1
fi
