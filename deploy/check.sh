#!/usr/bin/env bash
# Every check of deploy/: one PASS or FAIL line per check, a summary line, and
# a non-zero exit status if any check failed. CI runs it from the repository
# root (scripts/test.sh); it works from anywhere.
#
#   bash deploy/check.sh
#
# Tools: helm and promtool are taken from PATH when there (helm must be v3),
# else built once from the Go module proxy into
# ${AFFIX_ROTATOR_CACHE:-~/.cache/affix-rotator}/tools/ and reused
# (first run: a few minutes; then seconds). If promtool cannot be built, the
# Debian package `prometheus` (which ships promtool) is installed when apt-get
# and root are available. systemd-analyze comes with systemd.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v3.22.0
PROMTOOL_VERSION=$(awk '$1 == "github.com/prometheus/prometheus" {print $2; exit}' deploy/tools/promtool/go.mod)
KUBE_VERSION=1.31.0
cache="${AFFIX_ROTATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/affix-rotator}"
tools="$cache/tools"
mkdir -p "$tools"
exec 8>"$tools/.build.lock" # one tool build at a time across concurrent runs

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec 3>&1 # notices from functions whose stdout is captured

# Go settings for what this script builds: no toolchain download, no cgo.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

passed=0
failed=0
failed_names=()
start_all=$(date +%s)

pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); failed_names+=("$1"); echo "FAIL $*"; }

# check NAME COMMAND...: run COMMAND, its output kept aside; print it
# (indented) and FAIL if it fails, else PASS, with the time taken.
check() {
  local name=$1; shift
  local log="$work/log" t0
  t0=$(date +%s)
  if "$@" >"$log" 2>&1; then
    pass "$name ($(( $(date +%s) - t0 ))s)"
  else
    sed 's/^/    /' "$log" | tail -n 80
    fail "$name ($(( $(date +%s) - t0 ))s)"
  fi
}

# --- tools -----------------------------------------------------------------

# The builds go to a temporary directory, then are moved in place, so that an
# interrupted build leaves no half tool.
build_helm() {
  local dir="$tools/helm-$HELM_VERSION" tmp="$tools/.helm-$HELM_VERSION.$$"
  flock 8
  [[ -x $dir/helm ]] && { flock -u 8; return 0; } # built meanwhile by another run
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "     building helm $HELM_VERSION into $dir (once; a minute or two)" >&3
  if CGO_ENABLED=0 GOBIN="$tmp" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2; then
    rm -rf "$dir" && mv "$tmp" "$dir" && flock -u 8
  else
    rm -rf "$tmp"; flock -u 8
    return 1
  fi
}

build_promtool() {
  local dir="$tools/promtool-$PROMTOOL_VERSION" tmp="$tools/.promtool-$PROMTOOL_VERSION.$$"
  flock 8
  [[ -x $dir/promtool ]] && { flock -u 8; return 0; }
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "     building promtool $PROMTOOL_VERSION into $dir (once; a minute or two)" >&3
  if (cd deploy/tools/promtool && CGO_ENABLED=0 go build -tags remove_all_sd \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMTOOL_VERSION#v}" \
        -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool) >&2; then
    rm -rf "$dir" && mv "$tmp" "$dir" && flock -u 8
  else
    rm -rf "$tmp"; flock -u 8
    return 1
  fi
}

find_helm() {
  if command -v helm >/dev/null && helm version --short 2>/dev/null | grep -q '^v3\.'; then
    command -v helm; return
  fi
  local bin="$tools/helm-$HELM_VERSION/helm"
  [[ -x $bin ]] || build_helm || return 1
  echo "$bin"
}

find_promtool() {
  if command -v promtool >/dev/null; then
    command -v promtool; return
  fi
  local bin="$tools/promtool-$PROMTOOL_VERSION/promtool"
  if [[ -x $bin ]] || build_promtool; then
    echo "$bin"; return
  fi
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "     building promtool failed; installing Debian's prometheus package for its promtool" >&3
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 \
      && command -v promtool && return
  fi
  return 1
}

t0=$(date +%s)
HELM=$(find_helm 2>"$work/helm.log") || HELM=""
if [[ -n $HELM ]]; then
  pass "tool helm: $HELM ($("$HELM" version --short 2>/dev/null)) ($(( $(date +%s) - t0 ))s)"
else
  sed 's/^/    /' "$work/helm.log" | tail -n 40
  fail "tool helm: cannot be built or found"
