// The dashboard's pages. Each `mount(main, ctx)` draws a page and returns `{update(keys),
// unmount()}`; `update` gets the doc keys that changed since the last frame. Everything
// shown comes from Khala documents (live) or Khala's read-only HTTP endpoints; nothing
// here writes anywhere. Text goes in through textContent only (payloads are user data).

import { lineChart } from "./chart.js";

// Document prefixes come from the served config (derived from the proto catalog).
let RUN, TIMELINE, WORKER, SPEND, TEXT;
export function configure(config) {
  const prefix = (name) => config.projections[name].doc_prefix;
  RUN = prefix("run_summaries");
  TIMELINE = prefix("run_timelines");
  WORKER = prefix("codex_worker_summaries");
  SPEND = prefix("run_daily_spend");
  // A run's streamed text (text.delta events folded into one growing document, sent by deltas).
  const text = Object.values(config.projections).find((p) => p.doc_prefix.startsWith("runtime/run_text"));
  TEXT = text ? text.doc_prefix : "runtime/run_text:";
}
const RUNS_TOPIC = "runtime.run_summaries";
const WORKERS_TOPIC = "runtime.codex_worker_summaries";
const LIST_LIMIT = 50; // the runs and workers pages show the newest 50 of the signed-in user
const STALE_HEARTBEAT_S = 120;

// -- tiny DOM helpers ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function table(headers, rows, attrs = {}) {
  return h("div", { class: "scroll" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls || null, scope: "col" }, label)))),
      rows.length === 1 && rows[0].tagName === "TBODY" ? rows[0] : h("tbody", {}, rows)));
}

