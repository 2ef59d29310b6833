#!/usr/bin/env bash
# Prints the path of a real HashiCorp Vault server binary, building it once
# from the Go module proxy when none is available.
#
# Order: $VAULT_BIN if set, then `vault` on PATH, then the cached build at
# $AFFIX_ROTATOR_CACHE/vault-$VERSION/vault (default ~/.cache/affix-rotator).
# The build copies Vault's module out of the module cache, drops its local
# replace directives (api, api/auth/*, sdk) so the published modules are used, and
# builds it. On 2 cores the first build takes ~8 minutes; later calls are
# instant. The binary is never placed inside the repository.
set -euo pipefail

VERSION="${VAULT_VERSION:-v1.21.0}"
CACHE="${AFFIX_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/affix-rotator}"
OUT="$CACHE/vault-$VERSION/vault"

if [[ -n "${VAULT_BIN:-}" ]]; then
  [[ -x "$VAULT_BIN" ]] || { echo "vault-bin: VAULT_BIN=$VAULT_BIN is not executable" >&2; exit 1; }
  echo "$VAULT_BIN"; exit 0
fi
if command -v vault >/dev/null 2>&1; then
  command -v vault; exit 0
fi
if [[ -x "$OUT" ]]; then
  echo "$OUT"; exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/vault-build.lock"
flock 9
if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi

echo "vault-bin: building Vault $VERSION from the Go module proxy (first run only, ~8 min on 2 cores)..." >&2
start=$(date +%s)
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/vault@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n "$dir" && -d "$dir" ]] || { echo "vault-bin: could not download github.com/hashicorp/vault@$VERSION" >&2; exit 1; }
src="$CACHE/vault-$VERSION/src"
rm -rf "$src"
mkdir -p "$src"
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
# Nested modules (api, api/auth/*, sdk) are not part of the module zip: use
# the published versions instead of the local replace directives.
sed -i -E '/^replace github\.com\/hashicorp\/vault\/[a-z/]+ => \.\//d' "$src/go.mod"
(cd "$src" && GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$OUT.tmp" .)
mv "$OUT.tmp" "$OUT"
rm -rf "$src"
echo "vault-bin: built $OUT in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
