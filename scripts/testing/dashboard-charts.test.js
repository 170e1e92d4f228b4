// Unit tests of the dashboard's chart functions (broker/src/http/dashboard/charts.js),
// the same file the broker serves to browsers. No npm packages:
//   node --test scripts/testing/dashboard-charts.test.js
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const C = require(path.join(__dirname, "../../broker/src/http/dashboard/charts.js"));

/** A node's metrics text as the broker renders it (broker/src/metrics.rs,
 *  control_plane.rs render_metrics), with the numbers given. */
function nodeText(o) {
  const lines = [
    "# HELP broker_info Always 1; labels name this node and its broker group.",
    "# TYPE broker_info gauge",
    `broker_info{node_id="${o.id}",broker_group="${o.group || "broker-a"}",version="0.1.0"} 1`,
    `broker_raft_is_leader ${o.leader ? 1 : 0}`,
    `broker_raft_applied_index ${o.applied ?? 0}`,
    "# TYPE broker_topic_messages_in_total counter",
  ];
  for (const [topic, v] of Object.entries(o.in || {})) lines.push(`broker_topic_messages_in_total{topic="${topic}"} ${v}`);
  for (const [topic, v] of Object.entries(o.out || {})) lines.push(`broker_topic_messages_out_total{topic="${topic}"} ${v}`);
  for (const l of o.lag || []) {
    lines.push(`broker_consumer_group_lag_messages{consumer_group="${l[0]}",topic="${l[1]}",broker_group="${o.group || "broker-a"}",queue="${l[2]}"} ${l[3]}`);
  }
  if (o.send) {
    lines.push('broker_send_duration_seconds_bucket{le="0.001"} 0');
    lines.push(`broker_send_duration_seconds_bucket{le="+Inf"} ${o.send[1]}`);
    lines.push(`broker_send_duration_seconds_sum ${o.send[0]}`);
    lines.push(`broker_send_duration_seconds_count ${o.send[1]}`);
  }
  if (o.fsync) {
    lines.push("# TYPE broker_raft_log_fsync_duration_seconds summary");
    lines.push('broker_raft_log_fsync_duration_seconds{quantile="0.5"} 0.002');
    lines.push(`broker_raft_log_fsync_duration_seconds_sum ${o.fsync[0]}`);
    lines.push(`broker_raft_log_fsync_duration_seconds_count ${o.fsync[1]}`);
  }
  for (const [kind, v] of Object.entries(o.leases || {})) lines.push(`broker_lease_${kind}_total ${v}`);
  return lines.join("\n") + "\n";
}

function snapshot(t, nodes) {
  const out = { t, nodes: {} };
  for (const [id, o] of Object.entries(nodes)) {
    out.nodes[id] = o === null
      ? { t, error: "UNAVAILABLE: no answer" }
      : { t: o.t ?? t, summary: C.summarize(C.parsePrometheus(nodeText({ id, ...o }))) };
  }
  return out;
}

test("parses samples, labels with escaped quotes and backslashes, +Inf buckets, comments", () => {
  const text = [
    "# HELP broker_topic_messages_in_total Messages stored, per topic.",
    "# TYPE broker_topic_messages_in_total counter",
    'broker_topic_messages_in_total{topic="a \\"quoted\\" name, {braces}"} 42',
    'broker_topic_messages_in_total{topic="back\\\\slash\\nline"} 7',
    "",
    'broker_send_duration_seconds_bucket{le="0.00025"} 3',
    'broker_send_duration_seconds_bucket{le="+Inf"} 10',
    "broker_send_duration_seconds_sum 0.0125",
    "broker_send_duration_seconds_count 10",
    "broker_raft_term 3 1700000000000",
    "broker_weird NaN",
    "not a sample line {",
    'broker_info{node_id="1",broker_group="broker-a",version="0.1.0",} 1',
  ].join("\n");
  const samples = C.parsePrometheus(text);
  const byName = (n) => samples.filter((s) => s.name === n);
  assert.deepEqual(byName("broker_topic_messages_in_total").map((s) => [s.labels.topic, s.value]),
    [['a "quoted" name, {braces}', 42], ["back\\slash\nline", 7]]);
  const buckets = byName("broker_send_duration_seconds_bucket");
  assert.equal(buckets.length, 2);
  assert.equal(buckets[1].labels.le, "+Inf");
  assert.equal(buckets[1].value, 10);
  assert.equal(byName("broker_send_duration_seconds_sum")[0].value, 0.0125);
  assert.equal(byName("broker_raft_term")[0].value, 3, "a timestamp after the value is ignored");
  assert.ok(Number.isNaN(byName("broker_weird")[0].value));
  assert.deepEqual(byName("broker_info")[0].labels, { node_id: "1", broker_group: "broker-a", version: "0.1.0" });
  assert.equal(samples.filter((s) => s.name === "not").length, 0, "a malformed line is skipped");
  assert.equal(C.parseLine('x{le="+Inf"} +Inf').value, Infinity);
});