function ago(iso) {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function short(obj, n = 120) {
  const s = JSON.stringify(obj);
  return s.length > n ? s.slice(0, n) + "…" : s;
}

async function khalaGet(ctx, path) {
  const token = await ctx.syncToken();
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
  return body;
}

// Khala's operator endpoints (status, lag, metrics) take the deployment's admin key, the
// one the Operators page keeps for this tab; without it they are not shown.
const ADMIN_KEY = "oa.dashboard.admin_key";

async function operatorGet(path) {
  const key = sessionStorage.getItem(ADMIN_KEY) || "";
  if (!key) throw new Error("operators only: enter the admin key on the Operators page");
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${key}` } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
  return body;
}

// -- routing -------------------------------------------------------------------------------

export function route(hash) {
  const parts = (hash || "").replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [a, ...rest] = parts;
  if (a === "runs" && rest.length && rest[0]) return { page: "run", section: "runs", id: rest.join("/") };
  if (a === "workers") return { page: "workers", section: "workers" };
  if (a === "topics" && rest.length && rest[0]) return { page: "topic", section: "topics", topic: rest[0] };
  if (a === "topics") return { page: "topics", section: "topics" };
  if (a === "doc") return { page: "doc", section: "topics", topic: rest[0], key: rest.slice(1).join("/") };
  if (a === "health") return { page: "health", section: "health" };
  if (a === "spend") return { page: "spend", section: "spend" };
  if (a === "operators") return { page: "operators", section: "operators" };
  return { page: "runs", section: "runs" };
}

const link = (href, text) => h("a", { href }, text);
const email = (ctx) => (ctx.session && ctx.session.email) || "you@example.com";
const who = (ctx) => (ctx.session && ctx.session.email) || "this account";
const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;
const docHref = (topic, key) => `#/doc/${encodeURIComponent(topic)}/${key.split("/").map(encodeURIComponent).join("/")}`;

// -- runs ----------------------------------------------------------------------------------

// The signed-in user as documents spell `owner` (the bare user id).
const ownerOf = (ctx) => (ctx.session && ctx.session.user_id) || ctx.client.userId || "";
// Each mount watches under a fresh id: frames of a query just replaced cannot land in the new one.
let subSeq = 0;
const subId = (name) => `${name}#${++subSeq}`;

function runsPage(main, ctx) {
  const filter = h("input", { type: "search", placeholder: "filter by run id", "aria-label": "Filter runs by id" });
  const status = h("select", { "aria-label": "Filter runs by status" },
    ["all", "created", "running", "canceling", "succeeded", "failed", "canceled"].map((s) => h("option", { value: s }, s)));
  const count = h("span", { class: "muted", id: "runs-count" });
  const body = h("tbody", { id: "runs-body" });
  main.append(
    h("h1", {}, "Runs"),
    h("div", { class: "toolbar" }, filter, status, count),
    h("div", { class: "scroll" }, h("table", { id: "runs" },
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Run"), h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Last event"), h("th", { scope: "col", class: "num hide-sm" }, "Events"),
        h("th", { scope: "col", class: "num" }, "Cost (sats)"), h("th", { scope: "col", class: "hide-sm" }, "Updated"))),
      body)));
  // A live query: this user's newest runs (by the topic's declared order, newest first); the
  // status filter is part of the query, so "failed" shows the newest 50 failed runs.
  let view = null;
  const watch = () => {
    const where = { owner: ownerOf(ctx) };
    if (status.value !== "all") where.status = status.value;
    if (view) view.close();
    view = ctx.client.watch(subId("runs"), RUNS_TOPIC, { where, order_by: ctx.client.defaultOrder(RUNS_TOPIC), limit: LIST_LIMIT });
  };
  const draw = () => {
    const q = filter.value.trim();
    const all = view.results();
    const runs = all.filter((r) => !q || r.run_id.includes(q));
    const newest = all.length >= LIST_LIMIT ? ` (the newest ${LIST_LIMIT})` : "";
    count.textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}${newest}`;
    if (!runs.length) {
      body.replaceChildren(h("tr", { id: "runs-empty" }, h("td", { colspan: 6, class: "empty" }, !view.live
        ? "Loading…"
        : all.length || status.value !== "all"
        ? "No run matches the filter."
        : [h("p", {}, `No runs for ${who(ctx)} yet: a run shows here when it is appended as this account.`),
           h("p", {}, "In a terminal: ", h("code", {}, `oa login --email ${email(ctx)}`), " then ",
             h("code", {}, "oa runs append demo run.started"), ". Runs appended with ", h("code", {}, "--user"),
             " someone else belong to them.")])));
      return;
    }
    body.replaceChildren(...runs.map((r) =>
      h("tr", { "data-run": r.run_id, "data-status": r.status, "data-seq": r.last_seq },
        h("td", {}, link(runHref(r.run_id), r.run_id)),
        h("td", { class: `status status-${r.status}` }, r.status, r.budget_exhausted ? h("span", { class: "status-budget" }, " · budget") : null),
        h("td", {}, r.last_event_type || "—"),
        h("td", { class: "num hide-sm" }, r.event_count),
        h("td", { class: "num" }, r.spend_sats),
        h("td", { class: "hide-sm", title: r.last_event_at || "" }, ago(r.last_event_at)))));
  };
  filter.addEventListener("input", draw);
  status.addEventListener("change", () => { watch(); draw(); });
  watch();
  draw();
  return {
    update: (keys) => { if (!keys.size || [...keys].some((k) => k.startsWith(RUN))) draw(); },
    unmount: () => view.close(),
  };
}

function runPage(main, ctx) {
  const id = ctx.id;
  const cards = h("div", { class: "cards", id: "run-cards" });
  const events = h("tbody", { id: "run-events" });
  const policy = h("tbody", { id: "run-policy" });
  const text = h("pre", { id: "run-text", class: "run-text", "aria-live": "off" });
  const textNote = h("span", { class: "muted", id: "run-text-note" });
  const textSection = h("section", { id: "run-output", hidden: true },
    h("h2", {}, "Output ", textNote), text);
  main.append(
    h("p", {}, link("#/runs", "← all runs")),
    h("h1", {}, "Run ", h("code", {}, id)),
    cards,
    textSection,
    h("h2", {}, "Policy decisions and spend"),
    table([["Seq"], ["Decision"], ["Reason"], ["Tool"], ["Amount (sats)", "num"], ["Budget", "hide-sm"]], [policy]),
    h("h2", {}, "Event timeline ", h("span", { class: "muted" }, "(newest first)")),
    table([["Seq", "num"], ["Type"], ["When", "hide-sm"], ["Payload"]], [events], { id: "timeline" }));
  // This run only: its stream (summary, timeline, streamed text), not the org's other runs.
  const view = ctx.client.watch(subId(`run:${id}`), RUNS_TOPIC, { stream: id });
  const card = (label, value, attrs = {}) => h("div", { class: "card", ...attrs }, h("span", { class: "muted" }, label), h("b", {}, value));
  const drawText = (r) => {
    const t = view.get(TEXT + id);
    if (!t) return;
    const s = typeof t.text === "string" ? t.text : Array.isArray(t.chunks) ? t.chunks.join("") : "";
    const dropped = Number(t.dropped_chars || 0); // the document keeps a window of the newest text
    textSection.hidden = false;
    // Append what grew (the usual case: tokens arriving) instead of rewriting the node.
    if (s.startsWith(text.textContent)) text.append(s.slice(text.textContent.length));
    else text.textContent = s;
    const streaming = r && (r.status === "running" || r.status === "created");
    const chars = Number.isInteger(t.chars) ? t.chars : Array.from(s).length; // characters, not UTF-16 units
    const kept = dropped ? `; the first ${dropped} not kept here` : "";
    textNote.textContent = `(${chars} characters${kept}${streaming ? ", streaming" : ""})`;
    text.dataset.chars = String(chars);
  };
  const draw = () => {
    const r = view.get(RUN + id);
    const tl = view.get(TIMELINE + id);
    if (!r) {
      cards.replaceChildren(h("div", { class: "empty", id: "run-empty" }, !view.live ? "Loading…" : [
        h("p", {}, `No run `, h("code", {}, id), ` for ${who(ctx)} yet; this page updates when it appears.`),
        h("p", {}, "A run is yours when it is appended as your account: ", h("code", {}, `oa login --email ${email(ctx)}`),
          " then ", h("code", {}, `oa runs append ${id} run.started`), ". A run appended with ", h("code", {}, "--user"),
          " someone else is theirs, and not shown here.")]));
    } else {
      cards.replaceChildren(
        card("status", r.status, { class: `card status-${r.status}`, id: "run-status" }),
        card("events", r.event_count), card("last event", r.last_event_type || "—"),
        card("spend (sats)", r.spend_sats, { id: "run-spend" }),
        card("policy", `${r.policy_allowed} allowed · ${r.policy_denied} denied`),
        card("tool calls", `${r.tool_calls} (${r.tool_errors} failed)`),
        card("model", r.model || "—"),
        card("budget", r.budget_exhausted ? "exhausted" : "ok"));
    }
    drawText(r);
    if (tl) {
      const rows = [...tl.events].reverse();
      events.replaceChildren(...rows.map((e) =>
        h("tr", { "data-seq": e.seq, "data-type": e.type },
          h("td", { class: "num" }, e.seq), h("td", {}, e.type),
          h("td", { class: "hide-sm", title: e.at }, ago(e.at)), h("td", {}, h("code", {}, short(e.payload))))));
      policy.replaceChildren(...[...tl.policy].reverse().map((p) =>
        h("tr", { "data-decision": p.decision_id || "" },
          h("td", {}, p.seq), h("td", { class: p.decision === "allow" ? "status-succeeded" : "status-failed" }, p.decision),
          h("td", {}, p.reason_code || "—"), h("td", {}, p.tool || "—"), h("td", { class: "num" }, p.amount_sats ?? "—"),
          h("td", { class: "hide-sm" }, h("code", {}, short(p.budget, 80))))));
      if (!tl.policy.length) policy.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "no policy decisions yet")));
      ctx.recordPaint(tl.events.map((e) => ({ ...e, run_id: id })));
    }
  };
  draw();
  return {
    update: (keys) => { if (!keys.size || keys.has(RUN + id) || keys.has(TIMELINE + id) || keys.has(TEXT + id)) draw(); },
    unmount: () => view.close(),
  };
}

// -- workers -------------------------------------------------------------------------------

export function heartbeat(w, now = Date.now()) {
  if (w.status === "stopped" || w.status === "failed") return w.status;
  if (!w.last_heartbeat_at) return "missing";
  return (now - Date.parse(w.last_heartbeat_at)) / 1000 > STALE_HEARTBEAT_S ? "stale" : "fresh";
}

function workersPage(main, ctx) {
  const body = h("tbody", { id: "workers-body" });
  main.append(h("h1", {}, "Workers"),
    h("p", { class: "muted" }, `Heartbeat: fresh within ${STALE_HEARTBEAT_S} s, else stale; missing if none yet.`),
    table([["Worker"], ["Status"], ["Heartbeat"], ["Last heartbeat", "hide-sm"], ["Last event", "hide-sm"], ["Errors", "num"]], [body], { id: "workers" }));
  // A live query: this user's newest workers (by the topic's declared order, newest first).
  const view = ctx.client.watch(subId("workers"), WORKERS_TOPIC,
    { where: { owner: ownerOf(ctx) }, order_by: ctx.client.defaultOrder(WORKERS_TOPIC), limit: LIST_LIMIT });
  const draw = () => {
    const ws = view.results();
    body.replaceChildren(...ws.map((w) => {
      const hb = heartbeat(w);
      return h("tr", { "data-worker": w.worker_id, "data-heartbeat": hb },
        h("td", {}, link(docHref("runtime.codex_worker_summaries", WORKER + w.worker_id), w.worker_id)),
        h("td", { class: "status" }, w.status), h("td", { class: `status status-${hb}` }, hb),
        h("td", { class: "hide-sm", title: w.last_heartbeat_at || "" }, ago(w.last_heartbeat_at)),
        h("td", { class: "hide-sm" }, w.last_event_type || "—"), h("td", { class: "num" }, w.errors));
    }));
    if (!ws.length) body.replaceChildren(h("tr", { id: "workers-empty" }, h("td", { colspan: 6, class: "empty" },
      `No workers for ${who(ctx)} yet: a Codex worker host registers one (POST /internal/v1/codex/workers, signed as you). `,
      "In a terminal, ", h("code", {}, "oa workers list"), " shows the same.")));
  };
  draw();
  const timer = setInterval(draw, 1000); // freshness ages even when nothing changes
  return {
    update: (keys) => { if (!keys.size || [...keys].some((k) => k.startsWith(WORKER))) draw(); },
    unmount: () => { clearInterval(timer); view.close(); },
  };
}

// -- topics and documents ------------------------------------------------------------------

/** Documents this client holds of a topic: followed whole, or in its live queries. */
function held(client, topic) {
  const keys = new Set(client.list(topic).map((d) => d.doc_key));
  for (const v of client.views.values()) if (v.topic === topic) for (const k of v.documents.keys()) keys.add(k);
  return keys.size;
}

function syncedTo(client, topic) {
  if (client.watermarks[topic] !== undefined) return client.watermarks[topic];
  const marks = [...client.views.values()].filter((v) => v.topic === topic && v.watermark !== null).map((v) => v.watermark);
  return marks.length ? `${Math.max(...marks)} (live queries)` : "not subscribed";
}

function topicsPage(main, ctx) {
  const body = h("tbody", { id: "topics-body" });
  main.append(h("h1", {}, "Topics"), table([["Topic"], ["Head", "num"], ["Subscribers", "num"], ["Held here", "num"], ["Synced to", "num hide-sm"]], [body]));
  let status = null;
  const draw = () => {
    body.replaceChildren(...ctx.config.topics.map((t) => h("tr", { "data-topic": t },
      h("td", {}, link(`#/topics/${encodeURIComponent(t)}`, t)),
      h("td", { class: "num" }, status ? status.topics[t].head : "…"),
      h("td", { class: "num" }, status ? status.topics[t].subscribers : "…"),
      h("td", { class: "num" }, held(ctx.client, t)),
      h("td", { class: "num hide-sm" }, syncedTo(ctx.client, t)))));
  };
  const poll = async () => {
    try { status = await operatorGet("/sync/v1/status"); } catch { /* shown as … */ }
    draw();
  };
  poll();
  const timer = setInterval(poll, 3000);
  return { update: draw, unmount: () => clearInterval(timer) };
}

