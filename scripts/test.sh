#!/usr/bin/env bash
# Herald's one test command: installs what is missing, then runs every test.
#
#   ./scripts/test.sh            (from any directory)
#
# Sections, in order; the first one that fails stops the run with a non-zero exit:
#   rust     cargo test --workspace --no-fail-fast   (every crate: lib, bins, tests/, doc tests;
#            Node and web/node_modules first: one test runs herald.js subscribers too;
#            the examples are built as the plain binaries tests/examples.rs runs. Benches are
#            not built here: they are not tests, and building them doubles the link work; run
#            them with `cargo bench`, check them with `cargo clippy --all-targets`)
#   js       node --test web/test/                     (when web/test/ exists)
#   browser  node --test tests/browser/                (when tests/browser/ exists; Debian's chromium)
# redis-server is installed first when tests/cluster.rs exists (the cluster tests need it).
#
# Meant for a fresh Debian 12 machine (as root, or with sudo) that has the Rust toolchain and can
# reach package registries. Node.js must be at least what web/package.json's "engines" says
# (20): an older one (Debian 12's apt has 18) gets node@20 from the npm registry in target/node. Never downloads browsers through Playwright:
# the browser tests drive the system chromium with playwright-core.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export CARGO_TERM_COLOR=never
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export DEBIAN_FRONTEND=noninteractive

STARTED=$SECONDS
RESULTS=()
APT_UPDATED=0

note() { printf '    %s\n' "$*"; }

die() {
  printf 'test.sh: %s\n' "$*" >&2
  exit 1
}

# apt_install PACKAGE...: runs `apt-get update` once per run, and only when something is missing.
apt_install() {
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: $*"
    sudo=(sudo --preserve-env=DEBIAN_FRONTEND)
  fi
  command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
  if [[ $APT_UPDATED -eq 0 ]]; then
    note "apt-get update"
    "${sudo[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  note "apt-get install $*"
  "${sudo[@]}" apt-get install -y -qq "$@"
}

# npm_install DIR: `npm install` when DIR/package.json declares dependencies and node_modules is
# missing or older than package.json.
npm_install() {
  local dir=$1
  [[ -f $dir/package.json ]] || return 0
  if ! node -e 'const p = require(process.argv[1]);
      const n = Object.keys({...p.dependencies, ...p.devDependencies}).length;
      process.exit(n > 0 ? 0 : 1)' "$ROOT/$dir/package.json"; then
    return 0
  fi
  if [[ -f $dir/node_modules/.package-lock.json && ! $dir/package.json -nt $dir/node_modules/.package-lock.json ]]; then
    note "$dir/node_modules is up to date"
    return 0
  fi
  note "npm install in $dir"
  (cd "$dir" && npm install --no-audit --no-fund)
}

# The Node.js major version web/package.json's "engines" asks for (">=20" gives 20).
node_wanted() {
  local want
  want=$(sed -n 's/.*"node": *">= *\([0-9][0-9]*\).*/\1/p' "$ROOT/web/package.json" | head -n 1)
  echo "${want:-20}"
}

