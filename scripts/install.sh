#!/usr/bin/env bash
# Installs cap-server on a Debian machine and publishes it through Tailscale
# Funnel: installs Tailscale when missing, joins the tailnet with an auth key,
# installs cap-server (the project's .deb or a built binary), writes its
# configuration and secrets, runs it under systemd, waits for /health, turns
# Funnel on (public https://<name>.<tailnet>.ts.net:443 -> 127.0.0.1:PORT) and
# registers every capability with the registry.  Run it again at any time:
# each step looks at the current state first and changes only what differs.
# --uninstall reverses it.  See --help.
set -Eeuo pipefail
umask 022
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

PROG=install.sh
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
PKG_DIR=$SCRIPT_DIR/../packaging
SERVICE="cap-server"
DEFAULT_USER="cap-server"
# Packages the script itself needs (JSON is read with jq, which a minimal
# Debian has more often than python3 and which is small), and the libraries
# and tools the binary needs at run time when it does not come as a .deb.
TOOL_PKGS=(curl jq ca-certificates)
RUNTIME_PKGS=(libuv1 libcjson1 libcurl4 libssl3 ffmpeg)
# Funnel listens on 443 publicly; that is the port a Worker reaches, so it is
# what the registry stores (never the local port).
PUBLIC_PORT=443

HOSTNAME_ARG=""
HOSTNAME_GIVEN=0
AUTH_KEY_FILE=""
SKIP_TS_INSTALL=0
TS_INSTALLER=https://tailscale.com/install.sh
DEB=""
BINARY=""
PORT=3001
STORAGE=""
REGISTRY_URL_ARG=""
REGISTER_TOKEN_FILE=""
TOKEN_FILE_ARG=""
SVC_USER=$DEFAULT_USER
ROOT=""
HEALTH_TIMEOUT=60
DRY_RUN=0
UNINSTALL=0
PURGE=0

usage() {
  cat <<'EOF'
Usage: install.sh (--deb FILE | --binary FILE) [options]
       install.sh --uninstall [--purge] [options]

Installs cap-server as a systemd service and publishes it with Tailscale Funnel
(public https://<host>.<tailnet>.ts.net -> 127.0.0.1:PORT), then registers its
capabilities with the registry.  Idempotent: a second run changes nothing.

Options:
  --deb FILE                 install the project's .deb (apt-get resolves its dependencies)
  --binary FILE              install this cap-server binary as /usr/local/bin/cap-server
                             (runtime libraries and ffmpeg are apt-installed when missing)
  --hostname NAME            Tailscale machine name [hostname -s]
  --auth-key-file FILE       Tailscale auth key (else env TS_AUTHKEY or TAILSCALE_AUTH_KEY);
                             only needed while the machine is not logged in
  --skip-tailscale-install   never run Tailscale's installer (tailscale must be installed)
  --tailscale-installer URL  installer script to download and run with sh
                             [https://tailscale.com/install.sh]
  --port N                   port cap-server listens on and Funnel proxies to [3001]
  --storage URL              object store (file:///DIR, s3://BUCKET[/PREFIX], r2://BUCKET[/PREFIX]);
                             AWS_* and R2_* variables of the environment go to the env file
  --registry-url URL         registry base URL (else env REGISTRY_URL; unset: no registration)
  --register-token-file FILE registry bearer token (else env REGISTER_TOKEN)
  --token-file FILE          capability tokens to install (else env CAPABILITY_TOKEN; neither:
                             keep the installed ones, or generate one)
  --user NAME                service user [cap-server]; created when missing
  --root DIR                 prefix for every installed file (tests; not with --deb)
  --health-timeout S         how long to wait for /health [60]
  --dry-run                  print every action, take none
  --uninstall                deregister, Funnel off, stop and disable, remove the package or binary
                             and unit; keeps /etc/cap-server and /var/lib/cap-server
  --purge                    with --uninstall: also remove /etc/cap-server and /var/lib/cap-server
  -h, --help                 this text

Secrets are read from the environment or files only and never appear on a
command line this script runs.
EOF
}

# ---------------------------------------------------------------------------
# Output and failure handling.  Every line says which step it belongs to, and
# every failure names the step and what to do about it.

STEP=preflight
CHANGES=0
TMP_FILES=()

log() { printf '[%s] %s\n' "$STEP" "$*"; }

usage_error() {
  printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
  exit 2
}

# fail EXIT_STATUS HINT: stops the script naming the current step.
fail() {
  printf '%s: step "%s" failed (exit %s): %s\n' "$PROG" "$STEP" "$1" "$2" >&2
  exit 1
}

# Unexpected failures (a command outside the explicit checks) still name the
# step, so the operator knows where it stopped.
on_err() {
  printf '%s: step "%s" failed (exit %s) at line %s; fix the cause above and run %s again\n' \
    "$PROG" "$STEP" "$1" "$2" "$PROG" >&2
  exit 1
}
trap 'on_err $? $LINENO' ERR

cleanup() {
  local f
  for f in "${TMP_FILES[@]+"${TMP_FILES[@]}"}"; do
    rm -f -- "$f"
  done
}
trap cleanup EXIT

quote_cmd() {
  local out="" a
  for a in "$@"; do
    out+=" $(printf '%q' "$a")"
  done
  printf '%s' "${out# }"
}

# run HINT CMD...: a state-changing command.  Printed, then run (or only
# printed under --dry-run); a failure stops the script with HINT.  Secrets are
# never arguments, so printing the command line is safe.
run() {
  local hint=$1
  shift
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = 1 ]; then
    log "would run: $(quote_cmd "$@")"
    return 0
  fi
  log "running: $(quote_cmd "$@")"
  "$@" || fail $? "$hint"
}

have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
# Arguments.

need_arg() { [ "$#" -ge 2 ] || usage_error "$1 needs a value"; }

while [ "$#" -gt 0 ]; do
  # --name=value is the same as --name value.
  if [[ $1 == --*=* ]]; then
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
  fi
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --hostname) need_arg "$@"; HOSTNAME_ARG=$2; HOSTNAME_GIVEN=1; shift ;;
    --auth-key-file) need_arg "$@"; AUTH_KEY_FILE=$2; shift ;;
    --skip-tailscale-install) SKIP_TS_INSTALL=1 ;;
    --tailscale-installer) need_arg "$@"; TS_INSTALLER=$2; shift ;;
    --deb) need_arg "$@"; DEB=$2; shift ;;
    --binary) need_arg "$@"; BINARY=$2; shift ;;
    --port) need_arg "$@"; PORT=$2; shift ;;
    --storage) need_arg "$@"; STORAGE=$2; shift ;;
    --registry-url) need_arg "$@"; REGISTRY_URL_ARG=$2; shift ;;
    --register-token-file) need_arg "$@"; REGISTER_TOKEN_FILE=$2; shift ;;
    --token-file) need_arg "$@"; TOKEN_FILE_ARG=$2; shift ;;
    --user) need_arg "$@"; SVC_USER=$2; shift ;;
    --root) need_arg "$@"; ROOT=$2; shift ;;
    --health-timeout) need_arg "$@"; HEALTH_TIMEOUT=$2; shift ;;
    --dry-run) DRY_RUN=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
  shift