function topicPage(main, ctx) {
  const topic = ctx.topic;
  const body = h("tbody", { id: "docs-body" });
  const note = h("p", { class: "muted" });
  main.append(h("p", {}, link("#/topics", "← topics")), h("h1", {}, "Topic ", h("code", {}, topic)), note,
    table([["Document"], ["Version", "num"], ["Hash", "hide-sm"]], [body]));
  const render = (docs) => {
    body.replaceChildren(...docs.sort((a, b) => a.doc_key.localeCompare(b.doc_key)).slice(0, 1000).map((d) =>
      h("tr", { "data-doc": d.doc_key }, h("td", {}, link(docHref(topic, d.doc_key), d.doc_key)),
        h("td", { class: "num" }, d.doc_version), h("td", { class: "hide-sm" }, h("code", {}, (d.payload_hash || "").slice(0, 12))))));
    if (!docs.length) body.replaceChildren(h("tr", { id: "docs-empty" }, h("td", { colspan: 3, class: "empty" },
      `No documents in this topic for ${who(ctx)} yet: the projector writes one when the runtime records what it reflects `,
      "(for runs: ", h("code", {}, "oa runs append demo run.started"), ").")));
  };
  const live = ctx.config.live_topics.includes(topic);
  if (live) {
    note.textContent = "Live: updates as the projector commits.";
    const unfollow = ctx.client.follow(topic); // the whole topic, while this page is shown
    const draw = () => render(ctx.client.list(topic));
    draw();
    return { update: draw, unmount: unfollow };
  }
  note.textContent = "A snapshot (this topic is not kept live here).";
  khalaGet(ctx, `/sync/v1/topics/${encodeURIComponent(topic)}/snapshot?limit=1000`)
    .then((snap) => { note.textContent += ` Watermark ${snap.watermark}.`; render(snap.documents); })
    .catch((err) => { note.textContent = `Could not load: ${err.message}`; });
  return {};
}

