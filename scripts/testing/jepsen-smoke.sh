#!/usr/bin/env bash
# A short Jepsen-style run for CI: 50 s of mixed faults at a low rate against a
# real three-node cluster. Exits non-zero on any anomaly, on an inconclusive run
# (too little work, no fault injected) and when the run itself fails; the report
# and the node logs stay in $JEPSEN_SMOKE_OUT (default target/jepsen-smoke).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${JEPSEN_SMOKE_OUT:-target/jepsen-smoke}
status=0
# The seed goes in every verdict line, so a CI log that shows only its tail still
# says how to replay the run (JEPSEN_SMOKE_SEED=N).
seed=${JEPSEN_SMOKE_SEED:-$RANDOM}
scripts/jepsen.sh --duration 50s --nemesis mixed --rate 20 --concurrency 4 \
	--seed "$seed" --fault-time 4s..8s --quiet-time 3s..5s \
	--out "$out" || status=$?
case $status in
0) echo "jepsen smoke: clean, seed $seed (report: $out/report.txt)" ;;
1) echo "jepsen smoke: ANOMALIES, seed $seed (report: $out/report.txt, history: $out/history.jsonl)" >&2 ;;
2) echo "jepsen smoke: INCONCLUSIVE, seed $seed (report: $out/report.txt)" >&2 ;;
*) echo "jepsen smoke: the run failed, seed $seed (status $status; logs under $out/cluster)" >&2 ;;
esac
# Leave no namespaces behind; the data was only needed for a post-mortem.
scripts/cluster.sh clean --dir "$out/cluster" >/dev/null 2>&1 || true
exit "$status"
