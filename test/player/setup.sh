#!/usr/bin/env bash
# Installs the pinned hls.js, dash.js (dashjs) and playwright-core (the
# HLS/DASH player test's browser driver; it downloads no browser and drives
# Debian's /usr/bin/chromium) into test/player/node_modules, only when they
# are missing or differ from package-lock.json.  Needs node and npm.  Quiet
# when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -f node_modules/hls.js/dist/hls.min.js && -f node_modules/dashjs/dist/modern/umd/dash.all.min.js &&
      -d node_modules/playwright-core ]] &&
   npm ls --offline --depth=0 >/dev/null 2>&1; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: npm is missing (apt-get install nodejs npm)" >&2
  exit 1
fi
# npm ci installs exactly what package-lock.json pins and fails if the lock
# and package.json disagree.
npm ci --no-audit --no-fund --loglevel=error
