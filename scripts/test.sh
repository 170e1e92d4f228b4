#!/usr/bin/env bash
# The project's test command (README, .ci/run): unit, property, crash and
# multi-process tests, the deploy/ files (offline checks, and the compose cluster
# when a Docker engine is there), then the cluster script's own end-to-end test,
# the README's examples against a real three-node cluster, the dashboard in
# headless Chromium (with the OpenAPI and Grafana checks), schemathesis against
# the OpenAPI document, a short Jepsen-style fault-injection run, and the
# cluster tests that need a node built with the test-only fault switches.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each section's start, in seconds since this script began (where CI time goes).
section() { echo "--- [${SECONDS}s] $*"; }
trap 'echo "--- [${SECONDS}s] scripts/test.sh ends"' EXIT

section "cargo test --workspace --release"
cargo test --workspace --release

section "cargo build --release -p broker --bin broker"
cargo build --release -p broker --bin broker

section "deploy/: Kubernetes manifests, systemd unit, compose file (offline checks)"
scripts/testing/deploy-validate.sh
section "deploy/: image and a three-node compose cluster"
if docker info >/dev/null 2>&1; then
	scripts/testing/deploy-compose.sh
else
	echo "deploy-compose: skipped: no Docker engine"
fi

if [[ $EUID -ne 0 ]]; then
	echo "scripts/test.sh: the cluster tests need root (network namespaces); NOT RUN" >&2
	exit 1
fi
section "scripts/cluster.sh end to end (stand-in nodes)"
scripts/testing/test-cluster-sh.sh
section "README examples against a real cluster"
scripts/testing/readme-examples.sh
section "dashboard in headless Chromium, OpenAPI validation, Grafana metric names (three-node cluster)"
scripts/testing/dashboard-browser.sh
section "the API against its OpenAPI document: schemathesis -c all (three-node cluster)"
scripts/testing/api-fuzz.sh
section "Jepsen-style smoke run: 50 s, mixed faults, low rate (fails on any anomaly or an inconclusive run)"
scripts/testing/jepsen-smoke.sh
section "cluster tests that need the broker's test-only fault switches (cargo feature fault-injection)"
cargo test --release -p cluster-tests --features fault-injection --test lagging_leader --test offset_reads
