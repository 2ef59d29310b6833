#!/usr/bin/env bash
# Starts a local stack by itself — a real Vault dev server, the Affix fake
# (affixtest) and affix-rotator on a short schedule (@every 1m, grace 10s) —
# and shows rotations happening. Ctrl-C stops everything.
#
#   scripts/demo.sh              # run until Ctrl-C
#   DEMO_DURATION=90 scripts/demo.sh   # stop by itself after 90 s
#
# Ports (each moved by its variable), all on 127.0.0.1:
#   VAULT_PORT=18200   the Vault dev server
#   AFFIX_PORT=18080   the Affix fake
#   LISTEN_PORT=9464   affix-rotator's /status, /metrics, /healthz, /readyz
# e.g. AFFIX_PORT=28080 scripts/demo.sh when 18080 is taken.
#
# Each part is checked once started: if one cannot start (its port taken,
# say), the demo stops within 5 s, exits 1 and names the part, the port and
# the variable that moves it. The ports are checked before anything is
# built, too.
set -euo pipefail
cd "$(dirname "$0")/.."

VAULT_PORT="${VAULT_PORT:-18200}"
AFFIX_PORT="${AFFIX_PORT:-18080}"
LISTEN_PORT="${LISTEN_PORT:-9464}"
DURATION="${DEMO_DURATION:-0}"

# port_in_use PORT: something already accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fail PART PORT VAR [LOG]: says which part could not start and how to move
# it, shows the end of its log, and exits 1.
fail() {
  echo "demo: FAILED: $1 could not start on 127.0.0.1:$2: the port is taken or the part failed;" \
    "free the port or pick another one with $3=<port> (e.g. $3=$(($2 + 10000)) scripts/demo.sh)" >&2
  if [[ -n "${4:-}" && -s "$4" ]]; then
    echo "demo: last lines of its log:" >&2
    tail -n 5 "$4" | sed 's/^/  /' >&2
  fi
  exit 1
}

taken=0
for part in "Vault dev server:$VAULT_PORT:VAULT_PORT" "Affix fake:$AFFIX_PORT:AFFIX_PORT" "affix-rotator listener:$LISTEN_PORT:LISTEN_PORT"; do
  IFS=: read -r name port var <<<"$part"
  if port_in_use "$port"; then
    echo "demo: FAILED: $name cannot start: 127.0.0.1:$port is already taken by another process; free it or pick another port with $var=<port> (e.g. $var=$((port + 10000)) scripts/demo.sh)" >&2
    taken=1
  fi
done
[[ "$taken" == 0 ]] || exit 1

work=$(mktemp -d)
# Stopped in this order at exit: the daemon first (it releases its lease in
# Vault), then the Affix fake, then Vault.
rot_pid="" affix_pid="" vault_pid=""
stop() {
  [[ -n "$1" ]] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  wait "$1" 2>/dev/null || true
}
cleanup() {
  stop "$rot_pid"
  stop "$affix_pid"
  stop "$vault_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_up NAME PORT VAR PID LOG CHECK...: waits up to 5 s for CHECK to
# succeed while PID is alive; fails naming the part otherwise.
wait_up() {
  local name=$1 port=$2 var=$3 pid=$4 log=$5
  shift 5
  local deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; fail "$name" "$port" "$var" "$log"; }
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "$name" "$port" "$var" "$log"
}

VAULT_BIN="$(bash scripts/vault-bin.sh)"
echo "demo: building affix-rotator and the Affix fake..."
go build -o "$work/affix-rotator" ./cmd/affix-rotator
go build -o "$work/affixtest" ./affix/affixtest/cmd/affixtest

# Demo-only credentials, random each run, never printed.
rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
export VAULT_TOKEN="demo-root-$(rand_hex 8)"
export AFFIX_API_KEY="demo-key-$(rand_hex 8)"
s0="$(rand_hex 4)-$(rand_hex 4)-$(rand_hex 4)-$(rand_hex 4)"

echo "demo: starting the Vault dev server on 127.0.0.1:$VAULT_PORT (VAULT_PORT moves it)"
VAULT_DISABLE_MLOCK=true HOME="$work" "$VAULT_BIN" server -dev -dev-root-token-id="$VAULT_TOKEN" \
  -dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-no-store-token -log-level=error >"$work/vault.log" 2>&1 &
vault_pid=$!
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"
# Our token answers only on our Vault: another program on the port fails it.
wait_up "the Vault dev server" "$VAULT_PORT" VAULT_PORT "$vault_pid" "$work/vault.log" \
  curl -fsS -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/auth/token/lookup-self"

echo "demo: seeding secret/affix/demo from stdin, create-only (what an operator does once:"
echo "      read -rs -p 'current client_secret: ' S && printf '%s' \"\$S\" | vault kv put -cas=0 secret/affix/demo client_secret=-; unset S)"
printf '%s' "$s0" | "$VAULT_BIN" kv put -cas=0 secret/affix/demo client_secret=- >/dev/null

