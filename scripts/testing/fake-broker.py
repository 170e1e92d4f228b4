#!/usr/bin/env python3
"""A stand-in for target/release/broker, for testing scripts/cluster.sh itself.

It takes the broker's command-line flags and serves the three endpoints the
script relies on: GET /health, GET /ready and GET /v1/cluster. There is no Raft:
every 200 ms each node probes its group's peers' /health from inside its own
network namespace, and the smallest id among the nodes it can reach becomes the
leader if they are a majority of the group. So a partition made with iptables
shows up here as it would in the real broker (the isolated side loses its
leader and /ready answers 503), and pause/kill show up as unreachable peers.

The term is kept in DATA_DIR/fake-broker-state.json, so a restart proves the
data directory survived. Exits 0 on SIGTERM. Python 3 standard library only.

    BROKER_BIN=scripts/testing/fake-broker.py scripts/cluster.sh start
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROBE_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 0.3


def log(node_id, message):
    print(f"{time.strftime('%H:%M:%S')} fake-broker node {node_id}: {message}",
          file=sys.stderr, flush=True)


def parse_peers(text):
    """'1=http://a:1,2=http://b:2' -> {1: 'http://a:1', 2: 'http://b:2'}"""
    peers = {}
    for item in filter(None, text.split(",")):
        node_id, sep, url = item.partition("=")
        if not sep or not node_id.strip().isdigit() or not url.startswith("http"):
            raise SystemExit(f"fake-broker: bad --peers entry {item!r}")
        peers[int(node_id)] = url.rstrip("/")
    return peers


class Node:
    def __init__(self, args):
        self.node_id = args.node_id
        self.group = args.group
        self.url = args.advertise_url.rstrip("/")
        self.peers = parse_peers(args.peers)
        self.peers.setdefault(self.node_id, self.url)
        self.state_file = os.path.join(args.data_dir, "fake-broker-state.json")
        self.lock = threading.Lock()
        self.reachable = {self.node_id}
        self.leader_id = None
        self.term = self._load_term()
        # Proxies from the environment must not carry node-to-node traffic.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _load_term(self):
        try:
            with open(self.state_file, encoding="utf-8") as f:
                return int(json.load(f)["term"])
        except FileNotFoundError:
            return 0

    def _save_term(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"term": self.term}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def _probe(self, url):
        try:
            with self.opener.open(url + "/health", timeout=PROBE_TIMEOUT_S) as response:
                return response.status == 200
        except OSError:
            return False

    def probe_forever(self, stop):
        others = {i: u for i, u in self.peers.items() if i != self.node_id}
        with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
            while not stop.is_set():
                results = dict(zip(others, pool.map(self._probe, others.values())))
                reachable = {self.node_id} | {i for i, ok in results.items() if ok}
                quorum = len(reachable) * 2 > len(self.peers)
                leader = min(reachable) if quorum else None
                with self.lock:
                    self.reachable = reachable
                    if leader != self.leader_id:
                        self.leader_id = leader
                        if leader is not None:
                            self.term += 1
                            self._save_term()
                        log(self.node_id, f"leader is now {leader} (term {self.term}), "
                                          f"reachable {sorted(reachable)}")
                stop.wait(PROBE_INTERVAL_S)

    def cluster_view(self):
        with self.lock:
            leader_id, term, reachable = self.leader_id, self.term, set(self.reachable)
        nodes = []
        for i, url in sorted(self.peers.items()):
            if i == leader_id:
                role = "leader"
            elif i == self.node_id:
                role = "follower" if leader_id is not None else "candidate"
            else:
                role = "follower" if i in reachable else "unknown"
            nodes.append({"id": i, "url": url, "role": role, "term": term,
                          "last_log_index": 0, "applied_index": 0,
                          "reachable": i in reachable})
        return {"node_id": self.node_id, "group": self.group,
                "groups": [{"group": self.group, "leader_id": leader_id,
                            "leader": self.peers.get(leader_id), "nodes": nodes}]}


def make_handler(node):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(200, {"status": "ok"})
            elif path == "/ready":
                view = node.cluster_view()["groups"][0]
                if view["leader_id"] is None:
                    self._send(503, {"code": "UNAVAILABLE", "message": "no leader",
                                     "leader": None})
                else:
                    self._send(200, {"status": "ready", "leader": view["leader"]})
            elif path == "/v1/cluster":
                self._send(200, node.cluster_view())
            else:
                self._send(404, {"code": "BAD_REQUEST",
                                 "message": f"fake-broker does not serve {path}",
                                 "leader": None})

        def log_message(self, format, *args):  # noqa: A002 (signature is http.server's)
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description="stand-in broker for testing cluster.sh")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--listen", required=True, help="IP:PORT")
    parser.add_argument("--advertise-url", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--cluster-secret")
    parser.add_argument("--config")
    args = parser.parse_args()

    host, _, port = args.listen.rpartition(":")
    os.makedirs(args.data_dir, exist_ok=True)
    node = Node(args)
    server = ThreadingHTTPServer((host, int(port)), make_handler(node))
    server.daemon_threads = True

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    prober = threading.Thread(target=node.probe_forever, args=(stop,), daemon=True)
    prober.start()
    log(node.node_id, f"group {args.group} listening on {args.listen}, "
                      f"peers {sorted(node.peers)}, seeds {len(args.seeds.split(','))}, "
                      f"term {node.term}")
    while not stop.wait(0.1):
        pass
    log(node.node_id, "SIGTERM: shutting down")
    server.shutdown()
    prober.join(timeout=2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
