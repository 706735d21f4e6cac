#!/usr/bin/env bash
# Build (once) and cache the SeaweedFS `weed` binary used as a real S3-compatible
# server on loopback by the integration tests (tests/infra/s3.py).
#
# Usage: scripts/s3-server.sh            # build if needed; last stdout line = binary path
#        scripts/s3-server.sh --rebuild  # force a rebuild
#
# The binary goes to $ZEEK_PIPELINE_CACHE (default ~/.cache/zeek-pipeline)
#   /seaweedfs-<short commit>/bin/weed
# and Go's module/build caches to $ZEEK_PIPELINE_CACHE/go/{mod,build}.
# The version is pinned by scripts/s3-build/go.mod + go.sum (a wrapper module is
# needed because SeaweedFS's go.mod has a replace directive, which makes
# `go install pkg@version` refuse it).
set -euo pipefail

SEAWEEDFS_MODULE="github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
SEAWEEDFS_SHORT="${SEAWEEDFS_VERSION##*-}"
GO_MIN_VERSION="1.26.6"          # the `go` line of SeaweedFS's go.mod
GO_FALLBACK_TOOLCHAIN="go1.27.3" # fetched from the Go module proxy if local Go is too old

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_MODULE_DIR="${SCRIPT_DIR}/s3-build"
CACHE_ROOT="${ZEEK_PIPELINE_CACHE:-${HOME}/.cache/zeek-pipeline}"
INSTALL_DIR="${CACHE_ROOT}/seaweedfs-${SEAWEEDFS_SHORT}"
BIN="${INSTALL_DIR}/bin/weed"
STAMP="${INSTALL_DIR}/bin/weed.stamp"

log() { printf '[s3-server] %s\n' "$*" >&2; }

rebuild=0
case "${1:-}" in
  --rebuild) rebuild=1 ;;
  "") ;;
  *) log "unknown argument: $1"; exit 2 ;;
esac

# The stamp ties the cached binary to the exact pinned inputs (go.mod + go.sum).
expected_stamp() {
  {
    echo "${SEAWEEDFS_MODULE}@${SEAWEEDFS_VERSION}"
    cat "${BUILD_MODULE_DIR}/go.mod" "${BUILD_MODULE_DIR}/go.sum"
  } | sha256sum | cut -d' ' -f1
}

is_fresh() {
  [[ -x "${BIN}" && -f "${STAMP}" ]] && [[ "$(cat "${STAMP}")" == "$(expected_stamp)" ]]
}

if [[ "${rebuild}" -eq 0 ]] && is_fresh; then
  echo "${BIN}"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "go is not installed (need >= ${GO_MIN_VERSION})"; exit 1; }
command -v flock >/dev/null 2>&1 || { log "flock (util-linux) is required"; exit 1; }

mkdir -p "${INSTALL_DIR}/bin" "${CACHE_ROOT}/go/mod" "${CACHE_ROOT}/go/build"

# Serialise concurrent builders (parallel test workers, several shells).
exec 9>"${INSTALL_DIR}/.build.lock"
flock 9

if [[ "${rebuild}" -eq 0 ]] && is_fresh; then  # someone else built it meanwhile
  echo "${BIN}"
  exit 0
fi

export GOMODCACHE="${CACHE_ROOT}/go/mod"
export GOCACHE="${CACHE_ROOT}/go/build"
export CGO_ENABLED=0

local_go="$(go env GOVERSION)"; local_go="${local_go#go}"
if [[ -z "${GOTOOLCHAIN:-}" || "${GOTOOLCHAIN}" == "local" ]]; then
  if [[ "$(printf '%s\n%s\n' "${GO_MIN_VERSION}" "${local_go}" | sort -V | head -n1)" != "${GO_MIN_VERSION}" ]]; then
    log "local go${local_go} < ${GO_MIN_VERSION}: using GOTOOLCHAIN=${GO_FALLBACK_TOOLCHAIN}"
    export GOTOOLCHAIN="${GO_FALLBACK_TOOLCHAIN}"
  fi
fi

log "building ${SEAWEEDFS_MODULE}/weed@${SEAWEEDFS_VERSION} with $(go version) (slow the first time)"
start=$(date +%s)
tmp_bin="${BIN}.tmp.$$"
trap 'rm -f "${tmp_bin}"' EXIT
(
  cd "${BUILD_MODULE_DIR}"
  go build -mod=readonly -trimpath -ldflags="-s -w" -o "${tmp_bin}" "${SEAWEEDFS_MODULE}/weed"
) >&2
"${tmp_bin}" version >&2
mv -f "${tmp_bin}" "${BIN}"
expected_stamp > "${STAMP}"
log "built ${BIN} in $(( $(date +%s) - start ))s"

echo "${BIN}"
