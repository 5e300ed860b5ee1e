# One entry point for people, the README and CI. Every target installs what it needs.
# The e2e suite and `up` need root (network namespaces): run as root or with sudo.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
E2E := target/debug/causeway-e2e

.PHONY: up down status test bench deps lint unit e2e crds fmt

## up: start the local cluster (real control plane + netns nodes) with Causeway and an example network
up: deps
	$(CARGO) build --workspace --bins
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
test: deps lint
	$(CARGO) build --workspace --bins
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) test --workspace --all-targets --no-fail-fast

## bench: allocation vs kcm node IPAM, node agent at scale vs ip -batch, pod-to-pod iperf3 vs node-to-node (docs/benchmarks.md)
bench: deps
	$(CARGO) build --release --workspace --bins
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench ipam -- $(BENCH_ARGS)
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench agent -- $(AGENT_BENCH_ARGS)
	CAUSEWAY_CP_BIN=$$(e2e/scripts/deps.sh | tail -n1) $(CARGO) bench -p causeway-e2e --bench datapath -- $(DATAPATH_BENCH_ARGS)

## deps: install Debian packages and build the pinned control plane (cached in /var/cache/causeway)
deps:
	e2e/scripts/deps.sh >/dev/null

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crds: regenerate charts/causeway/files/crds from the Rust types (the chart renders them as templates)
crds:
	$(CARGO) run -q -p causeway-crds --bin crdgen

fmt:
	$(CARGO) fmt --all
