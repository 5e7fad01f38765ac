#!/usr/bin/env bash
# Installs the pinned devDependencies of package.json into
# packaging/cloudflare/node_modules, only when one is missing or at another
# version: workerd (the Workers runtime the Cloudflare tests run on) and
# standardwebhooks (the reference Standard Webhooks library the webhook test
# verifies deliveries with).  Needs node and npm.  Quiet when there is
# nothing to do.
set -euo pipefail
cd "$(dirname "$0")"
# Every devDependency installed at exactly its pinned version (read from
# disk, no network): then there is nothing to do.
installed() {
  [[ -x node_modules/.bin/workerd ]] || return 1
  command -v node >/dev/null 2>&1 || return 0
  node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package.json", "utf8")).devDependencies || {};
    for (const [name, version] of Object.entries(want)) {
      let got = null;
      try { got = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version; } catch {}
      if (got !== version) process.exit(1);
    }'
}
if installed; then
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