node_major() {
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

# Where a newer Node.js goes when the system's is too old (Debian 12's apt has 18): the `node`
# package from the npm registry, installed with npm into target/node (nothing system-wide).
LOCAL_NODE="$ROOT/target/node"

# need_node: node and npm on PATH, node at least what web/package.json's engines ask for.
need_node() {
  local want
  want=$(node_wanted)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  if (( $(node_major) < want )) && [[ -x $LOCAL_NODE/node_modules/.bin/node ]]; then
    export PATH="$LOCAL_NODE/node_modules/.bin:$PATH"
  fi
  if (( $(node_major) < want )); then
    note "node $(node --version) is older than the $want web/package.json needs;" \
      "installing node@$want from the npm registry into target/node"
    mkdir -p "$LOCAL_NODE"
    if ! (cd "$LOCAL_NODE" && npm install --prefix "$LOCAL_NODE" --no-audit --no-fund "node@$want"); then
      die "could not install node@$want with npm; install Node.js $want or newer (e.g. from NodeSource) and run again"
    fi
    export PATH="$LOCAL_NODE/node_modules/.bin:$PATH"
  fi
  if (( $(node_major) < want )); then
    die "Node.js $want or newer is needed (engines in web/package.json), found $(node --version 2>/dev/null || echo none); install it and run again"
  fi
  note "node $(node --version) at $(command -v node) (web/package.json wants >= $want)"
}

# The test files under DIR, by node's own naming rules (as `node --test DIR` applies them in
# node 20): *.test.js, *-test.js, *_test.js, test-*.js, test.js (also .mjs/.cjs), and every
# script below a directory named `test`. Listed explicitly so that every node version agrees.
test_files() {
  local dir=$1 f base
  while IFS= read -r f; do
    base=${f##*/}
    case "/$f" in
      */test/*) printf '%s\n' "$f"; continue ;;
    esac
    case "$base" in
      *.test.js | *.test.mjs | *.test.cjs | *-test.js | *-test.mjs | *-test.cjs | \
        *_test.js | *_test.mjs | *_test.cjs | test-*.js | test-*.mjs | test-*.cjs | \
        test.js | test.mjs | test.cjs)
        printf '%s\n' "$f"
        ;;
    esac
  done < <(find "$dir" -name node_modules -prune -o -type f \
    \( -name '*.js' -o -name '*.mjs' -o -name '*.cjs' \) -print | LC_ALL=C sort)
}

node_test() {
  local dir=$1 files=()
  mapfile -t files < <(test_files "$dir")
  if [[ ${#files[@]} -eq 0 ]]; then
    note "no test files in $dir"
    return 0
  fi
  note "node --test ${files[*]}"
  node --test "${files[@]}"
}

# ---------------------------------------------------------------------------------------------
# Sections

section_redis() {
  if command -v redis-server >/dev/null; then
    note "redis-server present: $(command -v redis-server)"
  else
    apt_install redis-server
  fi
}

section_rust() {
  # tests/recovery_clients.rs runs herald.js subscribers in Node beside the Rust ones.
  need_node
  npm_install web
  cargo test --workspace --no-fail-fast
}

section_js() {
  need_node
  npm_install web
  node_test web/test
}

section_browser() {
  if command -v chromium >/dev/null; then
    note "chromium present: $(command -v chromium)"
  else
    apt_install chromium chromium-driver
  fi
  need_node
  # The tests start the server binary, which the rust section's `cargo test` has just built
  # (it runs first). A `cargo build` here would build it again: without the dev-dependencies,
  # Cargo resolves other features for shared crates and recompiles them (a minute on 2 cores).
  [[ -x target/debug/herald ]] || cargo build --bin herald
  export HERALD_BIN="${HERALD_BIN:-$ROOT/target/debug/herald}"
  export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium)}"
  npm_install tests/browser
  node_test tests/browser
}

# ---------------------------------------------------------------------------------------------

summary() {
  local verdict=$1
  printf '\n======== summary ========\n'
  local r
  for r in "${RESULTS[@]}"; do
    printf '  %s\n' "$r"
  done
  printf 'test.sh: %s in %ss\n' "$verdict" "$((SECONDS - STARTED))"
}

# run NAME TITLE FUNCTION: runs one section in a subshell with errexit on; stops everything
# at the first failure.
run() {
  local name=$1 title=$2 fn=$3 start=$SECONDS status=0
  printf '\n======== %s: %s ========\n' "$name" "$title"
  set +e
  (
    set -euo pipefail
    "$fn"
  )
  status=$?
  set -e
  local took=$((SECONDS - start))
  if [[ $status -ne 0 ]]; then
    RESULTS+=("FAIL  $name ($title, exit $status, ${took}s)")
    printf '======== %s: FAILED (exit %s) ========\n' "$name" "$status"
    summary "FAILED in section '$name'"
    exit "$status"
  fi
  RESULTS+=("ok    $name ($title, ${took}s)")
}

skip() {
  RESULTS+=("skip  $1 ($2)")
  printf '\n======== %s: skipped (%s) ========\n' "$1" "$2"
}

if [[ -f tests/cluster.rs ]]; then
  run redis "redis-server for the cluster tests" section_redis
fi
run rust "cargo test --workspace --no-fail-fast" section_rust
if [[ -d web/test ]]; then
  run js "node --test web/test/" section_js
else
  skip js "no web/test/"
fi
if [[ -d tests/browser ]]; then
  run browser "node --test tests/browser/" section_browser
else
  skip browser "no tests/browser/"
fi
summary "all tests passed"