fi
t0=$(date +%s)
PROMTOOL=$(find_promtool 2>"$work/promtool.log") || PROMTOOL=""
if [[ -n $PROMTOOL ]]; then
  pass "tool promtool: $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n 1)) ($(( $(date +%s) - t0 ))s)"
else
  sed 's/^/    /' "$work/promtool.log" | tail -n 40
  fail "tool promtool: cannot be built or found"
fi

# --- the binary: built the way the image builds it ---------------------------

BIN="$work/affix-rotator"
build_binary() {
  local version
  version="check-$(date +%s)"
  VERSION="$version" bash deploy/build-flags.sh -o "$BIN"
  local out
  out=$("$BIN" -version)
  echo "$out"
  [[ $out == "affix-rotator $version "* ]] || { echo "-version printed '$out', want the VERSION given to deploy/build-flags.sh ($version)"; return 1; }
}
check "build: deploy/build-flags.sh builds affix-rotator and stamps VERSION" build_binary
[[ -x $BIN ]] || BIN=""

# --- Helm chart ----------------------------------------------------------------

chart=deploy/helm/affix-rotator
helm_quiet() {
  # Helm notes the link files/alerts.yaml -> deploy/prometheus/alerts.yaml on
  # every run; that is intended, keep the rest.
  "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2)
}
if [[ -n $HELM ]]; then
  check "helm lint (default values)" helm_quiet lint --strict --kube-version "$KUBE_VERSION" "$chart"
  check "helm lint (values-ha.yaml)" helm_quiet lint --strict --kube-version "$KUBE_VERSION" "$chart" -f "$chart/values-ha.yaml"
  check "helm template (default values)" helm_quiet template affix-rotator "$chart" --kube-version "$KUBE_VERSION"
  check "helm template (values-ha.yaml)" helm_quiet template affix-rotator "$chart" --kube-version "$KUBE_VERSION" -f "$chart/values-ha.yaml"
else
  fail "helm lint and template: no helm"
fi

# --- Go checks (deploy/k8scheck) ------------------------------------------------

# One test binary, run once per group so that each group has its own line.
groups=(
  "kubernetes manifests: strict k8s.io decoding, security context, probes, secrets, config, alert thresholds|^(TestChart|TestChartRefuses|TestChartConfigChecksum|TestChartAlertThresholds)$"
  "metric names in alerts.yaml and the dashboard are the daemon's; dashboard structure|^(TestAlertMetricsExist|TestDashboardMetricsExist|TestDashboardStructure)$"
  "runbook: every alert's runbook_url anchor, exit codes, procedures, metric names|^(TestSlugify|TestRunbookCoversAlerts|TestRunbookCoversExitCodesAndProcedures|TestRunbookMetricNames)$"
  "Dockerfile: BuildKit parse and lint, build through deploy/build-flags.sh = contract flags|^(TestBuildFlags|TestDockerfile)$"
  "systemd unit: hardening and restart directives|^(TestSystemdUnit)$"
  "External Secrets examples (docs/examples/external-secrets): strict decoding against ESO v1's fields they use, store and record wiring|^(TestExternalSecretsExamples)$"
)
k8scheck_vet() {
  local unformatted
  unformatted=$(gofmt -l deploy/k8scheck)
  [[ -z $unformatted ]] || { echo "gofmt would change: $unformatted"; return 1; }
  (cd deploy/k8scheck && go vet ./... && go test -c -o "$work/k8scheck.test" .)
}
check "deploy/k8scheck: gofmt, go vet, test build" k8scheck_vet
if [[ -x $work/k8scheck.test ]]; then
  run_group() {
    (cd deploy/k8scheck && HELM="$HELM" AFFIX_ROTATOR_BIN="$BIN" AFFIX_CHECK_REQUIRE_TOOLS=1 \
      "$work/k8scheck.test" -test.count=1 -test.run "$1" -test.v) >"$work/group.log" 2>&1
    local rc=$?
    # Only the failures and the verdict, not every passing test.
    grep -v -E '^(=== (RUN|PAUSE|CONT)|\s*--- PASS|PASS$)' "$work/group.log" || true
    [[ $rc == 0 ]] && grep -q -- '--- PASS' "$work/group.log"
  }
  for g in "${groups[@]}"; do
    check "${g%%|*}" run_group "${g#*|}"
  done
  # Every test belongs to a group.
  all_groups=$(printf '%s\n' "${groups[@]}" | sed 's/^[^|]*|//' | paste -sd'|')
  orphans=$( (cd deploy/k8scheck && "$work/k8scheck.test" -test.list '.*') | grep '^Test' | grep -v -E "$all_groups" || true)
  if [[ -n $orphans ]]; then
    fail "deploy/k8scheck tests run by no group of deploy/check.sh: ${orphans//$'\n'/ }"
  fi
