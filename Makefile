# One entry point for people, the README and CI. Every target installs what it needs.
# The e2e suite and `up` need root (network namespaces): run as root or with sudo.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
E2E := target/debug/causeway-e2e
# The version in Cargo.toml, and the version of the second build the upgrade test upgrades to.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
NEXT_VERSION := $(VERSION)-next

.PHONY: up down status test bench deps lint unit netns e2e crds fmt images diagrams

## up: start the local cluster (control plane + kubelet nodes), helm install Causeway, an example network and a test Deployment
up: deps images
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(E2E) up

## down: remove the local cluster and everything it created
down:
	$(CARGO) build -q -p causeway-e2e --bin causeway-e2e
	$(E2E) down

## status: list test clusters on this machine
status:
	$(CARGO) build -q -p causeway-e2e --bin causeway-e2e
	$(E2E) status

## test: the whole suite, as CI runs it: format, lints, generated-file drift, unit and e2e tests
test: deps lint images
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) test --workspace --all-targets --no-fail-fast

## bench: allocation vs kcm node IPAM, one allocation write vs kcm's, node agent at scale vs ip -batch, pod-to-pod iperf3 vs node-to-node (docs/benchmarks.md)
bench: deps
	$(CARGO) build --release --workspace --bins
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench ipam -- $(BENCH_ARGS)
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench writes -- $(WRITES_BENCH_ARGS)
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench agent -- $(AGENT_BENCH_ARGS)
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench datapath -- $(DATAPATH_BENCH_ARGS)

## deps: install Debian packages and build the pinned control plane (cached in /var/cache/causeway)
# The pure unit tests of every crate: no root, no namespaces, no control plane (seconds).
unit:
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p causeway-crds --tests

# The agent against the real kernel in throwaway network namespaces (root).
netns:
	$(CARGO) test -p causeway-node-agent --tests

# Every end-to-end suite on a real control plane (root); one suite: `make e2e SUITE=overlay`,
# one test: `make e2e SUITE=gateways FILTER=bridge_hosts`.
e2e: deps images
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) test -p causeway-e2e $(if $(SUITE),--test $(SUITE),--tests) -- $(FILTER)

deps:
	e2e/scripts/deps.sh >/dev/null

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## images: the images the local cluster and the tests import into their nodes (debug binaries,
## stripped), and a second build reporting $(NEXT_VERSION) for the upgrade test
images:
	CAUSEWAY_VERSION=$(NEXT_VERSION) $(CARGO) build -p causeway-operator -p causeway-node-agent --bins
	mkdir -p target/next-bin
	cp target/debug/causeway-operator target/debug/causeway-node-agent target/next-bin/
	$(CARGO) build --workspace --bins
	$(E2E) image --bin-dir target/debug --out target/test-images
	$(E2E) image --bin-dir target/next-bin --out target/test-images

## image: build the container images as OCI archives in target/images (docs/images.md)
.PHONY: image
image:
	$(CARGO) build --release -p causeway-operator -p causeway-node-agent --bins
	$(CARGO) run -q -p causeway-e2e --bin causeway-e2e -- image --bin-dir target/release --out target/images

## crds: regenerate charts/causeway/files/crds from the Rust types (the chart renders them as templates)
crds:
	$(CARGO) run -q -p causeway-crds --bin crdgen

fmt:
	$(CARGO) fmt --all

## diagrams: re-render every docs/diagrams/*.dot to the .svg beside it (Graphviz; `cargo test -p causeway-e2e --test docs` checks they are current)
diagrams:
	@command -v dot >/dev/null || { echo "diagrams: Graphviz's dot is not installed: run make deps" >&2; exit 1; }
	for f in docs/diagrams/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done