done

if ! [[ $PORT =~ ^[0-9]{1,5}$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
  usage_error "--port must be 1-65535, not '$PORT'"
fi
if ! [[ $HEALTH_TIMEOUT =~ ^[0-9]{1,5}$ ]] || [ "$HEALTH_TIMEOUT" -lt 1 ]; then
  usage_error "--health-timeout must be a positive number of seconds"
fi
[[ $SVC_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || usage_error "--user '$SVC_USER' is not a valid user name"
if [ "$HOSTNAME_GIVEN" = 0 ]; then
  HOSTNAME_ARG=$(hostname -s 2>/dev/null || hostname)
fi
[[ $HOSTNAME_ARG =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] ||
  usage_error "hostname '$HOSTNAME_ARG' is not a valid DNS label; give --hostname"
if [ -n "$STORAGE" ] && ! [[ $STORAGE =~ ^(file|s3|r2):// ]]; then
  usage_error "--storage must start with file://, s3:// or r2://"
fi
if [ -n "$ROOT" ]; then
  [[ $ROOT == /* ]] || usage_error "--root must be an absolute path"
  [ -d "$ROOT" ] || usage_error "--root $ROOT is not a directory"
  ROOT=${ROOT%/}
fi
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
  usage_error "--purge goes with --uninstall"
fi
if [ "$UNINSTALL" = 0 ]; then
  if [ -n "$DEB" ] && [ -n "$BINARY" ]; then usage_error "give --deb or --binary, not both"; fi
  if [ -z "$DEB" ] && [ -z "$BINARY" ]; then usage_error "give --deb FILE or --binary FILE"; fi
  if [ -n "$DEB" ] && [ -n "$ROOT" ]; then
    usage_error "--deb cannot be combined with --root (dpkg installs into /); use --binary"
  fi
  if [ -n "$DEB" ] && ! [ -f "$DEB" ]; then usage_error "--deb $DEB: no such file"; fi
  if [ -n "$BINARY" ] && ! [ -f "$BINARY" ]; then usage_error "--binary $BINARY: no such file"; fi
fi

# Installed paths (everything under --root when given).
ETC_DIR=$ROOT/etc/cap-server
CONFIG=$ETC_DIR/config.json
PRESETS=$ETC_DIR/presets.json
TOKENS=$ETC_DIR/tokens
ENV_FILE=$ETC_DIR/env
REG_MARKER=$ETC_DIR/registration
STATE_DIR=$ROOT/var/lib/cap-server
LOCAL_BIN=$ROOT/usr/local/bin/cap-server
# The sandbox helper cap-server spawns its children through; it looks for
# it beside its own binary, and re-executes itself when it is missing.
LOCAL_HELPER=$ROOT/usr/local/bin/cap-sandbox
LOCAL_UNIT=$ROOT/etc/systemd/system/$SERVICE.service
DROPIN_DIR=$ROOT/etc/systemd/system/$SERVICE.service.d
DROPIN=$DROPIN_DIR/install.conf
# The paths as the running service sees them (never prefixed with --root).
SHOW_TOKENS=/etc/cap-server/tokens
[ -n "$ROOT" ] && SHOW_TOKENS=$TOKENS

# ---------------------------------------------------------------------------
# Secrets: from the environment or from files, kept in shell variables only.
# The environment variables are removed afterwards so that no child (the
# Tailscale installer, tailscale, systemctl, curl) inherits them.

# Prints FILE's content without surrounding whitespace.  Callers check that
# FILE is readable first (an error here would only end the subshell).
read_secret_file() { # FILE
  local v
  v=$(<"$1")
  v=${v//$'\r'/}
  # Surrounding whitespace and newlines are never part of a key or token.
  v="${v#"${v%%[![:space:]]*}"}"
  v="${v%"${v##*[![:space:]]}"}"
  printf '%s' "$v"
}

AUTH_KEY=""
for f in "$AUTH_KEY_FILE" "$REGISTER_TOKEN_FILE" "$TOKEN_FILE_ARG"; do
  if [ -n "$f" ] && ! [ -r "$f" ]; then usage_error "cannot read $f"; fi
done
if [ -n "$AUTH_KEY_FILE" ]; then
  AUTH_KEY=$(read_secret_file "$AUTH_KEY_FILE")
elif [ -n "${TS_AUTHKEY:-}" ]; then
  AUTH_KEY=$TS_AUTHKEY
elif [ -n "${TAILSCALE_AUTH_KEY:-}" ]; then
  AUTH_KEY=$TAILSCALE_AUTH_KEY
fi

REGISTER_TOKEN_VALUE=""
if [ -n "$REGISTER_TOKEN_FILE" ]; then
  REGISTER_TOKEN_VALUE=$(read_secret_file "$REGISTER_TOKEN_FILE")
elif [ -n "${REGISTER_TOKEN:-}" ]; then
  REGISTER_TOKEN_VALUE=$REGISTER_TOKEN
fi
# It ends up in a header line of curl's config: one line of visible ASCII.
if [ -n "$REGISTER_TOKEN_VALUE" ] && ! [[ $REGISTER_TOKEN_VALUE =~ ^[!-~]+$ ]]; then
  usage_error "the register token must be one line of visible ASCII characters"
fi
REGISTRY_URL_VALUE=${REGISTRY_URL_ARG:-${REGISTRY_URL:-}}
REGISTRY_URL_VALUE=${REGISTRY_URL_VALUE%/}
if [ -n "$REGISTRY_URL_VALUE" ] && ! [[ $REGISTRY_URL_VALUE =~ ^https?://[^[:space:]]+$ ]]; then
  usage_error "--registry-url must be an http:// or https:// URL"
fi

TOKEN_SOURCE=""
TOKEN_CONTENT=""
if [ "$UNINSTALL" = 0 ]; then
  if [ -n "$TOKEN_FILE_ARG" ]; then
    TOKEN_CONTENT=$(<"$TOKEN_FILE_ARG")
    grep -q '^[[:space:]]*[^#[:space:]]' <<<"$TOKEN_CONTENT" ||
      usage_error "--token-file $TOKEN_FILE_ARG holds no token"
    TOKEN_SOURCE="--token-file $TOKEN_FILE_ARG"
  elif [ -n "${CAPABILITY_TOKEN:-}" ]; then
    [[ $CAPABILITY_TOKEN =~ ^[!-~]{16,256}$ ]] ||
      usage_error "CAPABILITY_TOKEN must be 16-256 visible ASCII characters"
    TOKEN_CONTENT="default:$CAPABILITY_TOKEN"
    TOKEN_SOURCE="CAPABILITY_TOKEN"
  fi
fi

# Storage settings for the env file: --storage (or CAP_STORAGE) and the AWS_*
# and R2_* variables present in the environment, in a stable order.
declare -A ENV_SET=()
ENV_KEYS=()
if [ -n "$STORAGE" ]; then
  ENV_SET[CAP_STORAGE]=$STORAGE
elif [ -n "${CAP_STORAGE:-}" ]; then
  ENV_SET[CAP_STORAGE]=$CAP_STORAGE
fi
while IFS= read -r name; do
  if [[ $name =~ ^(AWS|R2)_[A-Z0-9_]+$ ]]; then
    ENV_SET[$name]=${!name}
    unset "$name"
  fi
done < <(compgen -e | sort)
if [ "${#ENV_SET[@]}" -gt 0 ]; then
  mapfile -t ENV_KEYS < <(printf '%s\n' "${!ENV_SET[@]}" | sort)
fi
for k in "${ENV_KEYS[@]+"${ENV_KEYS[@]}"}"; do
  [[ ${ENV_SET[$k]} != *$'\n'* ]] || usage_error "$k holds a newline"
done

unset TS_AUTHKEY TAILSCALE_AUTH_KEY REGISTER_TOKEN CAPABILITY_TOKEN

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  fail 1 "run it as root (sudo $PROG ...), or add --dry-run to see what it would do"
fi

# ---------------------------------------------------------------------------
# Helpers that read state (never change anything).

json() { # FILTER [jq args...] < JSON
  if have jq; then jq -r "$@"; else cat >/dev/null; fi
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

user_exists() { id -u "$SVC_USER" >/dev/null 2>&1; }

svc_group() {
  if user_exists; then id -gn "$SVC_USER"; else printf '%s' "$SVC_USER"; fi
}

# The MagicDNS name of this machine, without the trailing dot.
ts_dnsname() {
  local st
  st=$(tailscale status --json 2>/dev/null) || return 0
  json '.Self.DNSName // ""' <<<"$st" | sed 's/\.$//'
}

# on | off | other: whether Funnel publishes https://NAME:443 -> this port.
funnel_state() { # DNSNAME
  local st
  st=$(tailscale funnel status --json 2>/dev/null) || st='{}'
  [ -n "$st" ] || st='{}'
  # shellcheck disable=SC2016 # $hp, $p and $proxy are jq variables.
  json --arg hp "$1:$PUBLIC_PORT" --arg p "$PORT" '
    (.Web[$hp].Handlers["/"].Proxy // "") as $proxy
    | if $proxy == "" then "off"
      elif ($proxy | IN("http://127.0.0.1:" + $p, "http://localhost:" + $p,
                         "127.0.0.1:" + $p, "localhost:" + $p))
           and (.AllowFunnel[$hp] // false) then "on"
      else "other" end' <<<"$st"
}

health_json() {
  curl -fsS --max-time 3 "http://127.0.0.1:$PORT/health" 2>/dev/null
}

# ---------------------------------------------------------------------------
# Files.  put_file writes only when the bytes differ, atomically (temp file in
# the same directory, then rename), and fixes mode and owner when only those
# drifted; an identical file keeps its mtime.  FILE_CHANGED=1 tells the
# caller the content changed.

FILE_CHANGED=0

ensure_dir() { # DIR
  [ -d "$1" ] && return 0
  run "cannot create $1" install -d -m 0755 "$1"
}

put_file() { # DEST MODE OWNER GROUP (text CONTENT | file SRC)
  local dest=$1 mode=$2 owner=$3 group=$4 kind=$5 src=$6 same=0 tmp want have_meta
  FILE_CHANGED=0
  if [ -f "$dest" ]; then
    if [ "$kind" = text ]; then
      cmp -s <(printf '%s\n' "$src") "$dest" && same=1
    else
      cmp -s "$src" "$dest" && same=1
    fi
  fi
  if [ "$same" = 1 ]; then
    if id -u "$owner" >/dev/null 2>&1 && getent group "$group" >/dev/null; then
      want="$mode $(id -u "$owner") $(getent group "$group" | cut -d: -f3)"
      have_meta=$(stat -c '%a %u %g' "$dest")
      if [ "$have_meta" = "$want" ]; then
        log "$dest unchanged"
        return 0
      fi
    fi
    # Only the metadata drifted: the service sees the same bytes, so this is
    # not reported as a content change (no restart or reload for it).
    run "cannot set owner of $dest" chown "$owner:$group" "$dest"
    run "cannot set mode of $dest" chmod "$mode" "$dest"
    return 0
  fi
  FILE_CHANGED=1
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = 1 ]; then
    log "would write $dest (mode $mode, $owner:$group)"
    return 0
  fi
  tmp=$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX") ||
    fail $? "cannot create a file in $(dirname "$dest")"
  TMP_FILES+=("$tmp")
  if [ "$kind" = text ]; then
    printf '%s\n' "$src" >"$tmp"
  else
    cat -- "$src" >"$tmp"
  fi
  chown "$owner:$group" "$tmp" || fail $? "cannot give $dest to $owner:$group"
  chmod "$mode" "$tmp"
  mv -f -- "$tmp" "$dest" || fail $? "cannot write $dest"
  log "wrote $dest (mode $mode, $owner:$group)"
}

remove_path() { # PATH...
  local p
  for p in "$@"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      run "cannot remove $p" rm -rf -- "$p"
    fi
  done
}

# ---------------------------------------------------------------------------
# Registry.  The bearer token reaches curl through a config on its standard
# input (-K -), never as an argument.

curl_cfg_quote() { # escapes \ and " for a double-quoted curl config value
  local v=${1//\\/\\\\}
  printf '%s' "${v//\"/\\\"}"
}

# registry_post ACTION CAPABILITY PROVIDER: POST $REGISTRY/capabilities/ACTION.
registry_post() {
  local action=$1 cap=$2 provider=$3 body out rc code resp url
  url=$REGISTRY_URL_VALUE/capabilities/$action
  body=$(jq -cn --arg c "$cap" --arg p "$provider" --argjson port "$PUBLIC_PORT" \
    '{capability:$c,provider:$p,port:$port}')
  if [ "$DRY_RUN" = 1 ]; then
    log "would POST $url $body (Authorization: Bearer from the register token)"
    return 0
  fi
  rc=0
  out=$(printf 'header = "Authorization: Bearer %s"\n' "$(curl_cfg_quote "$REGISTER_TOKEN_VALUE")" |
    curl -sS --max-time 30 -K - -X POST -H 'Content-Type: application/json' \
      --data-binary "$body" -w '\n%{http_code}' "$url") || rc=$?
  if [ "$rc" != 0 ]; then
    fail "$rc" "cannot reach $url; check --registry-url / REGISTRY_URL and the network, then run $PROG again"
  fi
  code=${out##*$'\n'}
  resp=${out%"$code"}
  resp=${resp%$'\n'}
  if ! [[ $code =~ ^2[0-9][0-9]$ ]]; then
    fail 1 "registry answered HTTP $code to $action $cap: ${resp:0:200}; check the register token and the registry, then run $PROG again"
  fi
}

need_register_token() {
  [ -n "$REGISTER_TOKEN_VALUE" ] && return 0
  if [ "$UNINSTALL" = 1 ]; then
    fail 1 "no register token to withdraw the registration: set REGISTER_TOKEN or give --register-token-file FILE (or delete $REG_MARKER to leave the registry as it is)"
  fi
  fail 1 "no register token: set REGISTER_TOKEN or give --register-token-file FILE (or unset the registry URL to skip registration)"
}

marker_get() { # KEY: values of KEY= lines of the registration record
  [ -f "$REG_MARKER" ] || return 0
  sed -n "s/^$1=//p" "$REG_MARKER"
}

# ---------------------------------------------------------------------------
# Install.

step_packages() {
  STEP=packages
  local want=("${TOOL_PKGS[@]}") missing=() p
  [ -n "$BINARY" ] && want+=("${RUNTIME_PKGS[@]}")
  for p in "${want[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all present: ${want[*]}"
    return 0
  fi
  run "apt-get update failed; check the network and /etc/apt/sources.list" apt-get update -qq
  run "apt-get could not install ${missing[*]}; see its message above" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step_tailscale_install() {
  STEP="tailscale install"
  if have tailscale; then
    log "tailscale is installed ($(command -v tailscale))"
    return 0
  fi
  if [ "$SKIP_TS_INSTALL" = 1 ]; then
    fail 1 "tailscale is not installed and --skip-tailscale-install was given; install it with the package manager (apt-get install tailscale from Tailscale's repository) or drop the flag"
  fi
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = 1 ]; then
    log "would download $TS_INSTALLER to a temporary file and run it with sh"
    return 0
  fi
  local script rc=0
  script=$(mktemp)
  TMP_FILES+=("$script")
  log "downloading $TS_INSTALLER"
  curl -fsSL --max-time 120 -o "$script" "$TS_INSTALLER" || rc=$?
  [ "$rc" = 0 ] || fail "$rc" "cannot download $TS_INSTALLER; check the network or install tailscale yourself and pass --skip-tailscale-install"
  log "running: sh $script"
  sh "$script" || fail $? "Tailscale's installer failed; see its output above, or install tailscale with the package manager and pass --skip-tailscale-install"
  rm -f -- "$script"
  hash -r
  have tailscale || fail 1 "the installer ran but no tailscale command is on PATH; install tailscale yourself and pass --skip-tailscale-install"
}

DNSNAME=""

step_tailscale_up() {
  STEP="tailscale up"
  if ! have tailscale; then
    # Only reachable under --dry-run, where the installer was not run.
    log "would run: tailscale up --auth-key=file:<temporary 0600 file> --hostname=$HOSTNAME_ARG"
    return 0
  fi
  local st state rc=0 host keyfile
  st=$(tailscale status --json 2>/dev/null) || rc=$?
  if [ -z "$st" ]; then
    fail "$rc" "tailscale status gives no answer: is tailscaled running? (systemctl status tailscaled)"
  fi
  state=$(json '.BackendState // ""' <<<"$st")
  if [ "$state" = Running ]; then
    DNSNAME=$(json '.Self.DNSName // ""' <<<"$st")
    DNSNAME=${DNSNAME%.}
    host=$(json '.Self.HostName // ""' <<<"$st")
    log "already connected as ${DNSNAME:-$host}"
    if [ "$HOSTNAME_GIVEN" = 1 ] && [ "$host" != "$HOSTNAME_ARG" ]; then
      run "tailscale set --hostname failed; see its message above" tailscale set "--hostname=$HOSTNAME_ARG"
      [ "$DRY_RUN" = 1 ] || DNSNAME=$(ts_dnsname)
    fi
    return 0
  fi
  if [ -z "$AUTH_KEY" ] && [ "$state" != Stopped ]; then
    fail 1 "tailscale is not logged in ($state) and no auth key was given: set TS_AUTHKEY or pass --auth-key-file FILE (create a key in the Tailscale admin console, Settings > Keys)"
  fi
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = 1 ]; then
    log "would run: tailscale up --auth-key=file:<temporary 0600 file> --hostname=$HOSTNAME_ARG"
    return 0
  fi
  local args=(up "--hostname=$HOSTNAME_ARG")
  if [ -n "$AUTH_KEY" ]; then
    # tailscale reads the key from the file, so ps never shows it.
    keyfile=$(mktemp)
    TMP_FILES+=("$keyfile")
    printf '%s\n' "$AUTH_KEY" >"$keyfile"
    args=(up "--auth-key=file:$keyfile" "--hostname=$HOSTNAME_ARG")
  fi
  log "running: $(quote_cmd tailscale "${args[@]}")"
  rc=0
  tailscale "${args[@]}" || rc=$?
  [ -z "${keyfile:-}" ] || rm -f -- "$keyfile"
  [ "$rc" = 0 ] || fail "$rc" "check the auth key (valid, not expired, reusable if used before) and that tailscaled runs (journalctl -u tailscaled)"
  st=$(tailscale status --json 2>/dev/null) || true
  [ -n "$st" ] || st='{}'
  state=$(json '.BackendState // ""' <<<"$st")
  [ "$state" = Running ] || fail 1 "tailscale is $state after 'tailscale up'; approve the machine in the admin console or use a pre-approved key"
  DNSNAME=$(json '.Self.DNSName // ""' <<<"$st")
  DNSNAME=${DNSNAME%.}
  log "connected as $DNSNAME"
}

PKG_CHANGED=0

step_cap_server() {
  STEP="install cap-server"
  PKG_CHANGED=0
  if [ -n "$DEB" ]; then
    local name version installed deb_path
    deb_path=$(realpath -- "$DEB")
    name=$(dpkg-deb -f "$deb_path" Package) || fail $? "$DEB is not a readable .deb"
    version=$(dpkg-deb -f "$deb_path" Version)
    installed=""
    if pkg_installed "$name"; then installed=$(dpkg-query -W -f='${Version}' "$name"); fi
    if [ "$installed" = "$version" ]; then
      log "$name $version is installed"
      return 0
    fi
    PKG_CHANGED=1
    run "apt-get could not install $DEB; run apt-get update and try again, or see its message above" \
      apt-get install -y --no-install-recommends "$deb_path"
    return 0
  fi
  ensure_dir "$ROOT/usr/local/bin"
  put_file "$LOCAL_BIN" 755 root root file "$BINARY"
  PKG_CHANGED=$FILE_CHANGED
  local helper
  helper=$(dirname "$BINARY")/cap-sandbox
  if [ -f "$helper" ]; then
    put_file "$LOCAL_HELPER" 755 root root file "$helper"
    if [ "$FILE_CHANGED" = 1 ]; then PKG_CHANGED=1; fi
  else
    log "no cap-sandbox beside $BINARY: children are sandboxed by cap-server itself (slower to start)"
  fi
}

step_user() {
  STEP="service user"
  if user_exists; then
    log "user $SVC_USER exists ($(id -un "$SVC_USER"):$(id -gn "$SVC_USER"))"
    return 0
  fi
  if [ "$DRY_RUN" = 1 ] && [ "$PKG_CHANGED" = 1 ] && [ -n "$DEB" ] && [ "$SVC_USER" = "$DEFAULT_USER" ]; then
    log "user $SVC_USER would be created by the package's postinst"
    return 0
  fi
  run "useradd could not create $SVC_USER" useradd --system --user-group \
    --home-dir /var/lib/cap-server --shell /usr/sbin/nologin "$SVC_USER"
  # video and render give access to /dev/dri and the NVIDIA devices; a group
  # this machine does not have is left out.
  local groups=() g
  for g in video render; do
    getent group "$g" >/dev/null && groups+=("$g")
  done
  if [ "${#groups[@]}" -gt 0 ]; then
    run "usermod could not add $SVC_USER to ${groups[*]}" usermod -a -G "$(IFS=,; echo "${groups[*]}")" "$SVC_USER"
  fi
}

RESTART_NEEDED=0
RELOAD_NEEDED=0
UNIT_CHANGED=0
TOKEN_GENERATED=0

config_content() {
  local src=$PKG_DIR/config.json cur
  if [ -f "$src" ]; then
    cur=$(jq -r '.port // empty' "$src") || fail $? "$src is not valid JSON"
    if [ "$cur" = "$PORT" ]; then
      cat -- "$src"
    else
      jq --argjson port "$PORT" '.port = $port' "$src"
    fi
    return 0
  fi
  # The repository copy is missing (script used outside the tree): the
  # layout's defaults.
  printf '{"host":"127.0.0.1","port":%s,"token_file":"/etc/cap-server/tokens","data_dir":"/var/lib/cap-server/objects","presets":"/etc/cap-server/presets.json","log_level":"info"}\n' "$PORT"
}

# With a registry, the server keeps its registration alive itself: it
# heartbeats its load and deregisters when it drains.  It needs the URL,
# the token and the public name, known once the machine is on the tailnet.
registry_env() {
  [ -n "$REGISTRY_URL_VALUE" ] && [ -n "$REGISTER_TOKEN_VALUE" ] || return 0
  ENV_SET[REGISTRY_URL]=$REGISTRY_URL_VALUE
  ENV_SET[REGISTRY_TOKEN]=$REGISTER_TOKEN_VALUE
  [ -z "$DNSNAME" ] || ENV_SET[CAP_PUBLIC_HOST]=$DNSNAME
  mapfile -t ENV_KEYS < <(printf '%s\n' "${!ENV_SET[@]}" | sort)
}

env_content() {
  local lines=() line key k done_keys=" " v
  registry_env
  if [ -f "$ENV_FILE" ]; then
    # Keep what is there (comments, settings given by hand or by an earlier
    # run) and replace only the settings given this time.
    while IFS= read -r line || [ -n "$line" ]; do
      if [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] && [ -n "${ENV_SET[${BASH_REMATCH[1]}]+x}" ]; then
        key=${BASH_REMATCH[1]}
        [[ $done_keys == *" $key "* ]] && continue
        lines+=("$(env_line "$key")")
        done_keys+="$key "
      else
        lines+=("$line")
      fi
    done <"$ENV_FILE"
  else
    lines+=("# cap-server environment (EnvironmentFile of cap-server.service), written by install.sh.")
    lines+=("# Storage credentials live here, never in config.json; mode 0600.")
  fi
  for k in "${ENV_KEYS[@]+"${ENV_KEYS[@]}"}"; do
    [[ $done_keys == *" $k "* ]] || lines+=("$(env_line "$k")")
  done
  printf '%s\n' "${lines[@]}"
}

# KEY=VALUE as systemd's EnvironmentFile reads it: plain when the value is
# made of safe characters, else double-quoted with \ and " escaped.
env_line() {
  local v=${ENV_SET[$1]}
  if [[ $v =~ ^[A-Za-z0-9_./:@%+=,-]*$ ]]; then
    printf '%s=%s' "$1" "$v"
  else
    v=${v//\\/\\\\}
    printf '%s="%s"' "$1" "${v//\"/\\\"}"
  fi
}

new_token() {
  if have openssl; then
    openssl rand -hex 32
  else
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
  fi
}

step_files() {
  STEP=config
  local group content
  group=$(svc_group)
  ensure_dir "$ROOT/etc"
  # Like the .deb's postinst: only root and the service's group may enter the
  # directory that holds the tokens and the storage credentials.
  if [ -n "$DEB" ] && [ "$DRY_RUN" = 1 ] && [ "$PKG_CHANGED" = 1 ] && ! [ -d "$ETC_DIR" ]; then
    log "$ETC_DIR and $CONFIG would come from the package"
  elif ! [ -d "$ETC_DIR" ]; then
    run "cannot create $ETC_DIR" install -d -m 0750 -o root -g "$group" "$ETC_DIR"
  elif [ "$(stat -c %G "$ETC_DIR")" != "$group" ] && [ $((8#$(stat -c %a "$ETC_DIR") & 1)) = 0 ]; then
    run "cannot give $ETC_DIR to group $group" chgrp "$group" "$ETC_DIR"
  fi
  if [ -n "$BINARY" ]; then
    [ -f "$PKG_DIR/presets.json" ] || fail 1 "$PKG_DIR/presets.json is missing; run $PROG from the cap-server source tree"
    content=$(config_content)
    put_file "$CONFIG" 644 root root text "$content"
    [ "$FILE_CHANGED" = 1 ] && RESTART_NEEDED=1
    put_file "$PRESETS" 644 root root file "$PKG_DIR/presets.json"
    [ "$FILE_CHANGED" = 1 ] && RELOAD_NEEDED=1
  elif [ -f "$CONFIG" ]; then
    # The .deb ships config.json as a conffile: only the port is ours to set,
    # and the file is left byte for byte as shipped when it already matches.
    if [ "$(jq -r '.port // empty' "$CONFIG")" != "$PORT" ]; then
      content=$(jq --argjson port "$PORT" '.port = $port' "$CONFIG")
      put_file "$CONFIG" 644 root root text "$content"
      RESTART_NEEDED=1
    else
      log "$CONFIG has port $PORT"
    fi
  elif [ "$DRY_RUN" = 0 ]; then
    fail 1 "the package did not install $CONFIG; reinstall it (apt-get install --reinstall cap-server)"
  fi

  STEP=tokens
  if [ -n "$TOKEN_SOURCE" ]; then
    put_file "$TOKENS" 600 "$SVC_USER" "$group" text "$TOKEN_CONTENT"
    [ "$FILE_CHANGED" = 1 ] && log "capability tokens from $TOKEN_SOURCE"
  elif [ -f "$TOKENS" ] && grep -q '^[[:space:]]*[^#[:space:]]' "$TOKENS"; then
    content=$(<"$TOKENS")
    put_file "$TOKENS" 600 "$SVC_USER" "$group" text "$content"
  else
    TOKEN_GENERATED=1
    if [ "$DRY_RUN" = 1 ]; then
      put_file "$TOKENS" 600 "$SVC_USER" "$group" text "default:<64 random hex digits>"
    else
      content="default:$(new_token)"
      [[ $content =~ ^default:[0-9a-f]{64}$ ]] || fail 1 "could not generate a token (openssl rand / /dev/urandom)"
      put_file "$TOKENS" 600 "$SVC_USER" "$group" text "$content"
      log "generated a new capability token (32 random bytes, hex) into $TOKENS"
    fi
  fi
  [ "$FILE_CHANGED" = 1 ] && RELOAD_NEEDED=1

  STEP="env file"
  content=$(env_content)
  put_file "$ENV_FILE" 600 "$SVC_USER" "$group" text "$content"
  [ "$FILE_CHANGED" = 1 ] && RESTART_NEEDED=1
  return 0
}

# The unit's supplementary groups that exist here (systemd refuses to start a
# unit naming a group the machine does not have).
unit_groups_fix() { # UNIT_TEXT -> prints the SupplementaryGroups line to use, or nothing
  local g kept=() dropped=() names=()
  read -r -a names <<<"$(sed -n 's/^SupplementaryGroups=//p' <<<"$1" | tr '\n' ' ')"
  [ "${#names[@]}" -gt 0 ] || return 0
  for g in "${names[@]}"; do
    if getent group "$g" >/dev/null; then kept+=("$g"); else dropped+=("$g"); fi
  done
  [ "${#dropped[@]}" -gt 0 ] || return 0
  printf 'SupplementaryGroups=%s\n' "${kept[*]-}"
}

step_unit() {
  STEP="systemd unit"
  UNIT_CHANGED=0
  local group text groups_line
  group=$(svc_group)
  if [ -n "$BINARY" ]; then
    local src=$PKG_DIR/systemd/cap-server.service
    [ -f "$src" ] || fail 1 "$src is missing; run $PROG from the cap-server source tree"
    text=$(sed -E 's#^(ExecStart=[-@:+!]*)/usr/bin/cap-server#\1/usr/local/bin/cap-server#' "$src")
    grep -q '^ExecStart=/usr/local/bin/cap-server' <<<"$text" ||
      fail 1 "$src has no 'ExecStart=/usr/bin/cap-server ...' line to point at /usr/local/bin/cap-server"
    if [ "$SVC_USER" != "$DEFAULT_USER" ]; then
      text=$(sed -E "s/^User=.*/User=$SVC_USER/; s/^Group=.*/Group=$group/" <<<"$text")
      grep -qx "User=$SVC_USER" <<<"$text" || fail 1 "$src has no User= line to set to $SVC_USER"
    fi
    groups_line=$(unit_groups_fix "$text")
    if [ -n "$groups_line" ]; then
      log "leaving out supplementary groups this machine does not have: $groups_line"
      text=$(sed -E "s/^SupplementaryGroups=.*/$groups_line/" <<<"$text" | awk '!(/^SupplementaryGroups=/ && seen++)')
    fi
    ensure_dir "$ROOT/etc/systemd"
    ensure_dir "$ROOT/etc/systemd/system"
    put_file "$LOCAL_UNIT" 644 root root text "$text"
    UNIT_CHANGED=$FILE_CHANGED
  else
    # The .deb's unit stays as shipped; a drop-in carries what differs here.
    local dropin=""
    # The packaged unit (or, before the package is installed under
    # --dry-run, the repository's copy it is built from).
    text=$(cat "/lib/systemd/system/$SERVICE.service" 2>/dev/null ||
      cat "$PKG_DIR/systemd/cap-server.service" 2>/dev/null || true)
    if [ "$SVC_USER" != "$DEFAULT_USER" ]; then
      dropin+=$'User='"$SVC_USER"$'\nGroup='"$group"$'\n'
    fi
    groups_line=$(unit_groups_fix "$text")
    if [ -n "$groups_line" ]; then
      dropin+=$'SupplementaryGroups=\n'"$groups_line"$'\n'
    fi
    if [ -n "$dropin" ]; then
      ensure_dir "$DROPIN_DIR"
      put_file "$DROPIN" 644 root root text "# Written by install.sh for this machine."$'\n'"[Service]"$'\n'"${dropin%$'\n'}"
      UNIT_CHANGED=$FILE_CHANGED
    else
      log "packaged unit used as is"
    fi
  fi
  [ "$UNIT_CHANGED" = 1 ] && RESTART_NEEDED=1
  [ "$PKG_CHANGED" = 1 ] && RESTART_NEEDED=1
  return 0
}

step_service() {
  STEP="start service"
  if [ "$UNIT_CHANGED" = 1 ]; then
    run "systemctl daemon-reload failed" systemctl daemon-reload
  fi
  if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
    log "$SERVICE is enabled"
  else
    run "systemctl enable $SERVICE failed; see systemctl status $SERVICE" systemctl enable "$SERVICE"
  fi
  local active=0
  systemctl is-active --quiet "$SERVICE" 2>/dev/null && active=1
  local hint="$SERVICE did not start; run journalctl -u $SERVICE -n 50 to see why"
  if [ "$RESTART_NEEDED" = 1 ]; then
    run "$hint" systemctl restart "$SERVICE"
  elif [ "$active" = 0 ]; then
    run "$hint" systemctl start "$SERVICE"
  elif [ "$RELOAD_NEEDED" = 1 ]; then
    # Only tokens or presets changed: cap-server rereads them on SIGHUP
    # without dropping connections or jobs.
    run "systemctl reload $SERVICE failed; see journalctl -u $SERVICE" systemctl reload "$SERVICE"
  else
    log "$SERVICE is running with this configuration"
  fi
}

HEALTH=""

step_health() {
  STEP="wait for /health"
  local url="http://127.0.0.1:$PORT/health" deadline
  if [ "$DRY_RUN" = 1 ]; then
    log "would wait up to $HEALTH_TIMEOUT s for $url to answer 200"
    HEALTH=$(health_json) || HEALTH=""
    return 0
  fi
  deadline=$(($(date +%s) + HEALTH_TIMEOUT))
  while :; do
    if HEALTH=$(health_json); then
      log "$url answers: $(json '"status " + .status + ", version " + (.version // "?") + ", capabilities " + ((.capabilities // []) | join(","))' <<<"$HEALTH")"
      return 0
    fi
    [ "$(date +%s)" -lt "$deadline" ] ||
      fail 1 "$url did not answer 200 within $HEALTH_TIMEOUT s; run journalctl -u $SERVICE -n 50 to see why (and systemctl status $SERVICE)"
    sleep 0.5
  done
}

step_funnel() {
  STEP="tailscale funnel"
  if [ -z "$DNSNAME" ]; then
    if [ "$DRY_RUN" = 1 ]; then
      log "would run: tailscale funnel --bg $PORT"
      return 0
    fi
    DNSNAME=$(ts_dnsname)
    [ -n "$DNSNAME" ] || fail 1 "tailscale reports no MagicDNS name; enable MagicDNS and HTTPS certificates in the admin console (DNS page)"
  fi
  local state
  state=$(funnel_state "$DNSNAME")
  case "$state" in
    on)
      log "already on: https://$DNSNAME -> http://127.0.0.1:$PORT"
      return 0
      ;;
    other)
      log "https://$DNSNAME:$PUBLIC_PORT proxies elsewhere; pointing it at port $PORT"
      run "tailscale funnel --https=$PUBLIC_PORT off failed" tailscale funnel "--https=$PUBLIC_PORT" off
      ;;
  esac
  # --bg keeps the configuration after the command returns (without it Funnel
  # lasts only while the command runs).
  run "allow Funnel for this machine in the tailnet policy (nodeAttrs funnel) and enable HTTPS certificates, then run $PROG again" \
    tailscale funnel --bg "$PORT"
  [ "$DRY_RUN" = 1 ] && return 0
  state=$(funnel_state "$DNSNAME")
  [ "$state" = on ] || fail 1 "tailscale funnel status does not show https://$DNSNAME -> 127.0.0.1:$PORT; check tailscale funnel status"
  log "on: https://$DNSNAME -> http://127.0.0.1:$PORT"
}

REG_NOTE=""

step_register() {
  STEP=register
  if [ -z "$REGISTRY_URL_VALUE" ]; then
    log "skipped: no --registry-url or REGISTRY_URL"
    REG_NOTE="not registered (no registry URL)"
    return 0
  fi
  need_register_token
  local caps=() cap provider=${DNSNAME:-<dnsname>} record old_caps old_provider old_url verb
  if [ -n "$HEALTH" ]; then
    mapfile -t caps < <(json '.capabilities[]?' <<<"$HEALTH")
  fi
  if [ "${#caps[@]}" -eq 0 ]; then
    if [ "$DRY_RUN" = 1 ]; then
      log "would POST $REGISTRY_URL_VALUE/capabilities/register once per capability listed by /health"
      return 0
    fi
    fail 1 "/health lists no capabilities (is ffmpeg installed?); see journalctl -u $SERVICE"
  fi
  old_url=$(marker_get registry_url)
  old_provider=$(marker_get provider)
  mapfile -t old_caps < <(marker_get capability)
  verb=registered
  [ "$old_url" = "$REGISTRY_URL_VALUE" ] && [ "$old_provider" = "$provider" ] && verb=refreshed
  # Registrations of an earlier run that no longer hold (a capability gone, a
  # new name) are withdrawn first.
  if [ "$old_url" = "$REGISTRY_URL_VALUE" ] && [ -n "$old_provider" ]; then
    for cap in "${old_caps[@]+"${old_caps[@]}"}"; do
      if [ "$old_provider" != "$provider" ] || ! printf '%s\n' "${caps[@]}" | grep -qxF -- "$cap"; then
        registry_post deregister "$cap" "$old_provider"
        log "deregistered $cap (provider $old_provider)"
      fi
    done
  fi
  for cap in "${caps[@]}"; do
    registry_post register "$cap" "$provider"
    [ "$DRY_RUN" = 1 ] || log "$verb $cap -> $provider:$PUBLIC_PORT"
  done
  record="# Registrations made by install.sh; install.sh --uninstall withdraws them."
  record+=$'\n'"registry_url=$REGISTRY_URL_VALUE"$'\n'"provider=$provider"$'\n'"port=$PUBLIC_PORT"
  for cap in "${caps[@]}"; do record+=$'\n'"capability=$cap"; done
  [ "$DRY_RUN" = 1 ] && return 0
  put_file "$REG_MARKER" 644 root root text "$record"
  REG_NOTE="$verb with $REGISTRY_URL_VALUE: ${caps[*]}"
}

summary() {
  STEP="done"
  echo
  if [ "$DRY_RUN" = 1 ]; then
    echo "Dry run: $CHANGES action(s) above would be taken; nothing was changed."
    return 0
  fi
  if [ "$CHANGES" = 0 ]; then
    echo "Nothing changed: cap-server was already installed, running and published as asked."
  else
    echo "cap-server is installed and running ($CHANGES change(s))."
  fi
  echo "  public URL:   https://$DNSNAME/health  (Funnel :$PUBLIC_PORT -> 127.0.0.1:$PORT)"
  echo "  registry:     ${REG_NOTE}"
  if [ "$TOKEN_GENERATED" = 1 ]; then
    echo "  token:        generated; stored in $SHOW_TOKENS (give it to the Worker as its bearer token)"
  else
    echo "  token:        stored in $SHOW_TOKENS"
  fi
  echo "                read it with: sudo cut -d: -f2- $SHOW_TOKENS"
  echo "  logs:         journalctl -u $SERVICE -f"
  echo "  status:       systemctl status $SERVICE"
}

install_all() {
  [ "$DRY_RUN" = 1 ] && echo "Dry run: printing what would be done; nothing is changed."
  step_packages
  step_tailscale_install
  step_tailscale_up
  step_cap_server
  step_user
  step_files
  step_unit
  step_service
  step_health
  # Funnel goes on only once the server answers with its token in place, so
  # the public URL never points at nothing.
  step_funnel
  step_register
  summary
}

# ---------------------------------------------------------------------------
# Uninstall.

uninstall_all() {
  [ "$DRY_RUN" = 1 ] && echo "Dry run: printing what would be done; nothing is changed."
  local deb_installed=0 cfg_port
  if [ -z "$ROOT" ] && pkg_installed "$SERVICE"; then deb_installed=1; fi
  # The port Funnel points at is the one in the installed config unless given.
  if [ -f "$CONFIG" ] && have jq; then
    cfg_port=$(jq -r '.port // empty' "$CONFIG" 2>/dev/null || true)
    [[ $cfg_port =~ ^[0-9]+$ ]] && PORT=$cfg_port
  fi
  if have tailscale; then DNSNAME=$(ts_dnsname); fi

  STEP=deregister
  local url caps=() cap provider
  url=${REGISTRY_URL_VALUE:-$(marker_get registry_url)}
  provider=$(marker_get provider)
  mapfile -t caps < <(marker_get capability)
  if [ "${#caps[@]}" -eq 0 ] && HEALTH=$(health_json); then
    mapfile -t caps < <(json '.capabilities[]?' <<<"$HEALTH")
  fi
  provider=${provider:-$DNSNAME}
  if [ -z "$url" ]; then
    log "skipped: no --registry-url, REGISTRY_URL or earlier registration"
  elif [ "${#caps[@]}" -eq 0 ] || [ -z "$provider" ]; then
    log "nothing registered"
  else
    need_register_token
    REGISTRY_URL_VALUE=$url
    for cap in "${caps[@]}"; do
      registry_post deregister "$cap" "$provider"
      [ "$DRY_RUN" = 1 ] || log "deregistered $cap (provider $provider)"
    done
    CHANGES=$((CHANGES + 1))
  fi
  [ -f "$REG_MARKER" ] && remove_path "$REG_MARKER"

  STEP="funnel off"
  if ! have tailscale; then
    log "tailscale is not installed"
  elif [ -z "$DNSNAME" ]; then
    log "tailscale is not connected; nothing to turn off"
  else
    case "$(funnel_state "$DNSNAME")" in
      on) run "tailscale funnel --https=$PUBLIC_PORT off failed; see tailscale funnel status" \
        tailscale funnel "--https=$PUBLIC_PORT" off ;;
      other) log "https://$DNSNAME:$PUBLIC_PORT serves something else than port $PORT; left alone" ;;
      *) log "already off" ;;
    esac
  fi

  STEP="stop service"
  if systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
    run "systemctl stop $SERVICE failed" systemctl stop "$SERVICE"
  else
    log "$SERVICE is not running"
  fi
  if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
    run "systemctl disable $SERVICE failed" systemctl disable "$SERVICE"
  else
    log "$SERVICE is not enabled"
  fi

  STEP="remove cap-server"
  if [ "$deb_installed" = 1 ]; then
    if [ "$PURGE" = 1 ]; then
      run "apt-get purge $SERVICE failed" apt-get purge -y "$SERVICE"
    else
      run "apt-get remove $SERVICE failed" apt-get remove -y "$SERVICE"
    fi
  fi
  local unit_gone=0
  if [ -e "$LOCAL_UNIT" ] || [ -e "$DROPIN_DIR" ]; then unit_gone=1; fi
  remove_path "$LOCAL_BIN" "$LOCAL_HELPER" "$LOCAL_UNIT" "$DROPIN_DIR"
  if [ "$unit_gone" = 1 ]; then
    run "systemctl daemon-reload failed" systemctl daemon-reload
  fi
  if [ "$PURGE" = 1 ]; then
    remove_path "$ETC_DIR" "$STATE_DIR"
  elif [ -d "$ETC_DIR" ] || [ -d "$STATE_DIR" ]; then
    log "kept $ETC_DIR and $STATE_DIR (tokens, env, objects); --purge removes them"
  fi

  STEP="done"
  echo
  if [ "$DRY_RUN" = 1 ]; then
    echo "Dry run: $CHANGES action(s) above would be taken; nothing was changed."
  elif [ "$CHANGES" = 0 ]; then
    echo "Nothing changed: cap-server was not installed."
  else
    echo "cap-server is uninstalled. Tailscale stays installed and logged in (tailscale logout to leave the tailnet)."
    echo "The user $SVC_USER is kept (userdel $SVC_USER removes it)."
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall_all
else
  install_all
fi
