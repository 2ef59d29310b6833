#!/usr/bin/env bash
# Runs every check and test of the project: the one test command (README,
# CI). The first run on a fresh machine builds a Vault server binary from the
# Go module proxy (~8 min on 2 cores, cached in ~/.cache/affix-rotator);
# later runs take a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
VAULT_BIN="$(bash scripts/vault-bin.sh)"
export VAULT_BIN
echo "test: vault binary: $VAULT_BIN"

echo "test: gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './deploy/k8scheck/*'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "test: go vet"
go vet ./...

echo "test: go test (race detector on)"
go test -race -count=1 -timeout 30m ./...

# The race detector slows the simulation (internal/simworld) about five
# times, so the run above plays 150 schedules of it; this one plays 1,000
# without it (about a minute).
echo "test: simulation, 1000 schedules (race detector off)"
go test -count=1 -timeout 20m ./internal/simworld -run 'TestSimulation$' -sim.n=1000

# deploy/check.sh also builds the container image without Docker
# (deploy/image: an OCI layout and its SBOM, digest and size printed) and
# runs that module's tests on it (a few seconds).
if [[ -f deploy/check.sh ]]; then
  echo "test: deploy checks (Helm chart, image and SBOM, alerts, systemd unit)"
  bash deploy/check.sh
fi
# Known vulnerabilities of the modules and the standard library the code
# reaches. govulncheck reads its database from GOVULNDB (a URL, or
# file:///path to an offline copy in the vuln.go.dev layout), else
# https://vuln.go.dev; without a reachable database it is skipped, loudly.
GOVULNCHECK="golang.org/x/vuln/cmd/govulncheck@v1.9.0"
vulndb="${GOVULNDB:-https://vuln.go.dev}"
if [[ "$vulndb" == file://* ]] || curl -fsS -m 10 -o /dev/null "$vulndb/index/db.json.gz" 2>/dev/null; then
  echo "test: govulncheck (database $vulndb)"
  go run "$GOVULNCHECK" -db "$vulndb" ./...
else
  echo "test: govulncheck SKIPPED: its database $vulndb cannot be reached from here; nothing was checked for known vulnerabilities (README, Vulnerability scanning)"
fi

echo "test: all passed in $(( $(date +%s) - start ))s"
