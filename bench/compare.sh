#!/usr/bin/env bash
# Herald side by side with nats-server (WebSocket listener) and Socket.IO 4, in one run.
#
#   bench/compare.sh            full run (about 6 minutes after the build): writes the section of BENCHMARKS.md
#                               between <!-- compare:begin --> and <!-- compare:end -->, and
#                               bench/compare.svg
#   bench/compare.sh --quick    smoke run (about 2 minutes after the build): same scenarios, shorter and smaller;
#                               writes target/bench-compare/BENCHMARKS.md instead
#   COMPARE_ONLY=backend bench/compare.sh [--quick]
#                               only the backend scenarios (Herald's publish proxy and webhooks; no
#                               peer has these features, so they run against Herald alone in every
#                               mode); writes target/bench-compare/BENCHMARKS.md, never the repository's
#   COMPARE_ONLY=compression bench/compare.sh [--quick]
#                               only permessage-deflate: fan-out of 1 KiB application-like JSON to 100
#                               subscribers, Herald uncompressed and with deflate (clients inflating
#                               every message, then 1 in 256), nats-server without and with
#                               `compression: true`; writes target/bench-compare/BENCHMARKS.md
#
# Installs what is missing (nats-server from apt, socket.io from npm into bench/peers/), builds
# herald --release, then for each server and each scenario: starts the server alone on core 1
# (taskset -c 1), runs `herald-bench SCENARIO` on core 0 against it, and stops it. A fresh server
# per scenario keeps one scenario's leftovers (buffers, allocator caches) out of the next, which
# matters most for the idle-memory figure. Raw results: target/bench-compare/*.json.
#
# Environment: HERALD_BENCH_PORT (default 7400); nats uses 9222 (bench/peers/nats-ws.conf) and
# Socket.IO 9300; herald-bench serves the proxy's backend on 9100 and the webhook sink on 9101,
# which the Herald configs it writes into target/bench-compare/ point at. CARGO_TARGET_DIR, if
# set, is where the release binaries are built and taken from (default: target/). COMPARE_ONLY:
# see above. Stops every process it started, also on Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PEERS="$ROOT/bench/peers"
OUT="$ROOT/target/bench-compare"
# Cargo puts the binaries where CARGO_TARGET_DIR says (e.g. a target directory shared between
# worktrees); a relative one is relative to the root, as cargo reads it from here.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/herald"
BENCH="$TARGET_DIR/release/herald-bench"
HERALD_PORT="${HERALD_BENCH_PORT:-7400}"
NATS_PORT=9222
SIO_PORT=9300
BACKEND_PORT=9100   # herald-bench proxy: the backend it serves
SINK_PORT=9101      # herald-bench webhooks: the sink it serves
ONLY="${COMPARE_ONLY:-}"
case "$ONLY" in
  ''|backend|compression) ;;
  *) echo "compare.sh: COMPARE_ONLY='$ONLY': use 'backend', 'compression' or leave it unset" >&2; exit 2 ;;
esac
PEERS_RUN=1
[[ $ONLY == backend || $ONLY == compression ]] && PEERS_RUN=0
export DEBIAN_FRONTEND=noninteractive

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
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
command -v taskset >/dev/null || apt_install util-linux
if [[ $PEERS_RUN == 1 || $ONLY == compression ]]; then
  command -v nats-server >/dev/null || { log "installing nats-server (apt)"; apt_install nats-server; }
fi
if [[ $PEERS_RUN == 1 ]]; then
  command -v node >/dev/null || { log "installing node and npm (apt)"; apt_install nodejs npm; }
  if [[ ! -f "$PEERS/node_modules/socket.io/package.json" ]]; then
    log "installing socket.io (npm, into bench/peers/)"
    (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

log "building herald --release"
cargo build --release --quiet -p herald -p herald-bench --bins

# Both processes hold many sockets in the idle scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < CONNECTIONS + 1000 )); then
  CONNECTIONS=$(( $(ulimit -n) - 1000 ))
  echo "open-file limit $(ulimit -n): idle scenario uses $CONNECTIONS connections"
fi

for port in "$HERALD_PORT" "$NATS_PORT" "$SIO_PORT" "$BACKEND_PORT" "$SINK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use: stop what listens there (or set HERALD_BENCH_PORT)"
  fi
done

rm -rf "$OUT"
mkdir -p "$OUT"

# The backend scenarios' Herald configs (--listen still comes from the command line).
PROXY_CONFIG="$OUT/herald-proxy.toml"
cat >"$PROXY_CONFIG" <<TOML
# Written by bench/compare.sh for herald-bench proxy: publishes to bench/proxied/** are asked
# of the backend herald-bench serves; bench/plain/** is not routed.
[proxy]
timeout = "1s"

[[proxy.publish]]
pattern = "bench/proxied/**"
url = "http://127.0.0.1:$BACKEND_PORT/herald/publish"
TOML
WEBHOOKS_CONFIG="$OUT/herald-webhooks.toml"
cat >"$WEBHOOKS_CONFIG" <<TOML
# Written by bench/compare.sh for herald-bench webhooks: every event goes to the sink
# herald-bench serves. herald-bench closes its sockets after a few rounds: a short TTL ends
# those sessions (session.closed) a second later.
[session]
ttl = "1s"

[[webhooks]]
url = "http://127.0.0.1:$SINK_PORT/herald/events"
TOML
"$BIN" config check "$PROXY_CONFIG" >/dev/null || die "herald refuses $PROXY_CONFIG"
"$BIN" config check "$WEBHOOKS_CONFIG" >/dev/null || die "herald refuses $WEBHOOKS_CONFIG"

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

# Extra arguments of the next Herald started (a --config for the backend scenarios).
HERALD_ARGS=()
# The configuration of the next nats-server started.
NATS_CONF="$PEERS/nats-ws.conf"
# The same with permessage-deflate (`compression: true`), for COMPARE_ONLY=compression.
NATS_DEFLATE_CONF="$OUT/nats-ws-deflate.conf"
sed 's/^\( *compression:\).*/\1 true/' "$PEERS/nats-ws.conf" >"$NATS_DEFLATE_CONF"
grep -q 'compression: true' "$NATS_DEFLATE_CONF" || die "could not write $NATS_DEFLATE_CONF"

# start_server TARGET: starts it on core 1, sets SERVER_PID and URL.
start_server() {
  local target=$1 logf="$OUT/$1.server.log"
  case "$target" in
    herald)
      RUST_LOG=warn taskset -c 1 "$BIN" --listen "127.0.0.1:$HERALD_PORT" "${HERALD_ARGS[@]}" >>"$logf" 2>&1 &
      SERVER_PID=$!; URL="ws://127.0.0.1:$HERALD_PORT/ws"; wait_port "$HERALD_PORT" ;;
    nats)
      taskset -c 1 nats-server -c "$NATS_CONF" >>"$logf" 2>&1 &
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

