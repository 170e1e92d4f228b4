#!/usr/bin/env python3
"""A stand-in for target/release/broker, for testing scripts/cluster.sh itself.

It takes the broker's command-line flags and serves the three endpoints the
script relies on: GET /health, GET /ready and GET /v1/cluster. There is no Raft:
every 200 ms each node probes its group's peers' GET /internal/health from inside
its own network namespace, and the smallest id among the nodes it can reach
becomes the leader if they are a majority of the group. It also probes the seeds
of the other groups: /v1/cluster lists a group of theirs REGISTRATION_DELAY_S
after one of its nodes first answered with a leader, as the real broker lists a
group once it registered. So a partition made with
iptables shows up here as it would in the real broker (the isolated side loses its
leader and /ready answers 503), and pause/kill show up as unreachable peers.

Security as the real broker's (shared/API.md "Security"), so cluster.sh is tested
against the same rules:
  * Secured unless --insecure: the cluster secret comes from the file named by
    BROKER_SECURITY_CLUSTER_SECRET_FILE (or BROKER_CLUSTER_SECRET), the admin token
    from BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE; each at least 16 bytes, else the
    node exits 2 naming the key. There is no flag for either.
  * /internal/ wants the secret (x-cluster-secret), which nodes send each other:
    nodes given different secrets never see each other and elect no leader.
  * GET /v1/cluster wants `Authorization: Bearer TOKEN` (401 in the API's error
    shape otherwise); /health and /ready are open.
  * BROKER_TLS_CERT_FILE and BROKER_TLS_KEY_FILE: the listener speaks only TLS and
    the advertised URL must be https://; BROKER_TLS_CA_FILE is the CA peers are
    checked against.

The term is kept in DATA_DIR/fake-broker-state.json, so a restart proves the
data directory survived. Exits 0 on SIGTERM. Python 3 standard library only.

    BROKER_BIN=scripts/testing/fake-broker.py scripts/cluster.sh start
"""

import argparse
import hmac
import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROBE_INTERVAL_S = 0.2
# A group is listed this long after one of its nodes first answered with a
# leader: the real broker learns other groups from registrations, which come a
# little after their elections (cluster.sh start must wait for them).
REGISTRATION_DELAY_S = 1.5
PROBE_TIMEOUT_S = 0.3
MIN_SECRET_BYTES = 16
CONFIG_ERROR = 2


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


def read_secret(key, env_file, env_value=None):
    """The first line of the file named by env_file (or the value of env_value)."""
    path = os.environ.get(env_file)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.readline().strip()
        except OSError as e:
            config_error(key, f"{path}: {e}")
        if not value:
            config_error(key, f"{path} is empty")
    else:
        value = os.environ.get(env_value, "") if env_value else ""
    if value and len(value.encode()) < MIN_SECRET_BYTES:
        config_error(key, f"must be at least {MIN_SECRET_BYTES} bytes")
    return value or None


def config_error(key, reason):
    print(f"fake-broker: configuration error: {key}: {reason}", file=sys.stderr, flush=True)
    sys.exit(CONFIG_ERROR)


class Security:
    """What the node wants from peers and clients, from the environment."""

    def __init__(self, insecure, advertise_url):
        self.insecure = insecure
        self.secret = read_secret("security.cluster_secret_file",
                                  "BROKER_SECURITY_CLUSTER_SECRET_FILE", "BROKER_CLUSTER_SECRET")
        self.token = read_secret("security.bootstrap_token_file",
                                 "BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE")
        if not insecure and self.secret is None:
            config_error("security.cluster_secret_file",
                         "a cluster secret is required, or run with --insecure")
        if not insecure and self.token is None:
            config_error("security.bootstrap_token_file",
                         "a bootstrap admin token file is required, or run with --insecure")
        cert = os.environ.get("BROKER_TLS_CERT_FILE")
        key = os.environ.get("BROKER_TLS_KEY_FILE")
        if bool(cert) != bool(key):
            config_error("tls.key_file" if cert else "tls.cert_file", "set both or neither")
        self.server_context = None
        if cert:
            if not advertise_url.startswith("https://"):
                config_error("advertise_url", "must be https:// when the node serves TLS")
            self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_context.load_cert_chain(cert, key)
        ca = os.environ.get("BROKER_TLS_CA_FILE")
        self.client_context = ssl.create_default_context(cafile=ca) if ca else None

    def peer_headers(self):
        return {"x-cluster-secret": self.secret} if self.secret else {}

    def peer_ok(self, headers):
        if self.secret is None:
            return True
        return hmac.compare_digest(headers.get("x-cluster-secret", ""), self.secret)

    def client_ok(self, headers):
        if self.insecure:
            return True
        given = headers.get("Authorization", "")
        return self.token is not None and hmac.compare_digest(given, f"Bearer {self.token}")