test("summarize picks the numbers the charts need", () => {
  const s = C.summarize(C.parsePrometheus(nodeText({
    id: 2, leader: true, applied: 99, in: { t: 5 }, out: { t: 3 }, send: [0.5, 10], fsync: [0.02, 4],
    leases: { delivered: 8, redelivered: 2, dead_lettered: 1, acked: 6 }, lag: [["g", "t", 0, 4]],
  }) + 'broker_lease_delivered_total{consumer_group="x"} 2\n'));
  assert.equal(s.nodeId, "2");
  assert.equal(s.brokerGroup, "broker-a");
  assert.equal(s.isLeader, true);
  assert.equal(s.applied, 99);
  assert.deepEqual(s.topicIn, { t: 5 });
  assert.deepEqual(s.topicOut, { t: 3 });
  assert.deepEqual(s.send, { sum: 0.5, count: 10 });
  assert.deepEqual(s.fsync, { sum: 0.02, count: 4 });
  assert.equal(s.leases.delivered, 10, "labelled lease series add up");
  assert.equal(s.lag.length, 1);
});

test("rates sum over nodes, never negative across a counter reset", () => {
  assert.equal(C.counterDelta(10, 15), 5);
  assert.equal(C.counterDelta(100, 4), 4, "a reset: the counter grew by its new value");
  assert.equal(C.counterDelta(100, 0), 0);
  assert.deepEqual(C.rates({ a: 10, gone: 5 }, { a: 16, fresh: 3 }, 2), { a: 3, fresh: 1.5, gone: 0 });

  const a = snapshot(0, { 1: { in: { t: 100 }, out: { t: 10 } }, 2: { in: { t: 50 }, out: { t: 0 } } });
  const b = snapshot(3000, { 1: { in: { t: 130 }, out: { t: 40 } }, 2: { in: { t: 5 }, out: { t: 3 } } });
  const point = C.makePoint(a, b);
  // Node 1: 30 in 3 s; node 2 restarted: 5 in 3 s. Pulls: 30 and 3.
  assert.equal(point.sendRate.t, 35 / 3);
  assert.equal(point.pullRate.t, 11);
  for (const v of Object.values(point.sendRate)) assert.ok(v >= 0);
  assert.equal(C.makePoint(null, b).sendRate, null, "the first snapshot has no rates");
});

test("a node without metrics adds nothing and is reported", () => {
  const a = snapshot(0, { 1: { in: { t: 0 } }, 2: { in: { t: 0 } } });
  const b = snapshot(3000, { 1: { in: { t: 30 } }, 2: null });
  const point = C.makePoint(a, b);
  assert.equal(point.sendRate.t, 10);
  assert.equal(point.nodes["1"], "ok");
  assert.match(point.nodes["2"], /UNAVAILABLE/);
});

test("per-node reading times: each node's rate over its own interval", () => {
  const a = snapshot(0, { 1: { in: { t: 0 } } });
  const b = snapshot(3000, { 1: { t: 2000, in: { t: 20 } } });
  assert.equal(C.makePoint(a, b).sendRate.t, 10);
});

test("consumer lag: the broker group leader's value wins, then queues add up per group", () => {
  const s = snapshot(0, {
    // Followers lag behind in applying the commit: stale, larger values.
    1: { leader: false, lag: [["billing", "orders", 0, 9], ["billing", "orders", 1, 7]] },
    2: { leader: true, lag: [["billing", "orders", 0, 4], ["billing", "orders", 1, 2], ["audit", "orders", 0, 1]] },
    3: { leader: false, lag: [["billing", "orders", 0, 5], ["audit", "orders", 0, 3]] },
  });
  const point = C.makePoint(null, s);
  assert.deepEqual(point.lag, { billing: 6, audit: 1 });

  // No leader reports a key (leader unreachable): the largest value.
  const noLeader = snapshot(0, {
    1: { leader: false, lag: [["g", "t", 0, 3]] },
    2: { leader: false, lag: [["g", "t", 0, 8]] },
    3: null,
  });
  assert.deepEqual(C.makePoint(null, noLeader).lag, { g: 8 });

  // Two broker groups: each group's own leader counts for its own queues.
  const twoGroups = snapshot(0, {
    1: { leader: true, group: "broker-a", lag: [["g", "t", 0, 2]] },
    2: { leader: false, group: "broker-a", lag: [["g", "t", 0, 9]] },
    4: { leader: true, group: "broker-b", lag: [["g", "t", 0, 5]] },
  });
  assert.deepEqual(C.makePoint(null, twoGroups).lag, { g: 7 });
});

