#!/usr/bin/env bash
#
# deploy-compose.sh — the deploy/ files tested for real. Runs the README's Deploy
# block as printed (build the image, make the credentials, start
# deploy/docker-compose.yml, send and pull through the published ports with the
# admin token), with the environment pointing it at a Compose project, image tag
# and free host ports of this run's own; then checks that the cluster is secured
# (401 without the token or with a wrong one, the secrets in no container's
# configuration or command line), that the nodes resolve each other by service
# name, sends and pulls
# through every node, SIGKILLs the leader's container, checks that writes
# continue through another node, starts the container again and checks that it
# catches up (its queues' max offsets equal the new leader's and it serves every
# message). Removes the containers, network, volumes and image tag on every
# exit, failure included.
#
# Needs a Docker engine and Compose (`docker compose` or `docker-compose`); takes
# about 40 s and gives up after DEPLOY_TEST_BUDGET seconds (default 170).
# Published ports are ephemeral, on 127.0.0.1 only.
#
# DEPLOY_TEST_SKIP_RESTART=1 leaves the killed node down, to watch the catch-up
# check fail.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
readonly repo
readonly topic=deploy-test
readonly queues=4
readonly batch=20
started=$SECONDS
readonly budget_end=$((SECONDS + ${DEPLOY_TEST_BUDGET:-170}))

phase() { echo "--- [$((SECONDS - started))s] $*"; }
die() {
	echo "deploy-compose: FAILED: $*" >&2
	exit 1
}

if docker compose version >/dev/null 2>&1; then
	compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
	compose_cmd=(docker-compose)
else
	die "neither 'docker compose' nor 'docker-compose' is installed"
fi

# Unique per run, so that a concurrent run or a leftover never collides with ours.
suffix=$$-$RANDOM
project=brokertest${suffix//-/x}
tag=broker:deploy-test-$suffix
work=$(mktemp -d)

# The README block and this script both read these.
export COMPOSE_PROJECT_NAME=$project
export BROKER_IMAGE=$tag
export BROKER_PUBLISH_ADDR=127.0.0.1
# The README's block makes and reads deploy/secrets/ (BROKER_SECRETS_DIR would move
# it, but the block as printed reads the token from there).
unset BROKER_SECRETS_DIR
readonly secrets=$repo/deploy/secrets
# Empty: Docker picks a free host port (the compose file's ${VAR-default}).
export BROKER_NODE1_PORT='' BROKER_NODE2_PORT='' BROKER_NODE3_PORT=''

compose() { "${compose_cmd[@]}" --project-name "$project" --file "$repo/deploy/docker-compose.yml" "$@"; }

cleanup() {
	local status=$?
	if ((status != 0)); then
		echo "--- deploy-compose: logs of the failed run (last 30 lines per node)" >&2
		compose logs --no-color --tail 30 >&2 2>&1 || true
	fi
	compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
	docker image rm --force "$tag" >/dev/null 2>&1 || true
	rm -rf -- "$work"
	[[ $made_secrets == 1 ]] && rm -rf -- "$secrets"
	# Anything left means `down` failed: say so, the next run would not notice.
	if [[ -n $(docker ps -aq --filter "label=com.docker.compose.project=$project") ]]; then
		echo "deploy-compose: containers of project $project are left over" >&2
	fi
	echo "--- [$((SECONDS - started))s] deploy-compose: cleaned up (project $project)"
	exit "$status"
}
# The README block writes deploy/secrets/ when there is none (make-secrets.sh keeps
# existing files); a directory this run made goes again.
made_secrets=0
[[ -e $secrets ]] || made_secrets=1
trap cleanup EXIT
trap 'exit 130' INT TERM

container() { compose ps -q "node$1"; }

# Base URL of node I's published port, as last read by read_url (`compose port`
# costs half a second with docker-compose v1, so it is read once per start).
declare -A urls=()
read_url() {
	local hostport
	hostport=$(compose port "node$1" 8080 2>/dev/null | tail -n 1)
	[[ -n $hostport && $hostport != *:0 ]] || return 1
	urls[$1]=http://$hostport
}
url() { echo "${urls[$1]:?node $1 has no published port}"; }

within_budget() {
	((SECONDS < budget_end)) || die "over the time budget of ${DEPLOY_TEST_BUDGET:-170}s"
}

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND until it succeeds.
wait_for() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
		within_budget
		sleep 0.5
	done
}

