#!/usr/bin/env bash
# The project's test command (README, .ci/run): unit, property, crash and
# multi-process tests, the dashboard charts' unit tests (Node), the deploy/
# files (offline checks, and the compose cluster when a Docker engine is there),
# then the cluster script's own end-to-end test,
# the README's examples against a real three-node cluster, the dashboard in
# headless Chromium (with the OpenAPI and Grafana checks), schemathesis against
# the OpenAPI document, a short Jepsen-style fault-injection run, and the
# cluster tests that need a node built with the test-only fault switches.
#
# Any user can run it. Without root the clusters run on loopback (cluster.sh
# --loopback), and the sections that need root (network namespaces, iptables,
# FUSE) or a tool only root can install are skipped: each says so on a
# "SKIPPED" line, and the end counts them. They are part of the project's tests
# all the same: CI runs them all, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each section's start, in seconds since this script began (where CI time goes).
section() { echo "--- [${SECONDS}s] $*"; }
SKIPPED=()
# skip SECTION WHY — a section this run cannot do, said and counted.
skip() {
	echo "--- [${SECONDS}s] SKIPPED: $1: $2"
	SKIPPED+=("$1 ($2)")
}
# Sub-scripts name what they skipped here (one line each), to be counted too.
TEST_SKIP_LOG=$(mktemp)
export TEST_SKIP_LOG
finish() {
	local status=$? line
	while IFS= read -r line; do SKIPPED+=("$line"); done <"$TEST_SKIP_LOG"
	rm -f -- "$TEST_SKIP_LOG"
	if ((${#SKIPPED[@]} > 0)); then
		echo "--- ${#SKIPPED[@]} SKIPPED (run as root, as CI does, for all of them):"
		printf '      %s\n' "${SKIPPED[@]}"
	fi
	echo "--- [${SECONDS}s] scripts/test.sh ends"
	return "$status"
}
trap finish EXIT
root=0
[[ $EUID -eq 0 ]] && root=1
# Open files: a store test opens a ConsumeQueue file for each of 1,024 queues,
# and the cluster tests' nodes hold client connections, peers and mapped files.
# A login's soft limit is often 1024; raise it to the hard limit, as cluster.sh
# does for its nodes (and as the deploy/ units set LimitNOFILE).
if [[ $(ulimit -Sn) != unlimited ]] && (($(ulimit -Sn) < 65536)); then
	ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
	if [[ $(ulimit -Sn) != unlimited ]] && (($(ulimit -Sn) < 4096)); then
		echo "scripts/test.sh: note: open files limited to $(ulimit -Sn) (hard limit $(ulimit -Hn)); tests that open many files may fail (raise it: ulimit -Hn, or /etc/security/limits.conf)" >&2
	fi
fi

# Tests that need root to run at all: each mounts a small tmpfs as a node's data
# dir, to fill it (cluster-tests/tests/disk_full.rs). Without root they are
# skipped by name, said and counted.
ROOT_ONLY_TESTS=(
	a_follower_with_a_full_disk_fails_stop_and_recovers
	a_leader_with_a_full_disk_hands_off_fails_stop_and_recovers
	with_on_failure_exit_a_full_disk_exits_and_a_restart_recovers
)
section "cargo test --workspace --release"
if ((root)); then
	cargo test --workspace --release
else
	skip_args=()
	for name in "${ROOT_ONLY_TESTS[@]}"; do skip_args+=(--skip "$name"); done
	cargo test --workspace --release -- --exact "${skip_args[@]}"
	skip "cargo test: ${#ROOT_ONLY_TESTS[@]} tests of cluster-tests/tests/disk_full.rs" "need root: each mounts a tmpfs as a node's data dir"
fi

section "the dashboard charts' pure functions under Node (node --test)"
node --test scripts/testing/dashboard-charts.test.js

section "cargo build --release -p broker --bin broker"
cargo build --release -p broker --bin broker

section "deploy/: Kubernetes manifests, systemd unit, compose file (offline checks)"
scripts/testing/deploy-validate.sh
section "deploy/: image and a three-node compose cluster"
if docker info >/dev/null 2>&1; then
	scripts/testing/deploy-compose.sh
elif ((root)); then
	echo "deploy-compose: skipped: no Docker engine"
else
	skip "deploy/ compose cluster" "no Docker engine this user may use"
fi

section "scripts/cluster.sh end to end (stand-in nodes)"
if ((root)); then
	scripts/testing/test-cluster-sh.sh
else
	skip "scripts/cluster.sh end to end" "needs root: network namespaces, iptables, FUSE, and a second user"
fi
section "README examples against a real cluster"
scripts/testing/readme-examples.sh
section "dashboard in headless Chromium, OpenAPI validation, Grafana metric names (three-node cluster)"
if ((root)) || (command -v chromium && command -v chromedriver) >/dev/null; then
	scripts/testing/dashboard-browser.sh
else
	skip "dashboard in headless Chromium" "chromium and chromedriver are not installed (apt-get install chromium chromium-driver, as .ci/run does)"
fi
section "the API against its OpenAPI document: schemathesis -c all (three-node cluster)"
scripts/testing/api-fuzz.sh
section "Jepsen-style smoke run: 50 s, mixed faults, low rate (fails on any anomaly or an inconclusive run)"
if ((root)); then
	scripts/testing/jepsen-smoke.sh
else
	skip "Jepsen-style smoke run" "needs root: partitions are iptables rules in network namespaces"
fi
section "cluster tests that need the broker's test-only fault switches (cargo feature fault-injection)"
cargo test --release -p cluster-tests --features fault-injection --test lagging_leader --test offset_reads
