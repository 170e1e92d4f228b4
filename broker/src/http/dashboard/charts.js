// The dashboard's charts: pure functions, no DOM. The page (app.js) fetches every
// node's Prometheus text (GET /v1/cluster/nodes/{id}/metrics) each refresh and
// hands it here; this file parses it, turns two consecutive snapshots into one
// point (rates, mean latencies, consumer lag), keeps the last few minutes of
// points in a ring buffer, and draws a chart as an SVG string.
//
// A plain browser script (one global, BrokerCharts) that Node can also load:
// scripts/testing/dashboard-charts.test.js runs it with `node --test`.
"use strict";

// `var`, not `const`: the page's other script sees it as window.BrokerCharts too.
// eslint-disable-next-line no-var
var BrokerCharts = (function () {
  /** How much history the page keeps and draws. */
  const WINDOW_MS = 5 * 60 * 1000;
  /** Most points the ring buffer holds whatever their age (a refresh every 3 s
   *  fills 100 in five minutes; the rest is slack for faster refreshes). */
  const CAPACITY = 1000;
  /** Most series one chart draws (the largest ones); the legend counts the rest. */
  const MAX_SERIES = 8;
  const PALETTE = ["#2457c5", "#d1495b", "#1e7b34", "#e08e0b", "#7b3fb5", "#0f8b8d", "#8c564b", "#c2459b"];
  /** Lease counters the page charts, by their name inside broker_lease_*_total. */
  const LEASE_KINDS = ["delivered", "acked", "redelivered", "dead_lettered"];
  /** The time axes a chart may span (ms): the shortest that holds its oldest point,
   *  so a young history is not squeezed into the right edge of five minutes. */
  const SPANS_MS = [60 * 1000, 2 * 60 * 1000, WINDOW_MS];

  // ---- parsing -------------------------------------------------------------------

  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    if (text === "NaN") return NaN;
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return undefined;
    return Number(text);
  }

  /** One sample line (not a comment): {name, labels, value}, or null if it is not
   *  one. Label values may hold `\\`, `\"`, `\n` escapes, commas, braces, spaces. */
  function parseLine(line) {
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nameMatch) return null;
    const name = nameMatch[0];
    const labels = {};
    let i = name.length;
    if (line[i] === "{") {
      i++;
      for (;;) {
        while (line[i] === " " || line[i] === ",") i++;
        if (line[i] === "}") { i++; break; }
        const keyMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
        if (!keyMatch) return null;
        const key = keyMatch[0];
        i += key.length;
        while (line[i] === " ") i++;
        if (line[i] !== "=") return null;
        i++;
        while (line[i] === " ") i++;
        if (line[i] !== '"') return null;
        i++;
        let value = "";
        for (;;) {
          if (i >= line.length) return null;
          const c = line[i++];
          if (c === '"') break;
          if (c === "\\") {
            const next = line[i++];
            value += next === "n" ? "\n" : next === undefined ? "" : next;
          } else {
            value += c;
          }
        }
        labels[key] = value;
      }
    }
    const rest = line.slice(i).trim().split(/\s+/);
    const value = parseValue(rest[0] || "");
    if (value === undefined) return null;
    return { name, labels, value };
  }

  /** Prometheus text format (0.0.4) to [{name, labels, value}]; comments (HELP,
   *  TYPE) and blank lines are skipped, and so is any line that is not a sample. */
  function parsePrometheus(text) {
    const samples = [];
    for (const raw of String(text).split("\n")) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const sample = parseLine(line);
      if (sample) samples.push(sample);
    }
    return samples;
  }

  // ---- one node's numbers ------------------------------------------------------------

  /** What the charts need of one node's samples. */
  function summarize(samples) {
    const s = {
      nodeId: null, brokerGroup: null, isLeader: false, applied: null,
      topicIn: {}, topicOut: {}, lag: [],
      send: { sum: null, count: null }, fsync: { sum: null, count: null },
      leases: {},
    };
    const add = (map, key, value) => { map[key] = (map[key] || 0) + value; };
    for (const { name, labels, value } of samples) {
      let m;
      switch (name) {
        case "broker_info":
          s.nodeId = labels.node_id ?? s.nodeId;
          s.brokerGroup = labels.broker_group ?? s.brokerGroup;
          break;
        case "broker_raft_is_leader": s.isLeader = value === 1; break;
        case "broker_raft_applied_index": s.applied = value; break;
        case "broker_topic_messages_in_total": add(s.topicIn, labels.topic ?? "", value); break;
        case "broker_topic_messages_out_total": add(s.topicOut, labels.topic ?? "", value); break;
        case "broker_consumer_group_lag_messages":
          s.lag.push({
            consumerGroup: labels.consumer_group ?? "", brokerGroup: labels.broker_group ?? "",
            topic: labels.topic ?? "", queue: labels.queue ?? "", value,
          });
          break;
        case "broker_send_duration_seconds_sum": s.send.sum = value; break;
        case "broker_send_duration_seconds_count": s.send.count = value; break;
        case "broker_raft_log_fsync_duration_seconds_sum": s.fsync.sum = value; break;
        case "broker_raft_log_fsync_duration_seconds_count": s.fsync.count = value; break;
        default:
          if ((m = /^broker_lease_(.+)_total$/.exec(name))) add(s.leases, m[1], value);
      }
    }
    return s;
  }

  // ---- from two snapshots ------------------------------------------------------------

  /** How much a counter grew: a counter that went down was reset (its node
   *  restarted), so it grew by its new value. Never negative. */
  function counterDelta(prev, cur) {
    if (!Number.isFinite(cur)) return 0;
    if (!Number.isFinite(prev)) return Math.max(cur, 0);
    return cur >= prev ? cur - prev : Math.max(cur, 0);
  }

  /** Per-second rate of each key of two {key: counter} maps over `seconds`; a key
   *  new in `cur` grew from 0. */
  function rates(prev, cur, seconds) {
    const out = {};
    if (!(seconds > 0)) return out;
    for (const key of Object.keys(cur)) out[key] = counterDelta(prev[key] ?? 0, cur[key]) / seconds;
    for (const key of Object.keys(prev)) if (!(key in out)) out[key] = 0;
    return out;
  }

  /** Mean of the observations between two {sum, count} readings of a histogram or
   *  summary (Δsum/Δcount), or null when there were none. After a reset (count went
   *  down) the new reading alone is the interval's. */
  function meanBetween(prev, cur) {
    if (!cur || cur.count === null || cur.sum === null) return null;
    if (!prev || prev.count === null || prev.sum === null) return null;
    let dc = cur.count - prev.count;
    let ds = cur.sum - prev.sum;
    if (dc < 0 || ds < 0) { dc = cur.count; ds = cur.sum; }
    if (!(dc > 0) || !(ds >= 0)) return null;
    return ds / dc;
  }

  /** Consumer lag per consumer group, from every node's summary. Every replica of a
   *  broker group reports the same replicated offsets, so for each (consumer group,
   *  broker group, topic, queue) the value of the node leading that broker group
   *  wins, else the largest any node reports; then the queues add up per group. */
  function aggregateLag(summaries) {
    const best = new Map();
    for (const s of summaries) {
      if (!s) continue;
      for (const l of s.lag) {
        const key = JSON.stringify([l.consumerGroup, l.brokerGroup, l.topic, l.queue]);
        const leads = s.isLeader && (s.brokerGroup === null || s.brokerGroup === l.brokerGroup);
        const seen = best.get(key);
        if (!seen || (leads && !seen.leads)) best.set(key, { group: l.consumerGroup, leads, value: l.value });
        else if (leads === seen.leads) seen.value = Math.max(seen.value, l.value);
      }
    }
    const out = {};
    for (const { group, value } of best.values()) out[group] = (out[group] || 0) + value;
    return out;
  }

  /** Sum over nodes of each node's {key: value} map picked by `pick`. */
  function sumMaps(summaries, pick) {
    const out = {};
    for (const s of summaries) {
      if (!s) continue;
      for (const [k, v] of Object.entries(pick(s))) out[k] = (out[k] || 0) + v;
    }
    return out;
  }

  function maxOf(values) {
    const defined = values.filter((v) => v !== null && Number.isFinite(v));
    return defined.length ? Math.max(...defined) : null;
  }

  /** A snapshot: `{t, nodes: {id: {t, summary} | {t, error}}}` (t in ms). Makes the
   *  chart point of `cur`, with rates over the interval since `prev` (null for the
   *  first snapshot: then only the gauges are known). Per node, rates use that
   *  node's own two reading times; a node missing from either snapshot adds nothing
   *  to the interval. */
  function makePoint(prev, cur) {
    const ids = Object.keys(cur.nodes);
    const summaries = ids.map((id) => cur.nodes[id].summary || null);
    const point = {
      t: cur.t,
      nodes: {},
      applied: {},
      lag: aggregateLag(summaries),
      leaseTotals: {},
      sendRate: null, pullRate: null, leaseRate: null,
      latency: null,
    };
    for (const kind of LEASE_KINDS) point.leaseTotals[kind] = 0;
    for (const [kind, v] of Object.entries(sumMaps(summaries, (s) => s.leases))) point.leaseTotals[kind] = v;
    for (const id of ids) {
      const n = cur.nodes[id];
      point.nodes[id] = n.summary ? "ok" : n.error || "no metrics";
      if (n.summary && n.summary.applied !== null) point.applied[id] = n.summary.applied;
    }
    if (!prev) return point;
    const sendRate = {}, pullRate = {}, leaseRate = {};
    for (const kind of LEASE_KINDS) leaseRate[kind] = 0;
    const sendMeans = [], fsyncMeans = [];
    let intervals = 0;
    for (const id of ids) {
      const a = prev.nodes[id], b = cur.nodes[id];
      if (!a || !a.summary || !b.summary) continue;
      const seconds = (b.t - a.t) / 1000;
      if (!(seconds > 0)) continue;
      intervals++;
      const addAll = (into, from) => { for (const [k, v] of Object.entries(from)) into[k] = (into[k] || 0) + v; };
      addAll(sendRate, rates(a.summary.topicIn, b.summary.topicIn, seconds));
      addAll(pullRate, rates(a.summary.topicOut, b.summary.topicOut, seconds));
      const leases = rates(a.summary.leases, b.summary.leases, seconds);
      for (const kind of LEASE_KINDS) leaseRate[kind] += leases[kind] || 0;
      sendMeans.push(meanBetween(a.summary.send, b.summary.send));
      fsyncMeans.push(meanBetween(a.summary.fsync, b.summary.fsync));
    }
    if (!intervals) return point;
    point.sendRate = sendRate;
    point.pullRate = pullRate;
    point.leaseRate = leaseRate;
    // Seconds to milliseconds; the slowest node's mean (null: nothing observed).
    const ms = (v) => (v === null ? null : v * 1000);
    point.latency = { send: ms(maxOf(sendMeans)), fsync: ms(maxOf(fsyncMeans)) };
    return point;
  }

  // ---- history -------------------------------------------------------------------------

  /** A ring buffer of points, oldest first, holding at most `capacity` and none
   *  older than `windowMs` before the newest. */
  class RingBuffer {
    constructor(capacity) {
      this.items = new Array(capacity);
      this.start = 0;
      this.length = 0;
    }
    push(item) {
      const capacity = this.items.length;
      this.items[(this.start + this.length) % capacity] = item;
      if (this.length < capacity) this.length++;
      else this.start = (this.start + 1) % capacity;
    }
    first() { return this.length ? this.items[this.start] : undefined; }
    shift() {
      if (!this.length) return undefined;
      const item = this.items[this.start];
      this.items[this.start] = undefined;
      this.start = (this.start + 1) % this.items.length;
      this.length--;
      return item;
    }
    toArray() {
      const out = [];
      for (let i = 0; i < this.length; i++) out.push(this.items[(this.start + i) % this.items.length]);
      return out;
    }
  }

  /** The page's memory of the cluster: snapshots in, chart points out. */
  class History {
    constructor(windowMs = WINDOW_MS, capacity = CAPACITY) {
      this.windowMs = windowMs;
      this.buffer = new RingBuffer(capacity);
      this.last = null;
    }
    /** Adds a snapshot (see makePoint); returns its point. */
    add(snapshot) {
      const point = makePoint(this.last, snapshot);
      this.last = snapshot;
      this.buffer.push(point);
      this.trim(snapshot.t);
      return point;
    }
    /** Drops the points older than the window before `now`. */
    trim(now) {
      while (this.buffer.length && this.buffer.first().t < now - this.windowMs) this.buffer.shift();
    }
    points() { return this.buffer.toArray(); }
    latest() { return this.buffer.length ? this.buffer.items[(this.buffer.start + this.buffer.length - 1) % this.buffer.items.length] : null; }
    /** Forgets everything (a new sign-in starts a new history). */
    clear() {
      this.buffer = new RingBuffer(this.buffer.items.length);
      this.last = null;
    }
  }

  /** Chart series from points: `pick(point)` is a {name: value} map or null (the
   *  point has nothing to say: skipped). A name missing from a map is a gap.
   *  Answers [{name, points: [[t, value|null], …]}], sorted by name. */
  function seriesOf(points, pick) {
    const names = new Set();
    const picked = [];
    for (const p of points) {
      const m = pick(p);
      if (!m) continue;
      picked.push([p.t, m]);
      for (const name of Object.keys(m)) names.add(name);
    }
    return Array.from(names).sort().map((name) => ({
      name,
      points: picked.map(([t, m]) => {
        const v = m[name];
        return [t, v === undefined || v === null || !Number.isFinite(v) ? null : v];
      }),
    }));
  }

  // ---- drawing ---------------------------------------------------------------------------

  function escapeXml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  /** A round upper bound for the y axis: 1, 2, 2.5 or 5 times a power of ten. */
  function niceMax(max) {
    if (!(max > 0) || !Number.isFinite(max)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(max)));
    for (const step of [1, 2, 2.5, 5, 10]) if (max <= step * power) return step * power;
    return 10 * power;
  }

  function formatNumber(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "-";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.1) return v.toFixed(2);
    if (a === 0) return "0";
    return v.toPrecision(2);
  }

  function lastDefined(points) {
    for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null) return points[i][1];
    return null;
  }

  /** The path data of one series: `M x y L x y …`, a new `M` after each gap; a
   *  lone point is drawn as a dot (a zero-length segment with round caps). */
  function pathData(points, x, y) {
    const parts = [];
    let open = false;
    for (let i = 0; i < points.length; i++) {
      const [t, v] = points[i];
      if (v === null) { open = false; continue; }
      const xy = x(t).toFixed(1) + " " + y(v).toFixed(1);
      const alone = !open && (i + 1 >= points.length || points[i + 1][1] === null);
      parts.push((open ? "L" : "M") + xy + (alone ? " h0.01" : ""));
      open = true;
    }
    return parts.join(" ");
  }

  /** A line chart as an SVG string. `series` as seriesOf answers; the x axis ends
   *  at `now` (default: the newest point) and spans 1, 2 or `windowMs` (5) minutes,
   *  the shortest that holds the oldest point; the y axis runs from 0
   *  to a round maximum, labelled with `unit`. Each drawn series is a
   *  `<path class="series" data-series="name">`; the legend names it with its
   *  latest value. Without any point the chart says "no data yet" and has no
   *  series paths. */
  function renderChart(opts) {
    const width = opts.width || 480;
    const plotHeight = opts.height || 150;
    const maxSpan = opts.windowMs || WINDOW_MS;
    const unit = opts.unit || "";
    const margin = { left: 56, right: 12, top: 10, bottom: 22 };
    const withData = (opts.series || []).filter((s) => s.points.some((p) => p[1] !== null));
    let times = [];
    for (const s of withData) for (const [t] of s.points) times.push(t);
    const now = opts.now ?? (times.length ? Math.max(...times) : 0);
    const age = times.length ? now - Math.min(...times) : 0;
    const windowMs = SPANS_MS.filter((span) => span < maxSpan).concat([maxSpan]).find((span) => span >= age) || maxSpan;
    // The largest series (by their peak) are drawn; colours follow name order.
    const peak = (s) => Math.max(...s.points.map((p) => (p[1] === null ? -Infinity : p[1])));
    const drawn = withData.slice().sort((a, b) => peak(b) - peak(a) || (a.name < b.name ? -1 : 1))
      .slice(0, MAX_SERIES).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const hidden = withData.length - drawn.length;
    // Two legend columns, or one when a name would not fit in half the width.
    const columns = drawn.some((s) => s.name.length > 26) ? 1 : 2;
    const legendRows = Math.ceil((drawn.length + (hidden ? 1 : 0)) / columns);
    const height = margin.top + plotHeight + margin.bottom + (legendRows ? 6 + legendRows * 16 : 0);
    const x0 = margin.left, x1 = width - margin.right;
    const y0 = margin.top + plotHeight, y1 = margin.top;
    let max = 0;
    for (const s of drawn) for (const [, v] of s.points) if (v !== null && v > max) max = v;
    const top = niceMax(max);
    const x = (t) => x0 + (Math.min(Math.max(t - (now - windowMs), 0), windowMs) / windowMs) * (x1 - x0);
    const y = (v) => y0 - (Math.min(v, top) / top) * (y0 - y1);
    const minutes = windowMs / 60000;
    const out = [];
    out.push(`<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 ${width} ${height}"` +
      ` role="img" aria-label="${escapeXml(opts.title || "chart")}">`);
    if (opts.title) out.push(`<title>${escapeXml(opts.title)}</title>`);
    out.push(`<rect class="plot" x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="#fafbfc" stroke="#d9dde5"/>`);
    const mid = (y0 + y1) / 2;
    out.push(`<line class="grid" x1="${x0}" y1="${mid}" x2="${x1}" y2="${mid}" stroke="#d9dde5" stroke-dasharray="3 3"/>`);
    out.push(`<text class="axis y-max" x="${x0 - 4}" y="${y1 + 4}" text-anchor="end">${escapeXml(formatNumber(top) + (unit ? " " + unit : ""))}</text>`);
    out.push(`<text class="axis y-mid" x="${x0 - 4}" y="${mid + 4}" text-anchor="end">${escapeXml(formatNumber(top / 2))}</text>`);
    out.push(`<text class="axis y-min" x="${x0 - 4}" y="${y0}" text-anchor="end">0</text>`);
    out.push(`<text class="axis x-label" x="${x0}" y="${y0 + 15}">last ${formatNumber(minutes)} min</text>`);
    out.push(`<text class="axis x-now" x="${x1}" y="${y0 + 15}" text-anchor="end">now</text>`);
    if (!drawn.length) {
      out.push(`<text class="empty" x="${(x0 + x1) / 2}" y="${mid + 4}" text-anchor="middle">${escapeXml(opts.emptyText || "no data yet")}</text>`);
    }
    drawn.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      out.push(`<path class="series" data-series="${escapeXml(s.name)}" fill="none" stroke="${color}"` +
        ` stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round" d="${pathData(s.points, x, y)}"/>`);
    });
    const legendTop = y0 + margin.bottom + 6;
    const columnWidth = (width - margin.left) / columns;
    const maxLabel = columns === 2 ? 36 : 72;
    const entries = drawn.map((s, i) => ({ color: PALETTE[i % PALETTE.length], name: s.name, value: lastDefined(s.points) }));
    entries.forEach((e, i) => {
      const lx = margin.left + (i % columns) * columnWidth, ly = legendTop + Math.floor(i / columns) * 16;
      const label = e.name + "  " + formatNumber(e.value) + (unit ? " " + unit : "");
      out.push(`<g class="legend-entry" data-series="${escapeXml(e.name)}">` +
        `<rect x="${lx}" y="${ly}" width="10" height="10" fill="${e.color}"/>` +
        `<text x="${lx + 14}" y="${ly + 9}">${escapeXml(label.length > maxLabel ? label.slice(0, maxLabel - 1) + "…" : label)}</text></g>`);
    });
    if (hidden) {
      const i = entries.length;
      const lx = margin.left + (i % columns) * columnWidth, ly = legendTop + Math.floor(i / columns) * 16;
      out.push(`<text class="legend-more" x="${lx}" y="${ly + 9}">+${hidden} smaller series not drawn</text>`);
    }
    out.push("</svg>");
    return out.join("");
  }

  return {
    WINDOW_MS, SPANS_MS, CAPACITY, MAX_SERIES, LEASE_KINDS,
    parsePrometheus, parseLine, summarize,
    counterDelta, rates, meanBetween, aggregateLag, makePoint,
    RingBuffer, History, seriesOf,
    niceMax, formatNumber, pathData, renderChart, escapeXml,
  };
})();

if (typeof module !== "undefined") module.exports = BrokerCharts;
