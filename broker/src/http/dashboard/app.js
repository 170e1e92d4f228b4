// The dashboard: plain browser JavaScript over the public JSON API (shared/API.md).
// No framework and no build step; the broker serves this file as it is.
//
// A secured cluster wants `Authorization: Bearer <token>` on every call. The page
// asks for the token when a call answers 401 and keeps it in sessionStorage: this
// tab only, gone when the tab closes, never in localStorage, a cookie or a URL.
// A 403 (the token's user lacks a permission) is shown where it happened; the rest
// of the page keeps working.
//
// The charts (charts.js, loaded first: the global BrokerCharts) come from every
// node's Prometheus text, GET /v1/cluster/nodes/{id}/metrics (the same permission
// as /metrics): each refresh reads all nodes at once, and the last five minutes of
// points stay in this tab's memory (forgotten on log out).
"use strict";

const TOKEN_KEY = "broker-dashboard-token";

const DLQ_PREFIX = "%DLQ%";
// Properties the broker sets on a dead-lettered message; a resend drops them.
const DLQ_PROPERTIES = ["ORIGIN_TOPIC", "ORIGIN_QUEUE_ID", "ORIGIN_QUEUE_OFFSET", "RECONSUME_TIMES"];
const REFRESH_MS = 3000;

const expandedTopics = new Set();
let selectedGroup = null;
let refreshing = false;
// While the sign-in form is up, nothing refreshes.
let signingIn = false;
// The charts' memory, and what the newest metrics said of each node.
const chartHistory = new BrokerCharts.History();
let appliedFromMetrics = {};
// One more on each log out: metrics read for the previous user are dropped.
let chartsGeneration = 0;
// The charts: element id, unit, and the {series: value} map a point gives it.
const CHARTS = [
  { id: "chart-send-rate", title: "send rate per topic", unit: "msg/s", pick: (p) => p.sendRate },
  { id: "chart-pull-rate", title: "pull rate per topic", unit: "msg/s", pick: (p) => p.pullRate },
  { id: "chart-lag", title: "consumer lag per consumer group", unit: "msgs", pick: (p) => p.lag },
  {
    id: "chart-latency", title: "latency, mean per interval, slowest node", unit: "ms",
    pick: (p) => p.latency && { "send (quorum commit + apply)": p.latency.send, "Raft log fsync": p.latency.fsync },
  },
  {
    id: "chart-leases", title: "receive and ack", unit: "msg/s",
    pick: (p) => p.leaseRate && {
      delivered: p.leaseRate.delivered, acked: p.leaseRate.acked,
      redelivered: p.leaseRate.redelivered, "dead-lettered": p.leaseRate.dead_lettered,
    },
  },
];

// ---- helpers -------------------------------------------------------------------

/** An element with attributes (`class`, `data-*`, `on*` handlers) and children. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const enc = encodeURIComponent;
const dash = (v) => (v === null || v === undefined ? "-" : v);

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Calls the API with the tab's token; resolves to the JSON answer (or the text,
 *  with `asText`), rejects with an Error whose message is `CODE: message` and which
 *  carries `code` and `status`. A 401 also brings up the sign-in form. */
async function api(method, path, body, asText) {
  const init = { method, headers: {} };
  const token = storedToken();
  if (token) init.headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (response.ok && asText) return text;
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
  if (!response.ok) {
    const code = json && json.code ? json.code : "HTTP_" + response.status;
    const message = json && json.message ? json.message : text;
    const error = new Error(code + ": " + message);
    error.code = code;
    error.status = response.status;
    if (response.status === 401) askForToken(token ? error : null);
    throw error;
  }
  return json;
}

/** An error as the page shows it: 401 and 403 say what to do about them. */
function explain(e) {
  if (e.status === 401) return e.message + " (sign in with a valid token)";
  if (e.status === 403) {
    return e.message + " (this token's user lacks the permission; an admin grants it with mqctl user update)";
  }
  return e.message;
}

