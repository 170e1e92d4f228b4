#!/usr/bin/env bash
#
# cluster.sh — a local broker cluster, one Linux network namespace per node, so
# that partitions are real packet drops and not a flag inside the broker. Without
# root (or with --loopback) the nodes run on 127.0.0.1 instead, one port each: no
# namespaces, so no partitions, but everything else works (see "Loopback" below).
# The commands are the contract in shared/API.md ("scripts/cluster.sh — a local
# cluster"); `cluster.sh help` prints them.
#
# Network layout of one cluster directory, whose subnet index is K (1..254):
#
#   subnet    $CLUSTER_NET.K.0/24 (CLUSTER_NET defaults to 10.77). K is taken from
#             the registry /run/cluster-sh/registry ("K<TAB>dir" lines, under flock)
#             so two directories never share a subnet, and is recorded in
#             DIR/cluster.json so a stopped cluster comes back on the same addresses.
#   bridge    clshK on the host, address $CLUSTER_NET.K.1/24: processes on the host
#             (tests) reach every node's URL directly.
#   netns     clshK-nI for node I: lo up, eth0 = $CLUSTER_NET.K.(10+I)/24, no default
#             route (nodes reach their own subnet only).
#   veth      clshKnI on the host (enslaved to the bridge) <-> eth0 inside clshK-nI.
#   iptables  inside every node namespace, chain CLSH-PART jumped to first from INPUT
#             and OUTPUT. `partition` appends DROP rules matching peer node addresses;
#             `heal` flushes the chain. The host's address is never matched, so the
#             host keeps reaching every node. Namespaces outlive node processes, so
#             partitions survive `restart I` and `stop`/`start`.
#   host      FORWARD -i clshK -o clshK -j ACCEPT (comment "cluster.sh"): with
#             br_netfilter loaded, frames bridged between two nodes traverse the
#             host's FORWARD chain, whose policy Docker sets to DROP.
#
# Loopback (net.mode "loopback" in cluster.json): node I listens on
# 127.0.0.1:(PORT+I-1). A new cluster without --port takes the first block of
# ports from 18081 up, in steps of 100, where every node's port is free (a
# stopped cluster reserves nothing: start says so if its ports were taken). Node
# processes are recognised by their --data-dir argument (a pid alone could be
# reused), and partition, power-loss and CLUSTER_LAZYFS refuse, naming root.
#
# Files: DIR/cluster.json (layout, pids, security mode; never a secret),
# DIR/node-I/data, DIR/node-I/broker.log (the node's stdout and stderr, appended
# across restarts), DIR/.lock (serialises commands that change one directory).
#
# lazyfs (opt-in, CLUSTER_LAZYFS=/path/to/lazyfs at the first start; see the
# lazyfs section below): DIR/node-I/data is then a FUSE mount of
# DIR/node-I/backing that keeps unsynced file data in memory, so `power-loss I`
# can lose exactly what a power cut loses. DIR/node-I/lazyfs.sock, lazyfs.log.
#
# Security (shared/API.md "Security"): a cluster is secured unless started with
# --insecure. The first start writes DIR/secret (the cluster secret nodes present
# to each other) and DIR/token (the bootstrap admin token clients send), 32 random
# bytes each, mode 0600 from creation; later starts reuse them, so the replicated
# users in the data keep working. Nodes get both as file paths in the environment
# (BROKER_SECURITY_CLUSTER_SECRET_FILE, BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE), never
# on a command line, which every local user can read in /proc/PID/cmdline. The
# script's own HTTP calls read the token into curl through stdin (-H @-) for the
# same reason. --tls adds DIR/tls/: a CA (ca.pem, ca-key.pem) and a certificate
# per node (node-I.pem, node-I-key.pem; keys 0600) made by broker-certs, given to
# the nodes as BROKER_TLS_CERT_FILE, BROKER_TLS_KEY_FILE and BROKER_TLS_CA_FILE.

# jq programs are single-quoted on purpose: $names in them are jq variables.
# shellcheck disable=SC2016
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly NET_PREFIX=${CLUSTER_NET:-10.77}
readonly READY_TIMEOUT_S=${CLUSTER_READY_TIMEOUT:-30}
readonly STOP_TIMEOUT_S=${CLUSTER_STOP_TIMEOUT:-20}
readonly CURL_TIMEOUT_S=${CLUSTER_CURL_TIMEOUT:-1}
readonly REGISTRY_DIR=/run/cluster-sh
readonly REGISTRY=$REGISTRY_DIR/registry
readonly NAME_PREFIX=clsh
readonly PART_CHAIN=CLSH-PART
readonly HOST_RULE_COMMENT=cluster.sh
readonly DEFAULT_PORT=18081
readonly LOOPBACK_IP=127.0.0.1
readonly LOOPBACK_PORT_STEP=100 # between the port blocks tried for a new loopback cluster
readonly FIRST_HOST_OCTET=10 # node I gets .(10+I); .1 is the host
readonly MAX_NODES=200
# Open files per node: client connections up to http.max_connections (10000) plus
# peers, Raft streams and mapped store files.
readonly NODE_NOFILE=65536
# Bytes of randomness in the cluster secret and in the admin token.
readonly SECRET_BYTES=32

usage() {
	cat <<'EOF'
usage: scripts/cluster.sh COMMAND [ARGS] [--dir DIR]

Runs a local broker cluster: every node in its own network namespace with its
own address, all on one bridge per cluster directory (as root), or every node
on its own port of 127.0.0.1 (without root, or with --loopback). A loopback
cluster does everything but partition and power-loss, which need the namespaces
and FUSE mounts only root can make.

commands:
  start [--nodes N] [--groups G]   build if needed (unless BROKER_BIN is set), start G
        [--port P] [--config FILE]  groups of N nodes (default 1x3; groups broker-a,
        [--tls | --insecure]        broker-b, ...; node ids 1..N*G, group a first),
        [--loopback]
                                    wait until every group has a leader and every node
                                    routes to every group, print one base URL per
                                    node, write DIR/cluster.json. On a stopped
                                    cluster: start it again with its data, addresses,
                                    secrets and certificates. On a running one: print
                                    the URLs. Secured unless --insecure: the first start
                                    writes DIR/secret and DIR/token (mode 0600); stderr
                                    says how to pass the token.
        --tls                       also serve HTTPS (client API and Raft) with a CA and
                                    node certificates under DIR/tls/; URLs are https://
        --insecure                  no cluster secret and no client authentication
                                    (nodes get --insecure): for a throwaway cluster no
                                    untrusted client can reach
        --loopback                  nodes on 127.0.0.1:P, P+1, ... instead of network
                                    namespaces (the default without root); without
                                    --port, the first free block from 18081 in steps
                                    of 100. Fixed at the first start
  token                             print the cluster's bootstrap admin token (admin on
                                    everything): export MQ_TOKEN=$(scripts/cluster.sh token)
  env                               print shell lines that set up a client shell:
                                    eval "$(scripts/cluster.sh env)" exports MQ_SERVER
                                    (every node's URL), MQ_TOKEN (secured), MQ_CA_FILE
                                    (--tls) and puts mqctl (built by start, next to the
                                    broker) first on PATH
  status                            one row per node: id, group, pid, state (running,
                                    paused, dead), address, role, term, leader id (from
                                    the node's own GET /v1/cluster; '-' when it does not
                                    answer); then the partition rules in force
  stop                              SIGTERM every node (a node drains first: readiness
                                    off, polls answered, leadership handed over),
                                    SIGKILL after CLUSTER_STOP_TIMEOUT;
                                    keeps namespaces, partitions and data (on lazyfs:
                                    unsynced data is written to DIR/node-I/backing,
                                    then the data dirs are unmounted, as a clean
                                    shutdown syncs its disks)
  clean                             stop, remove namespaces, bridge, iptables rules and
                                    the data (DIR/cluster.json, DIR/node-*, the secret,
                                    the token, DIR/tls/); works after a failed start
  kill I | pause I | resume I       SIGKILL / SIGSTOP / SIGCONT node I
  restart I                         stop node I (SIGTERM, then SIGKILL) if running and
                                    start it again with the same flags and data; waits
                                    for its /health. On lazyfs: mounts its data dir
                                    again first if a power loss unmounted it
  power-loss I[,J...]               lazyfs clusters only: SIGKILL the nodes, then each
                                    node's lazyfs drops every byte written since the
                                    file's last fsync and unmounts; prints "node I:
                                    dropped N unsynced bytes in M files" per node.
                                    The nodes stay down: restart I brings one back.
                                    (kill I loses nothing: the page cache survives a
                                    crashed process)
  partition "1,2|3"                 (root clusters) drop every packet between nodes 1,2 and node 3, both
                                    directions; more sides isolate each from the others
                                    ("1|2|3")
  partition "1,2>3"                 one-way: drop packets from 1,2 to 3 only. Over TCP
                                    this also breaks connections opened by 3 towards 1,2
                                    (their replies are dropped); see the UDP-level effect
                                    with e.g. ping.
  heal                              remove every partition rule in this cluster (a
                                    loopback cluster has none)
  url [I]                           print node I's base URL (default: the first node)
  help                              this text

Partitions are iptables DROP rules by peer address inside the node namespaces
(chain CLSH-PART); they add up until `heal`, hold established connections too, and
never block the host, which keeps reaching every node.

options:
  --dir DIR    cluster directory (default ./.cluster); clusters in different
               directories get different subnets and can run side by side

environment:
  BROKER_BIN             broker executable (default: cargo build --release -p broker
                         --bin broker, then ${CARGO_TARGET_DIR:-target}/release/broker);
                         restart reuses the one recorded at start
  CLUSTER_NET            first two octets of cluster subnets (default 10.77)
  CLUSTER_READY_TIMEOUT  seconds start/restart wait for nodes (default 30)
  CLUSTER_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL (default 20: a drain
                         may wait 5 s for a handover, then the store is flushed)
  CLUSTER_CURL_TIMEOUT   seconds per HTTP probe (default 1)
  CLUSTER_LAZYFS         lazyfs executable (cargo build --release -p lazyfs): at the
                         first start, put every node's data dir on a lazyfs mount of
                         DIR/node-I/backing (needs /dev/fuse), which power-loss needs;
                         recorded in cluster.json, so later commands use it unset.
                         Unset (the default): plain directories, no power-loss
  BROKER_CERTS_BIN       broker-certs executable for --tls (default: next to the
                         broker executable, else built with cargo)

The broker is run (a loopback cluster: without ip netns exec, on 127.0.0.1) as
  ip netns exec clshK-nI env BROKER_SECURITY_CLUSTER_SECRET_FILE=DIR/secret
    BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE=DIR/token [BROKER_TLS_CERT_FILE=DIR/tls/node-I.pem
    BROKER_TLS_KEY_FILE=DIR/tls/node-I-key.pem BROKER_TLS_CA_FILE=DIR/tls/ca.pem]
    BROKER_BIN --node-id I --group broker-x --listen IP:PORT
    --advertise-url http(s)://IP:PORT --data-dir DIR/node-I/data
    --peers "1=http(s)://..,2=..,3=.." --seeds "http(s)://..,http(s)://.."
    [--insecure] [--config FILE]
with its open-file limit raised to 65536 where the host allows it. The cluster
secret and the token are never on a command line.

Clients of a secured cluster send the token:
  export MQ_TOKEN=$(scripts/cluster.sh token)
  curl -H "Authorization: Bearer $MQ_TOKEN" "$(scripts/cluster.sh url)/v1/topics"
  mqctl topic list                      # reads MQ_TOKEN (and MQ_CA_FILE for --tls)
and of a --tls cluster trust its CA: curl --cacert DIR/tls/ca.pem, MQ_CA_FILE=DIR/tls/ca.pem.
EOF
}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---------------------------------------------------------------------------
# prerequisites

