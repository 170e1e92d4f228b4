#!/usr/bin/env bash
#
# bench-compare.sh — our broker next to NATS JetStream and RabbitMQ quorum queues,
# three nodes each on this host, same message size, in-flight count and duration.
#
#   ours      3 broker processes on loopback (127.0.0.1:18381-18383), like the peers,
#             secured as every node is by default (a cluster secret between nodes,
#             broker-bench sending a bearer token that every request is checked
#             against); --tls adds HTTPS on both planes (a CA from broker-certs),
#             --insecure runs them without either (nodes get --insecure);
#             with --netns, scripts/cluster.sh start instead (one network namespace
#             per node behind a bridge: every packet also crosses veth, bridge and
#             netfilter, ~10% fewer msgs/s here). Measured with broker-bench produce
#             (--producers 1 --in-flight N, one message per request); after each
#             produce run, broker-bench consume pulls the backlog of that run's topic
#             from its first offset until every queue is empty.
#   ours-batching  the same nodes, broker-bench produce --batching: N messages in
#             flight, each its own send call on the client's BatchingProducer, which
#             packs the messages waiting for one of its 2 request slots into one
#             request (peer-bench keeps its publishes outstanding on one connection
#             or channel).
#   ours-tls  a second 3-node cluster of ours (127.0.0.1:18391-18393), the same as
#             ours but serving HTTPS on both planes (a CA from broker-certs), measured
#             the same way as ours, one message per request. Run beside ours it gives
#             TLS's cost in the same run, in alternation; the table ends with it.
#             Loopback only, and not with --tls (ours is then already TLS).
#   nats      3 nats-server processes (JetStream, cluster routes on loopback), one R3
#             file-storage stream per cell; peer-bench nats awaits each PubAck.
#   rabbitmq  3 RabbitMQ nodes clustered on loopback, one durable quorum queue per
#             cell; peer-bench rabbitmq uses publisher confirms (persistent messages).
#
# For every (size, in-flight) cell the systems run one after the other ("in
# alternation"), so a change in machine load hits all three alike; --rounds R repeats
# the matrix and the table shows each system's median. Every store lives under one
# temporary directory on the same disk; every process started here is stopped and the
# directory removed on any exit.
#
# Needs root for apt-get (installs nats-server and rabbitmq-server when missing) and
# for --netns. Builds broker, broker-bench, broker-certs and peer-bench (the
# cluster-tests `bench-peers` feature) in release mode.

set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
readonly TARGET_DIR

SIZES=128,1024,4096
IN_FLIGHT=1,64,512
SYSTEMS=ours,ours-batching,nats,rabbitmq
DURATION=20s
WARMUP=3s
ROUNDS=1
CONSUME=1
OUT=""
KEEP=0
BUILD=1
NETNS=0
BACKLOG=""
BACKLOG_BATCH=32
SECURITY=secured # secured | insecure
TLS=0

usage() {
	cat <<'EOF'
usage: scripts/bench-compare.sh [options]

  --sizes LIST       message body sizes in bytes (default 128,1024,4096)
  --in-flight LIST   outstanding acked publishes (default 1,64,512)
  --systems LIST     any of ours,ours-batching,ours-tls,nats,rabbitmq (default:
                     ours,ours-batching,nats,rabbitmq)
  --duration D       measured time per run (default 20s)
  --warmup D         unmeasured load before each run (default 3s)
  --rounds R         repeat the matrix R times; the table shows medians (default 1)
  --no-consume       skip our backlog consume after each produce run
  --out DIR          keep the JSON reports and the table here (default: a temp dir,
                     removed at exit)
  --keep             do not remove the temporary data directory at exit
  --no-build         use the binaries already in target/release
  --netns            run our nodes with scripts/cluster.sh (network namespaces)
                     instead of on loopback like the peers
  --tls              our nodes serve HTTPS (client API and Raft) with a CA made
                     for the run; broker-bench trusts it (--ca-file)
  --insecure         our nodes without a cluster secret or client tokens (the
                     default is secured: broker-bench sends a bearer token)
  --backlog BYTES    instead of the matrix, ours only: send BYTES of messages (the
                     first of --sizes, the first of --in-flight outstanding requests,
                     --backlog-batch messages per request), then consume all of it;
                     prints both rates and every node's memory (RSS: anonymous and
                     file-mapped) before, at its peak and at the end
  --backlog-batch N  messages per send request in --backlog (default 32)

