#!/usr/bin/env bash
# Runs the README's example blocks (between `<!-- example:start NAME -->` and
# `<!-- example:end -->`), exactly as printed, against a fresh, secured three-node
# cluster in a scratch directory. Each block runs in its own process, by its
# fence's language: ```sh in bash, ```python in python3, ```js in node as an ES
# module; the Python and JavaScript examples must also end with every receipt
# acked ("acked ['OK']", as each prints it). The
# quickstart's first line, eval "$(scripts/cluster.sh env)", is run once here as
# in a reader's shell: it exports MQ_SERVER and MQ_TOKEN and puts the mqctl that
# `start` built first on PATH; nothing else is added, so an example that needs
# more than a reader who pasted that line has fails (a block that calls the API
# without passing the token gets 401). Fails if a block fails or prints an API
# error body, if mqctl is found anywhere but next to the broker, or if the
# cluster answers without a token.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
cleanup() {
	(cd "$work" && scripts/cluster.sh clean >/dev/null 2>&1) || true
	rm -rf -- "$work"
}
trap cleanup EXIT

# As `cluster.sh start` builds them on a fresh clone: the broker, and mqctl next
# to it (start builds only when BROKER_BIN is unset; here it is set, to reuse
# the test run's build).
export BROKER_BIN=${BROKER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/broker}
if [[ ! -x $BROKER_BIN ]]; then
	(cd "$repo" && cargo build --quiet --release -p broker --bin broker)
fi
if [[ ! -x $(dirname -- "$BROKER_BIN")/mqctl ]]; then
	(cd "$repo" && cargo build --quiet --release -p mqctl --bin mqctl)
fi
[[ -x $(dirname -- "$BROKER_BIN")/mqctl ]] || { echo "readme-examples: no mqctl next to $BROKER_BIN" >&2; exit 1; }

# The examples say `scripts/cluster.sh` and use its default ./.cluster directory:
# run them from a scratch directory that has the repository's scripts.
ln -s "$repo/scripts" "$work/scripts"
cd "$work"
unset MQ_SERVER MQ_TOKEN MQ_CA_FILE MQ_TOKEN_FILE
scripts/cluster.sh start >/dev/null
first=$(awk '$0 == "<!-- example:start quickstart -->" { inside = 1; next } inside && !/^```/ { print; exit }' "$repo/README.md")
# shellcheck disable=SC2016 # the line as printed, not expanded
[[ $first == 'eval "$(scripts/cluster.sh env)"'* ]] ||
	{ echo "readme-examples: the quickstart no longer begins with eval \"\$(scripts/cluster.sh env)\" (update this script with it)" >&2; exit 1; }
eval "$(scripts/cluster.sh env)"
[[ -n ${MQ_TOKEN:-} && -n ${MQ_SERVER:-} ]] || { echo "readme-examples: cluster.sh env set no MQ_TOKEN or MQ_SERVER" >&2; exit 1; }
[[ $(command -v mqctl) -ef $(dirname -- "$BROKER_BIN")/mqctl ]] ||
	{ echo "readme-examples: after cluster.sh env, mqctl is $(command -v mqctl || echo missing), not the one next to the broker" >&2; exit 1; }

# A block marked `<!-- example:start NAME needs-root -->` (partitions, say) runs
# only as root; otherwise it is skipped with a line, and named in
# $TEST_SKIP_LOG when scripts/test.sh gives one, for its count.
names=$(sed -n 's/^<!-- example:start \([a-z0-9-]*\)\( needs-root\)\{0,1\} -->$/\1/p' "$repo/README.md")
[[ -n $names ]] || { echo "readme-examples: no example blocks in README.md" >&2; exit 1; }
failed=0
command -v node >/dev/null || { echo "readme-examples: node is not installed (apt-get install nodejs)" >&2; exit 1; }
# What each language's example must print at its end (a run that received nothing
# would ack nothing).
declare -A must_print=([python]="acked ['OK']" [js]="acked [ 'OK' ]")
for name in $names; do
	if grep -qxF "<!-- example:start $name needs-root -->" "$repo/README.md" && ((EUID != 0)); then
		echo "--- README example '$name': SKIPPED (it needs root)"
		[[ -z ${TEST_SKIP_LOG:-} ]] || echo "README example '$name' (needs root)" >>"$TEST_SKIP_LOG"
		continue
	fi
	block=$(awk -v name="$name" '
		$0 == "<!-- example:start " name " -->" || $0 == "<!-- example:start " name " needs-root -->" { inside = 1; next }
		inside && $0 == "<!-- example:end -->" { exit }
		inside && !/^```/ { print }
	' "$repo/README.md")
	lang=$(awk -v name="$name" '
		$0 == "<!-- example:start " name " -->" || $0 == "<!-- example:start " name " needs-root -->" { inside = 1; next }
		inside && /^```/ { sub(/^```/, ""); print; exit }
	' "$repo/README.md")
	echo "--- README example '$name' ($lang)"
	case $lang in
	sh | bash) run=(bash -euo pipefail -c "$block") ;;
	python) run=(python3 -c "$block") ;;
	js) run=(node --input-type=module -e "$block") ;;
	*)
		echo "readme-examples: example '$name' is in '$lang', which this script cannot run" >&2
		failed=1
		continue
		;;
	esac
	if ! output=$("${run[@]}" 2>&1); then
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
	if [[ -n ${must_print[$lang]:-} ]] && ! grep -qF -- "${must_print[$lang]}" <<<"$output"; then
		echo "readme-examples: example '$name' did not print \"${must_print[$lang]}\"" >&2
		failed=1
	fi
done
url=$(scripts/cluster.sh url)
grep -q '"status":"FOUND"' <<<"$(curl -s -H @- "$url/v1/topics/orders/queues/1/messages?offset=0" <<<"Authorization: Bearer $MQ_TOKEN")" ||
	{ echo "readme-examples: the quickstart message is not readable" >&2; failed=1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "$url/v1/topics/orders/queues/1/messages?offset=0") == 401 ]] ||
	{ echo "readme-examples: the cluster answers without a token" >&2; failed=1; }
exit "$failed"