healthy() { [[ $(docker inspect --format '{{.State.Health.Status}}' "$(container "$1")") == healthy ]]; }
all_healthy() { healthy 1 && healthy 2 && healthy 3; }

# The API with the admin token (read by curl from a 0600 file, not its arguments)
# and JSON bodies (415 otherwise).
auth=$work/auth-header
api() { curl -sS --max-time 5 -H @"$auth" -H 'Content-Type: application/json' "$@"; }
status_of() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@"; }

# send NODE FIRST COUNT: sends messages FIRST..FIRST+COUNT-1 through node NODE,
# one request each, with producer_id/sequence so that a retry after a timeout or
# a leader change is stored once. Fails unless every message got a result.
send() {
	local node=$1 first=$2 count=$3 seq body answer base
	base=$(url "$node")
	for ((seq = first; seq < first + count; seq++)); do
		body=$(printf '{"messages":[{"body":"m-%d","producer_id":"deploy-test","sequence":%d}]}' "$seq" "$seq")
		answer=
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			answer=$(api -XPOST "$base/v1/topics/$topic/messages" -d "$body") &&
				jq -e '.results | length == 1' <<<"$answer" >/dev/null && break
			answer=
			within_budget
			sleep 1
		done
		[[ -n $answer ]] || die "message m-$seq was not accepted by node $node"
	done
}

# Max offsets of every queue as node I has applied them: "12 9 10 9".
max_offsets() {
	api "$(url "$1")/v1/topics/$topic/queues" | jq -r '[.queues[].max_offset] | join(" ")'
}

total_on() { max_offsets "$1" | tr ' ' '\n' | awk '{ n += $1 } END { print n + 0 }'; }
has_total() { [[ $(total_on "$1") == "$2" ]]; }

# Every body pulled from node I, sorted: "m-0 m-1 …".
bodies_on() {
	local node=$1 q base
	base=$(url "$node")
	for ((q = 0; q < queues; q++)); do
		api "$base/v1/topics/$topic/queues/$q/messages?offset=0&max_messages=1024" | jq -r '.messages[].body'
	done | sort -t- -k2 -n | tr '\n' ' '
}

expected_bodies() {
	local i
	for ((i = 0; i < $1; i++)); do printf 'm-%d ' "$i"; done
}

leader_id() { api "$(url "$1")/v1/cluster" | jq -er '.groups[0].leader_id // empty'; }

same_offsets() { [[ $(max_offsets "$1") == "$(max_offsets "$2")" ]]; }