Quick run:  scripts/bench-compare.sh --sizes 1024 --in-flight 1,512 --duration 5s
EOF
}

log() { printf 'bench-compare: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

while [[ $# -gt 0 ]]; do
	case $1 in
	--sizes) SIZES=$2 && shift 2 ;;
	--in-flight) IN_FLIGHT=$2 && shift 2 ;;
	--systems) SYSTEMS=$2 && shift 2 ;;
	--duration) DURATION=$2 && shift 2 ;;
	--warmup) WARMUP=$2 && shift 2 ;;
	--rounds) ROUNDS=$2 && shift 2 ;;
	--no-consume) CONSUME=0 && shift ;;
	--out) OUT=$2 && shift 2 ;;
	--keep) KEEP=1 && shift ;;
	--no-build) BUILD=0 && shift ;;
	--netns) NETNS=1 && shift ;;
	--backlog) BACKLOG=$2 && shift 2 ;;
	--backlog-batch) BACKLOG_BATCH=$2 && shift 2 ;;
	--tls) TLS=1 && shift ;;
	--insecure) SECURITY=insecure && shift ;;
	-h | --help) usage && exit 0 ;;
	*) usage >&2 && die "unknown argument: $1" ;;
	esac
done

[[ $EUID -eq 0 ]] || die "must run as root (network namespaces for our cluster, apt-get for the peers)"
has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

# ---------------------------------------------------------------------------
# prerequisites