# run_backend SCENARIO CONFIG [bench options]: a Herald-only run, against a Herald started
# with CONFIG.
run_backend() {
  local scenario=$1 config=$2; shift 2
  HERALD_ARGS=(--config "$config")
  run herald "$scenario" "$@"
  HERALD_ARGS=()
}

# ---------------------------------------------------------------- the run
STARTED=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TARGETS=(herald nats socketio)
[[ $PEERS_RUN == 0 ]] && TARGETS=()
for target in "${TARGETS[@]}"; do
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
if [[ $ONLY == compression ]]; then
  # 1 KiB of application-like JSON to 100 subscribers, closed loop: bytes on the subscribers'
  # wire and deliveries/s. Herald's compression = "auto" is the default.
  JSON=(--payload json --size 1024 --duration "$DURATION" --drain "$DRAIN")
  run herald fanout "${JSON[@]}"
  run herald fanout "${JSON[@]}" --deflate
  run herald fanout "${JSON[@]}" --deflate --inflate-every 256
  run nats fanout "${JSON[@]}"
  NATS_CONF=$NATS_DEFLATE_CONF
  run nats fanout "${JSON[@]}" --deflate
  NATS_CONF="$PEERS/nats-ws.conf"
fi
if [[ $ONLY != compression ]]; then
log "backend scenarios: Herald only (nats-server and Socket.IO have no publish proxy and no webhooks)"
# Closed loop: the most proxied publishes Herald acks (its latency is then its queue's); at
# the goal's 20k/s: the latency the proxy adds below the limit. Each run is a proxied phase,
# then a plain one at the rate the first reached.
run_backend proxy "$PROXY_CONFIG" --backend-port "$BACKEND_PORT" \
  --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
run_backend proxy "$PROXY_CONFIG" --backend-port "$BACKEND_PORT" --label "20k/s" --rate 20000 \
  --duration "$LAT_DURATION" --warmup "$WARMUP" --drain "$DRAIN"
run_backend webhooks "$WEBHOOKS_CONFIG" --sink-port "$SINK_PORT" \
  --duration "$DURATION" --drain "$DRAIN"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the report
CMD="bench/compare.sh"
[[ $QUICK == 1 ]] && CMD="$CMD --quick"
[[ -n $ONLY ]] && CMD="COMPARE_ONLY=$ONLY $CMD"
if [[ $QUICK == 1 || -n $ONLY ]]; then
  # A smoke run or a partial one never replaces the repository's figures.
  MD="$OUT/BENCHMARKS.md"; SVG="$OUT/compare.svg"
else
  MD="$ROOT/BENCHMARKS.md"; SVG="$ROOT/bench/compare.svg"
fi
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $PEERS_RUN == 1 ]]; then
  SIO_VERSION=$(node -p "require('$PEERS/node_modules/socket.io/package.json').version")
  SERVERS="herald $REV (release build), $(nats-server --version), socket.io $SIO_VERSION on node $(node --version)"
elif [[ $ONLY == compression ]]; then
  SERVERS="herald $REV (release build), $(nats-server --version) (bench/peers/nats-ws.conf, and with compression: true)"
else
  SERVERS="herald $REV (release build); no peer (COMPARE_ONLY=$ONLY)"
fi
NOTES=()
[[ $QUICK == 0 && -z $ONLY && -f "$ROOT/bench/notes.md" ]] && NOTES=(--notes "$ROOT/bench/notes.md")
"$BENCH" report "$OUT"/*-*.json --out "$MD" --svg "$SVG" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --command "$CMD" \
  --fact "Servers: $SERVERS" \
  --fact "Load average (1/5/15 min) at start $LOAD_BEFORE, at end $LOAD_AFTER: other work on the machine makes figures noisy; compare ratios within one run" \
  --fact "Runs: throughput $DURATION each, closed loop with 512 messages in flight per subscriber; latency $LAT_DURATION at a fixed rate after $WARMUP warm-up; overload $DURATION flat out; a fresh server per run" \
  --fact "Backend (Herald only): proxy phases (proxied, then plain) $LAT_DURATION each after $WARMUP warm-up, Herald with target/bench-compare/herald-proxy.toml; webhooks $DURATION, Herald with target/bench-compare/herald-webhooks.toml (both written by the script); herald-bench serves the backend and the sink itself, on core 0" \
  "${NOTES[@]}"

log "done in $(( SECONDS - STARTED )) s: $MD, $SVG; raw results in $OUT"
if (( ${#FAILED[@]} )); then
  echo "failed runs: ${FAILED[*]}" >&2
  exit 1
fi