echo "demo: starting the Affix fake on 127.0.0.1:$AFFIX_PORT (AFFIX_PORT moves it), accepting the seeded secret"
AFFIX_INITIAL_SECRET="$s0" "$work/affixtest" -listen "127.0.0.1:$AFFIX_PORT" -api-key-env AFFIX_API_KEY \
  -secret-env AFFIX_INITIAL_SECRET -client-id demo-client-id 2>"$work/affixtest.log" &
affix_pid=$!
unset s0
# The fake's own admin endpoint: another program on the port fails it.
wait_up "the Affix fake" "$AFFIX_PORT" AFFIX_PORT "$affix_pid" "$work/affixtest.log" \
  curl -fsS "http://127.0.0.1:$AFFIX_PORT/_affixtest/state"

cat >"$work/config.yaml" <<YAML
listen: "127.0.0.1:$LISTEN_PORT"
instance_id: demo
log: {level: info, format: console}
vault:
  address: "$VAULT_ADDR"
  kv_mount: secret
  auth: {method: token, token_env: VAULT_TOKEN}
affix:
  base_url: "http://127.0.0.1:$AFFIX_PORT"
  api_key_env: AFFIX_API_KEY
  timeout: 5s
rotation: {lease_duration: 1m, retry_initial: 1s, retry_max: 10s}
clients:
  - name: demo
    vault_path: affix/demo
    schedule: "@every 1m"   # -validate refuses anything more often
    grace_period: 10s
    max_age: 2m        # a freshly seeded record has no rotated_at: the first rotation starts at once
YAML
"$work/affix-rotator" validate --config "$work/config.yaml"

echo
echo "demo: affix-rotator is starting on 127.0.0.1:$LISTEN_PORT (LISTEN_PORT moves it). Watch the log lines below; also try:"
echo "  curl -s http://127.0.0.1:$LISTEN_PORT/status"
echo "  curl -s http://127.0.0.1:$LISTEN_PORT/metrics | grep '^affix_rotator_'"
echo "  curl -s http://127.0.0.1:$AFFIX_PORT/_affixtest/state     # what the fake accepts (fingerprints)"
echo "Every 10 s a 'demo:' line checks that the secret in Vault is one Affix accepts (fingerprints only)."
echo
start=$SECONDS
"$work/affix-rotator" run --config "$work/config.yaml" 2> >(tee "$work/rotator.log" >&2) &
rot_pid=$!
# Our daemon's /status names its instance id; another program on the port
# (or a daemon that could not listen and exited) fails it.
wait_up "the affix-rotator listener" "$LISTEN_PORT" LISTEN_PORT "$rot_pid" "$work/rotator.log" \
  sh -c "curl -fsS http://127.0.0.1:$LISTEN_PORT/status | grep -q '\"instance_id\": *\"demo\"'"

fp() { printf '%s' "$1" | sha256sum | cut -c1-12; }
rotations() {
  curl -fsS "http://127.0.0.1:$LISTEN_PORT/metrics" 2>/dev/null |
    sed -n 's/^affix_rotator_rotations_total{client="demo",result="success"} //p'
}
first="" last=$SECONDS
while kill -0 "$rot_pid" 2>/dev/null; do
  sleep 1
  n=$(rotations || true)
  if [[ -z "$first" && -n "$n" && "$n" != 0 ]]; then
    first=$((SECONDS - start))
    echo "demo: first rotation completed ${first}s after the daemon started"
  fi
  ((SECONDS - last >= 10)) || continue
  last=$SECONDS
  cur=$("$VAULT_BIN" kv get -field=client_secret secret/affix/demo 2>/dev/null || true)
  phase=$("$VAULT_BIN" kv get -field=phase secret/affix/demo 2>/dev/null || echo stable)
  accepted=$(curl -fsS "http://127.0.0.1:$AFFIX_PORT/_affixtest/state" | tr -d '\n ' | sed -n 's/.*"accepted":\[\([^]]*\)\].*/\1/p')
  ok="NO: LOCKOUT"
  [[ -n "$cur" && "$accepted" == *"$(fp "$cur")"* ]] && ok="yes"
  echo "demo: t=$((SECONDS - start))s phase=$phase vault client_secret=$(fp "$cur") affix accepts=[$accepted] in-vault-secret-accepted=$ok rotations=${n:-0}"
  unset cur
  if [[ "$DURATION" != 0 && $((SECONDS - start)) -ge "$DURATION" ]]; then
    echo "demo: $DURATION s elapsed; stopping."
    break
  fi
done
if ! kill -0 "$rot_pid" 2>/dev/null; then
  wait "$rot_pid" && code=0 || code=$?
  rot_pid=""
  echo "demo: FAILED: affix-rotator exited with status $code (its log is above)" >&2
  exit 1
fi
