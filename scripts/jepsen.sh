#!/usr/bin/env bash
#
# jepsen.sh — Jepsen-style fault-injection test of a local three-node cluster.
# Builds the broker and the `jepsen` tool (cluster-tests), then runs it; every
# flag goes to the tool (`scripts/jepsen.sh --help` lists them):
#
#   --duration 300s  --nemesis kill,pause,partition-leader,partition-halves,
#   partition-bridge,partition-oneway,snapshot-catchup,torn-tail,membership,
#   power-loss-leader,power-loss-follower,power-loss-minority,power-loss-all|mixed
#   --rate 50  --concurrency 6  --seed 1  --out DIR  --broker-bin PATH  --lazyfs
#
# Power loss: --lazyfs puts every node's data dir on a lazyfs mount (FUSE,
# cluster-tests/lazyfs, built here with cargo build --release -p lazyfs) that holds
# what was written since the file's last fsync in memory; the power-loss-* faults
# kill -9 the nodes and drop that data, which `kill` never does (the page cache
# survives a crashed process). With --lazyfs, `mixed` includes the power losses;
# naming a power-loss fault turns --lazyfs on. Needs /dev/fuse. E.g.
#   scripts/jepsen.sh --duration 90s --nemesis power-loss-all,power-loss-leader
#   scripts/jepsen.sh --duration 90s --nemesis power-loss-all --fault skip-fsync
#
# --workload pull|receive|transactions picks how the topic is used: `pull` (the
# default) runs one pull consumer per queue committing offsets; `receive` runs
# lease-based receivers (receive / ack / nack with change-invisible 0 / leases left to expire)
# with poison messages that must reach the group's dead-letter topic, tuned by
#   --receivers 4  --lease-time 2s..5s  --receive-wait 1s  --nack-fraction 0.01
#   --expire-fraction 0.02  --extend-fraction 0.01  --poison-fraction 0.005
#   --max-delivery-attempts N (also set on the nodes; default the broker's 16)
# e.g. scripts/jepsen.sh --workload receive --duration 300s --nemesis mixed
#
# --workload transactions sends transactional messages instead (--rate is
# transactions per second): each producer opens transactions of 1-3 messages and
# commits (60%), rolls back (25%) or abandons (15%) them; check responders answer
# the broker's transaction checks by a rule the messages carry (abandoned ones:
# commit, rollback, or no answer so the broker rolls back after its last check);
# pull consumers and the final read as in `pull`. The nodes get short check
# settings, tuned by
#   --responders 2  --txn-check-after 2s  --txn-check-interval 1s  --txn-max-checks 5
# e.g. scripts/jepsen.sh --workload transactions --duration 300s --nemesis mixed
#
# With --fault SWITCH (ack-before-commit, skip-fsync, ignore-dedup) and no
# --broker-bin it builds a deliberately broken broker with the cargo feature
# `fault-injection` into its own target directory (target/fault-injection), so
# the release broker is never built with it.
#
# Exit status: 0 clean, 1 anomalies, 2 inconclusive, 3 the run failed.
# Needs root: the nodes run in network namespaces (scripts/cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

fault='' broker_bin='' lazyfs='' lazyfs_bin='' check_only='' args=()
while (($# > 0)); do
	args+=("$1")
	case $1 in
	--fault) fault=${2:-} ;;
	--fault=*) fault=${1#*=} ;;
	--check | --check=*) check_only=1 ;;
	--broker-bin) broker_bin=${2:-} ;;
	--broker-bin=*) broker_bin=${1#*=} ;;
	--nemesis) [[ ${2:-} == *power-loss* ]] && lazyfs=1 ;;
	--nemesis=*) [[ $1 == *power-loss* ]] && lazyfs=1 ;;
	--lazyfs=*)
		lazyfs=1 lazyfs_bin=${1#*=}
		unset 'args[-1]'
		;;
	--lazyfs)
		lazyfs=1
		unset 'args[-1]' # given again below, with the path
		if [[ -n ${2:-} && ${2:-} != -* ]]; then
			lazyfs_bin=$2
			shift
		fi
		;;
	-h | --help) exec cargo run --quiet --release -p cluster-tests --bin jepsen -- --help ;;
	esac
	shift
done

# Re-checking a recorded history (--check) runs no cluster: any user may.
if [[ $EUID -ne 0 && -z $check_only ]]; then
	echo "jepsen.sh: needs root: the nodes run in network namespaces, partitions are iptables rules there, and power losses are FUSE mounts (try: sudo scripts/jepsen.sh ...)" >&2
	exit 3
fi
target=${CARGO_TARGET_DIR:-target}
extra=()
if [[ -z $broker_bin && -z $check_only ]]; then
	if [[ -n $fault ]]; then
		echo "jepsen.sh: building a broker with --features fault-injection (target/fault-injection)" >&2
		cargo build --quiet --release -p broker --bin broker --features fault-injection \
			--target-dir target/fault-injection
		extra=(--broker-bin target/fault-injection/release/broker)
	else
		cargo build --quiet --release -p broker --bin broker
		extra=(--broker-bin "$target/release/broker")
	fi
fi
if [[ -n $lazyfs && -z $lazyfs_bin ]]; then
	cargo build --quiet --release -p lazyfs
	extra+=(--lazyfs "$target/release/lazyfs")
elif [[ -n $lazyfs_bin ]]; then
	extra+=(--lazyfs "$lazyfs_bin")
fi
cargo build --quiet --release -p cluster-tests --bin jepsen
exec "$target/release/jepsen" "${extra[@]}" "${args[@]}"