class Node:
    def __init__(self, args, security):
        self.node_id = args.node_id
        self.group = args.group
        self.url = args.advertise_url.rstrip("/")
        self.peers = parse_peers(args.peers)
        self.peers.setdefault(self.node_id, self.url)
        own = set(self.peers.values())
        self.seeds = [u.rstrip("/") for u in args.seeds.split(",")
                      if u and u.rstrip("/") not in own]
        # Other groups as their nodes last described them: name -> group view,
        # and when each was first seen.
        self.other_groups = {}
        self.first_seen = {}
        self.state_file = os.path.join(args.data_dir, "fake-broker-state.json")
        self.lock = threading.Lock()
        self.reachable = {self.node_id}
        self.leader_id = None
        self.term = self._load_term()
        self.security = security
        # Proxies from the environment must not carry node-to-node traffic.
        handlers = [urllib.request.ProxyHandler({})]
        if security.client_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=security.client_context))
        self.opener = urllib.request.build_opener(*handlers)

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
        return self._health(url) is not None

    def _health(self, url):
        """A node's /internal/health answer, or None when it does not answer."""
        request = urllib.request.Request(url + "/internal/health",
                                         headers=self.security.peer_headers())
        try:
            with self.opener.open(request, timeout=PROBE_TIMEOUT_S) as response:
                return json.load(response) if response.status == 200 else None
        except (OSError, ValueError):
            return None

    def health(self):
        with self.lock:
            leader_id = self.leader_id
        return {"status": "ok", "group": self.group, "leader_id": leader_id,
                "leader": self.peers.get(leader_id)}

    def probe_forever(self, stop):
        others = {i: u for i, u in self.peers.items() if i != self.node_id}
        workers = max(1, len(others) + len(self.seeds))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while not stop.is_set():
                seen = {}
                for answer in pool.map(self._health, self.seeds):
                    if answer and answer.get("leader_id") is not None:
                        seen[answer["group"]] = {
                            "group": answer["group"], "leader_id": answer["leader_id"],
                            "leader": answer["leader"], "nodes": []}
                with self.lock:
                    self.other_groups.update(seen)
                    for name in seen:
                        self.first_seen.setdefault(name, time.monotonic())
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
            registered = time.monotonic() - REGISTRATION_DELAY_S
            others = [view for name, view in sorted(self.other_groups.items())
                      if name != self.group and self.first_seen[name] <= registered]
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
                            "leader": self.peers.get(leader_id), "nodes": nodes}] + others}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A plain-HTTP client on the TLS port, or one that hung up: nothing to report.
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return
        super().handle_error(request, client_address)


def make_handler(node):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path.startswith("/internal/") and not node.security.peer_ok(self.headers):
                self._send(401, {"code": "UNAUTHORIZED", "message": "cluster secret required",
                                 "leader": None})
            elif path == "/health":
                self._send(200, {"status": "ok"})
            elif path == "/internal/health":
                self._send(200, node.health())
            elif path == "/ready":
                view = node.cluster_view()["groups"][0]
                if view["leader_id"] is None:
                    self._send(503, {"code": "UNAVAILABLE", "message": "no leader",
                                     "leader": None})
                else:
                    self._send(200, {"status": "ready", "leader": view["leader"]})
            elif path == "/v1/cluster" and not node.security.client_ok(self.headers):
                self._send(401, {"code": "UNAUTHORIZED",
                                 "message": "this endpoint needs `Authorization: Bearer <token>`",
                                 "leader": None}, {"WWW-Authenticate": "Bearer"})
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
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--config")
    args = parser.parse_args()

    security = Security(args.insecure, args.advertise_url)
    host, _, port = args.listen.rpartition(":")
    os.makedirs(args.data_dir, exist_ok=True)
    node = Node(args, security)
    server = Server((host, int(port)), make_handler(node))
    if security.server_context is not None:
        # Handshakes happen in the handler threads (a plain-HTTP client fails there).
        server.socket = security.server_context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    prober = threading.Thread(target=node.probe_forever, args=(stop,), daemon=True)
    prober.start()
    log(node.node_id, f"group {args.group} listening on {args.listen}, "
                      f"peers {sorted(node.peers)}, seeds {len(args.seeds.split(','))}, "
                      f"term {node.term}, "
                      f"{'INSECURE' if args.insecure else 'secured'}"
                      f"{', tls' if security.server_context else ''}")
    while not stop.wait(0.1):
        pass
    log(node.node_id, "SIGTERM: shutting down")
    server.shutdown()
    prober.join(timeout=2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
