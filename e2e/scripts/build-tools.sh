#!/usr/bin/env bash
# Builds the node and client tools the kubelet test cluster needs from the Go module proxy into
# the cache outside the work tree, keyed by version, once:
#   - containerd, containerd-shim-runc-v2 and ctr (static, no cgo), the nodes' container runtime;
#   - helm, which installs the chart exactly as users do;
#   - etcd, the API server's store, at the version upstream pairs with the pinned Kubernetes
#     release (Debian's 3.4.23 is older than the 3.4.31/3.5.13 the API server needs to stream
#     lists and to serve consistent lists from its watch cache).
# runc comes from Debian (deps.sh). A second run finds the binaries and exits at once.
# Usage: build-tools.sh [containerd|helm|etcd]...  (default: all). Prints one bin directory per
# tool.
set -euo pipefail
CONTAINERD_VERSION=v2.2.10
HELM_VERSION=v3.22.0
ETCD_VERSION=v3.6.16
cache=${CAUSEWAY_CACHE:-/var/cache/causeway}
command -v go >/dev/null || { echo "build-tools.sh: 'go' is not on PATH; install Go 1.26 (the machine image ships it in /usr/local/go/bin)" >&2; exit 1; }
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=

# fresh DIR RECIPE: whether DIR holds a build made with RECIPE (the recipe is stored beside the
# binaries, so a changed version or flag rebuilds instead of reusing a stale binary).
fresh() { [ -f "$1/.recipe" ] && [ "$(cat "$1/.recipe")" = "$2" ]; }

# build_once DIR RECIPE WHAT BUILDER: unless DIR holds a build made with RECIPE, runs BUILDER
# with an empty DIR.tmp to fill and puts it in DIR's place, the recipe beside it. Prints DIR.
build_once() {
  local bin=$1 recipe=$2 what=$3 builder=$4
  if ! fresh "$bin" "$recipe"; then
    echo "building $what into $bin (first time only)" >&2
    rm -rf "$bin.tmp"; mkdir -p "$bin.tmp"
    "$builder" "$bin.tmp"
    echo "$recipe" > "$bin.tmp/.recipe"
    rm -rf "$bin"; mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

# About 2 minutes. btrfs needs cgo; devmapper and zfs snapshotters are not used. The shim needs
# no gRPC server (containerd's own Makefile builds it with no_grpc).
CONTAINERD_TAGS="no_btrfs no_devmapper no_zfs urfave_cli_no_docs"
CONTAINERD_LD="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
containerd_into() {
  local c t
  for c in containerd containerd-shim-runc-v2 ctr; do
    t="$CONTAINERD_TAGS"
    [ "$c" = containerd-shim-runc-v2 ] && t="$t no_grpc"
    GOBIN="$1" go install -trimpath -tags "$t" -ldflags "$CONTAINERD_LD" \
      "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION" >&2
  done
}
build_containerd() {
  build_once "$cache/containerd/$CONTAINERD_VERSION/bin" \
    "containerd $CONTAINERD_VERSION tags=$CONTAINERD_TAGS ld=$CONTAINERD_LD" \
    "containerd $CONTAINERD_VERSION" containerd_into
}

# About a minute. As helm's own Makefile: its version, and the Kubernetes version of its
# client-go, which `helm template`/`lint` assume without a cluster (a plain `go install` says
# v1.20, older than the chart's kubeVersion allows).
helm_ld() {
  local gomod kmajor kminor ld
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # client-go v0.N.x is Kubernetes 1.N.
  read -r kmajor kminor < <(awk '$1=="k8s.io/client-go" {split($2,v,"."); print 1, v[2]}' "$gomod")
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld="$ld -X $pkg.k8sVersionMajor=$kmajor -X $pkg.k8sVersionMinor=$kminor"
  done
  echo "$ld"
}
helm_into() {
  GOBIN="$1" go install -trimpath -ldflags "$HELM_LD" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
}
build_helm() {
  HELM_LD=$(helm_ld)
  build_once "$cache/helm/$HELM_VERSION/bin" "helm $HELM_VERSION ld=$HELM_LD" \
    "helm $HELM_VERSION" helm_into
}

# About a minute. The server module's go.mod has replace directives, which `go install
# module@version` refuses: it is built as a dependency of a throwaway module instead (its
# requirements pin the same versions; the replaces only point at its sibling modules).
ETCD_LD="-s -w"
etcd_into() {
  local out=$1 work
  work=$(mktemp -d)
  (cd "$work" && go mod init causeway.dev/etcd-build >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
    GOFLAGS=-mod=mod go build -trimpath -ldflags "$ETCD_LD" -o "$out/etcd" go.etcd.io/etcd/server/v3 >&2) ||
    { rm -rf "$work"; exit 1; }
  rm -rf "$work"
}
build_etcd() {
  build_once "$cache/etcd/$ETCD_VERSION/bin" "etcd $ETCD_VERSION ld=$ETCD_LD" \
    "etcd $ETCD_VERSION" etcd_into
}

tools=("$@"); [ ${#tools[@]} -gt 0 ] || tools=(containerd helm etcd)
for t in "${tools[@]}"; do
  case $t in
    containerd) build_containerd ;;
    helm) build_helm ;;
    etcd) build_etcd ;;
    *) echo "build-tools.sh: unknown tool $t (containerd, helm, etcd)" >&2; exit 2 ;;
  esac
done
