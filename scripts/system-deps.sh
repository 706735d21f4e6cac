#!/usr/bin/env bash
# Debian packages the tests need beyond the base machine: Chromium and its driver for the dashboard's browser
# tests, and for the single-node cluster (tests/infra/cluster, `make cluster`): containerd, runc, the CNI
# plugins, buildah and mmdebstrap (images without Docker or a registry), podman (its Docker-compatible API
# over buildah's images, which skaffold asks), iptables/conntrack (kube-proxy),
# and gcc's static libc for the pause binary; the PostgreSQL server for the Iceberg SQL catalog tests
# (tests/infra/postgres.py runs its own cluster, never the package's service). Idempotent; skips apt when everything
# is present.
set -euo pipefail
needed=()
want() {  # want COMMAND-OR-PATH PACKAGE
  if [[ "$1" == /* ]]; then [[ -e "$1" ]] || needed+=("$2"); else command -v "$1" >/dev/null 2>&1 || needed+=("$2"); fi
}
want chromium chromium
want chromedriver chromium-driver
want containerd containerd
want runc runc
want /usr/lib/cni/bridge containernetworking-plugins
want buildah buildah
want podman podman
want mmdebstrap mmdebstrap
want iptables iptables
want conntrack conntrack
want /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || needed+=(postgresql)
if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: need root to install ${needed[*]} (or install them yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
echo "system-deps: installed ${needed[*]}"
