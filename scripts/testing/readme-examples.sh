#!/usr/bin/env bash
# Runs the README's example blocks (between `<!-- example:start NAME -->` and
# `<!-- example:end -->`), exactly as printed, against a fresh, secured three-node
# cluster in a scratch directory, with `mqctl` on PATH (MQCTL_BIN, default the
# release build). Each block runs in its own shell; MQ_TOKEN is exported once, as
# the quickstart's first line does in a reader's shell, so a block that calls the
# API without passing the token gets 401 and fails. Fails if a block fails or
# prints an API error body, or if the cluster answers without a token.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
cleanup() {
	(cd "$work" && scripts/cluster.sh clean >/dev/null 2>&1) || true
	rm -rf -- "$work"
}
trap cleanup EXIT

export BROKER_BIN=${BROKER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/broker}
if [[ ! -x $BROKER_BIN ]]; then
	(cd "$repo" && cargo build --quiet --release -p broker --bin broker)
fi
# The `mqctl` examples call the command by name, as a user who installed it would:
# put the release build (or MQCTL_BIN, e.g. a debug build) first on PATH.
MQCTL_BIN=${MQCTL_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/mqctl}
if [[ ! -x $MQCTL_BIN ]]; then
	(cd "$repo" && cargo build --quiet --release -p mqctl --bin mqctl)
fi
[[ $(basename -- "$MQCTL_BIN") == mqctl ]] || { echo "readme-examples: MQCTL_BIN must name a file called mqctl" >&2; exit 1; }
PATH="$(cd "$(dirname -- "$MQCTL_BIN")" && pwd):$PATH"
export PATH

# The examples say `scripts/cluster.sh` and use its default ./.cluster directory:
# run them from a scratch directory that has the repository's scripts.
ln -s "$repo/scripts" "$work/scripts"
cd "$work"
scripts/cluster.sh start >/dev/null
MQ_TOKEN=$(scripts/cluster.sh token)
export MQ_TOKEN
unset MQ_SERVER MQ_CA_FILE MQ_TOKEN_FILE

names=$(sed -n 's/^<!-- example:start \([a-z0-9-]*\) -->$/\1/p' "$repo/README.md")
[[ -n $names ]] || { echo "readme-examples: no example blocks in README.md" >&2; exit 1; }
failed=0
for name in $names; do
	block=$(awk -v name="$name" '
		$0 == "<!-- example:start " name " -->" { inside = 1; next }
		inside && $0 == "<!-- example:end -->" { exit }
		inside && !/^```/ { print }
	' "$repo/README.md")
	echo "--- README example '$name'"
	if ! output=$(bash -euo pipefail -c "$block" 2>&1); then
		echo "$output"
		echo "readme-examples: example '$name' failed" >&2
		failed=1
		continue
	fi
	echo "$output"
	if grep -q '"code":"' <<<"$output"; then
		echo "readme-examples: example '$name' printed an API error" >&2
		failed=1
	fi
done
url=$(scripts/cluster.sh url)
grep -q '"status":"FOUND"' <<<"$(curl -s -H @- "$url/v1/topics/orders/queues/1/messages?offset=0" <<<"Authorization: Bearer $MQ_TOKEN")" ||
	{ echo "readme-examples: the quickstart message is not readable" >&2; failed=1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "$url/v1/topics/orders/queues/1/messages?offset=0") == 401 ]] ||
	{ echo "readme-examples: the cluster answers without a token" >&2; failed=1; }
exit "$failed"
