# kubectl-gitops: developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: help build demo test unit e2e up down lint bench dist

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build the three plugins (release) into target/release
	$(CARGO) build --release --workspace --bins

demo: ## Bring the local control plane up and run the demo on examples/hello
	tests/cluster/up --second-cluster
	$(CARGO) build --workspace --bins
	examples/demo

test: ## Everything: harness up, unit and end-to-end tests, harness down
	tests/cluster/up --second-cluster
	tests/ui/setup
	tests/cross/setup
	$(CARGO) build --workspace --bins
	$(CARGO) test --no-fail-fast --workspace --all-targets; rc=$$?; tests/cluster/down; exit $$rc

unit: ## Unit tests and the plugins' --help snapshots (no cluster needed)
	$(CARGO) test --workspace --lib --bins --test help

e2e: ## End-to-end tests against an already running harness (tests/cluster/up)
	tests/ui/setup
	tests/cross/setup
	$(CARGO) build --workspace --bins
	$(CARGO) test -p gitops-e2e

up: ## Start the local control plane (builds the peers the first time)
	tests/cluster/up --second-cluster

down: ## Stop the local control plane and remove its state
	tests/cluster/down

dist: ## Release archives (linux, darwin: amd64, arm64; windows: amd64) and Krew manifests
	krew/dist

lint: ## rustfmt and clippy (as CI runs them), and the docs' links
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	tests/docs/check-links

bench: ## Benchmarks against the reference peers (prints ratios; no assertions)
	$(CARGO) bench -p kubectl-gitops --bench budgets
	tests/cluster/up --second-cluster
	tests/bench/binary-size
	tests/bench/artifact-build
	tests/bench/session-latency
	tests/bench/sessions-list
	tests/bench/app-repo
	tests/bench/workload-latency
	tests/bench/lsp-latency
	tests/bench/many-sessions
	tests/bench/soak
