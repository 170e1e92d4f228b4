#!/usr/bin/env bash
#
# End-to-end test of scripts/cluster.sh with the stand-in broker
# (scripts/testing/fake-broker.py). Proves that nodes get their own namespaces and
# addresses reachable from the host, that partitions (both ways and one way) are
# real packet drops which heal removes, that kill/pause/resume/restart act on the
# right process and keep data and partitions, that two cluster directories run
# side by side without colliding, that a failed start can be cleaned, and that
# clean leaves no namespace, bridge, veth or iptables rule behind. Security: a
# cluster is secured by default (secret and token files of mode 0600, reused across
# stop/start, `token` prints the token, nodes and the script's own calls get them
# without any process's command line holding either, the stand-in answers 401
# without the token), `--insecure` starts without them and says so, `--tls` serves
# https with a CA under DIR/tls/ (keys 0600), and nodes get the open-file limit.
# CLUSTER_LAZYFS (where /dev/fuse exists): data dirs on lazyfs mounts, seen from
# the nodes' namespaces; power-loss drops unsynced data and restart mounts again,
# kill loses nothing, stop applies everything and unmounts. Loopback: as an
# unprivileged user (nobody), start runs the nodes on 127.0.0.1 ports with no
# namespaces, a second directory takes the next port block, everything but
# partition and power-loss works (those two refuse, naming root), and a root
# cluster refuses the unprivileged user.
#
# Needs root. Runs in about a minute. Exits non-zero on any failure. --tls needs
# broker-certs: BROKER_CERTS_BIN, else target/release/broker-certs (built if missing).
#
#   sudo scripts/testing/test-cluster-sh.sh

set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=$HERE/../cluster.sh
export BROKER_BIN=$HERE/fake-broker.py
export CLUSTER_READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-15}
export CLUSTER_STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-5}

[[ $EUID -eq 0 ]] || {
	echo "test-cluster-sh: needs root (network namespaces)" >&2
	exit 1
}

if [[ -z ${BROKER_CERTS_BIN:-} ]]; then
	BROKER_CERTS_BIN=${CARGO_TARGET_DIR:-$HERE/../../target}/release/broker-certs
	[[ -x $BROKER_CERTS_BIN ]] || (cd "$HERE/../.." && cargo build --quiet --release -p broker --bin broker-certs)
fi
export BROKER_CERTS_BIN

ROOT=$(mktemp -d /tmp/test-cluster-sh.XXXXXX)
D1=$ROOT/one
D2=$ROOT/two
D3=$ROOT/broken
D4=$ROOT/tls
D5=$ROOT/lazyfs
LB=$ROOT/loopback # owned by nobody: the unprivileged user's clusters
L1=$LB/one
L2=$LB/two
L3=$ROOT/root-loopback
FAILURES=0
PYTHON=$(python3 -c 'import sys; print(sys.executable)') # skips a pyenv shim, if any
STARTED_AT=$SECONDS

cleanup() {
	local d
	for d in "$D1" "$D2" "$D3" "$D4" "$D5" "$L1" "$L2" "$L3"; do
		if [[ -e $d ]]; then "$CLUSTER" clean --dir "$d" >/dev/null 2>&1 || true; fi
	done
	rm -rf -- "$ROOT"
}
trap cleanup EXIT
trap 'echo "test-cluster-sh: FAILED: command at line $LINENO exited non-zero" >&2' ERR

step() { printf "\n--- %s  [t=%ss]\n" "$*" "$((SECONDS - STARTED_AT))"; }
ok() { printf '  ok   %s\n' "$*"; }
bad() {
	printf '  FAIL %s\n' "$*"
	FAILURES=$((FAILURES + 1))
}
# check DESCRIPTION COMMAND... — records a failure instead of stopping.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
# wait_for DESCRIPTION SECONDS COMMAND... — polls until the command succeeds.
wait_for() {
	local what=$1 limit_s=$2 deadline=$((SECONDS + $2))
	shift 2
	until "$@"; do
		if ((SECONDS >= deadline)); then
			bad "$what (not within ${limit_s}s)"
			return 0
		fi
		sleep 0.1
	done
	ok "$what"
}
not() { ! "$@"; }

cs() { "$CLUSTER" "$@"; }

