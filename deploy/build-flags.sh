#!/usr/bin/env bash
# The one definition of how the affix-rotator binary is built. The container
# image (deploy/docker/Dockerfile) and CI (deploy/check.sh) both run this
# script, so the flags cannot drift apart; deploy/k8scheck checks that the
# Dockerfile calls it.
#
#   deploy/build-flags.sh [-o OUTPUT]   build ./cmd/affix-rotator (default output: ./affix-rotator)
#   deploy/build-flags.sh --print       print the build command instead of running it
#
# VERSION (environment) is stamped into the binary (-version, build_info);
# default: `git describe --tags --always --dirty`, or "dev" without git.
# Runs from the repository root whatever the current directory.
set -euo pipefail

out=affix-rotator
print=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o) out="${2:?-o needs a path}"; shift 2 ;;
    --print) print=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-flags.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${VERSION:-}"
if [[ -z "$version" ]]; then
  version="$(git describe --tags --always --dirty 2>/dev/null || true)"
  version="${version:-dev}"
fi
if [[ ! "$version" =~ ^[A-Za-z0-9._+-]+$ ]]; then
  echo "build-flags.sh: VERSION ${version@Q} may hold only letters, digits and . _ + -" >&2
  exit 2
fi

build=(go build -trimpath -ldflags "-s -w -X github.com/affix-rotator/affix-rotator/internal/version.Version=${version}" -o "$out" ./cmd/affix-rotator)
if [[ $print == 1 ]]; then
  line="CGO_ENABLED=0"
  for arg in "${build[@]}"; do
    if [[ $arg == *" "* ]]; then line+=" \"$arg\""; else line+=" $arg"; fi
  done
  echo "$line"
  exit 0
fi
CGO_ENABLED=0 exec "${build[@]}"
