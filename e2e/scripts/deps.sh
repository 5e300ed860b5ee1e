#!/usr/bin/env bash
# Installs what the local cluster and the test suite need, idempotently:
#   - Debian packages (CNI reference plugins, BIRD 2 and FRR, iproute2, traffic tools, runc and
#     iptables for the kubelet nodes, Graphviz for the docs' diagrams);
#   - the control plane and the nodes' kubelet and kube-proxy, built from the pinned
#     k8s.io/kubernetes release (e2e/controlplane/go.mod) into /var/cache/causeway, once;
#   - containerd, helm and etcd from the Go module proxy (build-tools.sh), into the same cache.
# Prints the control-plane bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(containernetworking-plugins bird2 frr iperf3 arping nftables iproute2
          iputils-ping socat openssl procps ca-certificates curl
          runc iptables conntrack util-linux gcc libc6-dev binutils graphviz)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}; run as root (sudo make deps)" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The test pods' image is Debian's busybox-static, and the metrics tests' Prometheus is
# Debian's prometheus: both downloaded once into the cache, never installed (one would
# replace the system's busybox, the other start a system service; e2e/src/prometheus.rs
# extracts it next to the cache).
debs=${CAUSEWAY_CACHE:-/var/cache/causeway}/debs
for deb in busybox-static prometheus; do
  if ! ls "$debs"/"$deb"_*.deb >/dev/null 2>&1; then
    mkdir -p "$debs"
    (cd "$debs" && { apt-get download "$deb" >&2 2>/dev/null ||
      { apt-get update -qq >&2 && apt-get download "$deb" >&2; }; })
  fi
done
# Debian starts etcd, BIRD and FRR as system services on install; the harness runs its own
# instances inside namespaces and needs none in the root namespace.
for svc in etcd bird frr; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >&2 || true
  fi
done

"$here/build-tools.sh" >&2
"$here/../controlplane/build.sh"
