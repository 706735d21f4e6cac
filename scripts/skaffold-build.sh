#!/usr/bin/env bash
# skaffold's custom builder for the `local` profile (the single-node cluster of `make cluster`, which has no
# Docker and no registry): build docker/Dockerfile with buildah on the Debian base image, then import the
# image into the cluster's containerd. skaffold passes the image reference to build as $IMAGE.
#
# skaffold finds the result through a Docker API (DOCKER_HOST: podman's API service over buildah's images,
# which `make cluster` starts) and, as it does for any local build it does not push, deploys it as
# <name>:<image ID>; so that reference is imported too.
set -euo pipefail
: "${IMAGE:?skaffold sets IMAGE}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOCKET="${ZEEK_PIPELINE_CONTAINERD:-/run/zeek-pipeline-cluster/containerd/containerd.sock}"
[[ -S "$SOCKET" ]] || { echo "skaffold-build: no cluster containerd at $SOCKET (make cluster)" >&2; exit 1; }
built="$(bash "$HERE/cluster-images.sh" build project)"
by_id="${IMAGE%:*}:$(bash "$HERE/cluster-images.sh" id "$built")"
for name in "$IMAGE" "$by_id"; do
  bash "$HERE/cluster-images.sh" tag "$built" "$name"
  bash "$HERE/cluster-images.sh" import "$name" "$SOCKET" >/dev/null
done
