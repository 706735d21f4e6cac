#!/usr/bin/env bash
# Build the container images that the single-node cluster of this machine runs (there is no registry and
# no Docker here) with buildah, and import them into that cluster's containerd:
#
#   base      localhost/zeek-pipeline-base:bookworm — the stand-in for python:3.11-slim-bookworm, made with
#             mmdebstrap from Debian bookworm's packages (its python3 is 3.11); the production default of
#             docker/Dockerfile stays the official image
#   pause     localhost/zeek-pipeline-pause:3.10 — the sandbox image: Kubernetes' own pause.c (from the
#             k8s.io/kubernetes module that scripts/k8s-binaries.sh downloads), linked static
#   jre       localhost/zeek-pipeline-jre:bookworm — base + Debian's Java 17 runtime, for the dev broker
#   kafka     localhost/zeek-kafka-dev:<kafka version> — Apache Kafka from the Maven jars (docker/kafka-dev),
#             the stand-in for deploy/dev's Redpanda
#   static    localhost/zeek-pipeline-static:<tool>-<version> — one static Go binary (coredns, local-path)
#   project   localhost/zeek-pipeline:<digest of the build inputs> — docker/Dockerfile as written
#
#   scripts/cluster-images.sh build base|pause|jre|kafka|project
#   scripts/cluster-images.sh static NAME BINARY TAG
#   scripts/cluster-images.sh import IMAGE CONTAINERD_SOCKET   # into containerd's k8s.io namespace
#   scripts/cluster-images.sh tag IMAGE NEW_NAME
#   scripts/cluster-images.sh id IMAGE                          # its image ID (64 hex digits)
#   scripts/cluster-images.sh project-ref                       # the project image's reference (no build)
#
# buildah keeps its images under $ZEEK_PIPELINE_CACHE/buildah (not the system's /var/lib/containers), so
# a second run reuses every layer. RUN steps use the host's network and chroot isolation: buildah's own
# container network (netavark) would add iptables chains and turn on ip_forward on this machine. The build's RUN steps that reach the package registries get the
# host's CA bundle, pip.conf and a uv.toml (native TLS) mounted for that step only: nothing of them is
# baked into an image.
set -euo pipefail
# One build at a time (make test's background prebuild and a fixture may both ask): wait for the other.
mkdir -p "${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
exec 9>"${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}/.cluster-images.lock"
flock 9

CACHE_ROOT="${ZEEK_PIPELINE_CACHE:-$HOME/.cache/zeek-pipeline}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
STORE="$CACHE_ROOT/buildah"
BUILDAH=(buildah --root "$STORE/root" --runroot /run/zeek-pipeline-buildah --storage-driver overlay)

BASE_IMAGE=localhost/zeek-pipeline-base:bookworm
JRE_IMAGE=localhost/zeek-pipeline-jre:bookworm
PAUSE_IMAGE=localhost/zeek-pipeline-pause:3.10
# the tag follows docker/kafka-dev's files, so a change there builds a new image
KAFKA_IMAGE="localhost/zeek-kafka-dev:$KAFKA_VERSION-$(cat "$ROOT"/docker/kafka-dev/* | sha256sum | cut -c1-8)"
PROJECT_REPO=localhost/zeek-pipeline

log() { printf '[cluster-images] %s\n' "$*" >&2; }
have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# A root file system of Debian bookworm with the given packages, as a tar (docs, man pages and locales
# left out; apt's lists and caches are cleaned by mmdebstrap). The mirror is the host's apt sources.
debian_rootfs() {  # debian_rootfs OUT.tar PACKAGES [HOOK...]
  command -v mmdebstrap >/dev/null || { log "mmdebstrap missing (apt-get install mmdebstrap)"; exit 1; }
  local out="$1" packages="$2" hooks=(); shift 2
  for hook in "$@"; do hooks+=(--customize-hook="$hook"); done
  mmdebstrap --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --essential-hook='mkdir -p "$1"/usr/share/man/man1' \
    "${hooks[@]}" bookworm "$out" >&2
}

image_from_rootfs() {  # image_from_rootfs TAR IMAGE
  local ctr
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$1" / >&2
  "${BUILDAH[@]}" config --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$ctr" >&2
  "${BUILDAH[@]}" commit --rm "$ctr" "$2" >&2
}

build_base() {
  have_image "$BASE_IMAGE" && return
  local work; work="$(mktemp -d)"
  log "making $BASE_IMAGE with mmdebstrap (python3 3.11, pip, CA certificates)"
  # like the official image: pip installs into the system interpreter, and `python` exists
  debian_rootfs "$work/rootfs.tar" python3,python3-pip,ca-certificates \
    'rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' 'ln -sf python3 "$1"/usr/bin/python'
  image_from_rootfs "$work/rootfs.tar" "$BASE_IMAGE"
  rm -rf "$work"
}

build_jre() {
  have_image "$JRE_IMAGE" && return
  local work; work="$(mktemp -d)"
  log "making $JRE_IMAGE with mmdebstrap (Java 17 runtime)"
  debian_rootfs "$work/rootfs.tar" ca-certificates,openjdk-17-jre-headless
  image_from_rootfs "$work/rootfs.tar" "$JRE_IMAGE"
  rm -rf "$work"
}

