#!/bin/sh
# Stand-in for Tailscale's network installer (https://tailscale.com/install.sh),
# used only by test_install.py: the test's HTTP listener serves this file, and
# scripts/install.sh downloads it with curl and runs it with sh.  It records
# that it ran and puts the tailscale stand-in ($STANDIN_TAILSCALE) on PATH
# ($STANDIN_BIN), as the real one installs the tailscale package.
set -eu
printf '{"cmd": "installer", "argv": ["sh", "%s"]}\n' "$0" >>"$STANDIN_LOG"
cp "$STANDIN_TAILSCALE" "$STANDIN_BIN/tailscale"
chmod 755 "$STANDIN_BIN/tailscale"
echo "Installation complete! Log in to start using Tailscale by running:"
echo
echo "tailscale up"
