#!/usr/bin/env bash
# What the e2e and cluster tiers need, built in the background while `make test` runs the unit and
# integration tests first (pyproject's testpaths order): the Kubernetes binaries, the Go tools and the
# cluster's images. On a warm cache every step finds its result and returns at once; on a new machine this
# overlaps about 40 minutes of builds with the first 20 minutes of tests. The scripts hold a lock in the
# cache, so a fixture that needs a binary before it is ready waits for this build instead of starting a
# second one.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/k8s-binaries.sh" >/dev/null
bash "$HERE/go-tools.sh" coredns local-path helm4 skaffold prometheus >/dev/null
for image in base pause kafka project; do
  bash "$HERE/cluster-images.sh" build "$image" >/dev/null
done