else
  fail "deploy/k8scheck tests: the test binary did not build"
fi

# --- the image without Docker (deploy/image) ---------------------------------------

# deploy/image (its own module: go-containerregistry and CycloneDX stay out
# of the root module) builds the image from this work tree through
# deploy/build-flags.sh, as an OCI layout with its SBOM beside it; its tests
# then unpack that image, run it, and check it against the Dockerfile and
# the chart.
IMAGE="$work/image/affix-rotator.oci"
image_build() {
  local unformatted
  unformatted=$(gofmt -l deploy/image)
  [[ -z $unformatted ]] || { echo "gofmt would change: $unformatted"; return 1; }
  (cd deploy/image && go vet ./... && go run ./cmd/mkimage -o "$IMAGE" >"$work/image.out")
}
check "image: deploy/image gofmt, go vet; mkimage writes the OCI layout and the SBOM" image_build
if [[ -s $work/image.out ]]; then
  sed 's/^/     /' "$work/image.out"
  image_test() {
    (cd deploy/image && AFFIX_ROTATOR_IMAGE="$IMAGE" go test -count=1 -v ./...) >"$work/image-test.log" 2>&1
    local rc=$?
    grep -v -E '^(=== (RUN|PAUSE|CONT)|\s*--- PASS|PASS$)' "$work/image-test.log" || true
    [[ $rc == 0 ]] && grep -q -- '--- PASS' "$work/image-test.log"
  }
  check "image: unpacked and run as 65532 (version, validate --offline); config = Dockerfile and chart; SBOM; reproducible" image_test
  grep -E 'image_test.go:[0-9]+: (version|SBOM):' "$work/image-test.log" | sed 's/^ */     /' || true
fi

# --- Prometheus rules -----------------------------------------------------------

if [[ -n $PROMTOOL ]]; then
  check "promtool check rules deploy/prometheus/alerts.yaml" "$PROMTOOL" check rules deploy/prometheus/alerts.yaml
  check "promtool test rules deploy/prometheus/alerts_test*.yaml" \
    "$PROMTOOL" test rules deploy/prometheus/alerts_test.yaml deploy/prometheus/alerts_test_days.yaml
else
  fail "promtool check and test rules: no promtool"
fi

# --- systemd unit ---------------------------------------------------------------

systemd_verify() {
  command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found (apt-get install systemd)"; return 1; }
  [[ -n $BIN ]] || { echo "no affix-rotator binary to point ExecStart= at"; return 1; }
  # verify wants the ExecStart binary to exist: a copy of the unit points at
  # the binary built above. It exits 0 on unknown keys or bad values (it only
  # warns), so any output is a failure.
  mkdir -p "$work/unit"
  sed "s#/usr/local/bin/affix-rotator#$BIN#g" deploy/systemd/affix-rotator.service >"$work/unit/affix-rotator.service"
  local out
  out=$(cd "$work/unit" && systemd-analyze verify ./affix-rotator.service 2>&1) || { echo "$out"; return 1; }
  [[ -z $out ]] || { echo "$out"; return 1; }
  # Exposure score (0 best, 10 worst): fail above 1.5.
  out=$(cd "$work/unit" && systemd-analyze security --offline=yes --threshold=15 ./affix-rotator.service 2>&1) \
    || { echo "$out" | grep -v '✓'; return 1; }
  echo "$out" | tail -n 1
}
check "systemd-analyze verify and security (exposure <= 1.5) deploy/systemd/affix-rotator.service" systemd_verify

# --- shell scripts ----------------------------------------------------------------

if command -v shellcheck >/dev/null; then
  check "shellcheck deploy/*.sh" shellcheck deploy/check.sh deploy/build-flags.sh
else
  echo "SKIP shellcheck deploy/*.sh (shellcheck not installed)"
fi

# --- summary ------------------------------------------------------------------------

echo "deploy checks took $(( $(date +%s) - start_all ))s"
if (( failed > 0 )); then
  printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "deploy: $passed passed, $failed failed"
(( failed == 0 ))