// ---- sign in ---------------------------------------------------------------------

/** Shows the sign-in form instead of the page; `refused` is the 401 a stored token
 *  got (that token is forgotten), or null when there was no token. */
function askForToken(refused) {
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  signingIn = true;
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = refused
    ? "The token was refused: " + refused.message + ". Sign in again."
    : "";
  showSignedIn();
  document.getElementById("login-token").focus();
}

function showSignedIn() {
  const signedIn = storedToken() !== null;
  document.getElementById("signed-in").hidden = !signedIn;
  document.getElementById("logout").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("login-token");
  const token = input.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    // Any valid token may list topics (those it may see): a cheap check.
    await api("GET", "/v1/topics");
  } catch (e) {
    if (e.status !== 401) {
      // The token works; something else failed, which the page will show.
      document.getElementById("login-error").textContent = explain(e);
    }
    if (storedToken() === null) return;
  }
  input.value = "";
  signingIn = false;
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  showSignedIn();
  await refresh();
}

function logOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const tbody of document.querySelectorAll("main table tbody")) tbody.replaceChildren();
  // The next user may not see what this one saw: the charts start over.
  chartsGeneration++;
  chartHistory.clear();
  appliedFromMetrics = {};
  renderCharts();
  renderLeaseCounts(null);
  document.getElementById("charts-nodes").replaceChildren();
  document.getElementById("served-by").textContent = "";
  document.body.dataset.loaded = "false";
  askForToken(null);
  document.getElementById("login-error").textContent = "Logged out: the token is forgotten.";
}

/** Opens a document that needs the token (OpenAPI, metrics) in a new tab. */
async function openWithToken(event, path, type) {
  event.preventDefault();
  try {
    const text = await api("GET", path, undefined, true);
    window.open(URL.createObjectURL(new Blob([text], { type })), "_blank");
  } catch (e) {
    status(path + ": " + explain(e), true);
  }
}

function status(text, isError) {
  const node = document.getElementById("action-status");
  node.textContent = text;
  node.className = isError ? "error" : "ok";
}

