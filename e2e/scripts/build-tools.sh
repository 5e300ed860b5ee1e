#!/usr/bin/env bash
# Builds the node and client tools the kubelet test cluster needs from the Go module proxy into
# the cache outside the work tree, keyed by version, once:
#   - containerd, containerd-shim-runc-v2 and ctr (static, no cgo), the nodes' container runtime;
#   - helm, which installs the chart exactly as users do.
# runc comes from Debian (deps.sh). A second run finds the binaries and exits at once.
# Usage: build-tools.sh [containerd|helm]...  (default: both). Prints one bin directory per tool.
set -euo pipefail
CONTAINERD_VERSION=v2.2.10
HELM_VERSION=v3.22.0
cache=${CAUSEWAY_CACHE:-/var/cache/causeway}
command -v go >/dev/null || { echo "build-tools.sh: 'go' is not on PATH; install Go 1.26 (the machine image ships it in /usr/local/go/bin)" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=

build_containerd() {
  local bin="$cache/containerd/$CONTAINERD_VERSION/bin"
  if [ ! -x "$bin/containerd" ] || [ ! -x "$bin/containerd-shim-runc-v2" ] || [ ! -x "$bin/ctr" ]; then
    echo "building containerd $CONTAINERD_VERSION into $bin (first time only; about 2 minutes)" >&2
    rm -rf "$bin.tmp"; mkdir -p "$bin.tmp"
    local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
    for c in containerd containerd-shim-runc-v2 ctr; do
      # btrfs needs cgo; devmapper and zfs snapshotters are not used. The shim needs no gRPC
      # server (containerd's own Makefile builds it with no_grpc).
      local tags="no_btrfs no_devmapper no_zfs urfave_cli_no_docs"
      [ "$c" = containerd-shim-runc-v2 ] && tags="$tags no_grpc"
      GOBIN="$bin.tmp" go install -trimpath -tags "$tags" -ldflags "$ld" \
        "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION" >&2
    done
    rm -rf "$bin"; mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

build_helm() {
  local bin="$cache/helm/$HELM_VERSION/bin"
  if [ ! -x "$bin/helm" ]; then
    echo "building helm $HELM_VERSION into $bin (first time only; about a minute)" >&2
    rm -rf "$bin.tmp"; mkdir -p "$bin.tmp"
    GOBIN="$bin.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    rm -rf "$bin"; mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

tools=("$@"); [ ${#tools[@]} -gt 0 ] || tools=(containerd helm)
for t in "${tools[@]}"; do
  case $t in
    containerd) build_containerd ;;
    helm) build_helm ;;
    *) echo "build-tools.sh: unknown tool $t (containerd, helm)" >&2; exit 2 ;;
  esac
done
