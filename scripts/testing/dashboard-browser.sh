#!/usr/bin/env bash
# The dashboard in a real browser, against a real three-node cluster:
#   - starts a cluster (scripts/cluster.sh, its own --dir), creates a topic, sends
#     messages and commits a consumer offset through the API;
#   - validates GET /openapi.json with openapi-spec-validator (PyPI, in a venv);
#   - checks that every metric the Grafana dashboard (deploy/grafana/) queries is
#     in a real /metrics scrape of the leader, and that the leader reports the
#     Raft lag of both followers;
#   - drives headless Chromium with chromedriver (Debian's chromium and
#     chromium-driver) through scripts/testing/dashboard_browser.py: nodes, the
#     topic and its message count, the consumer group, a reset-offset action
#     and a DLQ resend, each checked through the API, a query by key; saves a screenshot
#     (DASHBOARD_SCREENSHOT, default target/dashboard.png) and prints its path.
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

echo "--- a three-node cluster, a topic with 5 messages, a consumer group at offset 3"
"$repo/scripts/cluster.sh" start --dir "$work/cluster" >/dev/null
url=$("$repo/scripts/cluster.sh" url 1 --dir "$work/cluster")
topic=dash-orders
group=dash-billing
curl -sf -XPUT "$url/v1/topics/$topic" -d '{"read_queue_nums": 2, "write_queue_nums": 2}' >/dev/null
curl -sf -XPOST "$url/v1/topics/$topic/messages" -d '{"messages": [
	{"body": "one", "queue_id": 0}, {"body": "two", "queue_id": 0},
	{"body": "keyed message", "keys": ["dash-key"], "queue_id": 0},
	{"body": "four", "queue_id": 1}, {"body": "five", "queue_id": 1}]}' >/dev/null
curl -sf -XPUT "$url/v1/groups/$group/offsets/$topic/0" -d '{"offset": 3}' >/dev/null
# "five" given back straight to the dead-letter topic %DLQ%dash-billing.
dead=$(curl -sf -XPOST "$url/v1/groups/$group/retry" -d "{\"topic\": \"$topic\", \"queue_id\": 1, \"queue_offset\": 1, \"delay_level\": -1}")
dlq_id=$(python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["dead_letter"], a; print(a["msg_id"])' <<<"$dead") ||
	fail "the give-back did not dead-letter: $dead"

echo "--- /openapi.json validates (openapi-spec-validator)"
if ! "$venv/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check openapi-spec-validator
fi
curl -sf "$url/openapi.json" >"$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

echo "--- every metric the Grafana dashboard uses is in a real scrape of the leader"
leader=$(curl -sf "$url/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["groups"][0]["leader"])')
[[ $leader == http* ]] || fail "no leader URL in /v1/cluster"
# Traffic through the leader, so that per-topic series exist there.
curl -sf "$leader/v1/topics/$topic/queues/0/messages?offset=0" >/dev/null
curl -sf "$leader/metrics" >"$work/metrics.txt"
python3 "$repo/scripts/testing/grafana_metrics.py" "$repo/deploy/grafana/broker-dashboard.json" "$work/metrics.txt"

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
python3 "$repo/scripts/testing/dashboard_browser.py" "http://127.0.0.1:$port" "$url" "$topic" 5 "$group" "$screenshot" "$dlq_id"
[[ -s $screenshot ]] || fail "no screenshot at $screenshot"
echo "dashboard-browser: passed; screenshot: $screenshot"
