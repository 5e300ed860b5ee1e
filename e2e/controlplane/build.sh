#!/usr/bin/env bash
# Builds the control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)
# and the node side (kubelet, kube-proxy) from the pinned k8s.io/kubernetes release in go.mod
# into a cache directory outside the work tree, keyed by version (about 7 minutes cold on 2
# cores). A second run finds the binaries and exits at once. Prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit} $1=="require" && $2=="k8s.io/kubernetes" {print $3; exit}' "$here/go.mod")
[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes requirement in $here/go.mod" >&2; exit 1; }
cache=${CAUSEWAY_CACHE:-/var/cache/causeway}
bin="$cache/controlplane/$version/bin"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

have_all() { for c in "${cmds[@]}"; do [ -x "$bin/$c" ] || return 1; done; }
if have_all; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; install Go 1.26 (the machine image ships it in /usr/local/go/bin)" >&2; exit 1; }
mkdir -p "$bin.tmp"
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "building ${cmds[*]} $version into $bin (first time only; about 7 minutes on 2 cores)" >&2
cd "$here"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/" "${cmds[@]/#/k8s.io/kubernetes/cmd/}" >&2
rm -rf "$bin"; mv "$bin.tmp" "$bin"
echo "$bin"
