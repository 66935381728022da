#!/usr/bin/env bash
# Install what the end-to-end tests need, idempotently, on a fresh Debian machine (as root)
# or a used one:
#   - Debian's nats-server, which the cluster-mode tests start as their own nodes;
#   - Debian's chromium (only if /usr/bin/chromium is missing), and node/npm or the
#     python venv module if the machine lacks them;
#   - the npm client libraries pinned in tests/clients/package-lock.json
#     (@segment/analytics-node, @segment/analytics-next, playwright-core, esbuild);
#   - segment-analytics-python from tests/clients/requirements.txt into tests/clients/.venv;
#   - the esbuild bundle of analytics-next the browser test page loads.
# Downloads are cached in ${FERRY_CACHE:-~/.cache/ferry}. Nothing is exported: the tests
# find everything by path.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=tests/clients
cache="${FERRY_CACHE:-${HOME:-/root}/.cache/ferry}"
mkdir -p "$cache"

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    echo "== apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  echo "== apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ -x /usr/bin/chromium ]; then
  echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
else
  apt_install chromium
fi

if [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null; then
  echo "== nats-server: $( (command -v nats-server || echo /usr/sbin/nats-server) | head -1)"
else
  apt_install nats-server
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
echo "== node $(node --version), npm $(npm --version)"

lock="$clients/package-lock.json"
installed="$clients/node_modules/.package-lock.json"
if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ] \
  || [ ! -f "$clients/node_modules/playwright-core/package.json" ] \
  || ! "$clients/node_modules/.bin/esbuild" --version >/dev/null 2>&1; then
  echo "== npm ci in $clients (cache $cache/npm)"
  (cd "$clients" && npm ci --no-audit --no-fund --cache "$cache/npm" --loglevel=error)
else
  echo "== npm packages: up to date with $lock"
fi

venv="$clients/.venv"
stamp="$venv/.ferry-requirements.txt"
if [ -x "$venv/bin/python" ] && cmp -s "$clients/requirements.txt" "$stamp" \
  && "$venv/bin/python" -c 'import segment.analytics' 2>/dev/null; then
  echo "== python packages: up to date with $clients/requirements.txt"
else
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  echo "== python venv $venv: pip install -r $clients/requirements.txt (cache $cache/pip)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --cache-dir "$cache/pip" \
    -r "$clients/requirements.txt"
  cp "$clients/requirements.txt" "$stamp"
fi

echo "== esbuild: bundling analytics-next for the browser test ($clients/bundle/analytics.js)"
(cd "$clients" && node_modules/.bin/esbuild browser-entry.mjs --bundle --format=iife \
  --outfile=bundle/analytics.js --log-level=warning)
echo "== test dependencies ready"