build_pause() {
  have_image "$PAUSE_IMAGE" && return
  local src work ctr
  src="$CACHE_ROOT/go/mod/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  [[ -f "$src" ]] || { log "missing $src (run scripts/k8s-binaries.sh first)"; exit 1; }
  work="$(mktemp -d)"
  gcc -Os -static -Wall -o "$work/pause" "$src" -DVERSION=3.10-zeek
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy "$ctr" "$work/pause" /pause >&2
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr" >&2
  "${BUILDAH[@]}" commit --rm "$ctr" "$PAUSE_IMAGE" >&2
  rm -rf "$work"
}

build_kafka() {
  have_image "$KAFKA_IMAGE" && return
  build_jre
  local libs="$CACHE_ROOT/kafka-$KAFKA_VERSION/libs" work
  [[ -d "$libs" ]] || { log "missing $libs (make kafka)"; exit 1; }
  work="$(mktemp -d)"
  cp -r "$libs" "$work/libs"
  cp "$ROOT/docker/kafka-dev/entrypoint.sh" "$ROOT/docker/kafka-dev/Containerfile" "$work/"
  "${BUILDAH[@]}" bud --layers --pull=never --isolation chroot --network host --build-arg "JRE_IMAGE=$JRE_IMAGE" -f "$work/Containerfile" \
    -t "$KAFKA_IMAGE" "$work" >&2
  rm -rf "$work"
}

build_static() {  # build_static NAME BINARY TAG
  local image="localhost/zeek-pipeline-static:$3" ctr
  have_image "$image" && { echo "$image"; return; }
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy "$ctr" "$2" "/$1" >&2
  "${BUILDAH[@]}" config --entrypoint "[\"/$1\"]" --user 65532:65532 "$ctr" >&2
  "${BUILDAH[@]}" commit --rm "$ctr" "$image" >&2
  echo "$image"
}

# The tag is a digest of what goes into the image (like skaffold's inputDigest): a source change gives a
# new tag, so the pods roll; the same sources give the same tag, and the build is skipped.
project_ref() {
  local digest
  digest="$(cd "$ROOT" && git ls-files -co --exclude-standard -- docker/Dockerfile pyproject.toml requirements/runtime.txt README.md \
              services operator config | LC_ALL=C sort | xargs sha256sum 2>/dev/null | sha256sum | cut -c1-12)"
  echo "$PROJECT_REPO:$digest"
}

build_project() {
  local ref; ref="$(project_ref)"
  if have_image "$ref"; then echo "$ref"; return; fi
  build_base
  local mounts=() uvconf
  uvconf="$STORE/uv.toml"; mkdir -p "$STORE"
  printf 'system-certs = true\n' > "$uvconf"
  # the host's trust store, pip and uv settings reach the RUN steps as read-only mounts of this build only
  [[ -d /etc/ssl/certs ]] && mounts+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
  [[ -f /etc/pip.conf ]] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
  mounts+=(-v "$uvconf:/etc/uv/uv.toml:ro")
  log "building $ref from docker/Dockerfile (base $BASE_IMAGE)"
  (cd "$ROOT" && "${BUILDAH[@]}" bud --layers --pull=never --isolation chroot --network host "${mounts[@]}" \
     --build-arg "PYTHON_IMAGE=$BASE_IMAGE" -f docker/Dockerfile -t "$ref" . >&2)
  # earlier builds of the project's image go (their cached build layers stay for the next build)
  "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | grep "^$PROJECT_REPO:" | grep -vx "$ref" \
    | xargs -r "${BUILDAH[@]}" rmi >/dev/null 2>&1 || true
  echo "$ref"
}

import_image() {  # import_image IMAGE SOCKET
  local work; work="$(mktemp -d)"
  "${BUILDAH[@]}" push --quiet "$1" "docker-archive:$work/image.tar:$1" >&2
  ctr --address "$2" -n k8s.io images import "$work/image.tar" >&2
  rm -rf "$work"
  echo "$1"
}

case "${1:-}" in
  build)
    case "${2:-}" in
      base) build_base; echo "$BASE_IMAGE" ;;
      jre) build_jre; echo "$JRE_IMAGE" ;;
      pause) build_pause; echo "$PAUSE_IMAGE" ;;
      kafka) build_kafka; echo "$KAFKA_IMAGE" ;;
      project) build_project ;;
      *) log "build what? base|pause|jre|kafka|project"; exit 2 ;;
    esac ;;
  static) build_static "$2" "$3" "$4" ;;
  import) import_image "$2" "$3" ;;
  tag) "${BUILDAH[@]}" tag "$2" "$3" >&2 ;;
  id) "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$2" ;;
  project-ref) project_ref ;;
  size) "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' ;;
  *) log "usage: $0 build base|pause|jre|kafka|project | static NAME BINARY TAG | import IMAGE SOCKET | tag IMAGE NAME | project-ref | size"; exit 2 ;;
esac