ensure_packages() {
	local missing=()
	has nats && ! command -v nats-server >/dev/null && missing+=(nats-server)
	has rabbitmq && [[ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] && missing+=(rabbitmq-server)
	command -v python3 >/dev/null || missing+=(python3)
	command -v jq >/dev/null || missing+=(jq)
	if [[ ${#missing[@]} -gt 0 ]]; then
		log "installing ${missing[*]} (apt-get)"
		apt-get update -qq
		# The Debian package would start a system-wide RabbitMQ; ours are private.
		DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	return 0
}

build() {
	log "building broker, broker-bench and peer-bench (release)"
	(cd "$REPO" && cargo build --quiet --release -p broker --bin broker --bin broker-certs -p broker-bench --bin broker-bench)
	if has nats || has rabbitmq; then
		(cd "$REPO" && cargo build --quiet --release -p cluster-tests --features bench-peers --bin peer-bench)
	fi
}

# ---------------------------------------------------------------------------
# lifecycle: everything below WORK, stopped by cleanup on any exit

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
readonly WORK
[[ -n $OUT ]] || OUT=$WORK/reports
mkdir -p "$OUT"
OURS_PIDS=()
NATS_PIDS=()
RABBIT_PIDS=()
EPMD_WAS_RUNNING=0
pgrep -x epmd >/dev/null && EPMD_WAS_RUNNING=1

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	log "cleaning up"
	if [[ -f $WORK/ours/cluster.json ]]; then
		"$REPO/scripts/cluster.sh" clean --dir "$WORK/ours" >/dev/null 2>&1 || true
	fi
	local pid
	for pid in "${OURS_PIDS[@]}" "${NATS_PIDS[@]}" "${RABBIT_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${OURS_PIDS[@]}" "${NATS_PIDS[@]}" "${RABBIT_PIDS[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$pid" 2>/dev/null || true
	done
	if [[ ${#RABBIT_PIDS[@]} -gt 0 && $EPMD_WAS_RUNNING -eq 0 ]]; then
		epmd -kill >/dev/null 2>&1 || true
	fi
	if [[ $KEEP -eq 0 ]]; then
		# Reports asked for with --out live outside WORK and stay.
		rm -rf "$WORK"
	else
		log "kept $WORK"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# the three clusters

readonly NATS_CLIENT_PORT=14220 NATS_ROUTE_PORT=16240
readonly RABBIT_PORT=5680 # node I listens on RABBIT_PORT+I, Erlang distribution +20000

readonly OURS_PORT=18380     # ours: node I listens on 127.0.0.1:OURS_PORT+I
readonly OURS_TLS_PORT=18390 # ours-tls: node I on 127.0.0.1:OURS_TLS_PORT+I

# Each of our clusters is known by a name: ours (which ours-batching also uses) and
# ours-tls. Per cluster: OURS_URLS[name]; the admin token's file unless insecure
# (OURS_TOKEN_FILE[name]); the CA's file with TLS (OURS_CA_FILE[name]). broker-bench
# gets the token and CA in its environment (MQ_TOKEN, MQ_CA_FILE), never as arguments.
declare -A OURS_URLS=() OURS_TOKEN_FILE=() OURS_CA_FILE=()

cluster_of() { # cluster_of SYSTEM — the cluster a system of ours runs on
	case $1 in
	ours-tls) echo ours-tls ;;
	*) echo ours ;;
	esac
}

ours_bench() { # ours_bench CLUSTER ARGS... — broker-bench against one of our clusters
	local cluster=$1
	shift
	(
		unset MQ_TOKEN MQ_CA_FILE
		[[ -n ${OURS_TOKEN_FILE[$cluster]:-} ]] && MQ_TOKEN=$(head -n 1 -- "${OURS_TOKEN_FILE[$cluster]}") && export MQ_TOKEN
		[[ -n ${OURS_CA_FILE[$cluster]:-} ]] && export MQ_CA_FILE=${OURS_CA_FILE[$cluster]}
		exec "$TARGET_DIR/release/broker-bench" "$@"
	)
}

# new_secret FILE PREFIX — 32 random bytes as hex, in a file that is 0600 from its creation.
new_secret() {
	(umask 077 && {
		printf '%s' "$2"
		od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n'
		printf '\n'
	} >"$1")
}

start_ours() { # start_ours CLUSTER PORT TLS(0|1)
	local cluster=$1 port=$2 tls=$3
	if [[ $NETNS -eq 1 ]]; then
		local flags=()
		((tls)) && flags+=(--tls)
		[[ $SECURITY == insecure ]] && flags+=(--insecure)
		log "starting $cluster: 3 nodes (cluster.sh ${flags[*]:-}, network namespaces)"
		BROKER_BIN=$TARGET_DIR/release/broker "$REPO/scripts/cluster.sh" start --dir "$WORK/$cluster" \
			${flags[@]+"${flags[@]}"} >/dev/null 2>&1
		OURS_URLS[$cluster]=$(jq -r '[.nodes[].url] | join(",")' "$WORK/$cluster/cluster.json")
		[[ $SECURITY == insecure ]] || OURS_TOKEN_FILE[$cluster]=$WORK/$cluster/token
		((tls)) && OURS_CA_FILE[$cluster]=$WORK/$cluster/tls/ca.pem
		return 0
	fi
	log "starting $cluster: 3 nodes on loopback ($SECURITY$( ((tls)) && echo ", TLS"))"
	local i peers="" urls="" scheme=http env=() flags=() dir=$WORK/$cluster
	((tls)) && scheme=https
	mkdir -p "$dir"
	for i in 1 2 3; do
		peers+="$i=$scheme://127.0.0.1:$((port + i)),"
		urls+="$scheme://127.0.0.1:$((port + i)),"
	done
	OURS_URLS[$cluster]=${urls%,}
	if [[ $SECURITY == secured ]]; then
		new_secret "$dir/secret" ""
		new_secret "$dir/token" "mq_admin_"
		OURS_TOKEN_FILE[$cluster]=$dir/token
		env+=("BROKER_SECURITY_CLUSTER_SECRET_FILE=$dir/secret"
			"BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE=$dir/token")
	else
		flags+=(--insecure)
	fi
	if ((tls)); then
		"$TARGET_DIR/release/broker-certs" ca --out "$dir/tls" >/dev/null
		OURS_CA_FILE[$cluster]=$dir/tls/ca.pem
		env+=("BROKER_TLS_CA_FILE=$dir/tls/ca.pem")
	fi
	for i in 1 2 3; do
		mkdir -p "$dir/node$i"
		local node_env=()
		if ((tls)); then
			"$TARGET_DIR/release/broker-certs" node --ca-dir "$dir/tls" --name "node-$i" \
				--ip 127.0.0.1 --dns localhost --out "$dir/tls" >/dev/null
			node_env=("BROKER_TLS_CERT_FILE=$dir/tls/node-$i.pem" "BROKER_TLS_KEY_FILE=$dir/tls/node-$i-key.pem")
		fi
		# The flags cluster.sh gives, on loopback addresses; secrets as file paths.
		env ${env[@]+"${env[@]}"} ${node_env[@]+"${node_env[@]}"} "$TARGET_DIR/release/broker" \
			--node-id "$i" --group broker-a \
			--listen "127.0.0.1:$((port + i))" --advertise-url "$scheme://127.0.0.1:$((port + i))" \
			--data-dir "$dir/node$i/data" --peers "${peers%,}" --seeds "${OURS_URLS[$cluster]}" ${flags[@]+"${flags[@]}"} \
			</dev/null >"$dir/node$i/broker.log" 2>&1 &
		OURS_PIDS+=($!)
	done
	local deadline=$((SECONDS + 30)) curl_auth=(--noproxy '*')
	[[ -n ${OURS_CA_FILE[$cluster]:-} ]] && curl_auth+=(--cacert "${OURS_CA_FILE[$cluster]}")
	[[ -n ${OURS_TOKEN_FILE[$cluster]:-} ]] && curl_auth+=(-H @-)
	until curl -fsS "${curl_auth[@]}" --max-time 1 "$scheme://127.0.0.1:$((port + 1))/v1/cluster" 2>/dev/null \
		< <([[ -z ${OURS_TOKEN_FILE[$cluster]:-} ]] || printf 'Authorization: Bearer %s\n' "$(head -n 1 -- "${OURS_TOKEN_FILE[$cluster]}")") |
		jq -e '[.groups[].nodes[] | select(.role == "leader")] | length == 1' >/dev/null; do
		((SECONDS < deadline)) || die "$cluster elected no leader in 30 s (logs: $dir/node*/broker.log)"
		sleep 0.2
	done
}

start_nats() {
	log "starting a 3-node NATS JetStream cluster"
	local i routes=""
	for i in 1 2 3; do
		routes+="nats-route://127.0.0.1:$((NATS_ROUTE_PORT + i)),"
	done
	for i in 1 2 3; do
		mkdir -p "$WORK/nats$i"
		cat >"$WORK/nats$i/nats.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((NATS_CLIENT_PORT + i))
jetstream { store_dir: "$WORK/nats$i/store" }
cluster {
  name: bench
  listen: 127.0.0.1:$((NATS_ROUTE_PORT + i))
  routes: [ ${routes%,} ]
}
EOF
		nats-server -c "$WORK/nats$i/nats.conf" >"$WORK/nats$i/server.log" 2>&1 &
		NATS_PIDS+=($!)
	done
	NATS_URLS="nats://127.0.0.1:$((NATS_CLIENT_PORT + 1)),nats://127.0.0.1:$((NATS_CLIENT_PORT + 2)),nats://127.0.0.1:$((NATS_CLIENT_PORT + 3))"
}

rabbit_env() { # rabbit_env I: the environment of node I
	local i=$1
	echo HOME="$WORK/rabbit-home" \
		RABBITMQ_CONF_ENV_FILE="$WORK/rabbit-home/rabbitmq-env.conf" \
		RABBITMQ_NODENAME="rabbit$i@localhost" \
		RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT=$((RABBIT_PORT + i)) \
		RABBITMQ_MNESIA_BASE="$WORK/rabbit$i/mnesia" \
		RABBITMQ_LOG_BASE="$WORK/rabbit$i/log" \
		RABBITMQ_PID_FILE="$WORK/rabbit$i/pid" \
		RABBITMQ_CONFIG_FILE="$WORK/rabbit$i/rabbitmq" \
		RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/rabbit-home/enabled_plugins"
}

rabbitmqctl_on() { # rabbitmqctl_on I ARGS...
	local i=$1
	shift
	env $(rabbit_env "$i") /usr/lib/rabbitmq/bin/rabbitmqctl -n "rabbit$i@localhost" "$@"
}

start_rabbitmq() {
	log "starting a 3-node RabbitMQ cluster"
	mkdir -p "$WORK/rabbit-home"
	# One Erlang cookie for the three nodes and rabbitmqctl (HOME is private).
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/rabbit-home/.erlang.cookie"
	chmod 400 "$WORK/rabbit-home/.erlang.cookie"
	: >"$WORK/rabbit-home/rabbitmq-env.conf"
	echo '[].' >"$WORK/rabbit-home/enabled_plugins"
	local i
	for i in 1 2 3; do
		mkdir -p "$WORK/rabbit$i"
		# Loopback only; the guest user may log in from there.
		echo "listeners.tcp.default = 127.0.0.1:$((RABBIT_PORT + i))" >"$WORK/rabbit$i/rabbitmq.conf"
		# Schedulers that do not spin when idle: three nodes and two other systems
		# share this host's cores.
		env $(rabbit_env "$i") \
			RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none" \
			/usr/lib/rabbitmq/bin/rabbitmq-server >"$WORK/rabbit$i/server.log" 2>&1 &
		RABBIT_PIDS+=($!)
	done
	# await_startup fails at once until the node has registered with epmd.
	for i in 1 2 3; do
		local deadline=$((SECONDS + 120))
		until rabbitmqctl_on "$i" await_startup --timeout 120 >/dev/null 2>&1; do
			kill -0 "${RABBIT_PIDS[$((i - 1))]}" 2>/dev/null && [[ $SECONDS -lt $deadline ]] ||
				die "RabbitMQ node $i did not start; see $WORK/rabbit$i/server.log"
			sleep 1
		done
	done
	for i in 2 3; do
		rabbitmqctl_on "$i" stop_app >/dev/null
		rabbitmqctl_on "$i" join_cluster rabbit1@localhost >/dev/null
		rabbitmqctl_on "$i" start_app >/dev/null
	done
	rabbitmqctl_on 1 cluster_status --formatter json | jq -e '.running_nodes | length == 3' >/dev/null ||
		die "RabbitMQ nodes did not form one cluster"
	RABBIT_URL="amqp://guest:guest@127.0.0.1:$((RABBIT_PORT + 1))/%2f"
}

# ---------------------------------------------------------------------------
# one run of each system

# run_ours SYSTEM SIZE IN_FLIGHT ROUND  (SYSTEM: ours, ours-batching or ours-tls)
run_ours() {
	local system=$1 size=$2 in_flight=$3 round=$4 topic="bench-$1-$2-$3-r$4"
	local report=$OUT/$system-$size-$in_flight-r$round.json cluster
	cluster=$(cluster_of "$system")
	local mode=()
	[[ $system == ours-batching ]] && mode=(--batching)
	ours_bench "$cluster" produce --url "${OURS_URLS[$cluster]}" --topic "$topic" \
		--create-topic --producers 1 --in-flight "$in_flight" --size "$size" ${mode[@]+"${mode[@]}"} \
		--duration "$DURATION" --warmup "$WARMUP" --progress 0 --report "$report" \
		>"$report.log" 2>&1 || die "broker-bench produce failed: $(tail -3 "$report.log")"
	grep -E '^(rate|latency|errors|batching):' "$report.log" | sed "s/^/    $(printf '%-14s' "$system")/" >&2
	if [[ $CONSUME -eq 1 && $system == ours ]]; then
		local creport=$OUT/ours-consume-$size-$in_flight-r$round.json
		ours_bench ours consume --url "${OURS_URLS[ours]}" --topic "$topic" \
			--from earliest --until-empty --max-messages 1024 --max-wait 200ms \
			--progress 0 --report "$creport" >"$creport.log" 2>&1 ||
			die "broker-bench consume failed: $(tail -3 "$creport.log")"
		grep -E '^rate:' "$creport.log" | sed 's/^/    consume       /' >&2
	fi
}

# run_peer SYSTEM SIZE IN_FLIGHT ROUND
run_peer() {
	local system=$1 size=$2 in_flight=$3 round=$4
	local report=$OUT/$system-$size-$in_flight-r$round.json
	local target
	case $system in
	nats) target=(nats --url "$NATS_URLS" --stream "BENCH_${size}_${in_flight}_r$round" --delete-after) ;;
	rabbitmq) target=(rabbitmq --url "$RABBIT_URL" --queue "bench-$size-$in_flight-r$round" --delete-after) ;;
	esac
	"$TARGET_DIR/release/peer-bench" "${target[@]}" --in-flight "$in_flight" --size "$size" \
		--duration "$DURATION" --warmup "$WARMUP" --report "$report" \
		>"$report.log" 2>&1 || die "peer-bench $system failed: $(tail -3 "$report.log")"
	grep -E '^(rate|latency):' "$report.log" | sed "s/^/    $(printf '%-14s' "$system")/" >&2
}

# ---------------------------------------------------------------------------
# --backlog: a large backlog, its consumption, and our nodes' memory meanwhile

# Every second: time, then RssAnon and RssFile (KiB) of each of our nodes.
sample_memory() {
	local pid line
	while :; do
		line=$(date +%s)
		for pid in "${OURS_PIDS[@]}"; do
			line+=$(awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {printf "\t%d\t%d", a, f}' "/proc/$pid/status" 2>/dev/null)
		done
		printf '%s\n' "$line" >>"$OUT/memory.tsv"
		sleep 1
	done
}

# run_backlog SIZE IN_FLIGHT
run_backlog() {
	local size=$1 in_flight=$2 topic=backlog sampler
	log "backlog: sending $BACKLOG of ${size} B messages, $BACKLOG_BATCH per request, $in_flight in flight"
	sample_memory &
	sampler=$!
	ours_bench ours produce --url "${OURS_URLS[ours]}" --topic "$topic" \
		--create-topic --producers 1 --in-flight "$in_flight" --size "$size" \
		--batch "$BACKLOG_BATCH" --bytes "$BACKLOG" --duration 24h --warmup 0s \
		--progress 10s --report "$OUT/backlog-produce.json" >&2 ||
		die "broker-bench produce failed"
	log "backlog: consuming everything from the earliest offsets"
	ours_bench ours consume --url "${OURS_URLS[ours]}" --topic "$topic" \
		--from earliest --until-empty --max-messages 1024 --max-wait 200ms \
		--progress 10s --report "$OUT/backlog-consume.json" >&2 ||
		die "broker-bench consume failed"
	sleep 2
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	python3 - "$OUT" <<'EOF' | tee "$OUT/backlog.md"
import json, sys
out = sys.argv[1]
send = json.load(open(f"{out}/backlog-produce.json"))
consume = json.load(open(f"{out}/backlog-consume.json"))
rows = [list(map(int, l.split("\t"))) for l in open(f"{out}/memory.tsv") if l.strip()]
total = send["acked_messages"] + send["unmeasured_acked_messages"]
print("| backlog | messages | send msgs/s | send MB/s | consume msgs/s | consume MB/s | consume/send |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
print(f"| {send['acked_payload_bytes'] / 2**30:.2f} GiB | {total} | {send['msgs_per_s']:.0f} | "
      f"{send['mb_per_s']:.1f} | {consume['msgs_per_s']:.0f} | {consume['mb_per_s']:.1f} | "
      f"{consume['msgs_per_s'] / send['msgs_per_s']:.2f}× |")
print()
print("| node | anonymous MiB: start | peak | end | file-mapped MiB: start | peak | end |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
mib = lambda kib: f"{kib / 1024:.0f}"
for node in range(3):
    anon = [r[1 + 2 * node] for r in rows if len(r) > 2 + 2 * node]
    mapped = [r[2 + 2 * node] for r in rows if len(r) > 2 + 2 * node]
    print(f"| {node + 1} | {mib(anon[0])} | {mib(max(anon))} | {mib(anon[-1])} | "
          f"{mib(mapped[0])} | {mib(max(mapped))} | {mib(mapped[-1])} |")
EOF
}

# ---------------------------------------------------------------------------
# the table: medians over rounds, ratios of ours to each peer

print_table() {
	python3 - "$OUT" "$SIZES" "$IN_FLIGHT" "$SYSTEMS" <<'EOF'
import json, os, statistics, sys
out, sizes, flights, systems = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4].split(",")
def load(name):
    runs = []
    for f in sorted(os.listdir(out)):
        if f.startswith(name + "-r") and f.endswith(".json"):
            with open(os.path.join(out, f)) as fh:
                run = json.load(fh)
            run["_round"] = f[len(name) + 2:-len(".json")]
            runs.append(run)
    return runs
def med(runs, key):
    vals = [key(r) for r in runs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
rows = []
ours_systems = [s for s in ("ours", "ours-batching") if s in systems]
# Systems of ours that are not compared with the peers (their cost is shown below).
ours_variants = ours_systems + ["ours-tls"]
header = ["size", "in flight", "system", "msgs/s", "MB/s", "p50 ms", "p99 ms"]
header += [c for o in ours_systems for c in (f"{o}/this msgs/s", f"{o}/this p50")]
print("| " + " | ".join(header) + " |")
print("| " + " | ".join("---" if h == "system" else "---:" for h in header) + " |")
for size in sizes:
    for fl in flights:
        got = {}
        for s in systems:
            runs = load(f"{s}-{size}-{fl}")
            if runs:
                got[s] = dict(
                    rate=med(runs, lambda r: r["msgs_per_s"]),
                    mb=med(runs, lambda r: r["mb_per_s"]),
                    p50=med(runs, lambda r: r["latency_ms"].get("p50")),
                    p99=med(runs, lambda r: r["latency_ms"].get("p99")),
                    n=len(runs))
        for s, g in got.items():
            ratios = []
            for o in ours_systems:
                ours = got.get(o)
                ratio = p50r = "—"
                if ours and s not in ours_variants:
                    if g["rate"] and ours["rate"]:
                        ratio = f"{ours['rate'] / g['rate']:.2f}×"
                    if g["p50"] and ours["p50"]:
                        p50r = f"{ours['p50'] / g['p50']:.2f}×"
                ratios += [ratio, p50r]
            fmt = lambda v, spec: "—" if v is None else format(v, spec)
            print(f"| {size} | {fl} | {s} | {fmt(g['rate'], '.0f')} | {fmt(g['mb'], '.1f')} | "
                  f"{fmt(g['p50'], '.2f')} | {fmt(g['p99'], '.2f')} | " + " | ".join(ratios) + " |")
tls = []
for size in sizes:
    for fl in flights:
        plain, secured = load(f"ours-{size}-{fl}"), load(f"ours-tls-{size}-{fl}")
        if plain and secured:
            # Per round (the two ran one after the other), then the median.
            pairs = [(p, t) for p in plain for t in secured
                     if p["_round"] == t["_round"]]
            costs = [1 - t["msgs_per_s"] / p["msgs_per_s"] for p, t in pairs if p["msgs_per_s"]]
            tls.append((size, fl, med(plain, lambda r: r["msgs_per_s"]),
                        med(secured, lambda r: r["msgs_per_s"]),
                        med(plain, lambda r: r["latency_ms"].get("p50")),
                        med(secured, lambda r: r["latency_ms"].get("p50")),
                        statistics.median(costs) if costs else None, len(costs)))
if tls:
    print()
    print("| TLS: one message per request | in flight | ours msgs/s | ours-tls msgs/s | ours p50 ms | ours-tls p50 ms | TLS cost (median of rounds) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, fl, rate, trate, p50, tp50, cost, n in tls:
        c = "—" if cost is None else f"{cost * 100:.1f}% ({n} rounds)"
        ms = lambda v: "—" if v is None else f"{v:.2f}"
        print(f"| {size} B | {fl} | {rate:.0f} | {trate:.0f} | {ms(p50)} | {ms(tp50)} | {c} |")
consumes = []
for size in sizes:
    for fl in flights:
        runs = load(f"ours-consume-{size}-{fl}")
        sends = load(f"ours-{size}-{fl}")
        if runs:
            consumes.append((size, fl, med(runs, lambda r: r["messages"]),
                             med(runs, lambda r: r["msgs_per_s"]), med(runs, lambda r: r["mb_per_s"]),
                             med(sends, lambda r: r["msgs_per_s"]) if sends else None))
if consumes:
    print()
    print("| ours: consume the backlog | in flight (send) | messages | msgs/s | MB/s | consume/send msgs/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, fl, n, rate, mb, send in consumes:
        ratio = f"{rate / send:.2f}×" if send else "—"
        print(f"| {size} B | {fl} | {n:.0f} | {rate:.0f} | {mb:.1f} | {ratio} |")
EOF
}

# ---------------------------------------------------------------------------

if [[ -n $BACKLOG ]]; then
	[[ $NETNS -eq 0 ]] || die "--backlog runs our nodes on loopback; drop --netns"
	SYSTEMS=ours
fi
if has ours-tls; then
	[[ $NETNS -eq 0 ]] || die "ours-tls runs on loopback; drop --netns"
	((TLS == 0)) || die "ours-tls is ours with TLS; with --tls, ours already is"
fi
ensure_packages
[[ $BUILD -eq 0 ]] || build
{ has ours || has ours-batching; } && start_ours ours "$OURS_PORT" "$TLS"
has ours-tls && start_ours ours-tls "$OURS_TLS_PORT" 1
has nats && start_nats
has rabbitmq && start_rabbitmq
log "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -r -a size_list <<<"$SIZES"
IFS=, read -r -a flight_list <<<"$IN_FLIGHT"
IFS=, read -r -a system_list <<<"$SYSTEMS"
if [[ -n $BACKLOG ]]; then
	run_backlog "${size_list[0]}" "${flight_list[0]}"
	exit 0
fi
for round in $(seq "$ROUNDS"); do
	for size in "${size_list[@]}"; do
		for in_flight in "${flight_list[@]}"; do
			log "round $round: ${size} B, $in_flight in flight, ${DURATION} each (load $(cut -d' ' -f1-3 /proc/loadavg))"
			for system in "${system_list[@]}"; do
				case $system in
				ours | ours-batching | ours-tls) run_ours "$system" "$size" "$in_flight" "$round" ;;
				nats | rabbitmq) run_peer "$system" "$size" "$in_flight" "$round" ;;
				*) die "unknown system: $system" ;;
				esac
			done
		done
	done
done
log "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
{
	echo "3 nodes each on one host ($(nproc) cores), duration $DURATION after $WARMUP warmup, $ROUNDS round(s); medians."
	echo "ours: $SECURITY$( ((TLS)) && echo " + TLS")$( ((NETNS)) && echo ", network namespaces")$(has ours-tls && echo "; ours-tls: $SECURITY + TLS")"
	echo "load average (1/5/15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	print_table
} | tee "$OUT/table.md"
