#!/usr/bin/env python3
"""Scrapes one broker node the way a Prometheus scrape config says to.

usage: prometheus_scrape.py PROMETHEUS_YML NODE_URL CREDENTIALS_FILE

Takes the `broker` job of PROMETHEUS_YML, checks that it authorizes with a
bearer token from a credentials file (the token is never written into the
config), and GETs NODE_URL + metrics_path with `Authorization: <type> <first
line of CREDENTIALS_FILE>`, as Prometheus would with the file mounted at the
configured path. Prints the scrape on stdout; exits non-zero naming what is
wrong with the config or the answer. Needs PyYAML.
"""

import sys
import urllib.error
import urllib.request

import yaml


def main():
    config_path, node, credentials = sys.argv[1:4]
    with open(config_path) as f:
        config = yaml.safe_load(f)
    jobs = [j for j in config.get("scrape_configs", []) if j.get("job_name") == "broker"]
    if len(jobs) != 1:
        sys.exit(f"prometheus-scrape: {config_path} has {len(jobs)} `broker` jobs, expected 1")
    job = jobs[0]
    auth = job.get("authorization") or {}
    if auth.get("type", "Bearer") != "Bearer" or not auth.get("credentials_file"):
        sys.exit(f"prometheus-scrape: the broker job must authorize with a Bearer "
                 f"credentials_file (GET /metrics needs a token): {auth}")
    if "credentials" in auth or "bearer_token" in job:
        sys.exit("prometheus-scrape: a token written into the config; use credentials_file")
    with open(credentials) as f:
        token = f.readline().strip()
    url = node.rstrip("/") + job.get("metrics_path", "/metrics")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            sys.stdout.write(response.read().decode())
    except urllib.error.HTTPError as e:
        sys.exit(f"prometheus-scrape: GET {url}: {e.code} {e.read().decode(errors='replace')}")


if __name__ == "__main__":
    main()