function docPage(main, ctx) {
  const { topic, key } = ctx;
  const current = h("pre", { id: "doc-current" }, "…");
  const hist = h("tbody", { id: "doc-history" });
  main.append(h("p", {}, link(`#/topics/${encodeURIComponent(topic)}`, `← ${topic}`)), h("h1", {}, h("code", {}, key)),
    h("h2", {}, "Current"), current, h("h2", {}, "Journal history ", h("span", { class: "muted" }, "(newest first, within retention)")),
    table([["Watermark", "num"], ["Version", "num"], ["Committed", "hide-sm"], ["Payload"]], [hist]));
  const loadHistory = () => khalaGet(ctx, `/sync/v1/topics/${encodeURIComponent(topic)}/documents/${key.split("/").map(encodeURIComponent).join("/")}/history`)
    .then((body) => hist.replaceChildren(...body.changes.map((c) => h("tr", { "data-watermark": c.watermark },
      h("td", { class: "num" }, c.watermark), h("td", { class: "num" }, c.doc_version),
      h("td", { class: "hide-sm", title: c.committed_at }, ago(c.committed_at)),
      h("td", {}, c.deleted ? h("em", {}, "deleted") : h("code", {}, short(c.payload, 160)))))))
    .catch((err) => hist.replaceChildren(h("tr", {}, h("td", { colspan: 4 }, `Could not load: ${err.message}`))));
  const live = ctx.config.live_topics.includes(topic);
  const view = live ? ctx.client.watch(subId("doc"), topic, { doc_key: key }) : null;
  const draw = () => {
    const d = view && view.get(key);
    if (d) current.textContent = JSON.stringify(d, null, 2);
    else if (view && !view.live) current.textContent = "…";
    else if (!view) {
      khalaGet(ctx, `/sync/v1/topics/${encodeURIComponent(topic)}/snapshot?limit=10000`).then((snap) => {
        const found = snap.documents.find((u) => u.doc_key === key);
        current.textContent = found ? JSON.stringify(found.payload, null, 2) : "not found";
      }).catch((err) => { current.textContent = `Could not load: ${err.message}`; });
    } else current.textContent = "not found (or not yours)";
  };
  draw();
  loadHistory();
  return {
    update: (keys) => { if (!keys.size || keys.has(key)) draw(); if (keys.has(key)) loadHistory(); },
    unmount: () => view && view.close(),
  };
}

