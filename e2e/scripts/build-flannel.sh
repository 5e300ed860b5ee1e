#!/usr/bin/env bash
# Builds flanneld, the agent benchmark's second baseline (issue #19; never shipped), from the Go
# module proxy into the cache outside the work tree, keyed by version, once. A second run finds
# the binary and exits at once. Prints the bin directory on stdout.
#
# The module is built from a copy of its own source with one change: main.go's blank import of
# the tencent-vpc backend is left out (and that backend's package removed), because the proxy
# refuses one of its dependencies (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc)
# at this version. Nothing on the Kubernetes subnet manager or VXLAN path changes. The event
# queue depth needs no patch: flanneld reads it from the EVENT_QUEUE_DEPTH environment variable
# (pkg/subnet/kube/kube.go; default 5,000), which the benchmark sets.
# As flannel's own Makefile on amd64: cgo on (the UDP backend's proxy is C), linked static.
#
# `build-flannel.sh cni` builds flannel's CNI plugin instead (the `flannel` meta plugin, which
# reads flanneld's subnet.env and delegates the pod's attachment to the reference `bridge`
# plugin), for the datapath bench's flannel reference, and prints its bin directory. Its home
# today, github.com/flannel-io/cni-plugin, is refused by the module proxy at every version; the
# plugin lived in github.com/containernetworking/plugins until v0.9.1, the module built here,
# with the same delegation (bridge, isGateway, ipMasq = !FLANNEL_IPMASQ, FLANNEL_MTU,
# host-local on FLANNEL_SUBNET with a route to FLANNEL_NETWORK).
set -euo pipefail
cache=${CAUSEWAY_CACHE:-/var/cache/causeway}

# Prints bin directory $1 and exits when it holds executable $2 built by recipe $3.
exit_if_built() {
  if [ -x "$1/$2" ] && [ -f "$1/.recipe" ] && [ "$(cat "$1/.recipe")" = "$3" ]; then
    echo "$1"
    exit 0
  fi
}

need_go() {
  command -v go >/dev/null || { echo "build-flannel.sh: 'go' is not on PATH; install Go 1.26 (the machine image ships it in /usr/local/go/bin)" >&2; exit 1; }
}

# Copies module $1@$2's source, which must hold $3, into a fresh writable $4, and empties $5.tmp
# for the build's output.
copy_module() {
  local src
  src=$(go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -n "$src" ] && [ -e "$src/$3" ] || { echo "build-flannel.sh: could not download $1@$2 from the module proxy" >&2; exit 1; }
  rm -rf "$4" "$5.tmp"
  mkdir -p "$4" "$5.tmp"
  cp -r "$src/." "$4/"
  chmod -R u+w "$4"
}

# Moves the finished $1.tmp into bin directory $1 with its recipe $2, removes work directory
# $3, and prints $1.
install_built() {
  echo "$2" > "$1.tmp/.recipe"
  rm -rf "$1"; mv "$1.tmp" "$1"
  rm -rf "$3"
  echo "$1"
}

if [ "${1:-}" = cni ]; then
  CNI_VERSION=v0.9.1
  CNI_MODULE=github.com/containernetworking/plugins
  bin="$cache/flannel-cni/$CNI_VERSION/bin"
  recipe="flannel CNI plugin: $CNI_MODULE@$CNI_VERSION ./plugins/meta/flannel cgo=0 ld=-s -w"
  exit_if_built "$bin" flannel "$recipe"
  need_go
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
  echo "building flannel's CNI plugin ($CNI_MODULE $CNI_VERSION) into $bin (first time only)" >&2
  work="$cache/flannel-cni/$CNI_VERSION/src"
  copy_module "$CNI_MODULE" "$CNI_VERSION" plugins/meta/flannel "$work" "$bin"
  # The module's zip carries vendor/modules.txt without the vendored packages: build from the
  # proxy's modules instead.
  rm -rf "$work/vendor"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$bin.tmp/flannel" ./plugins/meta/flannel >&2)
  install_built "$bin" "$recipe" "$work"
  exit 0
fi

FLANNEL_VERSION=v0.28.10
MODULE=github.com/flannel-io/flannel
bin="$cache/flannel/$FLANNEL_VERSION/bin"
ld="-s -w -X $MODULE/pkg/version.Version=$FLANNEL_VERSION -extldflags -static"
recipe="flanneld $FLANNEL_VERSION without tencentvpc cgo=1 ld=$ld"
exit_if_built "$bin" flanneld "$recipe"
need_go
command -v gcc >/dev/null || { echo "build-flannel.sh: flanneld needs cgo on amd64 (its UDP backend); install gcc and libc6-dev (e2e/scripts/deps.sh does)" >&2; exit 1; }
export CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS=-mod=mod
echo "building flanneld $FLANNEL_VERSION into $bin (first time only; a few minutes on 2 cores)" >&2
work="$cache/flannel/$FLANNEL_VERSION/src"
copy_module "$MODULE" "$FLANNEL_VERSION" main.go "$work" "$bin"
cd "$work"
grep -q '"github.com/flannel-io/flannel/pkg/backend/tencentvpc"' main.go ||
  { echo "build-flannel.sh: main.go no longer imports the tencentvpc backend; check the recipe for $FLANNEL_VERSION" >&2; exit 1; }
sed -i '\#"github.com/flannel-io/flannel/pkg/backend/tencentvpc"#d' main.go
rm -rf pkg/backend/tencentvpc
go mod edit \
  -droprequire github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common \
  -droprequire github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc
go build -trimpath -ldflags "$ld" -o "$bin.tmp/flanneld" . >&2
"$bin.tmp/flanneld" --version >&2
install_built "$bin" "$recipe" "$work"
