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
#   COMPARE_ONLY=cluster bench/compare.sh [--quick]
#                               only the 3-node clusters: Herald (3 nodes and a redis-server, with
#                               the default topic settings and with `history = 100`), nats-server
#                               (3 nodes with routes) and Socket.IO 4 (3 nodes with
#                               @socket.io/redis-adapter and a redis-server); the publisher on node
#                               1, 30 subscribers on nodes 2 and 3, 100 B messages: saturation
#                               (closed loop), 10k publishes/s (latency) and overload (flat out);
#                               about 3 minutes (--quick 1.5); writes
#                               target/bench-compare/BENCHMARKS.md
#
# Installs what is missing (nats-server and redis-server from apt, socket.io and its redis
# adapter from npm into bench/peers/), builds herald --release, then for each server and each
# scenario: starts the server alone on core 1 (taskset -c 1; a cluster: all its processes),
# runs `herald-bench SCENARIO` on core 0 against it, and stops it. A fresh server
# per scenario keeps one scenario's leftovers (buffers, allocator caches) out of the next, which
# matters most for the idle-memory figure. Raw results: target/bench-compare/*.json.
#
# Environment: HERALD_BENCH_PORT (default 7400); nats uses 9222 (bench/peers/nats-ws.conf) and
# Socket.IO 9300; herald-bench serves the proxy's backend on 9100 and the webhook sink on 9101,
# which the Herald configs it writes into target/bench-compare/ point at. The clusters use
# 7401-7403 (Herald), 9222-9224 with routes on 6222-6224, clients on 4223-4225 and monitoring
# on 8231-8233 (nats), 9300-9302 (Socket.IO) and 6390 (redis-server, a fresh one per run, for
# Herald and Socket.IO). CARGO_TARGET_DIR, if set, is where the release binaries are built and
# taken from (default: target/). COMPARE_ONLY: see above. Stops every process it started, also
# on Ctrl-C.
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
  ''|backend|compression|cluster) ;;
  *) echo "compare.sh: COMPARE_ONLY='$ONLY': use 'backend', 'compression', 'cluster' or leave it unset" >&2; exit 2 ;;
esac
PEERS_RUN=1
[[ -n $ONLY ]] && PEERS_RUN=0
# The clusters (COMPARE_ONLY=cluster): node 1 takes the publisher, nodes 2 and 3 the subscribers.
REDIS_PORT=6390
HERALD_NODE_PORTS=(7401 7402 7403)
NATS_NODE_PORTS=(9222 9223 9224)     # WebSocket listeners
NATS_ROUTE_PORTS=(6222 6223 6224)
NATS_CLIENT_PORTS=(4223 4224 4225)
NATS_HTTP_PORTS=(8231 8232 8233)     # monitoring: /routez tells when the routes are up
SIO_NODE_PORTS=(9300 9301 9302)
CLUSTER_SUBS=30
export DEBIAN_FRONTEND=noninteractive

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/!p}' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [[ $QUICK == 1 ]]; then
  DURATION=2s; LAT_DURATION=3s; WARMUP=1s; CONNECTIONS=1000; DRAIN=3s
else
  DURATION=8s; LAT_DURATION=10s; WARMUP=2s; CONNECTIONS=10000; DRAIN=5s
fi
LAT_RATE=500000      # deliveries/s for Herald and NATS (the goal's figure)
CLUSTER_LAT_RATE=300000   # the cluster's steady load: 10k publishes/s to 30 subscribers
SIO_CLUSTER_LAT_RATE=30000   # Socket.IO's cluster peaks near 75-120k deliveries/s on one core
SIO_OVERLOAD_DURATION=2s
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
if [[ $PEERS_RUN == 1 || $ONLY == compression || $ONLY == cluster ]]; then
  command -v nats-server >/dev/null || { log "installing nats-server (apt)"; apt_install nats-server; }