// -- health --------------------------------------------------------------------------------

const healthHistory = { behind: [], idle: [], e2e: [] };

function healthPage(main, ctx) {
  const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  chart.setAttribute("class", "chart");
  chart.id = "lag-chart";
  const e2e = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  e2e.setAttribute("class", "chart");
  const proj = h("tbody", { id: "projections-body" });
  const subs = h("tbody", { id: "subs-body" });
  const errs = h("tbody", { id: "errors-body" });
  const mine = h("pre", { id: "client-stats" });
  main.append(h("h1", {}, "Health"),
    h("h2", {}, "Projector lag"), chart,
    table([["Projection"], ["Position", "num"], ["Events behind", "num"], ["Idle", "num hide-sm"], ["Error"]], [proj]),
    h("h2", {}, "Commit → this page"),
    h("p", { class: "muted", id: "e2e-note" }, "Measured only on run pages: from an event's commit in the runtime to its row being painted on an open ",
      h("code", {}, "#/runs/ID"), " page (this one shows the mean of the last 50). Keep a run page open while events arrive to collect samples."),
    e2e,
    h("h2", {}, "Subscriptions per topic"), table([["Topic"], ["Head", "num"], ["Subscribers", "num"]], [subs]),
    h("h2", {}, "Errors"), table([["When"], ["Source"], ["Projection"], ["Message"]], [errs]),
    h("h2", {}, "This client"), mine);
  const keep = (arr, p) => { arr.push(p); if (arr.length > 300) arr.shift(); };
  const poll = async () => {
    const now = Date.now();
    try {
      const [status, lag] = await Promise.all([operatorGet("/sync/v1/status"), operatorGet("/sync/v1/lag")]);
      const ps = Object.entries(lag.projections);
      const behind = lag.journal_head === null ? null : Math.max(0, ...ps.map(([, p]) => p.events_behind));
      keep(healthHistory.behind, { t: now, v: behind });
      proj.replaceChildren(...ps.map(([name, p]) => h("tr", { "data-projection": name },
        h("td", {}, name), h("td", { class: "num" }, p.position), h("td", { class: "num" }, p.events_behind ?? "?"),
        h("td", { class: "num hide-sm" }, `${Math.round(p.seconds_since_update)} s`), h("td", { class: p.error ? "status-failed" : "muted" }, p.error || "—"))));
      subs.replaceChildren(...Object.entries(status.topics).map(([t, s]) => h("tr", { "data-topic": t },
        h("td", {}, t), h("td", { class: "num" }, s.head), h("td", { class: "num" }, s.subscribers))));
      errs.replaceChildren(...(lag.errors.length ? lag.errors.map((e) => h("tr", {}, h("td", { title: e.at }, ago(e.at)),
        h("td", {}, e.source), h("td", {}, e.projection || "—"), h("td", {}, e.message))) : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no errors"))]));
    } catch (err) {
      keep(healthHistory.behind, { t: now, v: null });
      errs.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "status-failed" }, `health unavailable: ${err.message}`)));
    }
    const lat = window.oa.metrics.commitToPixels.slice(-50);
    keep(healthHistory.e2e, { t: now, v: lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : null });
    lineChart(chart, [{ name: "events behind the journal", color: "#0969da", points: healthHistory.behind }], { title: "projector lag (events behind) over time", integer: true, empty: "no lag samples yet" });
    lineChart(e2e, [{ name: "commit → pixels (ms, run pages)", color: "#8250df", points: healthHistory.e2e }], { unit: "", title: "commit to pixels latency", empty: "no samples yet: open a run page while events arrive" });
    const c = ctx.client;
    mine.textContent = JSON.stringify({ state: c.state, watermarks: c.watermarks, heads: c.heads, token_expires_at: new Date(c.expiresAt * 1000).toISOString(), ...c.stats, errors: c.stats.errors.slice(-5) }, null, 2);
  };
  poll();
  const timer = setInterval(poll, 2000);
  return { unmount: () => clearInterval(timer) };
}

