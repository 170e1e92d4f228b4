#!/usr/bin/env bash
# The dashboard in a real browser, against a real three-node cluster:
#   - starts a secured cluster (scripts/cluster.sh, its own --dir), creates a
#     topic, sends messages and commits a consumer offset through the API with the
#     cluster's admin token (read by curl from a 0600 header file, never argv);
#   - validates GET /openapi.json with openapi-spec-validator (PyPI, in a venv);
#   - scrapes the leader's /metrics as deploy/prometheus/prometheus.yml tells
#     Prometheus to (path, bearer token from a credentials file) and checks that
#     every metric the Grafana dashboard (deploy/grafana/) queries is in it, and
#     that the leader reports the Raft lag of both followers;
#   - drives headless Chromium with chromedriver (Debian's chromium and
#     chromium-driver) through scripts/testing/dashboard_browser.py: the sign-in
#     form (a wrong token is refused, the admin token is taken), nodes, the topic
#     and its message count, the consumer group, a reset-offset action and a DLQ
#     resend, each checked through the API, a query by key, then log out and sign
#     in as a user without cluster rights (the cluster section says NO_PERMISSION,
#     its topics still show, the charts say NO_PERMISSION); meanwhile a thread of
#     the script keeps traffic flowing on a topic of its own (sends, pulls with
#     offset commits, receives and acks), and every chart (send and pull rate per
#     topic, consumer lag, send and Raft fsync latency, receive and ack: drawn from
#     each node's metrics) must draw a line of two points or more, the applied
#     column a number for every node; saves a screenshot at 1400x1000 once the
#     charts are drawn (DASHBOARD_SCREENSHOT, default target/dashboard.png) and
#     prints its path.
# Cleans up the cluster and chromedriver on every exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
screenshot=${DASHBOARD_SCREENSHOT:-$target/dashboard.png}
venv=${TESTING_VENV:-$target/testing-venv}
work=$(mktemp -d)
driver_pid=
cleanup() {
	[[ -n $driver_pid ]] && kill "$driver_pid" 2>/dev/null || true
	"$repo/scripts/cluster.sh" clean --dir "$work/cluster" >/dev/null 2>&1 || true
	rm -rf -- "$work"
}
trap cleanup EXIT
fail() { echo "dashboard-browser: FAILED: $*" >&2; exit 1; }

for tool in chromium chromedriver curl python3; do
	command -v "$tool" >/dev/null || fail "$tool is not installed (.ci/run installs chromium and chromium-driver)"
done
export BROKER_BIN=${BROKER_BIN:-$target/release/broker}
if [[ ! -x $BROKER_BIN ]]; then
	(cd "$repo" && cargo build --quiet --release -p broker --bin broker)
fi

echo "--- a secured three-node cluster, a topic with 5 messages, a consumer group at offset 3"
"$repo/scripts/cluster.sh" start --dir "$work/cluster" >/dev/null
url=$("$repo/scripts/cluster.sh" url 1 --dir "$work/cluster")
token_file=$work/cluster/token
[[ -s $token_file ]] || fail "cluster.sh wrote no token file"
auth=$work/auth-header
(umask 077 && printf 'Authorization: Bearer %s\n' "$(head -n 1 "$token_file")" >"$auth")
# The API with the admin token; bodies are JSON (415 otherwise).
api() { curl -sf -H @"$auth" -H 'Content-Type: application/json' "$@"; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "$url/v1/topics") == 401 ]] || fail "the cluster answers without a token"
topic=dash-orders
group=dash-billing
api -XPUT "$url/v1/topics/$topic" -d '{"read_queue_nums": 2, "write_queue_nums": 2}' >/dev/null
api -XPOST "$url/v1/topics/$topic/messages" -d '{"messages": [
	{"body": "one", "queue_id": 0}, {"body": "two", "queue_id": 0},
	{"body": "keyed message", "keys": ["dash-key"], "queue_id": 0},
	{"body": "four", "queue_id": 1}, {"body": "five", "queue_id": 1}]}' >/dev/null
api -XPUT "$url/v1/groups/$group/offsets/$topic/0" -d '{"offset": 3}' >/dev/null
# "five" given back straight to the dead-letter topic %DLQ%dash-billing.
dead=$(api -XPOST "$url/v1/groups/$group/retry" -d "{\"topic\": \"$topic\", \"queue_id\": 1, \"queue_offset\": 1, \"delay_level\": -1}")
dlq_id=$(python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["dead_letter"], a; print(a["msg_id"])' <<<"$dead") ||
	fail "the give-back did not dead-letter: $dead"

echo "--- /openapi.json validates (openapi-spec-validator)"
if ! "$venv/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check openapi-spec-validator
fi
api "$url/openapi.json" >"$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

echo "--- every metric the Grafana dashboard uses is in a scrape of the leader as Prometheus makes it"
leader=$(api "$url/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["groups"][0]["leader"])')
[[ $leader == http* ]] || fail "no leader URL in /v1/cluster"
# Traffic through the leader, so that per-topic series exist there.
api "$leader/v1/topics/$topic/queues/0/messages?offset=0" >/dev/null
"$venv/bin/python" "$repo/scripts/testing/prometheus_scrape.py" "$repo/deploy/prometheus/prometheus.yml" \
	"$leader" "$token_file" >"$work/metrics.txt"
python3 "$repo/scripts/testing/grafana_metrics.py" "$repo/deploy/grafana/broker-dashboard.json" "$work/metrics.txt"

echo "--- a user without cluster rights, for the 403 check in the browser"
viewer=$(api -XPOST "$url/v1/users" -d "{\"name\": \"dash-viewer\", \"permissions\": [{\"resource\": \"topic:$topic\", \"actions\": [\"sub\"]}]}")
(umask 077 && python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$viewer" >"$work/viewer-token") ||
	fail "creating the viewer user: $viewer"

echo "--- headless Chromium through chromedriver"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chromedriver --port="$port" >"$work/chromedriver.log" 2>&1 &
driver_pid=$!
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$port/status" | grep -q '"ready": *true' && break
	sleep 0.1
done
curl -sf "http://127.0.0.1:$port/status" | grep -q '"ready": *true' || { cat "$work/chromedriver.log" >&2; fail "chromedriver did not start"; }
mkdir -p "$(dirname "$screenshot")"
rm -f "$screenshot"
python3 "$repo/scripts/testing/dashboard_browser.py" "http://127.0.0.1:$port" "$url" "$topic" 5 "$group" "$screenshot" "$dlq_id" \
	"$token_file" "$work/viewer-token"
[[ -s $screenshot ]] || fail "no screenshot at $screenshot"
echo "dashboard-browser: passed; screenshot: $screenshot"