phase "the README's Deploy block, as printed (image $tag, project $project)"
block=$(awk '
	$0 == "<!-- deploy-example:start compose -->" { inside = 1; next }
	inside && $0 == "<!-- deploy-example:end -->" { exit }
	inside && !/^```/ { print }
' "$repo/README.md")
[[ -n $block ]] || die "README.md has no deploy-example block"
if ! command -v docker-compose >/dev/null; then
	# The README says docker-compose; Compose v2 alone spells it `docker compose`.
	docker-compose() { docker compose "$@"; }
	export -f docker-compose
fi
if ! output=$(cd "$repo" && timeout 120 bash -euo pipefail -c "$block" 2>&1); then
	echo "$output"
	die "the README's Deploy block failed"
fi
echo "$output" | grep -v '^Creating\|^DEPRECATED\|^  \+Install the buildx\|^  \+https://docs.docker.com' || true
! grep -q '"code":"' <<<"$output" || die "the README's Deploy block printed an API error"
grep -q '"status":"FOUND"' <<<"$output" || die "the README's Deploy block did not pull its message"
grep -qx 401 <<<"$output" || die "the README's Deploy block did not show the 401 of a call without the token"
wait_for 60 "three healthy containers (ready: member of a group with a leader)" all_healthy
for i in 1 2 3; do
	read_url "$i" || die "node $i has no published port"
	echo "node$i: $(url "$i")"
done

phase "the cluster is secured: 401 without the token or with a wrong one; secrets in no configuration"
for f in cluster-secret admin-token; do
	[[ $(stat -c '%a %u' "$secrets/$f") == "400 10001" ]] ||
		die "$secrets/$f is $(stat -c '%a %u' "$secrets/$f"), not 0400 owned by the containers' user 10001"
done
(umask 077 && printf 'Authorization: Bearer %s\n' "$(head -n 1 "$secrets/admin-token")" >"$auth")
for i in 1 2 3; do
	[[ $(status_of "$(url "$i")/v1/topics") == 401 ]] || die "node $i answers /v1/topics without a token"
	[[ $(status_of -H @- "$(url "$i")/v1/topics" <<<"Authorization: Bearer mq_admin_wrong") == 401 ]] ||
		die "node $i takes a wrong token"
	[[ $(status_of -H @"$auth" "$(url "$i")/v1/topics") == 200 ]] || die "node $i refuses the admin token"
	# grep -f reads the values from the files: they are in no argv here either.
	if docker inspect "$(container "$i")" | grep -qF -f "$secrets/cluster-secret" -f "$secrets/admin-token"; then
		die "docker inspect of node $i shows the cluster secret or the admin token"
	fi
done

phase "peers resolve each other's service names inside the containers"
for i in 1 2 3; do
	for j in 1 2 3; do
		docker exec "$(container "$i")" /usr/local/bin/broker-probe "http://node$j:8080/health" >/dev/null ||
			die "node$i cannot reach http://node$j:8080 by name"
	done
done

phase "create a topic and send $batch messages through node 2's published port"
api -XPUT "$(url 1)/v1/topics/$topic" -d "{\"read_queue_nums\":$queues,\"write_queue_nums\":$queues}" |
	jq -e ".write_queue_nums == $queues" >/dev/null || die "creating the topic"
send 2 0 "$batch"

phase "pull every message through each node's published port"
for i in 1 2 3; do
	wait_for 20 "node $i to apply $batch messages" has_total "$i" "$batch"
	[[ $(bodies_on "$i") == "$(expected_bodies "$batch")" ]] || die "node $i serves: $(bodies_on "$i")"
done

phase "SIGKILL the leader's container"
leader=$(leader_id 1) || die "no leader known to node 1"
docker kill --signal KILL "$(container "$leader")" >/dev/null
others=()
for i in 1 2 3; do ((i == leader)) || others+=("$i"); done
echo "killed node $leader; survivors ${others[*]}"

phase "writes continue through node ${others[0]}"
send "${others[0]}" "$batch" "$batch"
new_leader=$(leader_id "${others[1]}") || die "no new leader known"
((new_leader != leader)) || die "node $leader still counts as the leader"
[[ $(docker inspect --format '{{.State.Running}}' "$(container "$leader")") == false ]] ||
	die "the killed container is running again already: the test would not show a catch-up"
echo "new leader: node $new_leader"

if [[ ${DEPLOY_TEST_SKIP_RESTART:-0} == 1 ]]; then
	phase "NOT restarting node $leader (DEPLOY_TEST_SKIP_RESTART=1)"
else
	phase "restart node $leader's container"
	compose start "node$leader" >/dev/null
fi

phase "node $leader catches up with leader $new_leader"
total=$((2 * batch))
# Its published port is a new ephemeral one after the restart.
wait_for 60 "node $leader to publish its port again" read_url "$leader"
wait_for 60 "node $leader to apply all $total messages" has_total "$leader" "$total"
wait_for 20 "node $leader's queues to equal the leader's" same_offsets "$leader" "$new_leader"
echo "max offsets: node $leader $(max_offsets "$leader") = node $new_leader $(max_offsets "$new_leader")"
[[ $(bodies_on "$leader") == "$(expected_bodies "$total")" ]] || die "node $leader serves: $(bodies_on "$leader")"
wait_for 30 "node $leader to be healthy" healthy "$leader"

phase "deploy-compose: passed"