// -- operators -----------------------------------------------------------------------------

function operatorsPage(main) {
  const grants = h("tbody", { id: "grants-body" });
  const audit = h("tbody", { id: "audit-body" });
  const note = h("p", { id: "operators-note", role: "status" });
  const keyInput = h("input", { type: "password", "aria-label": "Admin key", placeholder: "deployment admin key", autocomplete: "off" });
  const form = h("form", { class: "toolbar", onsubmit: (ev) => { ev.preventDefault(); sessionStorage.setItem(ADMIN_KEY, keyInput.value); load(); } },
    keyInput, h("button", { type: "submit" }, "Load"));
  main.append(h("h1", {}, "Operators"),
    h("p", { class: "muted" }, "Production-access grants and the MCP audit trail (read from this deployment's admin API)."),
    form, note,
    h("h2", {}, "Production gate grants"),
    table([["Id"], ["Ticket"], ["Reason"], ["Requester", "hide-sm"], ["Scope"], ["Expires"], ["State"]], [grants]),
    h("h2", {}, "Audit trail"),
    table([["When"], ["Ticket"], ["Tool"], ["Outcome"], ["Grant", "hide-sm"]], [audit]));
  const load = async () => {
    const key = sessionStorage.getItem(ADMIN_KEY) || "";
    if (!key) { note.textContent = "Enter the admin key to see grants and the audit trail."; return; }
    const get = async (path) => {
      const resp = await fetch(path, { headers: { Authorization: `Bearer ${key}` } });
      if (resp.status === 404) throw new Error("the admin API is not available on this server");
      if (resp.status === 401 || resp.status === 403) throw new Error("the admin key was refused");
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      return resp.json();
    };
    try {
      const [g, a] = await Promise.all([get("/admin/v1/grants"), get("/admin/v1/mcp-audit")]);
      note.textContent = "";
      grants.replaceChildren(...(g.grants.length ? g.grants.map((x) => h("tr", { "data-grant": x.id },
        h("td", {}, x.id), h("td", {}, x.ticket), h("td", {}, x.reason), h("td", { class: "hide-sm" }, x.requester ?? "—"),
        h("td", {}, x.scope ?? "—"), h("td", {}, x.expires_at ?? "—"),
        h("td", {}, x.revoked_at ? "revoked" : x.live === false || x.expired ? "expired" : x.live ? "live" : (x.state ?? "—")))) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no grants"))]));
      audit.replaceChildren(...(a.entries.length ? a.entries.map((x) => h("tr", {},
        h("td", {}, x.at ?? "—"), h("td", {}, x.ticket ?? "—"), h("td", {}, x.tool ?? "—"), h("td", {}, x.outcome ?? "—"),
        h("td", { class: "hide-sm" }, x.grant_id ?? "—"))) : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no audited calls"))]));
    } catch (err) {
      note.textContent = `Not available: ${err.message}`;
    }
  };
  load();
  return {};
}

// -- spend per org and day (the run_daily_spend projection, summed here) --------------------

function spendPage(main, ctx) {
  const body = h("tbody", { id: "spend-body" });
  main.append(h("h1", {}, "Spend per org and day"),
    table([["Org"], ["Day"], ["Sats", "num"], ["Runs", "num"]], [body]));
  // Spend documents are summed across every run here: the page follows the whole topic.
  const unfollow = ctx.client.follow(RUNS_TOPIC);
  const draw = () => {
    const totals = new Map(); // "org\u0000day" -> {org, day, sats, runs}
    for (const d of ctx.client.list("runtime.run_summaries", SPEND)) {
      const s = d.payload;
      const org = s.org_id || `${s.owner} (no org)`;
      for (const [day, sats] of Object.entries(s.days || {})) {
        const k = `${org}\u0000${day}`;
        const t = totals.get(k) || { org, day, sats: 0, runs: 0 };
        t.sats += sats;
        t.runs += 1;
        totals.set(k, t);
      }
    }
    const rows = [...totals.values()].sort((a, b) => b.day.localeCompare(a.day) || a.org.localeCompare(b.org));
    body.replaceChildren(...(rows.length ? rows.map((t) => h("tr", { "data-org": t.org, "data-day": t.day },
      h("td", {}, t.org), h("td", {}, t.day), h("td", { class: "num" }, t.sats), h("td", { class: "num" }, t.runs)))
      : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no spend yet"))]));
  };
  draw();
  return { update: (keys) => { if (!keys.size || [...keys].some((k) => k.startsWith(SPEND))) draw(); }, unmount: unfollow };
}

export const PAGES = {
  runs: { title: () => "Runs", mount: runsPage },
  run: { title: (r) => `Run ${r.id}`, mount: runPage },
  workers: { title: () => "Workers", mount: workersPage },
  topics: { title: () => "Topics", mount: topicsPage },
  topic: { title: (r) => r.topic, mount: topicPage },
  doc: { title: (r) => r.key, mount: docPage },
  health: { title: () => "Health", mount: healthPage },
  operators: { title: () => "Operators", mount: operatorsPage },
  spend: { title: () => "Spend", mount: spendPage },
};
