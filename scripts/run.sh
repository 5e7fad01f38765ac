#!/usr/bin/env bash
# Installs what is missing, builds cap-server and runs it on 127.0.0.1:3001
# with the embedded default: objects under ./data/objects and a development
# token generated once into ./data/dev-token (mode 0600).
# Extra arguments go to cap-server, e.g. scripts/run.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh build
scripts/build.sh build

mkdir -p data/objects
chmod 700 data
if [ ! -s data/dev-token ]; then
  umask 077
  token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf 'dev:%s\n' "$token" > data/dev-token
  echo "cap-server: generated a development token (kept in data/dev-token):"
  echo
  echo "    $token"
  echo
  echo "Try:  curl -s http://127.0.0.1:3001/health"
  echo "      curl -s -X POST http://127.0.0.1:3001/exec -H \"Authorization: Bearer \$(cut -d: -f2 data/dev-token)\" \\"
  echo "           -H 'Content-Type: application/json' -d '{\"capability\":\"ffprobe\",\"input_key\":\"uploads/raw.mp4\"}'"
  echo
else
  echo "cap-server: using the development token in data/dev-token"
fi
exec build/cap-server --host 127.0.0.1 --port 3001 --token-file data/dev-token \
  --data-dir data/objects "$@"
