#!/usr/bin/env bash
# Rolling upgrade and downgrade under load: a secured three-node cluster runs the
# broker built from OLD_REF (default: 9338bcf, the previous release of main: stop
# 28, internal protocol 1); a client sends one message per request to every node
# in turn the whole time, and a consumer group heartbeats through every node; each
# node is restarted in turn on the broker built from this checkout (the next only
# once every node answers /ready again), then each in turn back on the old one
# (DOWNGRADE=0 skips that), then up again and the upgrade finalized (queue
# claims enabled; FINALIZE=0 skips that; finalizing with old voters must be
# refused); then every acknowledged message must read back from its queue and
# offset on every node. Shows that old and new nodes share a group
# and each other's data both ways: a new node proposes nothing an old one cannot
# decode (queue claims stay off in a group that was not bootstrapped by the new
# build; see broker/src/peer_protocol.rs). Prints the difference between the old
# and the new /openapi.json, if any.
#
# Not part of scripts/test.sh (it builds the broker twice, ~10 minutes here): the
# longer suite to run as root before changing anything nodes write or say to each
# other.
#   scripts/testing/rolling-upgrade.sh            OLD_REF=<commit> to compare another
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
OLD_REF=${OLD_REF:-9338bcf}
DOWNGRADE=${DOWNGRADE:-1}
LOAD_SECONDS_BETWEEN=${LOAD_SECONDS_BETWEEN:-8}
target=${CARGO_TARGET_DIR:-$repo/target}
work=$(mktemp -d)
dir=$work/cluster
load_pid=
beat_pid=
cleanup() {
	[[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null
	[[ -n $beat_pid ]] && kill "$beat_pid" 2>/dev/null
	if [[ -n ${KEEP_UPGRADE_DIR:-} ]]; then
		log "kept $work (KEEP_UPGRADE_DIR)"
		return
	fi
	"$repo/scripts/cluster.sh" clean --dir "$dir" >/dev/null 2>&1 || true
	git -C "$repo" worktree remove --force "$work/old-src" >/dev/null 2>&1 || true
	rm -rf -- "$work"
}
trap cleanup EXIT
log() { printf 'rolling-upgrade: %s\n' "$*"; }

log "building the old broker ($OLD_REF, in $target/rolling-upgrade-old) and this checkout's"
git -C "$repo" worktree add --quiet --detach "$work/old-src" "$OLD_REF"
# The old tree builds into a target directory of its own. Sharing one is wrong:
# cargo names a workspace member's artifacts by its path relative to the
# workspace, so both trees' `broker` map to the same files, and whichever tree
# looks older than them is taken as built — a "new" broker linked from the old
# tree's library.
old_target=$target/rolling-upgrade-old
(cd "$work/old-src" && CARGO_TARGET_DIR=$old_target cargo build --quiet --release -p broker --bin broker)
cp "$old_target/release/broker" "$work/broker-old"
(cd "$repo" && cargo build --quiet --release -p broker --bin broker)
cp "$target/release/broker" "$work/broker-new"
if cmp -s "$work/broker-old" "$work/broker-new"; then
	log "the two builds are the same file: OLD_REF builds this code" >&2
	exit 1
fi

log "a cluster of old nodes"
BROKER_BIN=$work/broker-old "$repo/scripts/cluster.sh" start --dir "$dir" >/dev/null
urls=$(jq -r '[.nodes[].url] | join(",")' "$dir/cluster.json")
token_file=$dir/token
first=${urls%%,*}
if ! answer=$(curl -sS -X PUT -H @- -H 'Content-Type: application/json' -d '{}' \
	-w '\n%{http_code}' "$first/v1/topics/upgrade" <<<"Authorization: Bearer $(head -n 1 -- "$token_file")") ||
	[[ ${answer##*$'\n'} != 200 ]]; then
	log "creating the topic failed: $answer" >&2
	tail -n 20 "$dir/node-1/broker.log" >&2
	exit 1
fi

node_exe() { # node_exe I — the executable node I runs
	local pid
	pid=$(jq -r --argjson id "$1" '.nodes[] | select(.id == $id) | .pid' "$dir/cluster.json")
	readlink "/proc/$pid/exe"
}
wait_ready() { # every node answers /ready within 60 s
	local deadline=$((SECONDS + 60)) url
	for url in ${urls//,/ }; do
		until curl -fsS -o /dev/null "$url/ready"; do
			((SECONDS < deadline)) || { log "$url not ready after 60 s" >&2; return 1; }
			sleep 0.2
		done
	done
}

# The API as the old nodes describe it, to compare with the new ones' below.
openapi() { # openapi FILE — the document as node 1 serves it (it needs a token)
	curl -fsS -H @- "$first/openapi.json" <<<"Authorization: Bearer $(head -n 1 -- "$token_file")" |
		jq -S . >"$1"
}
openapi "$work/openapi-old.json"

log "load: one message per request, to every node in turn"
python3 "$repo/scripts/testing/upgrade_load.py" send --urls "$urls" --token-file "$token_file" \
	--out "$work/acked.jsonl" --stop-file "$work/stop" &
load_pid=$!
# A consumer-group member heartbeating through every node in turn: the
# coordinator's grants are what a new leader could record in a format old nodes
# cannot read. Counts the answers that were 200.
(
	ok=0
	while [[ ! -e $work/stop ]]; do
		for url in ${urls//,/ }; do
			code=$(curl -sS -o /dev/null -w '%{http_code}' -m 5 -X POST -H @- -H 'Content-Type: application/json' \
				-d '{"client_id": "upgrader", "topics": ["upgrade"], "owned": []}' \
				"$url/v1/groups/upgraders/heartbeat" <<<"Authorization: Bearer $(head -n 1 -- "$token_file")" || true)
			[[ $code == 200 ]] && ok=$((ok + 1))
			sleep 0.3
		done
	done
	echo "$ok" >"$work/heartbeats-ok"
) &
beat_pid=$!
sleep "$LOAD_SECONDS_BETWEEN"
roll() { # roll FROM TO ID... — restart each node on TO's broker in turn
	local from=$1 to=$2
	shift 2
	for id in "$@"; do
		log "node $id: $from -> $to ($(wc -l <"$work/acked.jsonl") acknowledged so far)"
		BROKER_BIN=$work/broker-$to "$repo/scripts/cluster.sh" restart "$id" --dir "$dir" >/dev/null
		[[ $(node_exe "$id") == "$work/broker-$to" ]] || { log "node $id does not run the $to broker" >&2; exit 1; }
		wait_ready
		sleep "$LOAD_SECONDS_BETWEEN"
	done
}
finalize() { # finalize — POST finalize-upgrade through node 1; prints "STATUS BODY"
	curl -sS -m 20 -X POST -H @- -w ' %{http_code}' "$first/v1/cluster/groups/broker-a/finalize-upgrade" \
		<<<"Authorization: Bearer $(head -n 1 -- "$token_file")" || true
}
roll old new 1
# Mixed versions: the group must not start using what node 1's build adds. Node 1
# leads (an old leader would not know the endpoint: 404), so the new build itself
# must refuse, naming a voter that runs the old one.
curl -sS -m 20 -o /dev/null -X POST -H @- -H 'Content-Type: application/json' -d '{"to": 1}' \
	"$first/v1/cluster/groups/broker-a/transfer-leader" <<<"Authorization: Bearer $(head -n 1 -- "$token_file")" || true
answer=$(finalize)
log "finalize-upgrade led by new node 1, nodes 2 and 3 old: ${answer}"
[[ ${answer##* } == 409 && $answer == *"speaks internal protocol 1"* ]] ||
	{ log "finalize-upgrade was not refused while two voters run the old build" >&2; exit 1; }
roll old new 2 3
openapi "$work/openapi-new.json"
final=new
if [[ $DOWNGRADE == 1 ]]; then
	roll new old 3 2 1
	final=old
	if [[ ${FINALIZE:-1} == 1 ]]; then
		# Up again, and this time for good.
		roll old new 1 2 3
		final=new
		answer=$(finalize)
		log "finalize-upgrade with every node new: ${answer}"
		[[ ${answer##* } == 200 && $answer == *'"enabled_now":true'* ]] ||
			{ log "finalize-upgrade did not enable claims" >&2; exit 1; }
		answer=$(finalize)
		[[ ${answer##* } == 200 && $answer == *'"enabled_now":false'* ]] ||
			{ log "a second finalize-upgrade was not a no-op: $answer" >&2; exit 1; }
		sleep "$LOAD_SECONDS_BETWEEN"
	fi
fi
touch "$work/stop"
wait "$load_pid"
load_pid=
wait "$beat_pid"
beat_pid=
log "$(cat "$work/heartbeats-ok") heartbeats answered 200"
[[ $(cat "$work/heartbeats-ok") -gt 0 ]] || { log "no heartbeat was answered" >&2; exit 1; }
for id in 1 2 3; do
	[[ $(node_exe "$id") == "$work/broker-$final" ]] || { log "node $id does not run the $final broker" >&2; exit 1; }
done

if diff -u "$work/openapi-old.json" "$work/openapi-new.json" >"$work/openapi.diff"; then
	log "/openapi.json: the same document before and after"
else
	log "/openapi.json differs between the old and the new broker:"
	cat "$work/openapi.diff"
fi

log "every acknowledged message, read back from every node in turn"
python3 "$repo/scripts/testing/upgrade_load.py" check --urls "$urls" --token-file "$token_file" \
	--out "$work/acked.jsonl"