# After load_state: a namespaced cluster's commands need root, a loopback one's
# nothing more than owning the directory.
require_privilege() {
	[[ $NET_MODE == loopback || $EUID -eq 0 ]] ||
		die "the cluster in $ABS runs in network namespaces (it was started as root): its commands need root (try: sudo $0 ...)"
}

# Commands a loopback cluster cannot do say so, and what would.
require_namespaces() { # require_namespaces WHAT
	[[ $NET_MODE == namespaces ]] ||
		die "$1 needs network namespaces, and the cluster in $ABS runs on loopback (started without root or with --loopback); clean it and start it as root (sudo $0 start) for $1"
}

# Installs what is missing with apt-get, non-interactively.
ensure_tools() {
	local -A package_of=([jq]=jq [curl]=curl [flock]=util-linux [setsid]=util-linux)
	# Only root makes namespaces, and only root can install what is missing.
	((EUID != 0)) || package_of+=([ip]=iproute2 [iptables]=iptables)
	local tool missing=()
	for tool in "${!package_of[@]}"; do
		command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
	done
	((${#missing[@]} > 0)) || return 0
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	((EUID == 0)) || die "missing packages ${missing[*]}: install them (e.g. sudo apt-get install ${missing[*]}) and run this again"
	command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q "${missing[@]}" >&2 ||
		{ apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; } ||
		die "apt-get could not install ${missing[*]}"
}

# Sets BIN to an absolute path of the broker executable; builds it, and mqctl
# beside it, unless BROKER_BIN is set. (Two cargo runs: built together, the two
# packages' features would unify and the broker would differ from, and rebuild
# after, a plain `cargo build -p broker`.)
resolve_bin() {
	if [[ -n ${BROKER_BIN:-} ]]; then
		BIN=$(command -v -- "$BROKER_BIN") || die "BROKER_BIN=$BROKER_BIN is not an executable"
		BIN=$(realpath -- "$BIN")
	else
		command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, or set BROKER_BIN)"
		log "building the broker (cargo build --release -p broker --bin broker)"
		(cd "$REPO" && cargo build --quiet --release -p broker --bin broker) >&2 ||
			die "cargo build failed"
		log "building mqctl (cargo build --release -p mqctl)"
		(cd "$REPO" && cargo build --quiet --release -p mqctl) >&2 || die "cargo build -p mqctl failed"
		local target=${CARGO_TARGET_DIR:-target}
		[[ $target == /* ]] || target=$REPO/$target
		BIN=$target/release/broker
	fi
	[[ -x $BIN && ! -d $BIN ]] || die "broker executable $BIN not found or not executable"
}

# Sets CERTS_BIN to the broker-certs executable (--tls): BROKER_CERTS_BIN, else the
# one next to the broker executable, else built like the broker.
resolve_certs_bin() {
	if [[ -n ${BROKER_CERTS_BIN:-} ]]; then
		CERTS_BIN=$(command -v -- "$BROKER_CERTS_BIN") || die "BROKER_CERTS_BIN=$BROKER_CERTS_BIN is not an executable"
		return 0
	fi
	CERTS_BIN=$(dirname -- "$BIN")/broker-certs
	[[ -x $CERTS_BIN ]] && return 0
	command -v cargo >/dev/null 2>&1 || die "no broker-certs next to $BIN and no cargo to build it (set BROKER_CERTS_BIN)"
	log "building broker-certs (cargo build --release -p broker --bin broker-certs)"
	(cd "$REPO" && cargo build --quiet --release -p broker --bin broker-certs) >&2 ||
		die "cargo build of broker-certs failed"
	local target=${CARGO_TARGET_DIR:-target}
	[[ $target == /* ]] || target=$REPO/$target
	CERTS_BIN=$target/release/broker-certs
	[[ -x $CERTS_BIN ]] || die "broker-certs executable $CERTS_BIN not found"
}

# Sets LAZYFS_NEW to the absolute path of CLUSTER_LAZYFS (empty when unset), after
# checking that it runs and that FUSE is there.
resolve_lazyfs() {
	LAZYFS_NEW=
	[[ -n ${CLUSTER_LAZYFS:-} ]] || return 0
	LAZYFS_NEW=$(command -v -- "$CLUSTER_LAZYFS") || die "CLUSTER_LAZYFS=$CLUSTER_LAZYFS is not an executable (build it: cargo build --release -p lazyfs)"
	LAZYFS_NEW=$(realpath -- "$LAZYFS_NEW")
	[[ -c /dev/fuse ]] || die "CLUSTER_LAZYFS needs /dev/fuse (modprobe fuse)"
}

# ---------------------------------------------------------------------------
# cluster state: DIR/cluster.json, loaded into the globals below
#   ABS STATE NET_MODE (namespaces | loopback) K BRIDGE HOST_IP (K 0, BRIDGE "-"
#   and HOST_IP 127.0.0.1 on loopback) PORT NODES_PER_GROUP NUM_GROUPS BIN_RECORDED CONFIG
#   SECURITY (secured | insecure) TLS (0 | 1) LAZYFS (the lazyfs executable; empty
#   when the data dirs are plain directories)
#   NODE_IDS, and per node id: N_GROUP N_IP N_LISTEN (IP:PORT) N_URL N_PID N_NS
#   N_VETH (both "-" on loopback) N_DATA N_LOG N_LZPID (the node's lazyfs
#   process; "-" for none)

declare -a NODE_IDS=()
declare -A N_GROUP=() N_IP=() N_LISTEN=() N_URL=() N_PID=() N_NS=() N_VETH=() N_DATA=() N_LOG=() N_LZPID=()

set_dir() {
	ABS=$(realpath -m -- "$DIR")
	STATE=$ABS/cluster.json
	SECRET_FILE=$ABS/secret
	TOKEN_FILE=$ABS/token
	TLS_DIR=$ABS/tls
	CA_FILE=$TLS_DIR/ca.pem
}

load_state() {
	[[ -f $STATE ]] || die "no cluster in $ABS (start one with: scripts/cluster.sh start --dir $DIR)"
	local fields
	# A cluster.json from before security was recorded counts as secured.
	fields=$(jq -r '[.net.index, .net.bridge, .net.host_ip, .port, .nodes_per_group, .groups,
	                 (.broker_bin // "-"), (.config // "-"), (.security // "secured"),
	                 (if .tls then 1 else 0 end), (.lazyfs // "-"), (.net.mode // "namespaces")] | @tsv' "$STATE") ||
		die "$STATE is not valid cluster state"
	IFS=$'\t' read -r K BRIDGE HOST_IP PORT NODES_PER_GROUP NUM_GROUPS BIN_RECORDED CONFIG SECURITY TLS LAZYFS NET_MODE <<<"$fields"
	[[ $BIN_RECORDED == - ]] && BIN_RECORDED=
	[[ $CONFIG == - ]] && CONFIG=
	[[ $LAZYFS == - ]] && LAZYFS=
	[[ $SECURITY == secured || $SECURITY == insecure ]] || die "$STATE: unknown security mode '$SECURITY'"
	[[ $NET_MODE == namespaces || $NET_MODE == loopback ]] || die "$STATE: unknown network mode '$NET_MODE'"
	NODE_IDS=()
	local id group ip listen url pid ns veth data logf lzpid
	# Fields are never empty ("-" stands for null): read collapses runs of tabs.
	# A cluster.json from before loopback clusters has no listen: every node then
	# listens on its own address at the cluster's port.
	while IFS=$'\t' read -r id group ip listen url pid ns veth data logf lzpid; do
		NODE_IDS+=("$id")
		[[ $listen != - ]] || listen=$ip:$PORT
		N_GROUP[$id]=$group N_IP[$id]=$ip N_LISTEN[$id]=$listen N_URL[$id]=$url N_PID[$id]=$pid
		N_NS[$id]=$ns N_VETH[$id]=$veth N_DATA[$id]=$data N_LOG[$id]=$logf N_LZPID[$id]=$lzpid
	done < <(jq -r '.nodes[] | [.id, .group, .ip, (.listen // "-"), .url, (.pid // "-" | tostring),
	                            .netns, .veth, .data_dir, .log, (.lazyfs_pid // "-" | tostring)] | @tsv' "$STATE")
	((${#NODE_IDS[@]} > 0)) || die "$STATE lists no nodes"
}

# Writes the whole layout of a new cluster (pids null) from NET_MODE, K,
# NODES_PER_GROUP, NUM_GROUPS, PORT, SECURITY, TLS and LAZYFS. Files holding
# secrets are named, never copied.
write_new_state() {
	mkdir -p -- "$ABS"
	jq -n --arg mode "$NET_MODE" --arg loopback_ip "$LOOPBACK_IP" \
		--arg net "$NET_PREFIX" --arg prefix "$NAME_PREFIX" --argjson k "$K" \
		--argjson n "$NODES_PER_GROUP" --argjson g "$NUM_GROUPS" --argjson port "$PORT" \
		--argjson first "$FIRST_HOST_OCTET" --arg dir "$ABS" --arg bin "$BIN" \
		--arg config "$CONFIG" --arg security "$SECURITY" --argjson tls "$TLS" \
		--arg token_file "$TOKEN_FILE" --arg ca_file "$CA_FILE" --arg lazyfs "$LAZYFS" '
		def nullable: if . == "" then null else . end;
		(if $tls == 1 then "https" else "http" end) as $scheme
		| ($mode == "loopback") as $loopback
		| {dir: $dir,
		 net: (if $loopback then {mode: $mode, index: 0, bridge: "-", host_ip: $loopback_ip}
		       else {mode: $mode, index: $k, subnet: "\($net).\($k).0/24", bridge: "\($prefix)\($k)",
		             host_ip: "\($net).\($k).1", chain: "CLSH-PART"} end),
		 port: $port, nodes_per_group: $n, groups: $g,
		 broker_bin: $bin, config: ($config | nullable),
		 security: $security, tls: ($tls == 1),
		 token_file: (if $security == "secured" then $token_file else null end),
		 ca_file: (if $tls == 1 then $ca_file else null end),
		 lazyfs: ($lazyfs | nullable),
		 nodes: [range(1; $n * $g + 1) as $id
		         | (if $loopback then $loopback_ip else "\($net).\($k).\($first + $id)" end) as $ip
		         | (if $loopback then $port + $id - 1 else $port end) as $node_port
		         | {id: $id,
		            group: "broker-\([97 + (($id - 1) / $n | floor)] | implode)",
		            listen: "\($ip):\($node_port)",
		            url: "\($scheme)://\($ip):\($node_port)", pid: null,
		            data_dir: "\($dir)/node-\($id)/data", log: "\($dir)/node-\($id)/broker.log",
		            backing_dir: (if $lazyfs == "" then null else "\($dir)/node-\($id)/backing" end),
		            ip: $ip,
		            netns: (if $loopback then "-" else "\($prefix)\($k)-n\($id)" end),
		            veth: (if $loopback then "-" else "\($prefix)\($k)n\($id)" end)}]}' \
		>"$STATE.tmp"
	mv -- "$STATE.tmp" "$STATE"
}

# update_state JQ_FILTER [jq args...] — rewrites cluster.json atomically.
update_state() {
	local filter=$1
	shift
	jq "$@" "$filter" "$STATE" >"$STATE.tmp"
	mv -- "$STATE.tmp" "$STATE"
}

record_pid() {
	update_state '(.nodes[] | select(.id == $id) | .pid) = $pid' --argjson id "$1" --argjson pid "$2"
	N_PID[$1]=$2
}

# Serialises commands that change one cluster directory. Node processes must not
# inherit the descriptor (they are started with 9>&-), or the lock would outlive us.
lock_dir() {
	mkdir -p -- "$ABS"
	exec 9>>"$ABS/.lock"
	flock -w 120 9 || die "another cluster.sh command holds $ABS/.lock"
}
unlock_dir() { exec 9>&-; }

require_node() {
	[[ ${1:-} =~ ^[0-9]+$ && -n ${N_NS[$1]:-} ]] || die "no node '${1:-}' in this cluster (nodes: ${NODE_IDS[*]})"
}

# ---------------------------------------------------------------------------
# subnet registry: /run/cluster-sh/registry, one "K<TAB>absolute dir" line per
# cluster; /run is emptied at boot together with the namespaces and bridges.

registry_lock() {
	mkdir -p "$REGISTRY_DIR"
	exec 8>>"$REGISTRY_DIR/lock"
	flock -w 60 8 || die "another cluster.sh holds $REGISTRY_DIR/lock"
	touch "$REGISTRY"
}
registry_unlock() { exec 8>&-; }
registry_owner() { awk -F'\t' -v k="$1" '$1 == k { print $2; exit }' "$REGISTRY"; }
registry_index_of() { [[ -f $REGISTRY ]] && awk -F'\t' -v d="$1" '$2 == d { print $1; exit }' "$REGISTRY"; }
registry_set() {
	{
		awk -F'\t' -v k="$1" -v d="$2" '$1 != k && $2 != d' "$REGISTRY"
		printf '%s\t%s\n' "$1" "$2"
	} >"$REGISTRY.tmp"
	mv -- "$REGISTRY.tmp" "$REGISTRY"
}
registry_release() {
	[[ -f $REGISTRY ]] || return 0
	awk -F'\t' -v k="$1" '$1 != k' "$REGISTRY" >"$REGISTRY.tmp"
	mv -- "$REGISTRY.tmp" "$REGISTRY"
}

# True when something on the host other than our bridge uses subnet K.
subnet_in_use() {
	local subnet=$NET_PREFIX.$1.0/24
	ip link show "$NAME_PREFIX$1" >/dev/null 2>&1 && return 0
	[[ -n $(ip -4 route show root "$subnet" 2>/dev/null) ]] && return 0
	ip -4 route show match "$subnet" 2>/dev/null | grep -qv '^default' 
}

netns_of_index() { ip netns list | awk '{ print $1 }' | grep -E "^$NAME_PREFIX$1-n[0-9]+\$" || true; }

# A registered cluster whose directory lost its cluster.json (removed without
# `clean`) and whose namespaces run nothing can be torn down and its subnet reused.
index_is_stale() {
	local ns
	[[ -f $2/cluster.json ]] && return 1
	for ns in $(netns_of_index "$1"); do
		[[ -z $(ip netns pids "$ns" 2>/dev/null) ]] || return 1
	done
	return 0
}

# Prints the subnet index for ABS (registry lock held): its own entry, else the
# lowest free one.
allocate_index() {
	local k owner
	k=$(registry_index_of "$ABS")
	if [[ -n $k ]]; then
		echo "$k"
		return 0
	fi
	for ((k = 1; k <= 254; k++)); do
		owner=$(registry_owner "$k")
		if [[ -n $owner ]]; then
			index_is_stale "$k" "$owner" || continue
			log "reclaiming subnet $NET_PREFIX.$k.0/24 from $owner (removed without clean)"
			net_down_index "$k"
			registry_release "$k"
		fi
		subnet_in_use "$k" && continue
		echo "$k"
		return 0
	done
	die "no free subnet left in $NET_PREFIX.1..254.0/24 (see $REGISTRY)"
}

# An existing directory keeps its recorded subnet unless another directory took it.
claim_recorded_index() {
	registry_lock
	local owner
	owner=$(registry_owner "$K")
	if [[ -z $owner ]]; then
		if ! ip link show "$BRIDGE" >/dev/null 2>&1 && subnet_in_use "$K"; then
			die "subnet $NET_PREFIX.$K.0/24 recorded in $STATE is in use on this host; run clean and start again"
		fi
		registry_set "$K" "$ABS"
	elif [[ $owner != "$ABS" ]]; then
		die "subnet $NET_PREFIX.$K.0/24 recorded in $STATE belongs to the cluster in $owner (copied directory?); run clean and start again"
	fi
	registry_unlock
}

# ---------------------------------------------------------------------------
# network: bridge, namespaces, veths, iptables chains. Every step is idempotent.

host_rule() { # host_rule -C|-D|-I BRIDGE
	local op=$1 br=$2 pos=()
	[[ $op == -I ]] && pos=(1)
	iptables -w "$op" FORWARD "${pos[@]}" -i "$br" -o "$br" \
		-m comment --comment "$HOST_RULE_COMMENT" -j ACCEPT
}

ns_iptables() { # ns_iptables NS iptables-args...
	local ns=$1
	shift
	ip netns exec "$ns" iptables -w "$@"
}

net_up() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
	fi
	ip addr replace "$HOST_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	host_rule -C "$BRIDGE" 2>/dev/null || host_rule -I "$BRIDGE"

	local id ns veth hook
	for id in "${NODE_IDS[@]}"; do
		ns=${N_NS[$id]} veth=${N_VETH[$id]}
		[[ -e /run/netns/$ns ]] || ip netns add "$ns"
		if ! ip link show "$veth" >/dev/null 2>&1; then
			ip -n "$ns" link del eth0 2>/dev/null || true
			ip link add "$veth" type veth peer name eth0 netns "$ns"
		fi
		ip link set "$veth" master "$BRIDGE"
		ip link set "$veth" up
		ip -n "$ns" link set lo up
		ip -n "$ns" addr replace "${N_IP[$id]}/24" dev eth0
		ip -n "$ns" link set eth0 up
		ns_iptables "$ns" -N "$PART_CHAIN" 2>/dev/null || true
		for hook in INPUT OUTPUT; do
			ns_iptables "$ns" -C "$hook" -j "$PART_CHAIN" 2>/dev/null ||
				ns_iptables "$ns" -I "$hook" 1 -j "$PART_CHAIN"
		done
	done
}

# Removes everything of subnet index K, found by name: works without cluster.json.
net_down_index() {
	local k=$1 ns veth br=$NAME_PREFIX$1
	for ns in $(netns_of_index "$k"); do
		# shellcheck disable=SC2046 # one word per pid
		kill_pids "$ns" $(ip netns pids "$ns" 2>/dev/null)
		ip netns del "$ns"
	done
	for veth in $(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' |
		grep -E "^$NAME_PREFIX${k}n[0-9]+\$" || true); do
		ip link del "$veth" 2>/dev/null || true
	done
	ip link del "$br" 2>/dev/null || true
	while host_rule -C "$br" 2>/dev/null; do host_rule -D "$br"; done
}

# ---------------------------------------------------------------------------
# secrets and certificates (see the header: never on a command line, never in
# cluster.json)

# new_secret_file PATH PREFIX — SECRET_BYTES random bytes as hex after PREFIX,
# written to a file that is 0600 from its creation (mktemp makes it so, whatever
# the umask) and renamed into place, so no reader ever sees it partly written or
# readable by others. An existing file is kept.
new_secret_file() {
	local path=$1 prefix=$2 tmp hex
	[[ -s $path ]] && return 0
	tmp=$(mktemp -- "$path.XXXXXX")
	# od, not a here-string or argument: the value never appears in any argv.
	{
		printf '%s' "$prefix"
		od -An -v -tx1 -N"$SECRET_BYTES" /dev/urandom | tr -d ' \n'
		printf '\n'
	} >"$tmp"
	hex=$(wc -c <"$tmp")
	((hex == ${#prefix} + 2 * SECRET_BYTES + 1)) || die "could not read $SECRET_BYTES random bytes for $path"
	chmod 0600 -- "$tmp"
	mv -f -- "$tmp" "$path"
}

# Secrets of a secured cluster: made at its first start, kept afterwards. Missing
# ones are made again only while no node runs (a running node holds the old
# secret and would refuse its peers).
ensure_secrets() {
	[[ $SECURITY == secured ]] || return 0
	if [[ ! -s $SECRET_FILE || ! -s $TOKEN_FILE ]]; then
		local id
		for id in "${NODE_IDS[@]}"; do
			node_alive "$id" && die "$SECRET_FILE or $TOKEN_FILE is missing while node $id runs; stop the cluster first"
		done
		[[ -e $SECRET_FILE || -e $TOKEN_FILE ]] && log "making a new cluster secret or admin token in $ABS"
	fi
	new_secret_file "$SECRET_FILE" ""
	new_secret_file "$TOKEN_FILE" "mq_admin_"
	chmod 0600 -- "$SECRET_FILE" "$TOKEN_FILE"
}

# The CA and node certificates of a --tls cluster, made once (broker-certs never
# overwrites). The directory is readable so that clients can use ca.pem; the keys
# in it are 0600.
ensure_certificates() {
	((TLS)) || return 0
	local id missing=()
	[[ -s $CA_FILE && -s $TLS_DIR/ca-key.pem ]] || missing+=(ca)
	for id in "${NODE_IDS[@]}"; do
		[[ -s $TLS_DIR/node-$id.pem && -s $TLS_DIR/node-$id-key.pem ]] || missing+=("$id")
	done
	((${#missing[@]} > 0)) || return 0
	resolve_certs_bin
	if [[ ${missing[0]} == ca ]]; then
		rm -f -- "$CA_FILE" "$TLS_DIR/ca-key.pem"
		"$CERTS_BIN" ca --out "$TLS_DIR" >/dev/null || die "broker-certs could not make a CA in $TLS_DIR"
		missing=("${NODE_IDS[@]}")
		log "made a CA for this cluster: $CA_FILE"
	fi
	chmod 0755 -- "$TLS_DIR"
	for id in "${missing[@]}"; do
		rm -f -- "$TLS_DIR/node-$id.pem" "$TLS_DIR/node-$id-key.pem"
		"$CERTS_BIN" node --ca-dir "$TLS_DIR" --name "node-$id" --ip "${N_IP[$id]}" \
			--dns localhost --out "$TLS_DIR" >/dev/null ||
			die "broker-certs could not make node $id's certificate"
	done
}

# Environment of node $1 (NAME=VALUE words, for env) into the array ENV_OUT.
node_env() {
	local id=$1
	ENV_OUT=()
	if [[ $SECURITY == secured ]]; then
		ENV_OUT+=("BROKER_SECURITY_CLUSTER_SECRET_FILE=$SECRET_FILE"
			"BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE=$TOKEN_FILE")
	fi
	if ((TLS)); then
		ENV_OUT+=("BROKER_TLS_CERT_FILE=$TLS_DIR/node-$id.pem"
			"BROKER_TLS_KEY_FILE=$TLS_DIR/node-$id-key.pem"
			"BROKER_TLS_CA_FILE=$CA_FILE")
	fi
}

# Raises this shell's open-file limit (nodes inherit it) to NODE_NOFILE, or to the
# hard limit where that is lower and cannot be raised.
raise_nofile() {
	local soft
	soft=$(ulimit -Sn)
	[[ $soft != unlimited ]] && ((soft >= NODE_NOFILE)) && return 0
	ulimit -n "$NODE_NOFILE" 2>/dev/null && return 0
	ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
	log "note: nodes get an open-file limit of $(ulimit -Sn), not $NODE_NOFILE (the hard limit is $(ulimit -Hn))"
}

# node_curl ARGS... — curl for the nodes: no proxy, the cluster's CA for https, and
# the admin token read from stdin (-H @-) so that it is not in curl's argv.
node_curl() {
	local args=(--noproxy '*' -sS)
	((TLS)) && args+=(--cacert "$CA_FILE")
	if [[ $SECURITY == secured && -r $TOKEN_FILE ]]; then
		curl "${args[@]}" -H @- "$@" < <(printf 'Authorization: Bearer %s\n' "$(head -n 1 -- "$TOKEN_FILE")")
	else
		curl "${args[@]}" "$@" </dev/null
	fi
}

# How to reach the cluster, on stderr after start: the token, the CA, or loudly
# that there is no authentication; then the lines that put mqctl on PATH and point
# it at the cluster, ready to paste.
print_access() {
	local dir_arg='' url reach
	[[ $DIR == ./.cluster || $DIR == .cluster ]] || dir_arg=" --dir $DIR"
	url=$(jq -r '.nodes[0].url' "$STATE")
	reach="$NET_PREFIX.$K.0/24"
	[[ $NET_MODE == namespaces ]] || reach="$LOOPBACK_IP (every user and program on this host)"
	if [[ $SECURITY == insecure ]]; then
		log "WARNING: INSECURE cluster (--insecure): no cluster secret and no client authentication;"
		log "WARNING: anyone who reaches $reach can change topics, membership and data"
	else
		log "secured: clients need the admin token in $TOKEN_FILE (mode 0600):"
		log "  export MQ_TOKEN=\$(scripts/cluster.sh token$dir_arg)"
		if ((TLS)); then
			log "  export MQ_CA_FILE=$CA_FILE"
			log "  curl --cacert \"\$MQ_CA_FILE\" -H \"Authorization: Bearer \$MQ_TOKEN\" $url/v1/topics"
		else
			log "  curl -H \"Authorization: Bearer \$MQ_TOKEN\" $url/v1/topics"
		fi
	fi
	if ((TLS)) && [[ $SECURITY == insecure ]]; then
		log "TLS: trust $CA_FILE (curl --cacert, MQ_CA_FILE)"
	fi
	local servers bin_dir
	servers=$(server_list)
	bin_dir=$(dirname -- "${BIN:-$BIN_RECORDED}")
	if [[ -x $bin_dir/mqctl ]]; then
		log "mqctl, the command line client, is in $bin_dir:"
	else
		log "mqctl: build it with (cd $REPO && cargo build --release -p mqctl), or cargo install --path $REPO/broker/mqctl; then"
	fi
	log "  export PATH=\"$bin_dir:\$PATH\" MQ_SERVER=$servers"
	log "  mqctl topic list      # reads MQ_SERVER$([[ $SECURITY == secured ]] && echo ", MQ_TOKEN")$( ((TLS)) && echo ", MQ_CA_FILE"); users: mqctl user create"
	log "or all of it at once: eval \"\$($REPO/scripts/cluster.sh env$dir_arg)\""
}

# ---------------------------------------------------------------------------
# processes. A node's pid is trusted only while that process lives in the node's
# namespace, which guards against pid reuse.

# These run often (status, every wait loop), so they stay fork-free on a busy host.
proc_field() { # proc_field PID N — Nth field after the command name in /proc/PID/stat (1 = state)
	local stat fields
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
	read -r -a fields <<<"${stat##*) }"
	printf '%s' "${fields[$(($2 - 1))]}"
}

pid_in_ns() { # pid_in_ns PID NS — PID is a live (non-zombie) process in NS
	local state
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	state=$(proc_field "$1" 1)
	[[ -n $state && $state != Z && $state != X ]] || return 1
	# Same namespace = same nsfs inode (what `ip netns identify` compares, without a fork).
	[[ /proc/$1/ns/net -ef /run/netns/$2 ]]
}

# pid_runs_node PID ID — PID is a live process started for node ID: in its
# namespace, or on loopback, with node ID's data dir as its --data-dir.
pid_runs_node() {
	if [[ $NET_MODE == loopback ]]; then
		pid_has_data_dir "$1" "${N_DATA[$2]}"
	else
		pid_in_ns "$1" "${N_NS[$2]}"
	fi
}

pid_has_data_dir() { # pid_has_data_dir PID DIR — a live (non-zombie) process run with --data-dir DIR
	local state arg previous='' argv=()
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	state=$(proc_field "$1" 1)
	[[ -n $state && $state != Z && $state != X ]] || return 1
	{ mapfile -d '' -t argv <"/proc/$1/cmdline"; } 2>/dev/null || return 1
	for arg in "${argv[@]}"; do
		[[ $previous == --data-dir && $arg == "$2" ]] && return 0
		previous=$arg
	done
	return 1
}

node_alive() { pid_runs_node "${N_PID[$1]}" "$1"; }

node_state() {
	if ! node_alive "$1"; then
		echo dead
	elif [[ $(proc_field "${N_PID[$1]}" 1) == [Tt] ]]; then
		echo paused
	else
		echo running
	fi
}

# The broker is started by setsid, so it leads its own process group; signal the
# group so a wrapper script given as BROKER_BIN takes its children along.
signal_pid() { # signal_pid SIGNAL PID
	if [[ $(proc_field "$2" 3) == "$2" ]]; then
		kill -s "$1" -- "-$2" 2>/dev/null || true
	else
		kill -s "$1" "$2" 2>/dev/null || true
	fi
}

# kill_pids NS PID... — SIGTERM (and SIGCONT, so paused ones can act on it), wait up
# to CLUSTER_STOP_TIMEOUT, then SIGKILL what is left of them in NS.
kill_pids() {
	local ns=$1 pid left deadline
	shift
	(($# > 0)) || return 0
	for pid in "$@"; do
		signal_pid TERM "$pid"
		signal_pid CONT "$pid"
	done
	deadline=$((SECONDS + STOP_TIMEOUT_S))
	while :; do
		left=()
		for pid in "$@"; do pid_exited "$pid" || left+=("$pid"); done
		((${#left[@]} > 0)) || return 0
		((SECONDS < deadline)) || break
		sleep 0.1
	done
	log "$ns: SIGKILL ${left[*]} (still running ${STOP_TIMEOUT_S}s after SIGTERM)"
	for pid in "${left[@]}"; do signal_pid KILL "$pid"; done
	wait_gone "$ns" "${left[@]}"
}

pid_exited() { # pid_exited PID — PID is gone, a zombie, or dead
	local state
	state=$(proc_field "$1" 1)
	[[ -z $state || $state == Z || $state == X ]]
}

# wait_gone NS PID... — up to 5 s for SIGKILLed processes to go. A dying process
# leaves its namespaces (exit_task_namespaces) before it becomes a zombie, so
# "no longer in NS" is not yet "exited": wait for the process state itself.
wait_gone() {
	local ns=$1 pid deadline=$((SECONDS + 5))
	shift
	for pid in "$@"; do
		while ! pid_exited "$pid"; do
			((SECONDS < deadline)) || die "pid $pid in $ns survived SIGKILL"
			sleep 0.05
		done
	done
}

# Stops several nodes at once: all get SIGTERM first, then one shared deadline.
stop_nodes() {
	local id i pids=() ns_of_pid=() left deadline
	for id in "$@"; do
		node_alive "$id" || continue
		signal_pid TERM "${N_PID[$id]}"
		signal_pid CONT "${N_PID[$id]}"
		pids+=("${N_PID[$id]}")
		ns_of_pid+=("${N_NS[$id]}")
	done
	((${#pids[@]} > 0)) || return 0
	deadline=$((SECONDS + STOP_TIMEOUT_S))
	while :; do
		left=()
		for i in "${!pids[@]}"; do pid_exited "${pids[$i]}" || left+=("$i"); done
		((${#left[@]} > 0)) || return 0
		((SECONDS < deadline)) || break
		sleep 0.1
	done
	for i in "${left[@]}"; do
		log "node pid ${pids[$i]} still running ${STOP_TIMEOUT_S}s after SIGTERM: SIGKILL"
		signal_pid KILL "${pids[$i]}"
		wait_gone "${ns_of_pid[$i]}" "${pids[$i]}"
	done
}

node_args() { # the broker's flags for node $1, into the array ARGS_OUT
	local id=$1 other peers=() seeds=()
	for other in "${NODE_IDS[@]}"; do
		seeds+=("${N_URL[$other]}")
		[[ ${N_GROUP[$other]} == "${N_GROUP[$id]}" ]] && peers+=("$other=${N_URL[$other]}")
	done
	ARGS_OUT=(--node-id "$id" --group "${N_GROUP[$id]}" --listen "${N_LISTEN[$id]}"
		--advertise-url "${N_URL[$id]}" --data-dir "${N_DATA[$id]}"
		--peers "$(
			IFS=,
			echo "${peers[*]}"
		)" --seeds "$(
			IFS=,
			echo "${seeds[*]}"
		)")
	[[ $SECURITY == insecure ]] && ARGS_OUT+=(--insecure)
	[[ -z $CONFIG ]] || ARGS_OUT+=(--config "$CONFIG")
}

tail_log() {
	local id=$1
	log "--- last lines of ${N_LOG[$id]}:"
	tail -n 20 -- "${N_LOG[$id]}" >&2 2>/dev/null || true
}

# Starts node $1 detached (setsid: own session, survives this script) in its
# namespace (on loopback: on the host) and records its pid. Proxy variables are dropped: nodes talk to
# addresses no proxy can reach. So are a caller's BROKER_CLUSTER_SECRET and
# BROKER_SECURITY_*/BROKER_TLS_* settings: the node gets this cluster's files.
launch_node() {
	local id=$1 bin=$2 pid deadline in_netns=()
	node_args "$id"
	node_env "$id"
	mkdir -p -- "${N_DATA[$id]}"
	[[ $NET_MODE == loopback ]] || in_netns=(ip netns exec "${N_NS[$id]}")
	printf '=== %s cluster.sh: starting node %s: %s %s %s\n' "$(date -Is)" "$id" "${ENV_OUT[*]}" "$bin" "${ARGS_OUT[*]}" >>"${N_LOG[$id]}"
	setsid "${in_netns[@]}" \
		env -u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY \
		-u BROKER_CLUSTER_SECRET -u BROKER_SECURITY_CLUSTER_SECRET_FILE \
		-u BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE -u BROKER_SECURITY_INSECURE \
		-u BROKER_TLS_CERT_FILE -u BROKER_TLS_KEY_FILE -u BROKER_TLS_CA_FILE \
		"${ENV_OUT[@]}" "$bin" "${ARGS_OUT[@]}" </dev/null >>"${N_LOG[$id]}" 2>&1 8>&- 9>&- &
	pid=$!
	# setsid does not fork here (we are not a group leader), and ip and env exec,
	# so $! becomes the broker; wait until it has entered the namespace (on
	# loopback: until it runs the broker with the node's arguments).
	deadline=$((SECONDS + 5))
	until pid_runs_node "$pid" "$id"; do
		if [[ -z $(proc_field "$pid" 1) || $(proc_field "$pid" 1) == Z ]]; then
			tail_log "$id"
			die "node $id exited right after start (log: ${N_LOG[$id]})"
		fi
		((SECONDS < deadline)) || die "node $id (pid $pid) did not become the broker (namespace ${N_NS[$id]})"
		sleep 0.02
	done
	record_pid "$id" "$pid"
}

# ---------------------------------------------------------------------------
# lazyfs (CLUSTER_LAZYFS): node I's data dir DIR/node-I/data is a FUSE mount of
# DIR/node-I/backing served by a lazyfs process (cluster-tests/lazyfs), which holds
# file data written since the file's last fsync in memory. `power-loss I` drops
# that data; `kill I` does not (a crashed process leaves the page cache, and so the
# data, behind). The lazyfs process runs on the host, outside the node's network
# namespace, detached like the nodes; its control socket is DIR/node-I/lazyfs.sock
# and its log DIR/node-I/lazyfs.log. A mount made before a node starts is in the
# node's mount namespace (ip netns exec copies the host's mounts).

lz_dir() { printf '%s' "${N_DATA[$1]%/*}"; } # DIR/node-I
lz_socket() { printf '%s/lazyfs.sock' "$(lz_dir "$1")"; }

# is_mounted PATH — PATH is a mount point in this mount namespace (no escapes:
# cluster directories with spaces are not supported on lazyfs).
is_mounted() { awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# lz_alive I — node I's recorded lazyfs process lives (and is that lazyfs: its
# command line names the node's socket, which guards against pid reuse).
lz_alive() {
	local pid=${N_LZPID[$1]}
	[[ $pid =~ ^[0-9]+$ ]] && ! pid_exited "$pid" && grep -qzF -- "$(lz_socket "$1")" "/proc/$pid/cmdline" 2>/dev/null
}

record_lz_pid() { # record_lz_pid I PID|null
	update_state '(.nodes[] | select(.id == $id) | .lazyfs_pid) = $pid' --argjson id "$1" --argjson pid "$2"
	N_LZPID[$1]=$2
	[[ $2 == null ]] && N_LZPID[$1]=-
	return 0
}

# lz_wait_exit I SECONDS — until node I's lazyfs has exited; false on timeout.
lz_wait_exit() {
	local pid=${N_LZPID[$1]} deadline=$((SECONDS + $2))
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	while ! pid_exited "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.05
	done
}

# lz_detach PATH — lazily unmounts a mount left behind (its lazyfs died: every
# access fails with ENOTCONN until it is gone).
lz_detach() {
	is_mounted "$1" || return 0
	umount -l -- "$1" 2>/dev/null || fusermount3 -u -z -- "$1" 2>/dev/null ||
		die "cannot unmount $1 (a lazyfs mount)"
}

# lz_up I — mounts node I's data dir unless its lazyfs already serves it.
lz_up() {
	local id=$1 data=${N_DATA[$1]} dir pid socket deadline
	[[ -n $LAZYFS ]] || return 0
	if lz_alive "$id" && is_mounted "$data"; then return 0; fi
	[[ -x $LAZYFS ]] || die "lazyfs executable $LAZYFS (recorded at start) is gone; set CLUSTER_LAZYFS"
	if lz_alive "$id"; then
		log "node $id: lazyfs (pid ${N_LZPID[$id]}) runs without its mount: stopping it"
		signal_pid KILL "${N_LZPID[$id]}"
		lz_wait_exit "$id" 5 || die "node $id's lazyfs (pid ${N_LZPID[$id]}) survived SIGKILL"
	fi
	lz_detach "$data"
	dir=$(lz_dir "$id")
	socket=$(lz_socket "$id")
	mkdir -p -- "$dir/backing" "$data"
	[[ -z $(ls -A -- "$data") ]] || die "$data is not empty: a lazyfs mount point must be (its files belong in $dir/backing)"
	rm -f -- "$socket"
	printf '=== %s cluster.sh: mounting %s on %s\n' "$(date -Is)" "$dir/backing" "$data" >>"$dir/lazyfs.log"
	setsid "$LAZYFS" --backing "$dir/backing" --mount "$data" --control "$socket" \
		</dev/null >>"$dir/lazyfs.log" 2>&1 8>&- 9>&- &
	pid=$!
	# The socket appears once the mount is live.
	deadline=$((SECONDS + 10))
	until [[ -S $socket ]] && is_mounted "$data"; do
		if pid_exited "$pid"; then
			tail -n 5 -- "$dir/lazyfs.log" >&2 || true
			die "node $id: lazyfs exited instead of mounting $data (log: $dir/lazyfs.log)"
		fi
		((SECONDS < deadline)) || die "node $id: lazyfs (pid $pid) did not mount $data within 10 s"
		sleep 0.02
	done
	record_lz_pid "$id" "$pid"
}

# lz_down I — clean stop of node I's lazyfs (every unsynced byte applied), for a
# stopped node. Falls back to SIGTERM (same, but detaches a busy mount).
lz_down() {
	local id=$1 data=${N_DATA[$1]}
	[[ -n $LAZYFS ]] || return 0
	if lz_alive "$id"; then
		"$LAZYFS" ctl "$(lz_socket "$id")" stop >/dev/null 2>&1 || signal_pid TERM "${N_LZPID[$id]}"
		if ! lz_wait_exit "$id" 20; then
			log "node $id: lazyfs (pid ${N_LZPID[$id]}) still running 20 s after stop: SIGKILL (unsynced data lost)"
			signal_pid KILL "${N_LZPID[$id]}"
			lz_wait_exit "$id" 5 || die "node $id's lazyfs (pid ${N_LZPID[$id]}) survived SIGKILL"
		fi
	fi
	lz_detach "$data"
	[[ ${N_LZPID[$id]} == - ]] || record_lz_pid "$id" null
}

# lz_power_loss I — node I (already dead) loses every unsynced byte: its lazyfs
# drops them, detaches the mount and exits. Prints what was dropped.
lz_power_loss() {
	local id=$1 answer
	if ! lz_alive "$id"; then
		lz_detach "${N_DATA[$id]}"
		echo "node $id: no lazyfs running (already powered off)"
		return 0
	fi
	answer=$("$LAZYFS" ctl "$(lz_socket "$id")" power-loss) ||
		die "node $id: lazyfs did not take the power loss: $answer"
	if ! lz_wait_exit "$id" 10; then
		signal_pid KILL "${N_LZPID[$id]}"
		lz_wait_exit "$id" 5 || die "node $id's lazyfs (pid ${N_LZPID[$id]}) survived SIGKILL"
	fi
	lz_detach "${N_DATA[$id]}"
	record_lz_pid "$id" null
	echo "node $id: ${answer#ok }"
}

# Mounts left under DIR/node-*/ by a cluster whose cluster.json is gone.
lz_detach_all_under() {
	local mount
	while read -r mount; do
		lz_detach "$mount"
	done < <(awk -v p="$1/node-" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo)
}

http_ok() { node_curl -f -o /dev/null --max-time "$CURL_TIMEOUT_S" "$1" 2>/dev/null; }

# wait_nodes PATH ID... — until every node answers PATH with 2xx; dies with the
# log tails of the laggards on timeout or when one exits.
wait_nodes() {
	local path=$1 id pending deadline=$((SECONDS + READY_TIMEOUT_S))
	shift
	while :; do
		pending=()
		for id in "$@"; do
			if ! node_alive "$id"; then
				tail_log "$id"
				die "node $id exited (log: ${N_LOG[$id]})"
			fi
			http_ok "${N_URL[$id]}$path" || pending+=("$id")
		done
		((${#pending[@]} > 0)) || return 0
		if ((SECONDS >= deadline)); then
			for id in "${pending[@]}"; do tail_log "$id"; done
			die "timed out after ${READY_TIMEOUT_S}s waiting for $path on node(s) ${pending[*]} (CLUSTER_READY_TIMEOUT); the nodes are left running: see status, stop or clean"
		fi
		sleep 0.2
	done
}

# wait_groups ID... — until every node lists every group of the cluster, each
# with a leader, in GET /v1/cluster: the routes a topic creation spreads over. A
# node learns the other groups from their registrations, which follow their
# elections; a topic created before would land in the groups known so far only.
wait_groups() {
	local id known pending deadline=$((SECONDS + READY_TIMEOUT_S))
	while :; do
		pending=()
		for id in "$@"; do
			known=$(node_curl -f --max-time "$CURL_TIMEOUT_S" "${N_URL[$id]}/v1/cluster" 2>/dev/null |
				jq '[.groups[]? | select(.leader != null)] | length' 2>/dev/null) || known=0
			((${known:-0} >= NUM_GROUPS)) || pending+=("$id")
		done
		((${#pending[@]} > 0)) || return 0
		if ((SECONDS >= deadline)); then
			for id in "${pending[@]}"; do tail_log "$id"; done
			die "timed out after ${READY_TIMEOUT_S}s waiting for node(s) ${pending[*]} to know all $NUM_GROUPS groups (CLUSTER_READY_TIMEOUT); the nodes are left running: see status, stop or clean"
		fi
		sleep 0.2
	done
}

print_urls() { jq -r '.nodes[].url' "$STATE"; }
# Every node's URL, comma-separated: what clients take as MQ_SERVER.
server_list() { jq -r '[.nodes[].url] | join(",")' "$STATE"; }

# port_taken PORT — something listens on LOOPBACK_IP:PORT (a connect succeeds).
port_taken() { (exec 3<>"/dev/tcp/$LOOPBACK_IP/$1") 2>/dev/null; }

# free_port_block N — the first of DEFAULT_PORT, +LOOPBACK_PORT_STEP, ... after
# which N ports are all free (a second loopback cluster lands on the next block).
free_port_block() {
	local count=$1 base port taken
	for ((base = DEFAULT_PORT; base + count - 1 <= 65535; base += LOOPBACK_PORT_STEP)); do
		taken=0
		for ((port = base; port < base + count; port++)); do
			if port_taken "$port"; then
				taken=1
				break
			fi
		done
		((taken)) || {
			echo "$base"
			return 0
		}
	done
	die "no block of $count free ports on $LOOPBACK_IP from $DEFAULT_PORT up"
}

# require_free_listen ID — on loopback, node ID's port must be free before it
# starts: otherwise the node would exit on a bind error, or worse, wait_nodes
# would take whatever answers there for the node.
require_free_listen() {
	[[ $NET_MODE == loopback ]] || return 0
	local port=${N_LISTEN[$1]##*:}
	port_taken "$port" &&
		die "port $port of node $1 is in use on $LOOPBACK_IP (another program, or a cluster in another directory): stop it, or clean this cluster and start it with --port"
	return 0
}

# drop NS -s|-d IP — append "-s/-d IP -j DROP" to NS's chain unless already there.
drop() {
	ns_iptables "$1" -C "$PART_CHAIN" "$2" "$3/32" -j DROP 2>/dev/null ||
		ns_iptables "$1" -A "$PART_CHAIN" "$2" "$3/32" -j DROP
}

partition_rules() { # partition_rules ID — the rules in node ID's chain, as iptables -S lines
	[[ -e /run/netns/${N_NS[$1]} ]] || return 0
	ns_iptables "${N_NS[$1]}" -S "$PART_CHAIN" 2>/dev/null | grep -- '-j DROP' || true
}

# ---------------------------------------------------------------------------
# commands

cmd_start() {
	ensure_tools
	[[ -z $OPT_NODES || $OPT_NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer"
	[[ -z $OPT_GROUPS || $OPT_GROUPS =~ ^[1-9][0-9]*$ ]] || die "--groups must be a positive integer"
	[[ -z $OPT_PORT || ($OPT_PORT =~ ^[1-9][0-9]*$ && $OPT_PORT -le 65535) ]] || die "--port must be a port number"
	set_dir

	if [[ -f $STATE ]]; then
		load_state
		require_privilege
		if ((OPT_LOOPBACK)) && [[ $NET_MODE == namespaces ]]; then
			die "$ABS holds a cluster in network namespaces; --loopback cannot apply to it (clean it or use another --dir)"
		fi
		if [[ -n $OPT_NODES && $OPT_NODES != "$NODES_PER_GROUP" ]] || [[ -n $OPT_GROUPS && $OPT_GROUPS != "$NUM_GROUPS" ]]; then
			die "$ABS holds a cluster of $NUM_GROUPS group(s) x $NODES_PER_GROUP node(s); clean it or use another --dir"
		fi
		# Security and TLS are fixed at the first start: the data holds users, and
		# clients (and peers) hold the URLs.
		if ((OPT_INSECURE)) && [[ $SECURITY == secured ]]; then
			die "$ABS holds a secured cluster; --insecure cannot apply to it (clean it or use another --dir)"
		fi
		if ((OPT_TLS && !TLS)); then
			die "$ABS holds a cluster without TLS; --tls cannot apply to it (clean it or use another --dir)"
		fi
		if [[ -n ${CLUSTER_LAZYFS:-} && -z $LAZYFS ]]; then
			die "$ABS holds a cluster without lazyfs (its data is in plain directories); CLUSTER_LAZYFS cannot apply to it (clean it or use another --dir)"
		fi
		local all_up=1 id
		for id in "${NODE_IDS[@]}"; do node_alive "$id" || all_up=0; done
		if ((all_up)); then
			log "cluster in $ABS is already running"
			print_access
			print_urls
			return 0
		fi
	fi

	if [[ ! -f $STATE ]]; then
		NET_MODE=namespaces
		((OPT_LOOPBACK || EUID != 0)) && NET_MODE=loopback
	fi
	if [[ $NET_MODE == loopback && -n ${CLUSTER_LAZYFS:-} ]]; then
		die "CLUSTER_LAZYFS (the power-loss file system) needs root: a loopback cluster keeps its data in plain directories"
	fi
	resolve_bin
	resolve_lazyfs
	lock_dir
	if [[ -f $STATE ]]; then
		load_state
		[[ -z $OPT_CONFIG ]] || CONFIG=$(realpath -- "$OPT_CONFIG")
		if [[ -n $LAZYFS_NEW ]]; then
			update_state '.lazyfs = $lazyfs' --arg lazyfs "$LAZYFS_NEW"
			LAZYFS=$LAZYFS_NEW
		fi
		# A state file from an older cluster.sh may still hold a secret: drop it.
		update_state '.broker_bin = $bin | .config = ($c | if . == "" then null else . end)
		              | del(.cluster_secret) | .security = $security | .tls = ($tls == 1)
		              | .token_file = (if $security == "secured" then $token_file else null end)
		              | .ca_file = (if $tls == 1 then $ca_file else null end)' \
			--arg bin "$BIN" --arg c "$CONFIG" --arg security "$SECURITY" --argjson tls "$TLS" \
			--arg token_file "$TOKEN_FILE" --arg ca_file "$CA_FILE"
		[[ $NET_MODE == loopback ]] || claim_recorded_index
	else
		NODES_PER_GROUP=${OPT_NODES:-3} NUM_GROUPS=${OPT_GROUPS:-1} PORT=${OPT_PORT:-$DEFAULT_PORT}
		((NUM_GROUPS <= 26)) || die "--groups is at most 26 (broker-a .. broker-z)"
		((NODES_PER_GROUP * NUM_GROUPS <= MAX_NODES)) || die "at most $MAX_NODES nodes per cluster"
		CONFIG=${OPT_CONFIG:+$(realpath -- "$OPT_CONFIG")}
		SECURITY=secured TLS=$OPT_TLS LAZYFS=$LAZYFS_NEW
		((OPT_INSECURE)) && SECURITY=insecure
		if [[ $NET_MODE == loopback ]]; then
			K=0
			[[ -n $OPT_PORT ]] || PORT=$(free_port_block $((NODES_PER_GROUP * NUM_GROUPS)))
			((PORT + NODES_PER_GROUP * NUM_GROUPS - 1 <= 65535)) || die "--port $PORT leaves no room for $((NODES_PER_GROUP * NUM_GROUPS)) nodes below 65536"
			write_new_state
			load_state
			log "new cluster in $ABS: $NUM_GROUPS group(s) x $NODES_PER_GROUP node(s) on $LOOPBACK_IP ports $PORT-$((PORT + ${#NODE_IDS[@]} - 1)) (loopback: no network namespaces, so no partitions)"
		else
			# The registry entry and cluster.json are written under the registry lock,
			# so a concurrent start never mistakes this directory for a stale one.
			registry_lock
			K=$(allocate_index)
			write_new_state
			registry_set "$K" "$ABS"
			registry_unlock
			load_state
			log "new cluster in $ABS: $NUM_GROUPS group(s) x $NODES_PER_GROUP node(s) on $NET_PREFIX.$K.0/24"
		fi
	fi

	ensure_secrets
	ensure_certificates
	raise_nofile
	[[ $NET_MODE == loopback ]] || net_up
	local id started=()
	for id in "${NODE_IDS[@]}"; do
		[[ -n $(partition_rules "$id") ]] && log "note: node $id has partition rules in force (heal removes them)"
		node_alive "$id" && continue
		require_free_listen "$id"
		lz_up "$id"
		launch_node "$id" "$BIN"
		started+=("$id")
	done
	unlock_dir
	log "started node(s) ${started[*]}; waiting for a leader in every group (GET /ready)"
	wait_nodes /ready "${NODE_IDS[@]}"
	if ((NUM_GROUPS > 1)); then
		log "waiting until every node routes to all $NUM_GROUPS groups (GET /v1/cluster)"
		wait_groups "${NODE_IDS[@]}"
	fi
	print_access
	print_urls
}

cmd_token() {
	set_dir
	[[ -f $STATE ]] || die "no cluster in $ABS (start one with: scripts/cluster.sh start --dir $DIR)"
	load_state
	[[ $SECURITY == secured ]] || die "the cluster in $ABS was started with --insecure: it has no token"
	[[ -r $TOKEN_FILE ]] || die "cannot read $TOKEN_FILE (it is mode 0600: run as its owner, e.g. with sudo)"
	head -n 1 -- "$TOKEN_FILE"
}

# Shell lines for `eval "$(cluster.sh env)"`: what a client shell needs. Values
# are quoted with printf %q, so a directory with spaces survives the eval.
cmd_env() {
	set_dir
	[[ -f $STATE ]] || die "no cluster in $ABS (start one with: scripts/cluster.sh start --dir $DIR)"
	load_state
	local servers bin_dir
	servers=$(server_list)
	printf 'export MQ_SERVER=%q\n' "$servers"
	if [[ $SECURITY == secured ]]; then
		[[ -r $TOKEN_FILE ]] || die "cannot read $TOKEN_FILE (it is mode 0600: run as its owner, e.g. with sudo)"
		printf 'export MQ_TOKEN=%q\n' "$(head -n 1 -- "$TOKEN_FILE")"
	else
		printf 'unset MQ_TOKEN\n'
	fi
	if ((TLS)); then printf 'export MQ_CA_FILE=%q\n' "$CA_FILE"; else printf 'unset MQ_CA_FILE\n'; fi
	bin_dir=$(dirname -- "${BIN_RECORDED:-/nonexistent/broker}")
	if [[ -x $bin_dir/mqctl ]]; then
		printf 'export PATH=%q:"$PATH"\n' "$bin_dir"
	else
		log "no mqctl next to the broker in $bin_dir: build it (cargo build --release -p mqctl) or install it (cargo install --path broker/mqctl)"
	fi
}

cmd_status() {
	ensure_tools
	set_dir
	load_state
	require_privilege
	local tmp id
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now: tmp is local
	trap "rm -rf -- '$tmp'" EXIT
	# Per node, in parallel: its own view (role, term, leader id) and its partition rules.
	for id in "${NODE_IDS[@]}"; do
		{
			node_curl --max-time "$CURL_TIMEOUT_S" "${N_URL[$id]}/v1/cluster" 2>/dev/null |
				jq -r --argjson id "$id" --arg g "${N_GROUP[$id]}" '
					first(.groups[]? | select(.group == $g)) as $grp
					| (first($grp.nodes[]? | select(.id == $id)) // {}) as $me
					| [($me.role // "-"), ($me.term // "-"), ($grp.leader_id // "-")]
					| map(tostring) | @tsv' >"$tmp/$id.view" 2>/dev/null || true
			partition_rules "$id" >"$tmp/$id.rules"
		} &
	done
	wait || true

	local state pid role term leader
	row() { printf '%-4s %-10s %-8s %-8s %-26s %-10s %-5s %s\n' "$@"; }
	row NODE GROUP PID STATE ADDRESS ROLE TERM LEADER
	for id in "${NODE_IDS[@]}"; do
		state=$(node_state "$id")
		pid=${N_PID[$id]}
		role=- term=- leader=-
		if [[ $state != dead && -s $tmp/$id.view ]]; then
			IFS=$'\t' read -r role term leader <"$tmp/$id.view"
		fi
		row "$id" "${N_GROUP[$id]}" "$pid" "$state" "${N_URL[$id]}" "$role" "$term" "$leader"
	done

	# Partition rules, with peer addresses turned back into node ids.
	local -A id_of_ip=()
	for id in "${NODE_IDS[@]}"; do id_of_ip[${N_IP[$id]}]=$id; done
	local rule dir_flag addr from to header=0
	for id in "${NODE_IDS[@]}"; do
		from=() to=()
		while read -r _ _ dir_flag addr _; do
			addr=${addr%/32}
			case $dir_flag in
			-s) from+=("${id_of_ip[$addr]:-$addr}") ;;
			-d) to+=("${id_of_ip[$addr]:-$addr}") ;;
			esac
		done <"$tmp/$id.rules"
		((${#from[@]} + ${#to[@]} > 0)) || continue
		((header)) || echo "partitions (packets node drops; heal removes them):"
		header=1
		rule="  node $id:"
		((${#from[@]} == 0)) || rule+=" from $(printf '%s\n' "${from[@]}" | sort -n | paste -sd,)"
		((${#to[@]} == 0)) || rule+=" to $(printf '%s\n' "${to[@]}" | sort -n | paste -sd,)"
		echo "$rule"
	done

	[[ -n $LAZYFS ]] || return 0
	local stats
	echo "lazyfs (power-loss drops unsynced bytes):"
	for id in "${NODE_IDS[@]}"; do
		if lz_alive "$id" && is_mounted "${N_DATA[$id]}"; then
			stats=$("$LAZYFS" ctl --timeout 2 "$(lz_socket "$id")" stats 2>/dev/null) || stats=
			if [[ $stats =~ dirty_bytes=([0-9]+)\ dirty_files=([0-9]+) ]]; then
				echo "  node $id: mounted, ${BASH_REMATCH[1]} unsynced bytes in ${BASH_REMATCH[2]} files"
			else
				echo "  node $id: mounted (lazyfs pid ${N_LZPID[$id]} did not answer)"
			fi
		else
			echo "  node $id: not mounted (restart $id mounts it)"
		fi
	done
}

cmd_stop() {
	ensure_tools
	set_dir
	load_state
	require_privilege
	lock_dir
	stop_nodes "${NODE_IDS[@]}"
	local id
	for id in "${NODE_IDS[@]}"; do lz_down "$id"; done
	if [[ $NET_MODE == loopback ]]; then
		log "stopped every node of $ABS (data kept)"
	else
		log "stopped every node of $ABS (data, namespaces and partitions kept)"
	fi
}

cmd_clean() {
	ensure_tools
	set_dir
	local k owner
	if [[ -f $STATE ]]; then
		load_state
		require_privilege
	fi
	lock_dir
	if [[ -f $STATE ]]; then
		stop_nodes "${NODE_IDS[@]}"
		local id
		for id in "${NODE_IDS[@]}"; do lz_down "$id"; done
		k=$K
		[[ $NET_MODE == namespaces ]] || k=
	elif ((EUID == 0)); then
		k=$(registry_index_of "$ABS" || true)
	else
		k= # only root makes networks, so only root finds one to remove
	fi
	# Never remove files through a mount (nor fail on a busy mount point).
	lz_detach_all_under "$ABS"
	if [[ -n $k ]]; then
		registry_lock
		owner=$(registry_owner "$k")
		if [[ -z $owner || $owner == "$ABS" ]]; then
			net_down_index "$k"
			registry_release "$k"
		else
			log "not removing network $NET_PREFIX.$k.0/24: it belongs to $owner"
		fi
		registry_unlock
	fi
	local node_dir
	for node_dir in "$ABS"/node-[0-9]*; do
		[[ -d $node_dir ]] && rm -rf -- "$node_dir"
	done
	rm -f -- "$STATE" "$STATE.tmp" "$ABS/.lock" "$SECRET_FILE" "$TOKEN_FILE" "$SECRET_FILE".?????? "$TOKEN_FILE".??????
	rm -rf -- "$TLS_DIR"
	unlock_dir
	# Only what this script created is removed; a directory holding more stays.
	rmdir -- "$ABS" 2>/dev/null || [[ ! -e $ABS ]] || log "kept $ABS: it holds files cluster.sh did not create"
	log "cleaned $ABS"
}

cmd_signal() { # cmd_signal kill|pause|resume ID
	local what=$1 id=$2 state
	ensure_tools
	set_dir
	load_state
	require_privilege
	require_node "$id"
	lock_dir
	state=$(node_state "$id")
	case $what in
	kill)
		if [[ $state == dead ]]; then
			log "node $id is not running"
			return 0
		fi
		signal_pid KILL "${N_PID[$id]}"
		wait_gone "${N_NS[$id]}" "${N_PID[$id]}"
		log "killed node $id (pid ${N_PID[$id]})"
		;;
	pause)
		[[ $state != dead ]] || die "node $id is not running"
		signal_pid STOP "${N_PID[$id]}"
		local deadline=$((SECONDS + 5))
		until [[ $(node_state "$id") == paused ]]; do
			((SECONDS < deadline)) || die "node $id did not stop on SIGSTOP"
			sleep 0.02
		done
		log "paused node $id (pid ${N_PID[$id]})"
		;;
	resume)
		[[ $state != dead ]] || die "node $id is not running (use restart)"
		signal_pid CONT "${N_PID[$id]}"
		log "resumed node $id (pid ${N_PID[$id]})"
		;;
	esac
}

cmd_restart() {
	local id=$1 bin
	ensure_tools
	set_dir
	load_state
	require_privilege
	require_node "$id"
	if [[ -n ${BROKER_BIN:-} ]]; then
		resolve_bin
		bin=$BIN
	else
		bin=$BIN_RECORDED
		[[ -x $bin ]] || die "broker executable recorded at start ($bin) is gone; set BROKER_BIN"
	fi
	lock_dir
	stop_nodes "$id"
	lz_up "$id" # mounts again after a power loss
	ensure_secrets
	if ((TLS)); then
		BIN=$bin # broker-certs is looked for next to it
		ensure_certificates
	fi
	raise_nofile
	# In case the namespace was removed by hand (a no-op otherwise); on loopback,
	# someone else may have taken the port meanwhile.
	if [[ $NET_MODE == loopback ]]; then require_free_listen "$id"; else net_up; fi
	launch_node "$id" "$bin"
	unlock_dir
	wait_nodes /health "$id"
	log "restarted node $id (pid ${N_PID[$id]})"
}

cmd_power_loss() { # cmd_power_loss I[,J...]
	local spec=${1//[[:space:]]/} ids=() killed=() id
	ensure_tools
	set_dir
	load_state
	require_privilege
	require_namespaces power-loss
	[[ -n $LAZYFS ]] || die "the cluster in $ABS does not run on lazyfs: clean it and start it with CLUSTER_LAZYFS=/path/to/lazyfs"
	[[ $spec =~ ^[0-9]+(,[0-9]+)*$ ]] || die "bad node list '$1': expected e.g. 2 or 1,2,3"
	IFS=, read -r -a ids <<<"$spec"
	for id in "${ids[@]}"; do require_node "$id"; done
	lock_dir
	# Every node dies before any disk forgets: none outlives another's power loss.
	for id in "${ids[@]}"; do
		node_alive "$id" || continue
		signal_pid KILL "${N_PID[$id]}"
		killed+=("$id")
	done
	for id in "${killed[@]}"; do wait_gone "${N_NS[$id]}" "${N_PID[$id]}"; done
	for id in "${ids[@]}"; do lz_power_loss "$id"; done
	log "power loss on node(s) $spec: killed ${killed[*]:-none}; unsynced data dropped (restart I mounts again and starts the node)"
}

cmd_partition() {
	local spec=${1//[[:space:]]/} op sides=() side id a b i
	ensure_tools
	set_dir
	load_state
	require_privilege
	if [[ $spec =~ ^[0-9]+(,[0-9]+)*(\|[0-9]+(,[0-9]+)*)+$ ]]; then
		op='|'
		IFS='|' read -r -a sides <<<"$spec"
	elif [[ $spec =~ ^[0-9]+(,[0-9]+)*\>[0-9]+(,[0-9]+)*$ ]]; then
		op='>'
		IFS='>' read -r -a sides <<<"$spec"
	else
		die "bad partition '$1': expected e.g. \"1,2|3\" (both ways) or \"1,2>3\" (from 1,2 to 3)"
	fi
	require_namespaces partition
	local -A side_of=()
	for i in "${!sides[@]}"; do
		IFS=, read -r -a side <<<"${sides[$i]}"
		for id in "${side[@]}"; do
			require_node "$id"
			[[ -z ${side_of[$id]:-} ]] || die "node $id is on two sides of '$1'"
			side_of[$id]=$i
			[[ -e /run/netns/${N_NS[$id]} ]] || die "namespace ${N_NS[$id]} of node $id is missing; run start first"
		done
	done
	lock_dir
	for a in "${!side_of[@]}"; do
		for b in "${!side_of[@]}"; do
			((side_of[$a] != side_of[$b])) || continue
			if [[ $op == '|' ]]; then
				drop "${N_NS[$a]}" -s "${N_IP[$b]}"
				drop "${N_NS[$a]}" -d "${N_IP[$b]}"
			elif ((side_of[$a] == 0)); then
				# a -> b: a drops what it sends to b, b drops what it gets from a.
				drop "${N_NS[$a]}" -d "${N_IP[$b]}"
				drop "${N_NS[$b]}" -s "${N_IP[$a]}"
			fi
		done
	done
	log "partition $spec in force (heal removes it)"
}

cmd_url() { # cmd_url [ID]
	set_dir
	[[ -f $STATE ]] || die "no cluster in $ABS (start one with: scripts/cluster.sh start --dir $DIR)"
	local url
	if [[ -n ${1:-} ]]; then
		url=$(jq -r --argjson id "$1" '.nodes[] | select(.id == $id) | .url' "$STATE")
	else
		url=$(jq -r '.nodes[0].url' "$STATE")
	fi
	[[ -n $url && $url != null ]] || die "no node ${1:-} in $DIR"
	printf '%s\n' "$url"
}

cmd_heal() {
	local id
	ensure_tools
	set_dir
	load_state
	require_privilege
	if [[ $NET_MODE == loopback ]]; then
		log "healed: a loopback cluster has no partition rules"
		return 0
	fi
	lock_dir
	for id in "${NODE_IDS[@]}"; do
		[[ -e /run/netns/${N_NS[$id]} ]] || continue
		ns_iptables "${N_NS[$id]}" -F "$PART_CHAIN" 2>/dev/null || true
	done
	log "healed: no partition rules left in $ABS"
}

# ---------------------------------------------------------------------------

main() {
	local cmd=${1:-help} args=()
	[[ $NET_PREFIX =~ ^[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "CLUSTER_NET must be two octets like 10.77, not '$NET_PREFIX'"
	(($# == 0)) || shift
	DIR=./.cluster OPT_NODES='' OPT_GROUPS='' OPT_PORT='' OPT_CONFIG='' OPT_TLS=0 OPT_INSECURE=0 OPT_LOOPBACK=0
	while (($# > 0)); do
		case $1 in
		--cluster-secret | --cluster-secret=*)
			die "--cluster-secret is gone: a secret on a command line is readable by every local user. A secured cluster (the default) gets a random one in DIR/secret (mode 0600); to use your own, write it there before the first start"
			;;
		--dir | --nodes | --groups | --port | --config)
			(($# >= 2)) || die "$1 needs a value"
			case $1 in
			--dir) DIR=$2 ;;
			--nodes) OPT_NODES=$2 ;;
			--groups) OPT_GROUPS=$2 ;;
			--port) OPT_PORT=$2 ;;
			--config) OPT_CONFIG=$2 ;;
			esac
			shift 2
			;;
		--tls)
			OPT_TLS=1
			shift
			;;
		--insecure)
			OPT_INSECURE=1
			shift
			;;
		--loopback)
			OPT_LOOPBACK=1
			shift
			;;
		--*=*)
			set -- "${1%%=*}" "${1#*=}" "${@:2}"
			;;
		-h | --help)
			cmd=help
			shift
			;;
		-*) die "unknown option $1 (see: scripts/cluster.sh help)" ;;
		*)
			args+=("$1")
			shift
			;;
		esac
	done
	[[ -n $DIR ]] || die "--dir must not be empty"
	if [[ $cmd != start && -n $OPT_NODES$OPT_GROUPS$OPT_PORT$OPT_CONFIG${OPT_TLS#0}${OPT_INSECURE#0}${OPT_LOOPBACK#0} ]]; then
		die "--nodes, --groups, --port, --config, --tls, --insecure and --loopback only go with start"
	fi

	local want
	case $cmd in
	kill | pause | resume | restart | partition | power-loss) want=1 ;;
	url) want=${#args[@]} && ((want <= 1)) || want=1 ;;
	*) want=0 ;;
	esac
	if [[ $cmd != help && ${#args[@]} -ne $want ]]; then
		die "$cmd takes $want argument(s), got ${#args[@]}: ${args[*]:-none} (see: scripts/cluster.sh help)"
	fi

	case $cmd in
	help) usage ;;
	start) cmd_start ;;
	status) cmd_status ;;
	stop) cmd_stop ;;
	clean) cmd_clean ;;
	kill | pause | resume) cmd_signal "$cmd" "${args[0]}" ;;
	restart) cmd_restart "${args[0]}" ;;
	power-loss) cmd_power_loss "${args[0]}" ;;
	partition) cmd_partition "${args[0]}" ;;
	heal) cmd_heal ;;
	url) cmd_url "${args[0]:-}" ;;
	token) cmd_token ;;
	env) cmd_env ;;
	*) die "unknown command '$cmd' (see: scripts/cluster.sh help)" ;;
	esac
}

main "$@"