fi
if [[ $PEERS_RUN == 1 || $ONLY == cluster ]]; then
  command -v node >/dev/null || { log "installing node and npm (apt)"; apt_install nodejs npm; }
  if [[ ! -f "$PEERS/node_modules/socket.io/package.json" \
      || ! -f "$PEERS/node_modules/@socket.io/redis-adapter/package.json" \
      || ! -f "$PEERS/node_modules/redis/package.json" ]]; then
    log "installing socket.io and its redis adapter (npm, into bench/peers/)"
    (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
if [[ $ONLY == cluster ]]; then
  command -v redis-server >/dev/null || { log "installing redis-server (apt)"; apt_install redis-server; }
fi

log "building herald --release"
cargo build --release --quiet -p herald -p herald-bench --bins

# Both processes hold many sockets in the idle scenario.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < CONNECTIONS + 1000 )); then
  CONNECTIONS=$(( $(ulimit -n) - 1000 ))
  echo "open-file limit $(ulimit -n): idle scenario uses $CONNECTIONS connections"
fi

PORTS=("$HERALD_PORT" "$NATS_PORT" "$SIO_PORT" "$BACKEND_PORT" "$SINK_PORT")
[[ $ONLY == cluster ]] && PORTS+=("$REDIS_PORT" "${HERALD_NODE_PORTS[@]}" "${NATS_NODE_PORTS[@]}" \
  "${NATS_ROUTE_PORTS[@]}" "${NATS_CLIENT_PORTS[@]}" "${NATS_HTTP_PORTS[@]}" "${SIO_NODE_PORTS[@]}")
for port in "${PORTS[@]}"; do
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
# Every server process started and not yet stopped (one, or a cluster's nodes and its Redis).
SERVER_PIDS=()
stop_server() {
  local pid
  (( ${#SERVER_PIDS[@]} )) || return 0
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# wait_port PORT [PID]: until something listens on PORT, while PID (default: the last server
# started) lives.
wait_port() {
  local pid=${2:-${SERVER_PIDS[-1]}}
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
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

# start_server TARGET: starts it on core 1, sets SERVER_PIDS and URL.
start_server() {
  local target=$1 logf="$OUT/$1.server.log"
  case "$target" in
    herald)
      RUST_LOG=warn taskset -c 1 "$BIN" --listen "127.0.0.1:$HERALD_PORT" "${HERALD_ARGS[@]}" >>"$logf" 2>&1 &
      SERVER_PIDS=($!); URL="ws://127.0.0.1:$HERALD_PORT/ws"; wait_port "$HERALD_PORT" ;;
    nats)
      taskset -c 1 nats-server -c "$NATS_CONF" >>"$logf" 2>&1 &
      SERVER_PIDS=($!); URL="ws://127.0.0.1:$NATS_PORT"; wait_port "$NATS_PORT" ;;
    socketio)
      (cd "$PEERS" && PORT=$SIO_PORT exec taskset -c 1 node socketio-server.mjs) >>"$logf" 2>&1 &
      SERVER_PIDS=($!); URL="ws://127.0.0.1:$SIO_PORT/socket.io/?EIO=4&transport=websocket"
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
      --server-pid "${SERVER_PIDS[0]}" --json "$OUT/$(printf %02d "$RUNS")-$target-$scenario.json" "$@" \
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

# ---------------------------------------------------------------- clusters
# The configuration of each nats-server node: the WebSocket listener of bench/peers/nats-ws.conf
# and routes to the two others.
write_nats_cluster_confs() {
  local i j routes
  for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do
      [[ $j == "$i" ]] || routes+="    nats-route://127.0.0.1:${NATS_ROUTE_PORTS[$j]}"$'\n'
    done
    cat >"$OUT/nats-cluster-$((i + 1)).conf" <<CONF
# Written by bench/compare.sh (COMPARE_ONLY=cluster): node $((i + 1)) of 3, the WebSocket
# listener of bench/peers/nats-ws.conf and routes to the other two nodes.
server_name: bench-$((i + 1))
listen: 127.0.0.1:${NATS_CLIENT_PORTS[$i]}
http: 127.0.0.1:${NATS_HTTP_PORTS[$i]}
websocket {
  listen: "127.0.0.1:${NATS_NODE_PORTS[$i]}"
  no_tls: true
  compression: false
}
max_pending: 67108864
cluster {
  name: bench
  listen: 127.0.0.1:${NATS_ROUTE_PORTS[$i]}
  routes: [
$routes  ]
}
CONF
  done
}

# start_redis: a fresh redis-server without persistence on core 1 (appends to SERVER_PIDS).
start_redis() {
  local logf=$1
  taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >>"$logf" 2>&1 &
  SERVER_PIDS+=($!)
  wait_port "$REDIS_PORT" || die "redis-server did not start; see $logf"
}

# nats_routes_up PORT: whether the node monitored on PORT has routes to both others.
nats_routes_up() {
  curl -fsS "http://127.0.0.1:$1/routez" 2>/dev/null | grep -q '"num_routes": *2'
}

# start_cluster TARGET: 3 nodes on core 1 (and Redis for Herald and Socket.IO, listed last in
# SERVER_PIDS); sets URL (node 1) and SUB_URLS (nodes 2 and 3).
start_cluster() {
  local target=$1 i logf
  SERVER_PIDS=(); SUB_URLS=()
  case "$target" in
    herald)
      start_redis "$OUT/cluster-herald.redis.log"
      for i in 0 1 2; do
        logf="$OUT/cluster-herald-$((i + 1)).log"
        RUST_LOG=warn taskset -c 1 "$BIN" --listen "127.0.0.1:${HERALD_NODE_PORTS[$i]}" \
          --redis "redis://127.0.0.1:$REDIS_PORT" "${HERALD_ARGS[@]}" >>"$logf" 2>&1 &
        SERVER_PIDS+=($!)
        wait_port "${HERALD_NODE_PORTS[$i]}" || die "herald node $((i + 1)) did not start; see $logf"
      done
      SERVER_PIDS=("${SERVER_PIDS[@]:1}" "${SERVER_PIDS[0]}")   # nodes 1-3, then Redis
      URL="ws://127.0.0.1:${HERALD_NODE_PORTS[0]}/ws"
      SUB_URLS=("ws://127.0.0.1:${HERALD_NODE_PORTS[1]}/ws" "ws://127.0.0.1:${HERALD_NODE_PORTS[2]}/ws") ;;
    nats)
      for i in 0 1 2; do
        logf="$OUT/cluster-nats-$((i + 1)).log"
        taskset -c 1 nats-server -c "$OUT/nats-cluster-$((i + 1)).conf" >>"$logf" 2>&1 &
        SERVER_PIDS+=($!)
        wait_port "${NATS_NODE_PORTS[$i]}" || die "nats-server node $((i + 1)) did not start; see $logf"
      done
      for _ in $(seq 100); do
        nats_routes_up "${NATS_HTTP_PORTS[0]}" && nats_routes_up "${NATS_HTTP_PORTS[1]}" \
          && nats_routes_up "${NATS_HTTP_PORTS[2]}" && break
        sleep 0.1
      done
      for i in 0 1 2; do
        nats_routes_up "${NATS_HTTP_PORTS[$i]}" || die "nats-server node $((i + 1)) has no routes to both others; see $OUT/cluster-nats-*.log"
      done
      URL="ws://127.0.0.1:${NATS_NODE_PORTS[0]}"
      SUB_URLS=("ws://127.0.0.1:${NATS_NODE_PORTS[1]}" "ws://127.0.0.1:${NATS_NODE_PORTS[2]}") ;;
    socketio)
      start_redis "$OUT/cluster-socketio.redis.log"
      for i in 0 1 2; do
        logf="$OUT/cluster-socketio-$((i + 1)).log"
        (cd "$PEERS" && PORT=${SIO_NODE_PORTS[$i]} REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
          exec taskset -c 1 node socketio-cluster.mjs) >>"$logf" 2>&1 &
        SERVER_PIDS+=($!)
        wait_port "${SIO_NODE_PORTS[$i]}" || die "Socket.IO node $((i + 1)) did not start; see $logf"
      done
      SERVER_PIDS=("${SERVER_PIDS[@]:1}" "${SERVER_PIDS[0]}")   # nodes 1-3, then Redis
      local q="/socket.io/?EIO=4&transport=websocket"
      URL="ws://127.0.0.1:${SIO_NODE_PORTS[0]}$q"
      SUB_URLS=("ws://127.0.0.1:${SIO_NODE_PORTS[1]}$q" "ws://127.0.0.1:${SIO_NODE_PORTS[2]}$q") ;;
  esac
}

# run_cluster TARGET SCENARIO [bench options]: a fresh cluster of TARGET; herald-bench publishes
# on node 1 and spreads its subscribers over nodes 2 and 3; the server CPU is that of every
# process of the cluster, Redis included.
run_cluster() {
  local target=$1 scenario=$2 pid url; shift 2
  local extra=()
  RUNS=$((RUNS + 1))
  start_cluster "$target"
  for url in "${SUB_URLS[@]}"; do extra+=(--sub-url "$url"); done
  for pid in "${SERVER_PIDS[@]}"; do extra+=(--server-pid "$pid"); done
  log "$target cluster $scenario $*"
  if ! taskset -c 0 "$BENCH" "$scenario" --target "$target" --url "$URL" "${extra[@]}" \
      --subscribers "$CLUSTER_SUBS" \
      --json "$OUT/$(printf %02d "$RUNS")-cluster-$target-$scenario.json" "$@" \
      2>&1 | tee -a "$OUT/bench.log"; then
    FAILED+=("$target cluster $scenario $*")
  fi
  stop_server
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
if [[ $ONLY == cluster ]]; then
  write_nats_cluster_confs
  HISTORY_CONFIG="$OUT/herald-cluster-history.toml"
  cat >"$HISTORY_CONFIG" <<TOML
# Written by bench/compare.sh (COMPARE_ONLY=cluster): the benchmark's topics keep history.
[[topics]]
pattern = "bench/**"
history = 100
TOML
  "$BIN" config check "$HISTORY_CONFIG" >/dev/null || die "herald refuses $HISTORY_CONFIG"
  # Herald with the default topic settings (history 0) and with history = 100; then the peers.
  for variant in default history; do
    label=()
    if [[ $variant == history ]]; then
      HERALD_ARGS=(--config "$HISTORY_CONFIG"); label=(--label "history 100")
    fi
    run_cluster herald fanout --duration "$DURATION" --drain "$DRAIN" "${label[@]}"
    run_cluster herald latency --rate "$CLUSTER_LAT_RATE" --duration "$LAT_DURATION" \
      --warmup "$WARMUP" --drain "$DRAIN" "${label[@]}"
    run_cluster herald overload --duration "$DURATION" --drain "$DRAIN" "${label[@]}"
    HERALD_ARGS=()
  done
  run_cluster nats fanout --duration "$DURATION" --drain "$DRAIN"
  run_cluster nats latency --rate "$CLUSTER_LAT_RATE" --duration "$LAT_DURATION" \
    --warmup "$WARMUP" --drain "$DRAIN"
  run_cluster nats overload --duration "$DURATION" --drain "$DRAIN"
  # Socket.IO's cluster carries about 100k deliveries/s: at the steady load it falls behind
  # (its latency is then its backlog's), so it also runs at half its limit. Flat out, it reads
  # all it is offered and queues what it cannot write in memory, draining at that rate after
  # the run: a short overload keeps that under a minute and a few hundred MB.
  run_cluster socketio fanout --duration "$DURATION" --drain "$DRAIN"
  run_cluster socketio latency --rate "$CLUSTER_LAT_RATE" --duration "$LAT_DURATION" \
    --warmup "$WARMUP" --drain "$DRAIN"
  run_cluster socketio latency --rate "$SIO_CLUSTER_LAT_RATE" --duration "$LAT_DURATION" \
    --warmup "$WARMUP" --drain "$DRAIN" --label "$(( SIO_CLUSTER_LAT_RATE / 1000 ))k/s"
  run_cluster socketio overload --duration "$SIO_OVERLOAD_DURATION" --drain "$DRAIN"
fi
if [[ -z $ONLY || $ONLY == backend ]]; then
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
elif [[ $ONLY == cluster ]]; then
  SIO_VERSION=$(node -p "require('$PEERS/node_modules/socket.io/package.json').version")
  ADAPTER_VERSION=$(node -p "require('$PEERS/node_modules/@socket.io/redis-adapter/package.json').version")
  SERVERS="herald $REV (release build), 3 nodes and $(redis-server --version | cut -d' ' -f1-3); $(nats-server --version), 3 nodes with routes; socket.io $SIO_VERSION with @socket.io/redis-adapter $ADAPTER_VERSION on node $(node --version), 3 nodes and the same redis-server"
elif [[ $ONLY == compression ]]; then
  SERVERS="herald $REV (release build), $(nats-server --version) (bench/peers/nats-ws.conf, and with compression: true)"
else
  SERVERS="herald $REV (release build); no peer (COMPARE_ONLY=$ONLY)"
fi
NOTES=()
[[ $QUICK == 0 && -z $ONLY && -f "$ROOT/bench/notes.md" ]] && NOTES=(--notes "$ROOT/bench/notes.md")
FACTS=(--fact "Servers: $SERVERS"
  --fact "Load average (1/5/15 min) at start $LOAD_BEFORE, at end $LOAD_AFTER: other work on the machine makes figures noisy; compare ratios within one run")
if [[ $ONLY == cluster ]]; then
  FACTS+=(--fact "Runs: saturation $DURATION, closed loop with 512 messages in flight per subscriber; 10k publishes/s $LAT_DURATION after $WARMUP warm-up; overload $DURATION flat out (Socket.IO $SIO_OVERLOAD_DURATION: it queues what it cannot write); a fresh cluster (and redis-server) per run; the first publish 500 ms after the last subscription was confirmed, for interest to reach node 1"
    --fact "Clusters: Herald nodes \`herald --redis redis://127.0.0.1:$REDIS_PORT\` on ${HERALD_NODE_PORTS[*]} (history 100: target/bench-compare/herald-cluster-history.toml); nats-server target/bench-compare/nats-cluster-{1,2,3}.conf (WebSocket ${NATS_NODE_PORTS[*]}, routes ${NATS_ROUTE_PORTS[*]}); Socket.IO bench/peers/socketio-cluster.mjs on ${SIO_NODE_PORTS[*]}; redis-server --port $REDIS_PORT --save '' --appendonly no")
else
  FACTS+=(--fact "Runs: throughput $DURATION each, closed loop with 512 messages in flight per subscriber; latency $LAT_DURATION at a fixed rate after $WARMUP warm-up; overload $DURATION flat out; a fresh server per run"
    --fact "Backend (Herald only): proxy phases (proxied, then plain) $LAT_DURATION each after $WARMUP warm-up, Herald with target/bench-compare/herald-proxy.toml; webhooks $DURATION, Herald with target/bench-compare/herald-webhooks.toml (both written by the script); herald-bench serves the backend and the sink itself, on core 0")
fi
"$BENCH" report "$OUT"/*-*.json --out "$MD" --svg "$SVG" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --command "$CMD" \
  "${FACTS[@]}" "${NOTES[@]}"

log "done in $(( SECONDS - STARTED )) s: $MD, $SVG; raw results in $OUT"
if (( ${#FAILED[@]} )); then
  echo "failed runs: ${FAILED[*]}" >&2
  exit 1
fi
