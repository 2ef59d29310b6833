#!/usr/bin/env bash
# Starts a local stack by itself — a real Vault dev server, the Affix fake
# (affixtest) and affix-rotator on a short schedule (@every 1m, grace 10s) —
# and shows rotations happening. Ctrl-C stops everything.
#
#   scripts/demo.sh              # run until Ctrl-C
#   DEMO_DURATION=90 scripts/demo.sh   # stop by itself after 90 s
#
# Ports (override with env): Vault 18200, Affix fake 18080, rotator 9464.
set -euo pipefail
cd "$(dirname "$0")/.."

VAULT_PORT="${VAULT_PORT:-18200}"
AFFIX_PORT="${AFFIX_PORT:-18080}"
LISTEN_PORT="${LISTEN_PORT:-9464}"
DURATION="${DEMO_DURATION:-0}"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

VAULT_BIN="$(bash scripts/vault-bin.sh)"
echo "demo: building affix-rotator and the Affix fake..."
go build -o "$work/affix-rotator" ./cmd/affix-rotator
go build -o "$work/affixtest" ./affix/affixtest/cmd/affixtest

# Demo-only credentials, random each run, never printed.
rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
export VAULT_TOKEN="demo-root-$(rand_hex 8)"
export AFFIX_API_KEY="demo-key-$(rand_hex 8)"
s0="$(rand_hex 4)-$(rand_hex 4)-$(rand_hex 4)-$(rand_hex 4)"

echo "demo: starting Vault dev server on 127.0.0.1:$VAULT_PORT"
VAULT_DISABLE_MLOCK=true HOME="$work" "$VAULT_BIN" server -dev -dev-root-token-id="$VAULT_TOKEN" \
  -dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-no-store-token -log-level=error >"$work/vault.log" 2>&1 &
pids+=($!)
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"
for _ in $(seq 1 100); do
  curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$VAULT_ADDR/v1/sys/health" >/dev/null || { echo "demo: vault did not start:"; cat "$work/vault.log"; exit 1; }

echo "demo: seeding secret/affix/demo (what an operator does once: vault kv put secret/affix/demo client_secret=…)"
"$VAULT_BIN" kv put secret/affix/demo client_secret="$s0" >/dev/null

echo "demo: starting the Affix fake on 127.0.0.1:$AFFIX_PORT, accepting the seeded secret"
AFFIX_INITIAL_SECRET="$s0" "$work/affixtest" -listen "127.0.0.1:$AFFIX_PORT" -api-key-env AFFIX_API_KEY \
  -secret-env AFFIX_INITIAL_SECRET -client-id demo-client-id 2>"$work/affixtest.log" &
pids+=($!)
unset s0

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
"$work/affix-rotator" -config "$work/config.yaml" -validate

echo
echo "demo: affix-rotator is starting. Watch the log lines below; also try:"
echo "  curl -s http://127.0.0.1:$LISTEN_PORT/status"
echo "  curl -s http://127.0.0.1:$LISTEN_PORT/metrics | grep ^affix_rotator_"
echo "  curl -s http://127.0.0.1:$AFFIX_PORT/_affixtest/state     # what the fake accepts (fingerprints)"
echo "Every 10 s a 'demo:' line checks that the secret in Vault is one Affix accepts (fingerprints only)."
echo
"$work/affix-rotator" -config "$work/config.yaml" &
rot=$!
pids+=($rot)

fp() { printf '%s' "$1" | sha256sum | cut -c1-12; }
start=$(date +%s)
while kill -0 "$rot" 2>/dev/null; do
  sleep 10
  now=$(date +%s)
  cur=$("$VAULT_BIN" kv get -field=client_secret secret/affix/demo 2>/dev/null || true)
  phase=$("$VAULT_BIN" kv get -field=phase secret/affix/demo 2>/dev/null || echo stable)
  accepted=$(curl -fsS "http://127.0.0.1:$AFFIX_PORT/_affixtest/state" | tr -d '\n ' | sed -n 's/.*"accepted":\[\([^]]*\)\].*/\1/p')
  ok="NO: LOCKOUT"
  [[ -n "$cur" && "$accepted" == *"$(fp "$cur")"* ]] && ok="yes"
  rotations=$(curl -fsS "http://127.0.0.1:$LISTEN_PORT/metrics" | sed -n 's/^affix_rotator_rotations_total{client="demo",result="success"} //p')
  echo "demo: t=$((now-start))s phase=$phase vault client_secret=$(fp "$cur") affix accepts=[$accepted] in-vault-secret-accepted=$ok rotations=${rotations:-0}"
  unset cur
  if [[ "$DURATION" != 0 && $((now-start)) -ge "$DURATION" ]]; then
    echo "demo: $DURATION s elapsed; stopping."
    kill -TERM "$rot"; wait "$rot" || true
    break
  fi
done
