#!/usr/bin/env bash
# Build (once) and cache the Go tools that the real single-node cluster and its tests run, each from the
# Go module proxy through a small wrapper module in scripts/go-tools/<tool>/ (go.mod + go.sum committed, so
# a build is reproducible):
#
#   coredns      cluster DNS (the `kubernetes` plugin answers *.svc.cluster.local)
#   local-path   rancher/local-path-provisioner: the default StorageClass (a directory per claim)
#   skaffold     the dev loop (skaffold run / dev / render)
#   helm4        Helm 4, to check that the chart also installs with it
#   prometheus   Prometheus 3 and promtool (the alert rules' unit tests, a real server scraping the services);
#                built without the builtinassets tag (no npm-built web UI) and with remove_all_sd (static
#                targets only: none of the cloud SDKs)
#
#   scripts/go-tools.sh TOOL...        # build what is missing; prints one "<tool> <binary path>" line each
#
# Binaries land in $ZEEK_PIPELINE_CACHE (default ~/.cache/zeek-pipeline)/<tool dir>/bin/, Go's caches in
# $ZEEK_PIPELINE_CACHE/go/{mod,build}. Progress goes to stderr.
set -euo pipefail
# One build at a time (make test's background prebuild and a fixture may both ask): wait for the other.
mkdir -p "${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
exec 9>"${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}/.go-tools.lock"
flock 9

CACHE_ROOT="${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[go-tools] %s\n' "$*" >&2; }

# tool -> "module version package[,package] binary[,binary] [extra ldflags]" (packages and binaries pair up)
spec() {
  case "$1" in
    coredns)    echo "github.com/coredns/coredns v1.14.7 github.com/coredns/coredns coredns" ;;
    local-path) echo "github.com/rancher/local-path-provisioner v0.0.30 github.com/rancher/local-path-provisioner local-path-provisioner" ;;
    skaffold)   echo "github.com/GoogleContainerTools/skaffold/v2 v2.16.1 github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold skaffold -X=github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=v2.16.1" ;;
    helm4)      echo "helm.sh/helm/v4 v4.3.1 helm.sh/helm/v4/cmd/helm helm -X=helm.sh/helm/v4/internal/version.version=v4.3.1" ;;
    prometheus) echo "github.com/prometheus/prometheus v0.316.0 github.com/prometheus/prometheus/cmd/prometheus,github.com/prometheus/prometheus/cmd/promtool prometheus,promtool -X=github.com/prometheus/common/version.Version=3.16.0" ;;
    *) log "unknown tool: $1"; exit 2 ;;
  esac
}

# tool -> its Go build tags (empty for most)
tags() {
  case "$1" in
    prometheus) echo "remove_all_sd" ;;
    *) echo "" ;;
  esac
}

# The cache directory of a tool (kept as the paths the tests already know: skaffold-v2.16.1, helm-v4.3.1).
tool_dir() {
  local module version
  read -r module version _ <<<"$(spec "$1")"
  case "$1" in
    helm4) echo "$CACHE_ROOT/helm-$version" ;;
    *) echo "$CACHE_ROOT/$1-$version" ;;
  esac
}

build() {
  local tool="$1" module version packages binaries extra dir work start i missing=0
  local -a pkgs bins
  read -r module version packages binaries extra <<<"$(spec "$tool")"
  IFS=, read -r -a pkgs <<<"$packages"
  IFS=, read -r -a bins <<<"$binaries"
  dir="$(tool_dir "$tool")"
  for i in "${!bins[@]}"; do [[ -x "$dir/bin/${bins[$i]}" ]] || missing=1; done
  if [[ $missing == 0 ]]; then
    for i in "${!bins[@]}"; do echo "$tool $dir/bin/${bins[$i]}"; done
    return
  fi
  command -v go >/dev/null || { log "go toolchain not found"; exit 1; }
  export GOMODCACHE="$CACHE_ROOT/go/mod" GOCACHE="$CACHE_ROOT/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
  export GOFLAGS="-mod=mod -buildvcs=false"
  # go.sum files are committed; the checksum database is not reachable everywhere.
  export GOSUMDB="${GOSUMDB_OVERRIDE:-off}"
  work="$(mktemp -d "${TMPDIR:-/tmp}/go-tools.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  if [[ -f "$HERE/go-tools/$tool/go.mod" ]]; then
    cp "$HERE/go-tools/$tool/go.mod" "$work/"
    [[ -f "$HERE/go-tools/$tool/go.sum" ]] && cp "$HERE/go-tools/$tool/go.sum" "$work/"
  else
    printf 'module zeek-pipeline/go-tools/%s\n\ngo 1.26.0\n\nrequire %s %s\n' "$tool" "$module" "$version" > "$work/go.mod"
    # A dependency's own replace directives are ignored; repeat the tool's (those to other versions, not to
    # local paths), or its pinned forks and versions are lost (skaffold pins github.com/imdario/mergo).
    local modfile
    modfile="$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
    grep -E '^replace [^ ]+ => [^ .][^ ]* v' "$modfile" >> "$work/go.mod" || true
  fi
  start=$(date +%s)
  log "building $tool ($module $version)"
  mkdir -p "$dir/bin"
  for i in "${!pkgs[@]}"; do
    (cd "$work" && go get "${pkgs[$i]}@$version" >&2 &&
      go build -trimpath -tags="$(tags "$tool")" -ldflags="-s -w $extra" -o "$work/${bins[$i]}" "${pkgs[$i]}")
    mv -f "$work/${bins[$i]}" "$dir/bin/${bins[$i]}.tmp.$$"
    mv -f "$dir/bin/${bins[$i]}.tmp.$$" "$dir/bin/${bins[$i]}"
  done
  # keep the resolved module graph beside the binary, to refresh the committed wrapper from
  cp "$work/go.mod" "$work/go.sum" "$dir/" 2>/dev/null || true
  log "$tool built in $(( $(date +%s) - start ))s"
  for i in "${!bins[@]}"; do echo "$tool $dir/bin/${bins[$i]}"; done
}

[[ $# -gt 0 ]] || { log "usage: $0 TOOL..."; exit 2; }
for tool in "$@"; do build "$tool"; done