# Node fields from a cluster's cluster.json: field DIR ID NAME. Everything but the
# pid is fixed for a cluster's life, so it is read once (jq is slow on a busy host).
declare -A FIELDS=()
field() {
	if [[ $3 == pid ]]; then
		jq -r --argjson id "$2" '.nodes[] | select(.id == $id) | .pid' "$1/cluster.json"
		return
	fi
	if [[ -z ${FIELDS["$1|$2|$3"]+set} ]]; then
		local key value
		while IFS=$'\t' read -r key value; do FIELDS["$1|$key"]=$value; done < <(jq -r '.nodes[]
			| .id as $id | to_entries[] | ["\($id)|\(.key)", (.value | tostring)] | @tsv' "$1/cluster.json")
	fi
	printf '%s\n' "${FIELDS["$1|$2|$3"]}"
}
# A dropped SYN never connects, so a short connect timeout proves a block quickly,
# while a reachable node gets time to answer on a busy host.
CURL=(curl -fsS --noproxy '*' --connect-timeout 0.3 --max-time 3 -o /dev/null)
# reach DIR FROM TO — node FROM can do GET /health on node TO.
reach() { ip netns exec "$(field "$1" "$2" netns)" "${CURL[@]}" "$(field "$1" "$3" url)/health" 2>/dev/null; }
host_reach() { "${CURL[@]}" "$1/health" 2>/dev/null; }
# status_col DIR ID COLUMN... — cells of `cluster.sh status` (1 node 2 group 3 pid
# 4 state 5 address 6 role 7 term 8 leader); several columns come joined by "/".
status_col() {
	cs status --dir "$1" 2>/dev/null | awk -v id="$2" -v cols="${*:3}" '$1 == id {
		n = split(cols, c, " "); out = $c[1]; for (i = 2; i <= n; i++) out = out "/" $c[i]; print out }'
}
status_is() { [[ $(status_col "$1" "$2" "$3") == "$4" ]]; }
# udp_delivers DIR FROM TO — a UDP datagram sent by node FROM arrives at node TO.
udp_delivers() {
	local to_ip out
	to_ip=$(field "$1" "$3" ip)
	out=$(mktemp)
	ip netns exec "$(field "$1" "$3" netns)" "$PYTHON" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(1.0)
try:
    print(s.recv(64).decode())
except socket.timeout:
    pass' "$to_ip" >"$out" &
	local receiver=$!
	# Send until the receiver has one (it may still be starting) or has given up.
	# shellcheck disable=SC2016 # $1 and $2 are for the inner bash
	ip netns exec "$(field "$1" "$2" netns)" bash -c \
		'while kill -0 "$2" 2>/dev/null; do echo hello 2>/dev/null >"/dev/udp/$1/9999"; sleep 0.05; done' \
		_ "$to_ip" "$receiver" 2>/dev/null || true
	wait "$receiver" || true
	[[ $(cat "$out") == hello ]]
	local rc=$?
	rm -f -- "$out"
	return $rc
}
wait_for_leader_of_tls() {
	local deadline=$((SECONDS + 10))
	until [[ $(status_col "$D4" 2 8) == 1 ]]; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}
