#!/usr/bin/env bash
# Build (once) and cache the real Kubernetes binaries used by the e2e tests and
# `make cluster`: the control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), the node (kubelet, kube-proxy), kubectl and helm.
#
# Everything is built from the Go module proxy with the local Go toolchain via
# small wrapper modules in scripts/k8s-build/{kubernetes,etcd,helm} (their
# go.mod/go.sum are committed so builds are reproducible).
#
#   K8S_VERSION   k8s.io/kubernetes version (default pinned below); staging
#                 modules k8s.io/* are replaced with the matching v0.x version.
#   ETCD_VERSION  go.etcd.io/etcd/server/v3 version
#   HELM_VERSION  helm.sh/helm/v3 version
#   ZEEK_PIPELINE_CACHE  cache root (default ~/.cache/zeek-pipeline)
#
# Output: binaries in $ZEEK_PIPELINE_CACHE/k8s-$K8S_VERSION/bin; that directory
# is printed as the last line on stdout. Re-running with the binaries present
# does nothing. Progress goes to stderr.
set -euo pipefail
# One build at a time (make test's background prebuild and a fixture may both ask): wait for the other.
mkdir -p "${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
exec 9>"${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}/.k8s-binaries.lock"
flock 9

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
PINNED_K8S_VERSION="v1.36.3"   # version of the committed scripts/k8s-build/kubernetes/go.mod
PINNED_ETCD_VERSION="v3.6.16"
PINNED_HELM_VERSION="v3.22.0"

CACHE_ROOT="${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WRAPPERS="$HERE/k8s-build"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd helm)

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  # etcd/helm versions are part of the cache identity too
  [[ -f "$BIN_DIR/.versions" ]] && [[ "$(cat "$BIN_DIR/.versions")" == "$(versions_line)" ]]
}
versions_line() { echo "kubernetes=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION"; }

if have_all; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { log "go toolchain not found"; exit 1; }

export GOMODCACHE="$CACHE_ROOT/go/mod"
export GOCACHE="$CACHE_ROOT/go/build"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# go.sum files are committed; the checksum database is not reachable everywhere.
export GOSUMDB="${GOSUMDB_OVERRIDE:-off}"
mkdir -p "$GOMODCACHE" "$GOCACHE" "$BIN_DIR"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/k8s-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

LDFLAGS="-s -w"
BUILD=(go build -trimpath)

# Writes a wrapper go.mod for k8s.io/kubernetes@$1 into dir $2: require the
# main module and replace every k8s.io/* staging module with v0.<minor>.<patch>.
gen_k8s_gomod() {
  local ver="$1" dir="$2" staging_ver modfile
  staging_ver="v0.${ver#v1.}"
  modfile="$(go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  [[ -f "$modfile" ]] || { log "cannot download k8s.io/kubernetes@$ver"; exit 1; }
  {
    echo "module zeek-pipeline/k8s-build/kubernetes"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1.0/')"
    echo
    echo "require k8s.io/kubernetes $ver"
    echo
    echo "replace ("
    grep -oE '^[[:space:]]+k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$modfile" \
      | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
    echo "	k8s.io/kubernetes/cmd/kube-scheduler"
    echo "	k8s.io/kubernetes/cmd/kubelet"
    echo "	k8s.io/kubernetes/cmd/kube-proxy"
    echo "	k8s.io/kubernetes/cmd/kubectl"
    echo ")"
  } > "$dir/go.mod"
  (cd "$dir" && go mod tidy >&2)
}

# Copies the committed wrapper module $1 into $WORK/$1 (so -mod=mod never
# dirties the work tree).
stage_wrapper() {
  mkdir -p "$WORK/$1"
  cp "$WRAPPERS/$1/go.mod" "$WORK/$1/"
  [[ -f "$WRAPPERS/$1/go.sum" ]] && cp "$WRAPPERS/$1/go.sum" "$WORK/$1/"
  return 0
}