test("mean latency over an interval is Δsum/Δcount, slowest node, in ms", () => {
  assert.equal(C.meanBetween({ sum: 1, count: 10 }, { sum: 1.5, count: 20 }), 0.05);
  assert.equal(C.meanBetween({ sum: 1, count: 10 }, { sum: 1, count: 10 }), null, "no observations: no mean");
  assert.equal(C.meanBetween({ sum: 9, count: 90 }, { sum: 0.2, count: 4 }), 0.05, "after a reset: the new reading");
  assert.equal(C.meanBetween({ sum: null, count: null }, { sum: 1, count: 2 }), null);

  const a = snapshot(0, { 1: { send: [1, 100], fsync: [0.1, 50] }, 2: { send: [0, 0], fsync: [0.2, 40] } });
  const b = snapshot(3000, { 1: { send: [1.2, 110], fsync: [0.11, 60] }, 2: { send: [0, 0], fsync: [0.23, 50] } });
  const point = C.makePoint(a, b);
  assert.ok(Math.abs(point.latency.send - 20) < 1e-9, `send ${point.latency.send}`);
  assert.ok(Math.abs(point.latency.fsync - 3) < 1e-9, `fsync ${point.latency.fsync}`);

  const idle = C.makePoint(b, snapshot(6000, { 1: { send: [1.2, 110], fsync: [0.11, 60] } }));
  assert.equal(idle.latency.send, null);
});

test("lease totals and rates add up over nodes", () => {
  const a = snapshot(0, { 1: { leases: { delivered: 10, acked: 5, redelivered: 1, dead_lettered: 0 } }, 2: { leases: { delivered: 0 } } });
  const b = snapshot(2000, { 1: { leases: { delivered: 20, acked: 9, redelivered: 3, dead_lettered: 1 } }, 2: { leases: { delivered: 4 } } });
  const point = C.makePoint(a, b);
  assert.deepEqual(point.leaseTotals, { delivered: 24, acked: 9, redelivered: 3, dead_lettered: 1 });
  assert.deepEqual(point.leaseRate, { delivered: 7, acked: 2, redelivered: 1, dead_lettered: 0.5 });
});

test("history keeps five minutes of points and no more", () => {
  const h = new C.History();
  assert.equal(C.WINDOW_MS, 5 * 60 * 1000);
  for (let t = 0; t <= 10 * 60 * 1000; t += 3000) h.add(snapshot(t, { 1: { in: { t: t / 100 } } }));
  const points = h.points();
  assert.equal(points[points.length - 1].t, 10 * 60 * 1000);
  assert.ok(points[0].t >= 5 * 60 * 1000, `oldest kept ${points[0].t}`);
  assert.equal(points.length, 101);
  assert.ok(points.every((p, i) => i === 0 || p.t > points[i - 1].t));
  assert.equal(h.latest().t, 10 * 60 * 1000);
  // Rates are computed against the snapshot just before, even the oldest kept.
  assert.ok(Math.abs(points[0].sendRate.t - 10) < 1e-9);
  h.clear();
  assert.equal(h.points().length, 0);
});

test("the ring buffer drops its oldest item when full", () => {
  const r = new C.RingBuffer(3);
  for (let i = 1; i <= 5; i++) r.push(i);
  assert.deepEqual(r.toArray(), [3, 4, 5]);
  assert.equal(r.shift(), 3);
  r.push(6);
  assert.deepEqual(r.toArray(), [4, 5, 6]);
});

test("series from points: sorted names, gaps where a name is missing", () => {
  const points = [
    { t: 1, m: null }, { t: 2, m: { b: 1, a: 2 } }, { t: 3, m: { a: 3 } }, { t: 4, m: { a: 4, b: NaN } },
  ];
  const series = C.seriesOf(points, (p) => p.m);
  assert.deepEqual(series, [
    { name: "a", points: [[2, 2], [3, 3], [4, 4]] },
    { name: "b", points: [[2, 1], [3, null], [4, null]] },
  ]);
});

/** The `d` attributes of the series paths of an SVG string, by data-series. */
function seriesPaths(svg) {
  const out = {};
  for (const m of svg.matchAll(/<path class="series" data-series="([^"]*)"[^>]*\sd="([^"]*)"/g)) out[m[1]] = m[2];
  return out;
}