chain_empty() { ! ip netns exec "$(field "$1" "$2" netns)" iptables -w -S CLSH-PART 2>/dev/null | grep -q DROP; }
pid_alive() { [[ -e /proc/$1 && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
index_of() { jq -r .net.index "$1/cluster.json"; }
netns_of_index() { ip netns list | awk '{print $1}' | grep -E "^clsh$1-n[0-9]+\$" || true; }
links_of_index() { ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -E "^clsh$1(n[0-9]+)?\$" || true; }
host_rules_of_index() { iptables -w -S FORWARD 2>/dev/null | grep -E -- "-i clsh$1 -o clsh$1 " || true; }
mode_of() { stat -c %a -- "$1"; }
# no_cmdline_holds FILE... — no process's command line contains the first line of
# any FILE. Python reads the values itself: a grep would carry them in its own argv.
no_cmdline_holds() {
	"$PYTHON" - "$@" <<'EOF'
import os, sys
needles = [open(path).readline().strip().encode() for path in sys.argv[1:]]
assert all(len(n) >= 32 for n in needles), "a secret shorter than 32 characters"
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        continue
    if any(n in cmdline for n in needles):
        found.append(pid)
sys.exit(f"in the command line of pid(s) {found}" if found else 0)
EOF
}
# api_status URL [TOKEN_FILE] [CA] — HTTP status of GET URL, with the token from the
# file (read by curl from stdin) and the CA when given.
api_status() {
	local args=(-s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 3)
	[[ -n ${3:-} ]] && args+=(--cacert "$3")
	if [[ -n ${2:-} ]]; then
		curl "${args[@]}" -H @- "$1" < <(printf 'Authorization: Bearer %s\n' "$(head -n 1 "$2")")
	else
		curl "${args[@]}" "$1" </dev/null
	fi
}
# grep -f reads the values from the files, so they are in no argv.
json_holds_no_secret() { ! grep -qF -f "$1/secret" "$1/cluster.json" && ! grep -qF -f "$1/token" "$1/cluster.json"; }
cert_verifies() { openssl verify -CAfile "$1" "$2" >/dev/null; }
nofile_of() { awk '/^Max open files/ { print $4 }' "/proc/$1/limits"; }
nothing_left_of_index() {
	[[ -z $(netns_of_index "$1")$(links_of_index "$1")$(host_rules_of_index "$1") ]] &&
		! grep -q "^$1	" /run/cluster-sh/registry 2>/dev/null
}

# ----------------------------------------------------------------------------
step "usage and argument errors"
check "help prints usage" bash -c "'$CLUSTER' help | grep -q 'partition \"1,2>3\"'"
check "unknown command fails" not cs frobnicate --dir "$D1"
check "status of a missing cluster fails" not cs status --dir "$D1"
check "bad partition spec fails" not cs partition "1,,2" --dir "$D1"
check "token of a missing cluster fails" not cs token --dir "$D1"
check "--cluster-secret is refused (a secret on a command line)" not cs start --cluster-secret s3cret-s3cret-s3cret --dir "$D1"
check "... and made no cluster" test ! -e "$D1/cluster.json"

# ----------------------------------------------------------------------------
step "start 1x3 in $D1"
urls=$(cs start --dir "$D1")
# shellcheck disable=SC2086 # one URL per word
printf '  %s\n' $urls # one URL per word
check "start prints 3 URLs" test "$(echo "$urls" | wc -l)" -eq 3
check "URLs are the ones in cluster.json" test "$urls" == "$(jq -r '.nodes[].url' "$D1/cluster.json")"
check "cluster.json has ids 1,2,3 in broker-a" \
	test "$(jq -c '[.nodes[] | [.id, .group]]' "$D1/cluster.json")" == '[[1,"broker-a"],[2,"broker-a"],[3,"broker-a"]]'
K1=$(index_of "$D1")
for id in 1 2 3; do
	ip=$(field "$D1" $id ip)
	check "node $id: ip $ip in 10.77.$K1.0/24, url on it" \
		test "$(field "$D1" $id url)" == "http://$ip:18081" -a "${ip%.*}" == "10.77.$K1"
	check "node $id: pid $(field "$D1" $id pid) runs in netns $(field "$D1" $id netns)" \
		test "$(ip netns identify "$(field "$D1" $id pid)")" == "$(field "$D1" $id netns)"
	check "node $id: data dir and log exist" test -d "$D1/node-$id/data" -a -f "$D1/node-$id/broker.log" -a \
		"$(field "$D1" $id data_dir)" == "$D1/node-$id/data"
	check "node $id: reachable from the host" host_reach "$(field "$D1" $id url)"
done
check "status: one leader" test "$(cs status --dir "$D1" | awk '$6 == "leader"' | wc -l)" -eq 1

step "$D1 is secured: secret and token files, token command, no secret on a command line"
check "secret file is mode 600" test "$(mode_of "$D1/secret")" == 600
check "token file is mode 600" test "$(mode_of "$D1/token")" == 600
check "secret holds 32 random bytes (64 hex digits)" grep -Eqx '[0-9a-f]{64}' "$D1/secret"
check "token holds 32 random bytes after its prefix" grep -Eqx 'mq_admin_[0-9a-f]{64}' "$D1/token"
check "secret and token differ" test "$(cat "$D1/secret")" != "$(cat "$D1/token")"
check "token prints the token file's line" test "$(cs token --dir "$D1")" == "$(cat "$D1/token")"
check "no process's command line holds the secret or the token" no_cmdline_holds "$D1/secret" "$D1/token"
check "cluster.json holds neither" json_holds_no_secret "$D1"
check "cluster.json names the token file" test "$(jq -r .token_file "$D1/cluster.json")" == "$D1/token"
check "nodes got the files through the environment" grep -q "BROKER_SECURITY_CLUSTER_SECRET_FILE=$D1/secret BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE=$D1/token " "$D1/node-1/broker.log"
check "/v1/cluster without the token: 401" test "$(api_status "$(field "$D1" 1 url)/v1/cluster")" == 401
check "/v1/cluster with a wrong token: 401" test "$(api_status "$(field "$D1" 1 url)/v1/cluster" "$D1/secret")" == 401
check "/v1/cluster with the token: 200" test "$(api_status "$(field "$D1" 1 url)/v1/cluster" "$D1/token")" == 200
check "/health without a token: 200" test "$(api_status "$(field "$D1" 1 url)/health")" == 200
hard_nofile=$(ulimit -Hn)
want_nofile=65536
[[ $hard_nofile != unlimited ]] && ((hard_nofile < want_nofile)) && ! (ulimit -n $want_nofile 2>/dev/null) && want_nofile=$hard_nofile
check "node 1's open-file limit is $want_nofile" test "$(nofile_of "$(field "$D1" 1 pid)")" == "$want_nofile"
token1=$(cat "$D1/token")
check "status: all running" test "$(cs status --dir "$D1" | awk '$4 == "running"' | wc -l)" -eq 3
check "start on a running cluster succeeds and reprints the URLs" test "$(cs start --dir "$D1" 2>/dev/null)" == "$urls"
check "start with another shape is refused" not cs start --nodes 5 --dir "$D1"
check "--tls goes only with start" not cs status --tls --dir "$D1"
check "--tls on a cluster made without it is refused" not cs start --tls --dir "$D1"

# ----------------------------------------------------------------------------
step "partition 1,2|3: 3 and {1,2} cannot talk, 1<->2 can, the host reaches all"
cs partition "1,2|3" --dir "$D1"
check "3 -> 1 blocked" not reach "$D1" 3 1
check "3 -> 2 blocked" not reach "$D1" 3 2
check "1 -> 3 blocked" not reach "$D1" 1 3
check "2 -> 3 blocked" not reach "$D1" 2 3
check "1 -> 2 works" reach "$D1" 1 2
check "2 -> 1 works" reach "$D1" 2 1
if command -v ping >/dev/null; then
	check "ping 3 -> 1 blocked" not ip netns exec "$(field "$D1" 3 netns)" ping -c1 -W1 "$(field "$D1" 1 ip)"
fi
for id in 1 2 3; do check "host -> $id works" host_reach "$(field "$D1" $id url)"; done
wait_for "the broker on 3 sees no leader" 5 status_is "$D1" 3 8 -
check "status lists the partition" bash -c "'$CLUSTER' status --dir '$D1' | grep -q 'node 3: from 1,2 to 1,2'"
check "partitioning again is idempotent" test "$(cs partition "1,2|3" --dir "$D1" 2>/dev/null &&
	ip netns exec "$(field "$D1" 3 netns)" iptables -w -S CLSH-PART | grep -c DROP)" -eq 4

step "heal"
cs heal --dir "$D1"
for id in 1 2 3; do check "node $id: partition chain empty" chain_empty "$D1" $id; done
check "3 -> 1 works" reach "$D1" 3 1
check "1 -> 3 works" reach "$D1" 1 3
wait_for "3 has a leader again" 5 status_is "$D1" 3 8 1

# ----------------------------------------------------------------------------
step "one-way partition 1>3: packets from 1 to 3 are dropped, 3 to 1 pass"
cs partition "1>3" --dir "$D1"
check "UDP 1 -> 3 dropped" not udp_delivers "$D1" 1 3
check "UDP 3 -> 1 delivered" udp_delivers "$D1" 3 1
check "UDP 2 -> 3 delivered" udp_delivers "$D1" 2 3
check "TCP 1 -> 3 blocked" not reach "$D1" 1 3
check "host -> 3 works" host_reach "$(field "$D1" 3 url)"
cs heal --dir "$D1"
check "after heal, UDP 1 -> 3 delivered" udp_delivers "$D1" 1 3

# ----------------------------------------------------------------------------
step "kill 3, restart 3 (data kept, new pid)"
old_pid=$(field "$D1" 3 pid)
echo marker >"$D1/node-3/data/marker"
cs kill 3 --dir "$D1"
check "old pid gone" not pid_alive "$old_pid"
check "status: 3 dead, no role" test "$(status_col "$D1" 3 4 6)" == "dead/-"
check "host -> 3 refused" not host_reach "$(field "$D1" 3 url)"
check "kill of a dead node is a no-op" cs kill 3 --dir "$D1"
check "pause of a dead node fails" not cs pause 3 --dir "$D1"
cs restart 3 --dir "$D1"
new_pid=$(field "$D1" 3 pid)
check "cluster.json has the new pid ($old_pid -> $new_pid)" test "$new_pid" != "$old_pid"
check "new pid runs in node 3's namespace" test "$(ip netns identify "$new_pid")" == "$(field "$D1" 3 netns)"
check "status: 3 running" status_is "$D1" 3 4 running
check "data survived" test "$(cat "$D1/node-3/data/marker")" == marker
check "log kept both runs" test "$(grep -c 'cluster.sh: starting node 3' "$D1/node-3/broker.log")" -eq 2
check "restart of a running node replaces it" cs restart 3 --dir "$D1"
check "... with yet another pid" test "$(field "$D1" 3 pid)" != "$new_pid"

step "a partition survives restart of a node"
cs partition "1,2|3" --dir "$D1"
cs restart 3 --dir "$D1"
check "3 -> 1 still blocked" not reach "$D1" 3 1
check "1 -> 3 still blocked" not reach "$D1" 1 3
cs heal --dir "$D1"
check "healed: 3 -> 1 works" reach "$D1" 3 1

# ----------------------------------------------------------------------------
step "pause 2, resume 2"
cs pause 2 --dir "$D1"
check "status: 2 paused" status_is "$D1" 2 4 paused
check "process state is T" test "$(awk '{print $3}' "/proc/$(field "$D1" 2 pid)/stat")" == T
check "host -> 2 connects but gets no answer" not curl -fsS --noproxy '*' --max-time 0.5 -o /dev/null "$(field "$D1" 2 url)/health" 2>/dev/null
check "status still answers for the others" status_is "$D1" 1 4 running
cs resume 2 --dir "$D1"
check "status: 2 running" status_is "$D1" 2 4 running
check "host -> 2 works" host_reach "$(field "$D1" 2 url)"

# ----------------------------------------------------------------------------
step "a second cluster, 2x3 in $D2, --insecure, beside the first"
urls2=$(cs start --nodes 3 --groups 2 --insecure --dir "$D2" 2>"$ROOT/insecure.err")
K2=$(index_of "$D2")
check "start says loudly that it is insecure" grep -q 'WARNING: INSECURE' "$ROOT/insecure.err"
check "no secret or token file" test ! -e "$D2/secret" -a ! -e "$D2/token"
check "cluster.json says insecure, names no token file" test "$(jq -c '[.security, .token_file]' "$D2/cluster.json")" == '["insecure",null]'
check "token fails: there is none" not cs token --dir "$D2"
check "nodes run with --insecure" grep -q -- '--insecure' "$D2/node-1/broker.log"
check "/v1/cluster without a token: 200" test "$(api_status "$(field "$D2" 1 url)/v1/cluster")" == 200
check "6 URLs" test "$(echo "$urls2" | wc -l)" -eq 6
check "own subnet ($K1 vs $K2)" test "$K1" != "$K2"
check "no shared namespace or veth names" test -z "$(comm -12 \
	<(jq -r '.nodes[] | .netns, .veth' "$D1/cluster.json" | sort) \
	<(jq -r '.nodes[] | .netns, .veth' "$D2/cluster.json" | sort))"
check "groups a=1..3, b=4..6" test "$(jq -c '[.nodes[] | .group[7:]] | join("")' "$D2/cluster.json")" == '"aaabbb"'
check "node 5 reports group broker-b with members 4,5,6" test "$(curl -fsS --noproxy '*' --max-time 1 \
	"$(field "$D2" 5 url)/v1/cluster" | jq -c '.groups[0] | [.group, [.nodes[].id]]')" == '["broker-b",[4,5,6]]'
for id in 1 2 3 4 5 6; do
	check "right after start node $id routes to both groups" test "$(curl -fsS --noproxy '*' --max-time 1 \
		"$(field "$D2" "$id" url)/v1/cluster" | jq -c '[.groups[] | select(.leader != null) | .group] | sort')" == '["broker-a","broker-b"]'
done
check "node 1 got --peers of its group and --seeds of all" \
	grep -q -- "--peers 1=http://10.77.$K2.11:18081,2=http://10.77.$K2.12:18081,3=http://10.77.$K2.13:18081 --seeds http://10.77.$K2.11:18081,.*,http://10.77.$K2.16:18081" \
	"$D2/node-1/broker.log"
for u in $urls2; do check "host -> $u" host_reach "$u"; done
check "first cluster unaffected" host_reach "$(field "$D1" 1 url)"
check "clusters are isolated from each other" not ip netns exec "$(field "$D1" 1 netns)" \
	"${CURL[@]}" "$(field "$D2" 1 url)/health" 2>/dev/null
check "partition in one cluster leaves the other alone" cs partition "4|5,6" --dir "$D2"
check "... first cluster 1 -> 3 still works" reach "$D1" 1 3

# ----------------------------------------------------------------------------
step "stop and start the first cluster again: same addresses, data kept"
pids=$(jq -r '.nodes[].pid' "$D1/cluster.json")
cs stop --dir "$D1"
for p in $pids; do check "pid $p stopped" not pid_alive "$p"; done
check "status: all dead" test "$(cs status --dir "$D1" | awk '$4 == "dead"' | wc -l)" -eq 3
check "namespaces kept" test "$(netns_of_index "$K1" | wc -l)" -eq 3
check "fake broker exited 0 on SIGTERM (logged its shutdown)" grep -q 'SIGTERM: shutting down' "$D1/node-1/broker.log"
check "start again prints the same URLs" test "$(cs start --dir "$D1")" == "$urls"
check "same subnet" test "$(index_of "$D1")" == "$K1"
check "data still there" test -f "$D1/node-3/data/marker"
check "same token after stop and start" test "$(cat "$D1/token")" == "$token1"
check "token file still mode 600" test "$(mode_of "$D1/token")" == 600
check "status sees a leader again (its calls carry the token)" test "$(cs status --dir "$D1" | awk '$6 == "leader"' | wc -l)" -eq 1
check "--insecure on the secured cluster is refused" not cs start --insecure --dir "$D1"

# ----------------------------------------------------------------------------
step "a start that fails (broker exits at once) is reported and can be cleaned"
if BROKER_BIN=/bin/false cs start --dir "$D3" 2>"$ROOT/broken.err"; then
	bad "start with a broken broker failed"
else
	ok "start with a broken broker failed"
fi
check "error names the node that exited" grep -Eq "node [0-9]+ exited" "$ROOT/broken.err"
K3=$(index_of "$D3")
cs clean --dir "$D3"
check "clean after a failed start leaves nothing of subnet $K3" nothing_left_of_index "$K3"
check "... and removes the directory (secret and token included)" test ! -e "$D3"

# ----------------------------------------------------------------------------
step "--tls: 1x3 over https with a CA under $D4/tls"
urls4=$(cs start --tls --dir "$D4" 2>"$ROOT/tls.err")
K4=$(index_of "$D4")
check "3 https URLs" test "$(grep -c '^https://' <<<"$urls4")" -eq 3
check "cluster.json names the CA" test "$(jq -r '[.tls, .ca_file] | @tsv' "$D4/cluster.json")" == "true	$D4/tls/ca.pem"
check "start says how to use the CA" grep -q "MQ_CA_FILE=$D4/tls/ca.pem" "$ROOT/tls.err"
for f in ca-key node-1-key node-2-key node-3-key; do
	check "tls/$f.pem is mode 600" test "$(mode_of "$D4/tls/$f.pem")" == 600
done
check "tls/ca.pem is readable (644)" test "$(mode_of "$D4/tls/ca.pem")" == 644
check "node 2's certificate is signed by the CA" cert_verifies "$D4/tls/ca.pem" "$D4/tls/node-2.pem"
check "nodes got their certificates through the environment" grep -q "BROKER_TLS_CERT_FILE=$D4/tls/node-1.pem BROKER_TLS_KEY_FILE=$D4/tls/node-1-key.pem BROKER_TLS_CA_FILE=$D4/tls/ca.pem " "$D4/node-1/broker.log"
u4=$(field "$D4" 1 url)
check "https with the CA and the token: 200" test "$(api_status "$u4/v1/cluster" "$D4/token" "$D4/tls/ca.pem")" == 200
check "https with the CA, no token: 401" test "$(api_status "$u4/v1/cluster" "" "$D4/tls/ca.pem")" == 401
check "https without the CA fails the handshake" not curl -fsS --noproxy '*' --max-time 3 -o /dev/null "$u4/health" 2>/dev/null
check "plain http to the TLS port gets no HTTP answer" not curl -fsS --noproxy '*' --max-time 3 -o /dev/null "http://${u4#https://}/health" 2>/dev/null
check "status over https: one leader" test "$(cs status --dir "$D4" | awk '$6 == "leader"' | wc -l)" -eq 1
check "no process's command line holds the secret or the token" no_cmdline_holds "$D4/secret" "$D4/token"
cs restart 2 --dir "$D4"
check "restart keeps the certificates and rejoins" wait_for_leader_of_tls
cs clean --dir "$D4"
check "clean removes the TLS cluster, CA and keys included" test ! -e "$D4"
check "... and its network" nothing_left_of_index "$K4"

# ----------------------------------------------------------------------------
step "CLUSTER_LAZYFS: data dirs on lazyfs, power-loss, restart, stop"
# mounted_on PATH — PATH is a lazyfs mount point on the host.
mounted_on() { awk -v p="$1" '$5 == p && $0 ~ / - fuse lazyfs:/ { found = 1 } END { exit !found }' /proc/self/mountinfo; }
# node_sees DIR ID — node ID's own mount namespace has its data dir mounted.
node_sees() { awk -v p="$(field "$1" "$2" data_dir)" '$5 == p { found = 1 } END { exit !found }' "/proc/$(field "$1" "$2" pid)/mountinfo"; }
lz_pids() { jq -r '.nodes[].lazyfs_pid // empty' "$1/cluster.json"; }
plain_dirs() { ! grep -q " $1/node-" /proc/self/mountinfo && [[ $(jq -r .lazyfs "$1/cluster.json") == null ]]; }
check "without CLUSTER_LAZYFS: plain data dirs, lazyfs null in cluster.json" plain_dirs "$D1"
if [[ ! -c /dev/fuse ]]; then
	echo "  skipped: no /dev/fuse"
else
	LAZYFS=${CARGO_TARGET_DIR:-$HERE/../../target}/release/lazyfs
	[[ -x $LAZYFS ]] || (cd "$HERE/../.." && cargo build --quiet --release -p lazyfs)
	LAZYFS=$(realpath -- "$LAZYFS")
	CLUSTER_LAZYFS=$LAZYFS cs start --insecure --dir "$D5" >/dev/null 2>"$ROOT/lazyfs.err"
	check "cluster.json records the lazyfs executable" test "$(jq -r .lazyfs "$D5/cluster.json")" == "$LAZYFS"
	for i in 1 2 3; do
		check "node $i's data dir is a lazyfs mount of node-$i/backing" mounted_on "$D5/node-$i/data"
		check "node $i sees it from its own namespace" node_sees "$D5" "$i"
	done
	check "the stand-in's fsynced state reached node-1/backing" test -s "$D5/node-1/backing/fake-broker-state.json"
	echo unsynced >"$D5/node-2/data/unsynced"
	echo kept >"$D5/node-3/data/kept"
	check "unsynced data is held in memory, not in backing/" test -e "$D5/node-2/backing/unsynced" -a ! -s "$D5/node-2/backing/unsynced"
	check "status counts it" bash -c "'$CLUSTER' status --dir '$D5' | grep -q 'node 2: mounted, 9 unsynced bytes in 1 files'"
	lost=$(cs power-loss 2 --dir "$D5" 2>/dev/null)
	check "power-loss 2 says what it dropped" test "$lost" == "node 2: dropped 9 unsynced bytes in 1 files"
	check "node 2 is dead" status_is "$D5" 2 4 dead
	check "node 2's data dir is unmounted" not mounted_on "$D5/node-2/data"
	check "the unsynced file is there (metadata) but empty (data lost)" test -e "$D5/node-2/backing/unsynced" -a ! -s "$D5/node-2/backing/unsynced"
	cs kill 3 --dir "$D5" 2>/dev/null
	cs restart 3 --dir "$D5" 2>/dev/null
	check "kill + restart lose nothing (the page cache outlives a process)" test "$(cat "$D5/node-3/data/kept")" == kept
	cs restart 2 --dir "$D5" 2>/dev/null
	check "restart 2 mounts node 2 again" mounted_on "$D5/node-2/data"
	check "... and its fsynced state survived" test -s "$D5/node-2/data/fake-broker-state.json"
	check "power-loss on a cluster without lazyfs fails" not cs power-loss 1 --dir "$D1"
	check "CLUSTER_LAZYFS on a cluster started without it fails" not env CLUSTER_LAZYFS="$LAZYFS" "$CLUSTER" start --dir "$D2"
	lzpids=$(lz_pids "$D5")
	cs stop --dir "$D5" 2>/dev/null
	check "stop applies unsynced data to backing/" test "$(cat "$D5/node-3/backing/kept")" == kept
	check "stop unmounts every data dir" not grep -q " $D5/node-" /proc/self/mountinfo
	check "... and ends every lazyfs" test -z "$(for p in $lzpids; do pid_alive "$p" && echo "$p"; done)"
	cs start --dir "$D5" >/dev/null 2>&1
	check "start mounts again (lazyfs recorded, CLUSTER_LAZYFS unset)" mounted_on "$D5/node-1/data"
	check "... with the data" test "$(cat "$D5/node-3/data/kept")" == kept
	lzpids=$(lz_pids "$D5")
	cs clean --dir "$D5"
	check "clean unmounts and removes everything" test ! -e "$D5"
	check "... and ends every lazyfs" test -z "$(for p in $lzpids; do pid_alive "$p" && echo "$p"; done)"
fi

# ----------------------------------------------------------------------------
step "loopback: an unprivileged user's clusters on 127.0.0.1 (no namespaces)"
# setpriv, not su: no login shell, no PAM, and the environment (BROKER_BIN) kept.
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups --reset-env -- \
	env BROKER_BIN="$BROKER_BIN" CLUSTER_READY_TIMEOUT="$CLUSTER_READY_TIMEOUT" \
	CLUSTER_STOP_TIMEOUT="$CLUSTER_STOP_TIMEOUT" PATH="$PATH" "$@"; }
nobody_cs() { as_nobody "$CLUSTER" "$@"; }
# refuses PATTERN COMMAND... — the command fails and says PATTERN (grep -E).
refuses() {
	local out
	if out=$("${@:2}" 2>&1); then return 1; fi
	grep -qE -- "$1" <<<"$out"
}
mkdir -p -- "$LB"
chown 65534:65534 -- "$LB"
chmod 0711 -- "$ROOT" # nobody passes through to its own directory, sees nothing else
check "start as nobody succeeds" nobody_cs start --dir "$L1"
check "... in loopback mode" test "$(jq -r .net.mode "$L1/cluster.json")" == loopback
check "... nodes on 127.0.0.1, ports 18081-18083" test \
	"$(jq -r '[.nodes[].url] | join(" ")' "$L1/cluster.json")" == "http://127.0.0.1:18081 http://127.0.0.1:18082 http://127.0.0.1:18083"
check "... no namespace for them" test "$(jq -r '[.nodes[].netns] | unique | join(" ")' "$L1/cluster.json")" == -
check "... nodes run as nobody" test "$(stat -c %u "/proc/$(field "$L1" 1 pid)")" == 65534
check "... token file 0600, owned by nobody" test "$(stat -c '%a %u' "$L1/token")" == "600 65534"
for id in 1 2 3; do check "node $id answers /ready from the host" host_reach "$(field "$L1" "$id" url)"; done
check "status as nobody: three running, one leader" test \
	"$(nobody_cs status --dir "$L1" 2>/dev/null | awk '$4 == "running"' | wc -l)/$(nobody_cs status --dir "$L1" 2>/dev/null | awk '$6 == "leader"' | wc -l)" == 3/1
start_out=$(nobody_cs start --dir "$L2" 2>&1 >/dev/null)
check "a second directory takes the next port block (18181)" test "$(field "$L2" 1 url)" == http://127.0.0.1:18181
check "start prints the PATH and MQ_SERVER line for mqctl" grep -q 'export PATH=.*MQ_SERVER=http://127.0.0.1:18181,http://127.0.0.1:18182,http://127.0.0.1:18183' <<<"$start_out"
check "--port on a taken port fails, naming it" refuses "port 18082 of node 1 is in use" \
	nobody_cs start --dir "$LB/three" --port 18082
nobody_cs clean --dir "$LB/three" >/dev/null 2>&1 || true
check "partition refuses, naming network namespaces and root" refuses "partition needs network namespaces.*as root" \
	nobody_cs partition "1|2,3" --dir "$L1"
check "power-loss refuses the same way" refuses "power-loss needs network namespaces" \
	nobody_cs power-loss 1 --dir "$L1"
check "heal succeeds (nothing to heal)" nobody_cs heal --dir "$L1"
check "CLUSTER_LAZYFS refuses without root" not as_nobody env CLUSTER_LAZYFS=/bin/true "$CLUSTER" start --dir "$LB/lz"
nobody_cs clean --dir "$LB/lz" >/dev/null 2>&1 || true
old_pid=$(field "$L1" 2 pid)
nobody_cs kill 2 --dir "$L1" 2>/dev/null
check "kill as nobody ends node 2" not pid_alive "$old_pid"
check "... status says dead" status_is "$L1" 2 4 dead
nobody_cs pause 3 --dir "$L1" 2>/dev/null
check "pause: status says paused" status_is "$L1" 3 4 paused
nobody_cs resume 3 --dir "$L1" 2>/dev/null
check "restart brings node 2 back" nobody_cs restart 2 --dir "$L1"
check "... on its port" host_reach "$(field "$L1" 2 url)"
# A process that merely reuses a recorded pid is not the node: here, one of
# another cluster's nodes is written into this cluster's state.
l2_pid=$(field "$L2" 1 pid)
jq --argjson pid "$l2_pid" '(.nodes[] | select(.id == 1) | .pid) = $pid' "$L1/cluster.json" >"$L1/cluster.json.tmp" &&
	mv "$L1/cluster.json.tmp" "$L1/cluster.json" && chown 65534:65534 "$L1/cluster.json"
check "a live pid of another node is not taken for node 1" status_is "$L1" 1 4 dead
# (node 1's real process still holds its port, so a restart must refuse it)
check "... and its port, still held, stops a restart" refuses "port 18081 of node 1 is in use" \
	nobody_cs restart 1 --dir "$L1"
pkill -u 65534 -f -- "--data-dir $L1/node-1/data" || true
wait_for "... the orphaned node 1 exits" 10 not host_reach http://127.0.0.1:18081
check "... which works once the port is free" nobody_cs restart 1 --dir "$L1"
loopback_pids=$(jq -r '.nodes[].pid' "$L1/cluster.json" "$L2/cluster.json")
nobody_cs stop --dir "$L1" 2>/dev/null
check "stop ends every node" test -z "$(for p in $(jq -r '.nodes[].pid' "$L1/cluster.json"); do pid_alive "$p" && echo "$p"; done)"
token_before=$(cat "$L1/token")
check "start again succeeds" nobody_cs start --dir "$L1"
check "... with the same token" test "$(cat "$L1/token")" == "$token_before"
check "... node 1 on 18081 again" host_reach http://127.0.0.1:18081
# shellcheck disable=SC2016 # $1.. are the inner bash's
check "env: eval'd, MQ_SERVER lists every node and MQ_TOKEN is the token" bash -c \
	'eval "$1" && [[ $MQ_SERVER == "$2" && $MQ_TOKEN == "$(cat "$3")" ]]' _ \
	"$(nobody_cs env --dir "$L1" 2>/dev/null)" \
	"http://127.0.0.1:18081,http://127.0.0.1:18082,http://127.0.0.1:18083" "$L1/token"
chmod 0755 -- "$D1" # readable, so that the refusal is about privilege, not the file
check "a root cluster refuses the unprivileged user" refuses "runs in network namespaces.*need root" \
	nobody_cs status --dir "$D1"
BROKER_BIN=$BROKER_BIN cs start --dir "$L3" --loopback --insecure >/dev/null 2>&1
check "root can ask for --loopback" test "$(jq -r .net.mode "$L3/cluster.json")" == loopback
check "... and gets the next free block (18281)" test "$(field "$L3" 1 url)" == http://127.0.0.1:18281
# shellcheck disable=SC2016
check "env of an --insecure cluster unsets MQ_TOKEN" bash -c \
	'MQ_TOKEN=stale; eval "$1" && [[ -z ${MQ_TOKEN+set} && $MQ_SERVER == http://127.0.0.1:18281,* ]]' _ \
	"$(cs env --dir "$L3" 2>/dev/null)"
check "--loopback on a namespaced cluster fails" not cs start --dir "$D1" --loopback
cs clean --dir "$L3" >/dev/null 2>&1
nobody_cs clean --dir "$L1" >/dev/null 2>&1
nobody_cs clean --dir "$L2" >/dev/null 2>&1
check "clean as nobody removes both directories" test ! -e "$L1" -a ! -e "$L2"
check "... and ends every loopback node" test -z "$(for p in $loopback_pids; do pid_alive "$p" && echo "$p"; done)"

# ----------------------------------------------------------------------------
step "clean both clusters"
cs clean --dir "$D1"
cs clean --dir "$D2"
for k in "$K1" "$K2"; do
	check "subnet $k: no namespace, bridge, veth, host rule or registry entry" nothing_left_of_index "$k"
done
check "no process left from either cluster" test -z "$(for p in $pids; do pid_alive "$p" && echo "$p"; done)"
check "directories removed" test ! -e "$D1" -a ! -e "$D2"
check "clean twice is fine" cs clean --dir "$D1"

printf '\n%s in %ss\n' "$([[ $FAILURES -eq 0 ]] && echo "all checks passed" || echo "$FAILURES check(s) FAILED")" \
	"$((SECONDS - STARTED_AT))"
((FAILURES == 0))