time_it() {  # time_it LABEL cmd...
  local label="$1" start end; shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  log "$label built in $((end - start))s"
}

# --- kube-apiserver, kube-controller-manager, kubectl ------------------------
build_kubernetes() {
  if [[ "$K8S_VERSION" == "$PINNED_K8S_VERSION" && -f "$WRAPPERS/kubernetes/go.mod" ]]; then
    stage_wrapper kubernetes
  else
    log "generating wrapper go.mod for k8s.io/kubernetes $K8S_VERSION"
    mkdir -p "$WORK/kubernetes"
    gen_k8s_gomod "$K8S_VERSION" "$WORK/kubernetes"
  fi
  # Stamp the version like hack/lib/version.sh does (otherwise the server
  # reports v0.0.0-master, which breaks e.g. helm's kubeVersion checks).
  local major minor x pkg k8s_ldflags="$LDFLAGS"
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for x in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
             "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
      k8s_ldflags+=" -X $pkg.$x"
    done
  done
  log "building kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl ($K8S_VERSION)"
  (cd "$WORK/kubernetes" && "${BUILD[@]}" -ldflags="$k8s_ldflags" -o "$WORK/out/" \
     k8s.io/kubernetes/cmd/kube-apiserver \
     k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler \
     k8s.io/kubernetes/cmd/kubelet \
     k8s.io/kubernetes/cmd/kube-proxy \
     k8s.io/kubernetes/cmd/kubectl)
  # keep the wrapper's resolved module graph so the committed go.sum can be refreshed from it
  cp "$WORK/kubernetes/go.mod" "$WORK/kubernetes/go.sum" "$WORK/out/" 2>/dev/null || true
}

# --- etcd --------------------------------------------------------------------
build_etcd() {
  if [[ "$ETCD_VERSION" == "$PINNED_ETCD_VERSION" ]]; then
    stage_wrapper etcd
  else
    mkdir -p "$WORK/etcd"
    printf 'module zeek-pipeline/k8s-build/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' \
      "$ETCD_VERSION" > "$WORK/etcd/go.mod"
    (cd "$WORK/etcd" && go mod tidy >&2)
  fi
  log "building etcd ($ETCD_VERSION)"
  (cd "$WORK/etcd" && "${BUILD[@]}" -ldflags="$LDFLAGS" -o "$WORK/out/etcd" go.etcd.io/etcd/server/v3)
}

# --- helm --------------------------------------------------------------------
build_helm() {
  if [[ "$HELM_VERSION" == "$PINNED_HELM_VERSION" ]]; then
    stage_wrapper helm
  else
    mkdir -p "$WORK/helm"
    printf 'module zeek-pipeline/k8s-build/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 %s\n\ntool helm.sh/helm/v3/cmd/helm\n' \
      "$HELM_VERSION" > "$WORK/helm/go.mod"
    (cd "$WORK/helm" && go mod tidy >&2)
  fi
  log "building helm ($HELM_VERSION)"
  (cd "$WORK/helm" && "${BUILD[@]}" \
     -ldflags="$LDFLAGS -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
     -o "$WORK/out/helm" helm.sh/helm/v3/cmd/helm)
}

mkdir -p "$WORK/out"
time_it "kubernetes (apiserver, controller-manager, scheduler, kubelet, proxy, kubectl)" build_kubernetes
time_it "etcd" build_etcd
time_it "helm" build_helm

# Install atomically-ish: move each binary into place, then write the marker.
for b in "${BINARIES[@]}"; do
  [[ -x "$WORK/out/$b" ]] || { log "missing built binary: $b"; exit 1; }
  mv -f "$WORK/out/$b" "$BIN_DIR/$b.tmp.$$"
  mv -f "$BIN_DIR/$b.tmp.$$" "$BIN_DIR/$b"
done
versions_line > "$BIN_DIR/.versions"
log "binaries ready in $BIN_DIR"
echo "$BIN_DIR"
