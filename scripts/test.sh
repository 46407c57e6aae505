#!/usr/bin/env bash
# Herald's one test command: installs what is missing, then runs every test.
#
#   ./scripts/test.sh            (from any directory)
#
# Sections, in order; the first one that fails stops the run with a non-zero exit:
#   rust     cargo test --all-targets --no-fail-fast   (lib, bin, tests/, examples, benches)
#   doc      cargo test --doc
#   js       node --test web/test/                     (when web/test/ exists)
#   browser  node --test tests/browser/                (when tests/browser/ exists; Debian's chromium)
# redis-server is installed first when tests/cluster.rs exists (the cluster tests need it).
#
# Meant for a fresh Debian 12 machine (as root, or with sudo) that has the Rust toolchain,
# node and npm, and can reach package registries. Never downloads browsers through Playwright:
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

need_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  apt_install nodejs npm
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
  # tests/examples.rs runs the example programs as a user would; `cargo test` only builds
  # them as test harnesses, so build the plain binaries first.
  cargo build --examples
  cargo test --all-targets --no-fail-fast
}

section_doc() {
  cargo test --doc
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
  # The tests start the server binary; `cargo test` built it already, so this is quick.
  cargo build --bin herald
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
run rust "cargo test --all-targets --no-fail-fast" section_rust
run doc "cargo test --doc" section_doc
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
