#!/usr/bin/env python3
"""Drives headless Chromium through chromedriver's W3C WebDriver protocol (plain
HTTP, standard library only) against the dashboard of a running cluster.

usage: dashboard_browser.py DRIVER_URL NODE_URL TOPIC MESSAGES GROUP SCREENSHOT DLQ_MSG_ID
                            ADMIN_TOKEN_FILE VIEWER_TOKEN_FILE

The cluster is secured: the script's own API calls send the admin token, and the
page is signed in through its form. Checks, each with a deadline (the page
refreshes every 3 s):
  0. the page asks for a token and shows no data; a wrong token is refused with
     UNAUTHORIZED; the admin token signs in and is kept in sessionStorage only;
  1. the cluster table shows three nodes of one group, exactly one of them leader;
  2. the topics table shows TOPIC with MESSAGES messages;
  3. the consumer-group table shows GROUP;
  4. an action: the reset form commits GROUP's offset of TOPIC queue 0 to 1, and
     the API (not the page) then reports offset 1;
  5. a second action: the message browser finds the dead letter DLQ_MSG_ID by id,
     and its Resend button sends it back to TOPIC: the API then finds a new
     message there with the same body and the property DLQ_RESENT_FROM;
  6. the message browser finds the message with key `dash-key` by key;
  7. the charts (drawn from every node's metrics, GET /v1/cluster/nodes/{id}/metrics):
     each of send rate, pull rate, consumer lag, latency and receive-and-ack draws
     at least one `path.series` line of two points or more (the chart that stays
     empty is named); every node's metrics answered; the cluster table's applied
     column shows a number for every node (followers' from their metrics); the
     lease counts show deliveries;
  8. log out: the form is back and the token forgotten; signed in as the viewer
     (sub on TOPIC only), the cluster section says NO_PERMISSION while the topics
     table still shows TOPIC, and the charts section says NO_PERMISSION and draws
     nothing (the admin's history was forgotten on log out).
From the start to the end a background thread keeps data flowing with the admin
token: sends to TRAFFIC_TOPIC, pulls of it committed by the consumer group
TRAFFIC_GROUP (fewer than sent, so it lags), and receives by LEASE_GROUP acking
every other message (the rest run out and are redelivered). Its own topic and
groups, so the counts checked above do not move. After step 7, with the window
at 1400x1000, saves a screenshot to SCREENSHOT (the admin's view, charts drawn;
it waits up to SCREENSHOT_WAIT_S more for lines of SCREENSHOT_POINTS points).
Exits non-zero with the reason on failure.
"""

import base64
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request

DEADLINE_S = 20
# The charts need a few refreshes (3 s each) of traffic: two snapshots make the
# first rate, two rates the first line.
CHARTS_DEADLINE_S = 60
TOKEN_KEY = "broker-dashboard-token"
CHARTS = ["chart-send-rate", "chart-pull-rate", "chart-lag", "chart-latency", "chart-leases"]
SCREENSHOT_SIZE = {"width": 1400, "height": 1000}
# For a readable screenshot (not a check): lines of this many points, if they come
# within SCREENSHOT_WAIT_S.
SCREENSHOT_POINTS = 6
SCREENSHOT_WAIT_S = 20
TRAFFIC_TOPIC = "dash-traffic"
TRAFFIC_GROUP = "dash-traffic-pull"
LEASE_GROUP = "dash-traffic-leases"


