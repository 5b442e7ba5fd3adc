// The dashboard's shell: config, sign-in through control, the Khala client, hash routing,
// and the connection badge. Pages live in pages.js; each page re-renders (coalesced per
// animation frame) when a document it shows changes.

import { KhalaClient } from "/client/khala.js";
import { PAGES, configure, route } from "./pages.js";

const $ = (sel) => document.querySelector(sel);
const main = $("#main");
const SESSION_KEY = "oa.dashboard.session";

// Commit -> pixels latencies measured in this page (bench/browser.py reads them).
const metrics = { commitToDom: [], commitToPixels: [], seen: new Set(), max: 20000 };
window.oa = { metrics, client: null, config: null };

const STATE_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  hydrating: "loading…",
  syncing: "catching up…",
  live: "live",
  reconnecting: "reconnecting…",
  resyncing: "resyncing…",
  closed: "signed out",
};

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

async function controlFetch(path, { method = "GET", body = null, token = null } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(window.oa.config.control_url + path, {
      method,
      headers,
      body: body === null ? null : JSON.stringify(body),
    });
  } catch {
    throw new Error(`cannot reach control at ${window.oa.config.control_url}; is the deployment (make run) up?`);
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || `control said ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

async function loadConfig() {
  const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
  const params = new URLSearchParams(location.search);
  if (params.get("token_ttl_s")) cfg.token_ttl_s = Number(params.get("token_ttl_s"));
  window.oa.config = cfg;
  return cfg;
}

/** A fresh sync token for this session (the client asks before connecting and to refresh).
 * If control does not answer, `make run` may have restarted it on another port: re-read
 * config.json (served by this Khala, which knows control's current URL) and try once more. */
async function syncToken() {
  const s = session();
  if (!s) throw new Error("not signed in");
  const mint = () => controlFetch("/api/sync/token", {
    method: "POST",
    token: s.session_token,
    body: { ttl_seconds: window.oa.config.token_ttl_s },
  });
  try {
    try {
      return (await mint()).token;
    } catch (err) {
      if (err.status) throw err; // control answered: not a moved port
      const before = window.oa.config.control_url;
      await loadConfig();
      if (window.oa.config.control_url === before) throw err;
      return (await mint()).token;
    }
  } catch (err) {
    if (err.status === 401) signOut("your session ended; sign in again");
    throw err;
  }
}

function showBanner(text, kind = "info") {
  const b = $("#banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.dataset.kind = kind;
}

function setConn(state, detail) {
  const c = $("#conn");
  c.dataset.state = state;
  c.textContent = STATE_TEXT[state] || state;
  if (state === "reconnecting") showBanner("Connection lost; reconnecting and resuming where we left off…");
  else if (state === "resyncing") showBanner("Too far behind to resume; reloading documents…");
  else if (state === "live" || state === "closed") showBanner("");
  if (detail && detail.refreshed) c.title = `token refreshed, valid until ${new Date(window.oa.client.expiresAt * 1000).toLocaleTimeString()}`;
}

let current = null; // {name, view}
let scheduled = false;
const pendingKeys = new Set();

function scheduleRender(key) {
  if (key) pendingKeys.add(key);
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    const keys = new Set(pendingKeys);
    pendingKeys.clear();
    if (current && current.view.update) current.view.update(keys);
  });
}

/** Called by pages after they put timeline rows on screen: records commit -> DOM/pixels. */
export function recordPaint(entries) {
  const domAt = Date.now();
  const fresh = [];
  for (const e of entries) {
    // A commit time stamped by the writer (bench/browser.py sends run.delta {delta: {sent_ms}}).
    const p = e.payload || {};
    const stamp = typeof p.sent_ms === "number" ? p.sent_ms : p.delta && p.delta.sent_ms;
    const sent = typeof stamp === "number" ? stamp : null;
    const id = `${e.run_id}:${e.seq}`;
    if (sent === null || metrics.seen.has(id)) continue;
    metrics.seen.add(id);
    fresh.push(sent);
    metrics.commitToDom.push(domAt - sent);
  }
  if (!fresh.length) return;
  // The next frame's callback runs once this frame has been painted.
  requestAnimationFrame(() =>
    requestAnimationFrame(() => {
      const px = Date.now();
      for (const sent of fresh) metrics.commitToPixels.push(px - sent);
      if (metrics.commitToPixels.length > metrics.max) metrics.commitToPixels.splice(0, 1000);
    }),
  );
}

function navigate() {
  const r = route(location.hash);
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.page === r.section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (current && current.view.unmount) current.view.unmount();
  main.replaceChildren();
  const page = PAGES[r.page];
  document.title = `${page.title(r)} · OpenAgents`;
  const ctx = { ...r, client: window.oa.client, config: window.oa.config, session: session(), syncToken, recordPaint };
  current = { name: r.page, view: page.mount(main, ctx) };
  main.focus({ preventScroll: true });
}

function signOut(reason = "") {
  const s = session();
  sessionStorage.removeItem(SESSION_KEY);
  if (s) controlFetch("/api/auth/sign-out", { method: "POST", token: s.session_token }).catch(() => {});
  if (window.oa.client) window.oa.client.close();
  window.oa.client = null;
  $("#sign-out").hidden = true;
  showSignIn(reason);
}

function showSignIn(reason = "") {
  current = null;
  setConn("idle");
  main.replaceChildren();
  const form = document.createElement("form");
  form.className = "signin";
  form.innerHTML = `
    <h1>Sign in</h1>
    <p class="muted">With your OpenAgents account (control at <code></code>).</p>
    <label for="signin-email">Email</label><input id="signin-email" name="email" type="email" autocomplete="username" required>
    <label for="signin-password">Password</label><input id="signin-password" name="password" type="password" autocomplete="current-password" required>
    <label for="signin-org">Org <span class="muted">(optional)</span></label><input id="signin-org" name="org" autocomplete="organization">
    <button type="submit">Sign in</button>
    <p class="error" role="alert"></p>
    <p class="muted">No account yet? <code>oa control user add EMAIL</code> creates one.</p>`;
  form.querySelector("code").textContent = window.oa.config.control_url || "not configured";
  form.querySelector(".error").textContent = reason;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { email: f.get("email"), password: f.get("password") };
    if (f.get("org")) body.org = f.get("org");
    try {
      const s = await controlFetch("/api/auth/sign-in", { method: "POST", body });
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ ...s, email: body.email }));
      start();
    } catch (err) {
      form.querySelector(".error").textContent = `Sign-in failed: ${err.message}`;
    }
  });
  main.append(form);
  form.querySelector("input").focus();
}

function start() {
  const cfg = window.oa.config;
  const params = new URLSearchParams(location.search);
  // Every Khala node the page may use (config.sync_urls); one URL, or none: this origin.
  const urls = cfg.sync_urls && cfg.sync_urls.length ? cfg.sync_urls : [location.origin];
  // Pages say what they show: live queries (a run, the newest runs and workers of this
  // user), or a whole topic only where a page needs one (spend, a topic's documents).
  const client = new KhalaClient({
    urls,
    tokenProvider: syncToken,
    topics: [],
    catalog: cfg.topic_catalog,
    refreshBeforeS: Number(params.get("refresh_before_s") || cfg.refresh_before_s),
    onState: setConn,
    onChange: (key) => scheduleRender(key),
  });
  client.onBatch((frame) => {
    if (frame.type === "hydrated" || frame.replay_complete) scheduleRender(null);
  });
  window.oa.client = client;
  $("#sign-out").hidden = false;
  client.start();
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/runs";
  else navigate();
}

async function boot() {
  configure(await loadConfig());
  $("#sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => (window.oa.client ? navigate() : null));
  if (!window.oa.config.control_url) {
    showBanner("This Khala server does not know where control is (set OA_CONTROL_URL).", "error");
  }
  if (session()) start();
  else showSignIn();
}

boot();
