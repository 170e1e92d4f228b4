#!/usr/bin/env python3
"""Checks a Grafana dashboard against a real /metrics scrape.

usage: grafana_metrics.py DASHBOARD_JSON METRICS_TEXT

Every `broker_*` metric name in a panel query (`expr`) must be a sample name in
the scrape (histogram queries name `_bucket`/`_sum`/`_count`, which are sample
names too), and the scrape, taken from a three-node group's leader, must carry
the Raft lag of two followers. Exits non-zero naming what is missing.
"""

import json
import re
import sys


def exprs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def main():
    dashboard_path, metrics_path = sys.argv[1:3]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(metrics_path) as f:
        text = f.read()
    samples = set()
    follower_lag = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        samples.add(name)
        if name == "broker_raft_follower_lag_entries":
            follower_lag += 1
    queries = list(exprs(dashboard))
    if len(queries) < 10:
        sys.exit(f"grafana-metrics: only {len(queries)} queries found in {dashboard_path}")
    used = set()
    for query in queries:
        # Label names (in `by (…)` clauses and `{…}` matchers) are not metrics.
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", query)
        bare = re.sub(r"\{[^}]*\}", "", bare)
        used.update(re.findall(r"\bbroker_[a-z0-9_]+", bare))
    missing = sorted(used - samples)
    if missing:
        sys.exit(f"grafana-metrics: the dashboard queries metrics the broker does not export: {missing}")
    if follower_lag != 2:
        sys.exit(f"grafana-metrics: the leader reports {follower_lag} follower lag series, expected 2")
    print(f"grafana-metrics: ok: {len(queries)} queries over {len(used)} metrics, all exported; "
          f"the leader reports both followers' lag")


if __name__ == "__main__":
    main()