test("a chart draws a path per series with data, an axis, and a legend", () => {
  const now = 300000;
  const svg = C.renderChart({
    title: "send rate", unit: "msg/s", now,
    series: [
      { name: "orders", points: [[now - 6000, 2], [now - 3000, 4], [now, 7]] },
      { name: 'odd "name" <x>', points: [[now - 3000, 1], [now, null]] },
      { name: "empty", points: [[now, null]] },
    ],
  });
  assert.match(svg, /^<svg [^>]*viewBox=/);
  const paths = seriesPaths(svg);
  assert.deepEqual(Object.keys(paths).sort(), ["odd &quot;name&quot; &lt;x&gt;", "orders"]);
  const coords = paths.orders.match(/[ML][\d.]+ [\d.]+/g);
  assert.equal(coords.length, 3, paths.orders);
  assert.match(paths.orders, /^M[\d.]+ [\d.]+ L/);
  assert.match(svg, /class="axis y-max"[^>]*>10 msg\/s</, "the y axis ends at a round maximum");
  assert.match(svg, /last 1 min/, "six seconds of history: the shortest axis");
  assert.match(svg, /class="legend-entry" data-series="orders"/);
  assert.match(svg, />orders {2}7 msg\/s</, "the legend shows the latest value");
  assert.ok(!svg.includes("no data yet"));
  assert.ok(!svg.includes('"name" <x>'), "names are escaped");
});

test("an empty chart says so and has no series paths", () => {
  for (const series of [[], [{ name: "t", points: [] }], [{ name: "t", points: [[1, null], [2, null]] }]]) {
    const svg = C.renderChart({ title: "empty", unit: "msg/s", series });
    assert.match(svg, /no data yet/);
    assert.deepEqual(seriesPaths(svg), {});
    assert.ok(!svg.includes('class="series"'));
  }
});

test("a gap starts a new subpath; a lone point is a dot", () => {
  const d = C.pathData([[0, 1], [1, 2], [2, null], [3, 3], [4, null], [5, 4], [6, 5]], (t) => t * 10, (v) => v);
  assert.equal(d, "M0.0 1.0 L10.0 2.0 M30.0 3.0 h0.01 M50.0 4.0 L60.0 5.0");
});

test("round axis maxima and compact numbers", () => {
  assert.equal(C.niceMax(0), 1);
  assert.equal(C.niceMax(7), 10);
  assert.equal(C.niceMax(0.3), 0.5);
  assert.equal(C.niceMax(2.2), 2.5);
  assert.equal(C.niceMax(120), 200);
  assert.equal(C.formatNumber(1234567), "1.2M");
  assert.equal(C.formatNumber(0.25), "0.25");
  assert.equal(C.formatNumber(null), "-");
});

test("the page's many topics: only the largest series are drawn, the legend counts the rest", () => {
  const series = [];
  for (let i = 0; i < 12; i++) series.push({ name: "t" + String(i).padStart(2, "0"), points: [[0, i], [1, i]] });
  const svg = C.renderChart({ series, now: 1 });
  const names = Object.keys(seriesPaths(svg));
  assert.equal(names.length, C.MAX_SERIES);
  assert.ok(!names.includes("t00") && names.includes("t11"));
  assert.match(svg, /\+4 smaller series not drawn/);
});

test("the time axis grows with the history, up to five minutes", () => {
  const now = 10 * 60 * 1000;
  const axis = (age) => /class="axis x-label"[^>]*>([^<]*)</.exec(C.renderChart({
    now, series: [{ name: "a", points: [[now - age, 1], [now, 2]] }],
  }))[1];
  assert.equal(axis(3000), "last 1 min");
  assert.equal(axis(60 * 1000), "last 1 min");
  assert.equal(axis(90 * 1000), "last 2 min");
  assert.equal(axis(4 * 60 * 1000), "last 5 min");
  assert.equal(axis(5 * 60 * 1000), "last 5 min");
  // The oldest point sits at the left edge of its axis, the newest at the right.
  const svg = C.renderChart({ now, width: 480, series: [{ name: "a", points: [[now - 60000, 1], [now, 2]] }] });
  const d = /data-series="a"[^>]*\sd="([^"]*)"/.exec(svg)[1];
  assert.match(d, /^M56\.0 [\d.]+ L468\.0 /);
  assert.match(C.renderChart({ series: [] }), /last 1 min/);
});

test("a long series name gets a legend row of its own", () => {
  const svg = C.renderChart({ now: 1, series: [
    { name: "send (quorum commit + apply)", points: [[0, 1], [1, 2]] }, { name: "Raft log fsync", points: [[0, 1], [1, 2]] }] });
  const ys = Array.from(svg.matchAll(/<g class="legend-entry"[^>]*><rect x="([\d.]+)" y="([\d.]+)"/g)).map((m) => [m[1], m[2]]);
  assert.equal(ys.length, 2);
  assert.equal(ys[0][0], ys[1][0], "one column");
  assert.notEqual(ys[0][1], ys[1][1]);
  assert.match(svg, /send \(quorum commit \+ apply\) {2}2</);
});
