#!/usr/bin/env bash
# Install what the end-to-end tests need, idempotently, on a fresh Debian machine (as
# root) or a used one: Debian's Chromium, the npm client libraries (analytics-node,
# analytics-next, playwright-core, esbuild) and the PyPI one (segment-analytics-python).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=tests/clients
cache="${FERRY_CACHE:-${HOME:-/root}/.cache/ferry}"
mkdir -p "$cache"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d "$clients/node_modules/@segment/analytics-node" ] || [ "$clients/package-lock.json" -nt "$clients/node_modules/.package-lock.json" ]; then
  echo "== npm ci ($clients)"
  (cd "$clients" && npm ci --no-audit --no-fund --cache "$cache/npm" --loglevel=error)
fi

if [ ! -x "$clients/.venv/bin/python" ] || ! "$clients/.venv/bin/python" -c 'import segment.analytics' 2>/dev/null; then
  echo "== pip install ($clients/requirements.txt)"
  python3 -m venv "$clients/.venv"
  "$clients/.venv/bin/pip" install --quiet --cache-dir "$cache/pip" -r "$clients/requirements.txt"
fi

echo "== bundling analytics-next for the browser test"
(cd "$clients" && node_modules/.bin/esbuild browser-entry.mjs --bundle --format=iife --outfile=bundle/analytics.js --log-level=warning)
echo "test dependencies ready"