def http(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: {e.code} {e.read().decode(errors='replace')}") from e


class Traffic(threading.Thread):
    """Sends, pulls with offset commits, receives and acks until stopped."""

    def __init__(self, node, token):
        super().__init__(name="traffic", daemon=True)
        self.node, self.token = node, token
        self.stopped = threading.Event()
        self.rounds = 0
        self.errors = 0
        self.last_error = None

    def call(self, method, path, body=None):
        return http(method, self.node + path, body, token=self.token)

    def run(self):
        offset = 0
        sent = 0
        while not self.stopped.is_set():
            try:
                if self.rounds == 0 and sent == 0:
                    self.call("PUT", f"/v1/topics/{TRAFFIC_TOPIC}",
                              {"read_queue_nums": 1, "write_queue_nums": 1})
                self.call("POST", f"/v1/topics/{TRAFFIC_TOPIC}/messages", {"messages": [
                    {"body": f"traffic {sent + i}", "queue_id": 0} for i in range(4)]})
                sent += 4
                pulled = self.call("GET", f"/v1/topics/{TRAFFIC_TOPIC}/queues/0/messages"
                                          f"?offset={offset}&max_messages=3")
                if pulled["next_offset"] != offset:
                    offset = pulled["next_offset"]
                    self.call("PUT", f"/v1/groups/{TRAFFIC_GROUP}/offsets/{TRAFFIC_TOPIC}/0",
                              {"offset": offset})
                received = self.call("POST", f"/v1/groups/{LEASE_GROUP}/topics/{TRAFFIC_TOPIC}/receive",
                                     {"max_messages": 4, "invisible_ms": 1000})
                handles = [m["receipt_handle"] for m in received["messages"]][::2]
                if handles:
                    self.call("POST", f"/v1/groups/{LEASE_GROUP}/ack", {"receipt_handles": handles})
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 -- reported by the checks that need the data
                self.errors += 1
                self.last_error = str(e)
                self.stopped.wait(1)
            self.stopped.wait(0.3)

    def stop(self):
        self.stopped.set()
        self.join(timeout=70)

    def report(self):
        return f"traffic: {self.rounds} rounds, {self.errors} errors" + (
            f", last: {self.last_error}" if self.last_error else "")


class Browser:
    def __init__(self, driver):
        self.driver = driver
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1400,1800"],
            },
        }}}
        self.session = http("POST", f"{driver}/session", caps)["value"]["sessionId"]
        self.base = f"{driver}/session/{self.session}"

    def cmd(self, method, path, body=None):
        return http(method, self.base + path, body)["value"]

    def open(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        found = self.cmd("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in found]

    def text_of(self, css):
        """Text of the first element matching css, or None. One script call, so a
        table re-rendered by the page's refresh in between cannot leave a stale
        element reference."""
        return self.js("const e = document.querySelector(arguments[0]);"
                       " return e ? e.textContent : null;", css)

    def type(self, css, text):
        (element,) = self.find(css)
        self.cmd("POST", f"/element/{element}/clear", {})
        self.cmd("POST", f"/element/{element}/value", {"text": str(text)})

    def click(self, css):
        (element,) = self.find(css)
        # Centred first: at the window's edge, where WebDriver scrolls it, the
        # sticky status line at the bottom of the page would take the click.
        self.js("document.querySelector(arguments[0]).scrollIntoView({block: 'center'});", css)
        self.cmd("POST", f"/element/{element}/click", {})

    def window_size(self, size):
        self.cmd("POST", "/window/rect", size)

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def close(self):
        try:
            http("DELETE", self.base)
        except Exception:  # the driver is killed by the caller anyway
            pass


def wait_for(what, probe, deadline_s=DEADLINE_S):
    """Calls probe() until it returns a true value; fails with its last value."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last and last[0]:
            print(f"dashboard-browser: ok: {what}", flush=True)
            return last
        time.sleep(0.25)
    sys.exit(f"dashboard-browser: FAILED: {what} (last seen: {last})")


def read_token(path):
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()


def sign_in(browser, token):
    browser.type("#login-token", token)
    browser.click("#login-button")


def main():
    driver, node, topic, messages, group, shot, dlq_id, admin_file, viewer_file = sys.argv[1:10]
    admin, viewer = read_token(admin_file), read_token(viewer_file)
    traffic = Traffic(node, admin)
    traffic.start()
    browser = Browser(driver)
    try:
        print("--- load the dashboard: it asks for a token", flush=True)
        browser.open(node + "/")
        visible_js = "return !document.getElementById(arguments[0]).hidden;"
        wait_for("the sign-in form is shown, the page is not",
                 lambda: (browser.js(visible_js, "login") and not browser.js(visible_js, "main")
                          and browser.js("return document.body.dataset.loaded !== 'true'"),))
        rows = browser.js("return document.querySelectorAll('#cluster-table tr.node').length")
        if rows:
            sys.exit(f"dashboard-browser: FAILED: {rows} node rows shown before signing in")

        print("--- a wrong token is refused", flush=True)
        sign_in(browser, "not-the-token-of-this-cluster")
        wait_for("the form says UNAUTHORIZED",
                 lambda: (lambda t: ("UNAUTHORIZED" in t, t))(browser.text_of("#login-error") or ""))
        stored = browser.js(f"return sessionStorage.getItem('{TOKEN_KEY}');")
        if stored is not None:
            sys.exit("dashboard-browser: FAILED: a refused token is still stored")

        print("--- the admin token signs in", flush=True)
        sign_in(browser, admin)
        wait_for("the page loaded its data",
                 lambda: (browser.js("return document.body.dataset.loaded === 'true'"),))
        kept = browser.js(f"return [sessionStorage.getItem('{TOKEN_KEY}'), localStorage.length,"
                          " document.cookie];")
        if kept != [admin, 0, ""]:
            sys.exit("dashboard-browser: FAILED: the token is not kept in sessionStorage alone "
                     f"(sessionStorage matches: {kept[0] == admin}, localStorage items: {kept[1]}, "
                     f"cookies: {kept[2]!r})")

        nodes_js = """return Array.from(document.querySelectorAll('#cluster-table tr.node'))
            .map(r => [r.dataset.group, r.dataset.nodeId, r.querySelector('.role').textContent]);"""

        def three_nodes():
            rows = browser.js(nodes_js)
            ids = sorted(r[1] for r in rows)
            leaders = [r for r in rows if r[2] == "leader"]
            return (ids == ["1", "2", "3"] and len(leaders) == 1, rows)
        wait_for("the cluster table shows nodes 1, 2, 3 with one leader", three_nodes)

        def topic_row():
            count = browser.text_of(f'#topics-table tr.topic[data-topic="{topic}"] td.messages')
            return (count == messages, count)
        wait_for(f"the topics table shows {topic} with {messages} messages", topic_row)

        def group_row():
            name = browser.text_of(f'#groups-table tr.group[data-group="{group}"] td.name')
            return (name == group, name)
        wait_for(f"the consumer-group table shows {group}", group_row)

        print("--- action: reset the group's offset on queue 0 to 1 through the form", flush=True)
        offsets_url = f"{node}/v1/groups/{group}/offsets?topic={topic}"
        before = {o["queue_id"]: o["offset"] for o in http("GET", offsets_url, token=admin)["offsets"]}
        if before.get(0) == 1:
            sys.exit(f"dashboard-browser: FAILED: offset is already 1 before the action: {before}")
        browser.type("#reset-group", group)
        browser.type("#reset-topic", topic)
        browser.type("#reset-queue", 0)
        browser.type("#reset-offset", 1)
        browser.click("#reset-button")
        wait_for("the page reports the reset",
                 lambda: (lambda t: (t.startswith(f"reset {group}"), t))(
                     browser.text_of("#action-status") or ""))

        def api_offset():
            after = {o["queue_id"]: o["offset"] for o in http("GET", offsets_url, token=admin)["offsets"]}
            return (after.get(0) == 1, after)
        wait_for(f"the API reports {group}'s offset on queue 0 moved from {before.get(0)} to 1",
                 api_offset)

        print("--- action: resend the dead letter from the message browser", flush=True)
        dead = http("GET", f"{node}/v1/messages/{dlq_id}", token=admin)
        if dead["properties"].get("ORIGIN_TOPIC") != topic:
            sys.exit(f"dashboard-browser: FAILED: the dead letter does not name its origin: {dead}")
        queues_url = f"{node}/v1/topics/{topic}/queues"
        total = lambda: sum(q["max_offset"] for q in http("GET", queues_url, token=admin)["queues"])
        stored_before = total()
        browser.type("#id-msg-id", dlq_id)
        browser.click("#browse-id button")
        wait_for("the browser shows the dead letter with a Resend button",
                 lambda: (lambda n: (n == 1, n))(browser.js(
                     "return document.querySelectorAll('#messages-table tr.message button.resend').length")))
        browser.click("#messages-table tr.message button.resend")
        wait_for("the page reports the resend",
                 lambda: (lambda t: (t.startswith(f"resent {dlq_id} to {topic}"), t))(
                     browser.text_of("#action-status") or ""))

        def resent():
            stored = total()
            if stored != stored_before + 1:
                return (False, f"{stored} messages stored, expected {stored_before + 1}")
            found = [m for q in http("GET", queues_url, token=admin)["queues"]
                     for m in http("GET", f"{node}/v1/topics/{topic}/queues/{q['queue_id']}/messages"
                                          f"?offset={q['max_offset'] - 1}&group={q['group']}",
                                   token=admin)["messages"]
                     if m["properties"].get("DLQ_RESENT_FROM") == dlq_id]
            ok = len(found) == 1 and found[0]["body"] == dead["body"] \
                and "ORIGIN_TOPIC" not in found[0]["properties"]
            return (ok, found)
        wait_for(f"the API finds the resent message back in {topic}", resent)

        print("--- message browser: by key", flush=True)
        browser.type("#key-topic", topic)
        browser.type("#key-key", "dash-key")
        browser.click("#browse-key button")

        def keyed():
            bodies = browser.js("""return Array.from(document.querySelectorAll(
                '#messages-table tr.message td.body')).map(td => td.textContent);""")
            return (bodies == ["keyed message"], bodies)
        wait_for("the browser finds the keyed message", keyed)

        print("--- the charts, from every node's metrics", flush=True)
        check_charts(browser, traffic)
        chart_lines(browser, SCREENSHOT_POINTS, SCREENSHOT_WAIT_S)
        browser.window_size(SCREENSHOT_SIZE)
        browser.js("window.scrollTo(0, 0);")
        time.sleep(0.5)
        browser.screenshot(shot)
        print(f"dashboard-browser: screenshot saved to {shot}", flush=True)

        print("--- log out: the form is back, the token forgotten", flush=True)
        browser.click("#logout")
        wait_for("the sign-in form is shown again",
                 lambda: (browser.js(visible_js, "login") and not browser.js(visible_js, "main"),))
        if browser.js(f"return sessionStorage.getItem('{TOKEN_KEY}');") is not None:
            sys.exit("dashboard-browser: FAILED: the token survived logging out")

        print("--- signed in as a user with sub on the topic only: 403 shown, topics still there",
              flush=True)
        sign_in(browser, viewer)
        wait_for("the cluster section says NO_PERMISSION",
                 lambda: (lambda t: ("NO_PERMISSION" in t, t))(browser.text_of("#cluster-error") or ""))
        wait_for(f"the topics table still shows {topic}",
                 lambda: (lambda n: (n == topic, n))(browser.text_of(
                     f'#topics-table tr.topic[data-topic="{topic}"] td.name')))

        def charts_refused():
            text = browser.text_of("#charts-error") or ""
            drawn = browser.js("return document.querySelectorAll('#charts path.series').length")
            return ("NO_PERMISSION" in text and drawn == 0, text, f"{drawn} series drawn")
        wait_for("the charts section says NO_PERMISSION and draws nothing", charts_refused)
    finally:
        browser.close()
        traffic.stop()
        print(f"dashboard-browser: {traffic.report()}", flush=True)


# Per chart: the number of points of each `path.series` that draws a line (an
# `L` command: a lone point is only a dot), by its data-series name.
CHART_LINES_JS = r"""
return arguments[0].map((id) => {
  const chart = document.getElementById(id);
  if (!chart) return [id, null];
  return [id, Array.from(chart.querySelectorAll('path.series')).map((p) => {
    const d = p.getAttribute('d') || '';
    const points = (d.match(/[ML]\s*-?[\d.]+[ ,]+-?[\d.]+/g) || []).length;
    return [p.dataset.series, /L/.test(d) ? points : 0];
  })];
});
"""


def chart_lines(browser, points, wait_s):
    """Waits up to wait_s until every chart draws a line of `points` points or
    more. Answers (the charts' lines, the charts without such a line)."""
    deadline = time.monotonic() + wait_s
    while True:
        seen = dict(browser.js(CHART_LINES_JS, CHARTS))
        missing = [c for c, v in seen.items() if v is None]
        if missing:
            sys.exit(f"dashboard-browser: FAILED: no chart element #{', #'.join(missing)} in the page")
        empty = [c for c, series in seen.items() if not any(n >= points for _, n in series)]
        if not empty or time.monotonic() > deadline:
            return seen, empty
        time.sleep(0.5)


def check_charts(browser, traffic):
    """Waits until every chart draws a line of two points or more; fails naming
    the charts still empty. Then the applied column, the node metrics statuses and
    the lease counts."""
    seen, empty = chart_lines(browser, 2, CHARTS_DEADLINE_S)
    if empty:
        error = browser.text_of("#charts-error")
        nodes = browser.text_of("#charts-nodes")
        sys.exit(f"dashboard-browser: FAILED: chart(s) {', '.join(empty)} drew no line of two points "
                 f"within {CHARTS_DEADLINE_S} s (series and their points: "
                 f"{ {c: seen[c] for c in empty} }; charts error: {error!r}; nodes: {nodes!r}; "
                 f"{traffic.report()})")
    for chart, series in seen.items():
        lines = [f"{name} ({n} points)" for name, n in series if n >= 2]
        print(f"dashboard-browser: ok: #{chart} draws {', '.join(lines)}", flush=True)

    def metrics_answered():
        states = browser.js("""return Array.from(document.querySelectorAll('#charts-nodes .node-metrics'))
            .map(s => [s.dataset.nodeId, s.classList.contains('ok')]);""")
        return (sorted(states) == [["1", True], ["2", True], ["3", True]], states)
    wait_for("the metrics of nodes 1, 2, 3 answered", metrics_answered)

    applied_js = """return Array.from(document.querySelectorAll('#cluster-table tr.node'))
        .map(r => [r.dataset.nodeId, r.querySelector('td.applied').textContent]);"""

    def applied_numbers():
        rows = browser.js(applied_js)
        return (len(rows) == 3 and all(re.fullmatch(r"\d+", a) for _, a in rows), rows)
    wait_for("the applied column shows a number for every node", applied_numbers)

    def lease_counts():
        counts = browser.js("""return ['leased', 'delivered', 'acked', 'redelivered', 'dead-lettered']
            .map(k => [k, document.getElementById('lease-' + k).textContent]);""")
        numeric = all(re.fullmatch(r"\d+", v) for _, v in counts)
        return (numeric and int(dict(counts)["delivered"]) > 0, counts)
    wait_for("the lease counts show numbers, deliveries among them", lease_counts)


if __name__ == "__main__":
    main()
