#!/usr/bin/env bash
# Installs the pinned workerd (the Workers runtime the Cloudflare tests run
# on) into packaging/cloudflare/node_modules, only when it is missing.
# Needs node and npm.  Quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -x node_modules/.bin/workerd ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: npm is missing (apt-get install nodejs npm)" >&2
  exit 1
fi
# npm ci installs exactly what package-lock.json pins and fails if the lock
# and package.json disagree; without a lock, npm install makes one.
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
if ! node_modules/.bin/workerd --version >/dev/null; then
  echo "setup.sh: workerd was installed but does not run on this machine" >&2
  exit 1
fi