function banner(text) {
  const node = document.getElementById("error-banner");
  node.hidden = !text;
  node.textContent = text || "";
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- cluster -------------------------------------------------------------------

function renderCluster(cluster) {
  document.getElementById("served-by").textContent =
    "served by node " + cluster.node_id + " of " + cluster.group;
  const rows = [];
  for (const group of cluster.groups) {
    for (const node of group.nodes) {
      rows.push(el("tr", { class: "node role-" + node.role, "data-group": group.group, "data-node-id": node.id },
        el("td", {}, group.group),
        el("td", {}, node.id + (group.leader_id === node.id ? " *" : "")),
        el("td", {}, node.url),
        el("td", { class: "role" }, node.role),
        el("td", {}, dash(node.term)),
        el("td", {}, dash(node.last_log_index)),
        appliedCell(node),
        el("td", { class: "lag" }, dash(node.lag)),
        el("td", {}, node.reachable === null ? "-" : node.reachable ? "yes" : "no")));
    }
  }
  fill(document.querySelector("#cluster-table tbody"), rows);
}

/** A node's applied index: /v1/cluster knows only the serving node's; the others'
 *  come from their own metrics (broker_raft_applied_index), when they answered. */
function appliedCell(node) {
  if (node.applied_index !== null && node.applied_index !== undefined) {
    return el("td", { class: "applied" }, node.applied_index);
  }
  const applied = appliedFromMetrics[String(node.id)];
  if (applied === undefined) return el("td", { class: "applied" }, "-");
  return el("td", { class: "applied from-metrics", title: "from the node's broker_raft_applied_index metric" }, applied);
}

// ---- charts --------------------------------------------------------------------

/** Reads every node's metrics at once (through the node serving this page) and
 *  adds the snapshot to the history. Answers the error to show in the charts
 *  section (a 403, or every node failing), or null. */
async function sampleMetrics(cluster) {
  const ids = Array.from(new Set(cluster.groups.flatMap((g) => g.nodes.map((n) => String(n.id)))));
  const t = Date.now();
  const generation = chartsGeneration;
  const answers = await Promise.all(ids.map((id) =>
    api("GET", "/v1/cluster/nodes/" + enc(id) + "/metrics", undefined, true).then(
      (text) => ({ t: Date.now(), summary: BrokerCharts.summarize(BrokerCharts.parsePrometheus(text)) }),
      (e) => ({ t: Date.now(), error: e }))));
  if (signingIn || generation !== chartsGeneration) return null;
  const refused = answers.find((a) => a.error && a.error.status === 403);
  if (refused) return refused.error;
  const nodes = {};
  ids.forEach((id, i) => {
    const a = answers[i];
    nodes[id] = a.summary ? a : { t: a.t, error: a.error.message };
  });
  const point = chartHistory.add({ t, nodes });
  appliedFromMetrics = point.applied;
  renderNodeStatus(ids, point);
  const failed = answers.filter((a) => a.error);
  return failed.length && failed.length === answers.length ? failed[0].error : null;
}

function renderNodeStatus(ids, point) {
  const parts = ids.map((id) => {
    const state = point.nodes[id];
    return state === "ok"
      ? el("span", { class: "node-metrics ok", "data-node-id": id }, "node " + id + ": ok")
      : el("span", { class: "node-metrics bad", "data-node-id": id, title: state }, "node " + id + ": no metrics");
  });
  document.getElementById("charts-nodes").replaceChildren("metrics of ", ...parts);
}

function renderCharts() {
  const points = chartHistory.points();
  const now = points.length ? points[points.length - 1].t : Date.now();
  for (const chart of CHARTS) {
    document.getElementById(chart.id).innerHTML = BrokerCharts.renderChart({
      title: chart.title, unit: chart.unit, now,
      series: BrokerCharts.seriesOf(points, chart.pick),
    });
  }
}

/** The lease counts: leased now (from /v1/groups, null if not known) and the
 *  counters' totals over the nodes (from the newest metrics). */
function renderLeaseCounts(groups) {
  const latest = chartHistory.latest();
  const totals = latest ? latest.leaseTotals : {};
  const leased = groups ? groups.reduce((sum, g) => sum + (g.leased ?? 0), 0) : null;
  document.getElementById("lease-leased").textContent = dash(leased);
  document.getElementById("lease-delivered").textContent = dash(totals.delivered);
  document.getElementById("lease-acked").textContent = dash(totals.acked);
  document.getElementById("lease-redelivered").textContent = dash(totals.redelivered);
  document.getElementById("lease-dead-lettered").textContent = dash(totals.dead_lettered);
}

// ---- topics --------------------------------------------------------------------

function messageCount(queues) {
  return queues.reduce((sum, q) => sum + (q.max_offset - q.min_offset), 0);
}

function renderTopics(topics, queuesByTopic) {
  const rows = [];
  for (const topic of topics) {
    const queues = queuesByTopic.get(topic.topic) || [];
    const expanded = expandedTopics.has(topic.topic);
    rows.push(el("tr", { class: "topic", "data-topic": topic.topic },
      el("td", { class: "name" }, topic.topic),
      el("td", {}, topic.groups.join(", ")),
      el("td", {}, topic.read_queue_nums + " / " + topic.write_queue_nums),
      el("td", {}, topic.perm),
      el("td", { class: "messages" }, messageCount(queues)),
      el("td", {},
        el("button", { type: "button", onclick: () => toggleTopic(topic.topic) }, expanded ? "hide queues" : "queues"),
        el("button", { type: "button", onclick: () => browseFrom(topic.topic) }, "browse"))));
    if (expanded) {
      rows.push(el("tr", { class: "queues", "data-topic": topic.topic },
        el("td", { colspan: 6 },
          el("table", { class: "inner" },
            el("thead", {}, el("tr", {}, ["broker group", "queue", "min offset", "max offset", "messages"].map((h) => el("th", {}, h)))),
            el("tbody", {}, queues.map((q) => el("tr", {},
              el("td", {}, q.group), el("td", {}, q.queue_id), el("td", {}, q.min_offset),
              el("td", {}, q.max_offset), el("td", {}, q.max_offset - q.min_offset))))))));
    }
  }
  fill(document.querySelector("#topics-table tbody"), rows);
}

function toggleTopic(topic) {
  if (expandedTopics.has(topic)) expandedTopics.delete(topic);
  else expandedTopics.add(topic);
  refresh();
}

function browseFrom(topic) {
  document.getElementById("browse-topic").value = topic;
  document.getElementById("key-topic").value = topic;
  document.getElementById("browse-topic").scrollIntoView();
}

// ---- consumer groups -------------------------------------------------------------

function renderGroups(groups) {
  const rows = groups.map((g) => el("tr", { class: "group", "data-group": g.group },
    el("td", { class: "name" }, g.group),
    el("td", {}, g.topics.join(", ")),
    el("td", {}, g.broker_groups.join(", ")),
    el("td", {}, g.queues),
    el("td", { class: "lag" }, g.lag),
    el("td", { class: "leased" }, g.leased ?? 0),
    el("td", { class: "redelivered" }, (g.redelivered ?? 0) + " / " + (g.awaiting_redelivery ?? 0)),
    el("td", {}, el("button", { type: "button", onclick: () => selectGroup(g.group) }, "offsets"))));
  fill(document.querySelector("#groups-table tbody"), rows);
}

function selectGroup(group) {
  selectedGroup = group;
  document.getElementById("reset-group").value = group;
  renderGroupDetail();
}

async function renderGroupDetail() {
  const detail = document.getElementById("group-detail");
  if (!selectedGroup) { detail.hidden = true; return; }
  const answer = await api("GET", "/v1/groups/" + enc(selectedGroup) + "/offsets");
  document.getElementById("group-detail-name").textContent = selectedGroup;
  const rows = answer.offsets.map((o) => el("tr", { class: "offset", "data-topic": o.topic, "data-queue": o.queue_id },
    el("td", {}, o.group), el("td", {}, o.topic), el("td", {}, o.queue_id),
    el("td", { class: "offset-value" }, o.offset), el("td", {}, o.max_offset), el("td", {}, o.lag),
    el("td", {}, el("button", { type: "button", onclick: () => prefillReset(o) }, "reset…"))));
  fill(document.querySelector("#group-offsets-table tbody"), rows);
  detail.hidden = false;
}

function prefillReset(o) {
  document.getElementById("reset-group").value = selectedGroup;
  document.getElementById("reset-topic").value = o.topic;
  document.getElementById("reset-queue").value = o.queue_id;
  document.getElementById("reset-broker-group").value = o.group;
  document.getElementById("reset-offset").value = o.offset;
  document.getElementById("reset-offset").focus();
}

async function resetOffset(event) {
  event.preventDefault();
  const group = document.getElementById("reset-group").value.trim();
  const topic = document.getElementById("reset-topic").value.trim();
  const queue = document.getElementById("reset-queue").value;
  const brokerGroup = document.getElementById("reset-broker-group").value.trim();
  const offset = Number(document.getElementById("reset-offset").value);
  let path = "/v1/groups/" + enc(group) + "/offsets/" + enc(topic) + "/" + enc(queue);
  if (brokerGroup) path += "?broker_group=" + enc(brokerGroup);
  try {
    const answer = await api("PUT", path, { offset, force: true });
    status("reset " + group + " on " + topic + "/" + queue + " to offset " + answer.offset, false);
    selectedGroup = group;
    await refresh();
  } catch (e) {
    status("reset failed: " + explain(e), true);
  }
}

// ---- message browser -----------------------------------------------------------------

function bodyText(m) {
  if (m.body !== undefined && m.body !== null) return m.body;
  return "(binary, base64) " + (m.body_base64 || "");
}

function renderMessages(messages, summary) {
  document.getElementById("browse-summary").textContent = summary;
  const rows = messages.map((m) => {
    const props = Object.entries(m.properties || {}).map(([k, v]) => k + "=" + v).join(" ");
    const body = bodyText(m);
    const resend = m.topic.startsWith(DLQ_PREFIX)
      ? el("button", { type: "button", class: "resend", onclick: () => resendFromDlq(m) }, "Resend")
      : null;
    return el("tr", { class: "message", "data-msg-id": m.msg_id },
      el("td", {}, m.topic), el("td", {}, m.queue_id), el("td", {}, m.queue_offset),
      el("td", { class: "mono" }, m.msg_id),
      el("td", {}, new Date(m.store_timestamp).toISOString()),
      el("td", {}, dash(m.tags)), el("td", {}, (m.keys || []).join(" ")),
      el("td", { class: "mono" }, props),
      el("td", { class: "body", title: body }, body.length > 200 ? body.slice(0, 200) + "…" : body),
      el("td", {}, resend));
  });
  fill(document.querySelector("#messages-table tbody"), rows);
}

async function browse(run) {
  try {
    await run();
  } catch (e) {
    renderMessages([], "");
    status(explain(e), true);
  }
}

function pullQueue(event) {
  event.preventDefault();
  browse(async () => {
    const topic = document.getElementById("browse-topic").value.trim();
    const queue = document.getElementById("browse-queue-id").value;
    const group = document.getElementById("browse-broker-group").value.trim();
    const offset = document.getElementById("browse-offset").value;
    const max = document.getElementById("browse-max").value || 32;
    let path = "/v1/topics/" + enc(topic) + "/queues/" + enc(queue) + "/messages?offset=" + enc(offset) + "&max_messages=" + enc(max);
    if (group) path += "&group=" + enc(group);
    const answer = await api("GET", path);
    renderMessages(answer.messages, answer.status + ": offsets " + answer.min_offset + ".." + answer.max_offset + ", next " + answer.next_offset);
  });
}

function queryKey(event) {
  event.preventDefault();
  browse(async () => {
    const topic = document.getElementById("key-topic").value.trim();
    const key = document.getElementById("key-key").value.trim();
    const answer = await api("GET", "/v1/topics/" + enc(topic) + "/messages?key=" + enc(key));
    renderMessages(answer.messages, answer.messages.length + " message(s) with key " + key);
  });
}

function queryId(event) {
  event.preventDefault();
  browse(async () => {
    const id = document.getElementById("id-msg-id").value.trim();
    const m = await api("GET", "/v1/messages/" + enc(id));
    renderMessages([m], "message " + id);
  });
}

/** Sends a dead-lettered message back to its original topic with the public send API. */
async function resendFromDlq(m) {
  const properties = Object.assign({}, m.properties || {});
  const origin = properties.ORIGIN_TOPIC;
  if (!origin) {
    status("message " + m.msg_id + " has no ORIGIN_TOPIC property; cannot resend", true);
    return;
  }
  for (const name of DLQ_PROPERTIES) delete properties[name];
  properties.DLQ_RESENT_FROM = m.msg_id;
  const message = { tags: m.tags || undefined, keys: m.keys || [], properties };
  if (m.body !== undefined && m.body !== null) message.body = m.body;
  else message.body_base64 = m.body_base64;
  try {
    const answer = await api("POST", "/v1/topics/" + enc(origin) + "/messages", { messages: [message] });
    const r = answer.results[0];
    status("resent " + m.msg_id + " to " + origin + " as " + r.msg_id + " (queue " + r.queue_id + ", offset " + r.queue_offset + ")", false);
  } catch (e) {
    status("resend failed: " + explain(e), true);
  }
}

// ---- refresh -----------------------------------------------------------------------

/** A section's error line: shown with `e`, hidden without. */
function sectionError(id, e) {
  const node = document.getElementById(id);
  node.hidden = !e;
  node.textContent = e ? explain(e) : "";
}

/** Each section on its own: a token allowed to see topics but not the cluster
 *  (403 on /v1/cluster) still sees its topics and groups. */
async function refresh() {
  if (refreshing || signingIn) return;
  refreshing = true;
  try {
    const [cluster, topics, groups] = await Promise.allSettled([
      api("GET", "/v1/cluster"), api("GET", "/v1/topics"), api("GET", "/v1/groups")]);
    const failures = [cluster, topics, groups].filter((r) => r.status === "rejected");
    if (failures.some((r) => r.reason.status === 401)) return; // the sign-in form is up
    // Every node's metrics, while the rest of the page is filled in.
    const generation = chartsGeneration;
    const metrics = cluster.status === "fulfilled"
      ? sampleMetrics(cluster.value).catch((e) => e)
      : Promise.resolve(cluster.reason);
    if (cluster.status === "fulfilled") renderCluster(cluster.value);
    else fill(document.querySelector("#cluster-table tbody"), []);
    sectionError("cluster-error", cluster.reason);
    if (topics.status === "fulfilled") {
      const list = topics.value.topics;
      const queues = await Promise.all(list.map((t) =>
        api("GET", "/v1/topics/" + enc(t.topic) + "/queues").then((a) => a.queues, () => [])));
      renderTopics(list, new Map(list.map((t, i) => [t.topic, queues[i]])));
    } else {
      fill(document.querySelector("#topics-table tbody"), []);
    }
    sectionError("topics-error", topics.reason);
    if (groups.status === "fulfilled") renderGroups(groups.value.groups);
    else fill(document.querySelector("#groups-table tbody"), []);
    sectionError("groups-error", groups.reason);
    if (selectedGroup) await renderGroupDetail().catch((e) => status(explain(e), true));
    // The charts: their errors (a 403 on metrics, no node list) show there alone.
    const chartsFailure = await metrics;
    if (signingIn || generation !== chartsGeneration) return;
    if (cluster.status === "fulfilled") renderCluster(cluster.value); // the applied column
    renderCharts();
    renderLeaseCounts(groups.status === "fulfilled" ? groups.value.groups : null);
    if (cluster.status === "rejected") {
      sectionError("charts-error", { status: cluster.reason.status,
        message: "the charts need the node list (GET /v1/cluster): " + cluster.reason.message });
    } else {
      sectionError("charts-error", chartsFailure);
    }
    // A failure other than a refusal of the credentials is the cluster's trouble.
    const other = failures.find((r) => r.reason.status !== 403);
    banner(other ? "refresh failed: " + other.reason.message : "");
    document.getElementById("last-refresh").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e.status !== 401) banner("refresh failed: " + explain(e));
  } finally {
    refreshing = false;
  }
}

document.getElementById("refresh").addEventListener("click", refresh);
document.getElementById("login-form").addEventListener("submit", signIn);
document.getElementById("logout").addEventListener("click", logOut);
document.getElementById("open-openapi").addEventListener("click",
  (event) => openWithToken(event, "/openapi.json", "application/json"));
document.getElementById("open-metrics").addEventListener("click",
  (event) => openWithToken(event, "/metrics", "text/plain"));
showSignedIn();
renderCharts();
document.getElementById("reset-form").addEventListener("submit", resetOffset);
document.getElementById("browse-queue").addEventListener("submit", pullQueue);
document.getElementById("browse-key").addEventListener("submit", queryKey);
document.getElementById("browse-id").addEventListener("submit", queryId);
setInterval(() => { if (document.getElementById("auto-refresh").checked) refresh(); }, REFRESH_MS);
refresh();
