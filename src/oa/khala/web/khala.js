// Khala browser client: a live local cache of documents, kept by the sync protocol.
//
// The same behaviour as the Python client (src/oa/khala/client.py), so a browser and a
// script never disagree about what a document is: hydrate each topic over HTTP, subscribe
// from that watermark, apply update batches (dropping any update whose doc_version is not
// newer than the one held), refresh the token on the live socket before it expires,
// reconnect with backoff and resume from the watermarks held, rehydrate after
// `stale_cursor`. Live queries (`watch`) hold what one screen shows: one document, one
// run's stream, or an exact list, each resumed on its own cursor. Updates may be deltas
// (RFC 6902 patches, checked by hash; see live.js). Given several node URLs, the client
// moves to another when its node dies and resumes everything from its watermarks.
// An ES module with no build step:
//
//   import { KhalaClient } from "/client/khala.js";
//   const k = new KhalaClient({ urls: [a, b], tokenProvider, topics, onChange, onState });
//   k.start();
//   const view = k.watch("run", "runtime.run_summaries", { stream: runId });
//   view.onChange(({ op, doc_key, payload }) => ...);
//
// `tokenProvider` returns a Promise of a sync token (control's POST /api/sync/token).
// `state` is one of: idle, connecting, hydrating, syncing, live, reconnecting, resyncing,
// closed; `onState(state, detail)` hears every change so a page can show it.

import { LiveView, hasPatch, isNewer, resolvePatch } from "./live.js";

export { LiveView, canonicalJson, payloadHash } from "./live.js";

export class KhalaError extends Error {
  constructor(frame) {
    super(`${frame.code}: ${frame.message}`);
    this.frame = frame;
  }
}

class Closed extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const MAX_FETCH_KEYS = 100; // per fetch frame (the server's bound)

function urlList(urls, baseUrl) {
  const list = (Array.isArray(urls) ? urls : urls ? String(urls).split(",") : [baseUrl])
    .map((u) => String(u).trim().replace(/\/+$/, ""))
    .filter(Boolean);
  if (!list.length) throw new Error("KhalaClient needs `urls` (one or more Khala base URLs) or `baseUrl`");
  return [...new Set(list)];
}

export class KhalaClient {
  constructor({
    urls = null,
    baseUrl = typeof location === "undefined" ? "" : location.origin,
    tokenProvider,
    topics = [],
    onChange = null,
    onState = null,
    refreshBeforeS = 30,
    heartbeatS = 15,
    maxBackoffS = 5,
    hydrate = true,
    catalog = null, // config.topic_catalog: a list's default order field per topic
  }) {
    this.urls = urlList(urls, baseUrl);
    this._urlIndex = 0;
    this.tokenProvider = tokenProvider;
    this.topics = [...topics];
    this.refreshBeforeS = refreshBeforeS;
    this.heartbeatS = heartbeatS;
    this.maxBackoffS = maxBackoffS;
    this.hydrateFirst = hydrate;
    this.catalog = catalog;
    this.documents = new Map(); // doc_key -> {topic, doc_key, doc_version, payload, payload_hash}
    this.watermarks = {};
    this.heads = {};
    this.views = new Map(); // live queries by their id
    this.userId = null; // from `ready`
    this.expiresAt = 0; // seconds since the epoch, from ready / token_refreshed
    this.state = "idle";
    this.stats = {
      connects: 0,
      batches: 0,
      applied: 0,
      dropped_stale: 0,
      hydrations: 0,
      refreshes: 0,
      patched: 0, // deltas applied and verified by hash
      fetches: 0, // fetch frames sent (a missing base or a hash mismatch)
      fetched: 0, // whole documents taken from `documents` replies
      failovers: 0, // moves to another node URL
      frames: 0, // every frame received, by type in `framesByType`
      framesByType: {},
      errors: [],
    };
    this._changeListeners = new Set(onChange ? [onChange] : []);
    this._stateListeners = new Set(onState ? [onState] : []);
    this._batchListeners = new Set();
    this._sock = null; // the socket being opened or open
    this._ws = null; // the socket once authenticated (frames may be sent)
    this._closed = false;
    this._running = null;
    this._resync = new Set(); // topics to rehydrate before the next subscribe
    this._topicsLive = false;
    // Documents asked for by `fetch`: "sub\0key" -> {topic, sub, key, want, heldAtRequest,
    // cancelled}. Kept across reconnects and asked again on the new socket.
    this._pending = new Map();
    this._fetchOut = new Map(); // "topic\0sub" -> keys to ask for after this frame
    this._fetchSeq = 0;
  }

  /** The node URL in use (the first of `urls` until a failover). */
  get baseUrl() {
    return this.urls[this._urlIndex];
  }

  get wsUrl() {
    return this.baseUrl.replace(/^http/, "ws") + "/sync/v1/ws";
  }

  defaultOrder(topic) {
    const t = (this.catalog || []).find((x) => x.name === topic);
    return (t && t.orderable && t.orderable[0]) || "last_event_at";
  }

  // -- listeners --------------------------------------------------------------------------

  /** `cb(docKey, payload|null, doc|null)` for every applied change (topic documents and
   * live views); returns an unsubscribe. */
  onChange(cb) {
    this._changeListeners.add(cb);
    return () => this._changeListeners.delete(cb);
  }

  onState(cb) {
    this._stateListeners.add(cb);
    return () => this._stateListeners.delete(cb);
  }

  /** `cb(frame)` after each update_batch (or documents reply) is applied. */
  onBatch(cb) {
    this._batchListeners.add(cb);
    return () => this._batchListeners.delete(cb);
  }

  /** Documents of one topic (optionally with a doc_key prefix), as an array. */
  list(topic, prefix = "") {
    const out = [];
    for (const d of this.documents.values()) {
      if (d.topic === topic && d.doc_key.startsWith(prefix)) out.push(d);
    }
    return out;
  }

  get(docKey) {
    return this.documents.get(docKey) || null;
  }

  /** Resolve once `predicate(this)` holds (checked after every change), or reject on timeout. */
  waitUntil(predicate, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      if (predicate(this)) return resolve(this);
      const done = () => {
        if (!predicate(this)) return;
        clearTimeout(timer);
        offB();
        offS();
        resolve(this);
      };
      const offB = this.onBatch(done);
      const offS = this.onState(done);
      const timer = setTimeout(() => {
        offB();
        offS();
        reject(new Error("waitUntil timed out"));
      }, timeoutMs);
    });
  }

  // -- live queries and topics ------------------------------------------------------------

  /** A live query: `scope` is {doc_key}, {stream} or a list {where, order_by, ascending,
   * limit}. The view is kept current across reconnects (each resumes on its own cursor).
   * Watching an id again replaces that query. */
  watch(sub, topic, scope) {
    const old = this.views.get(sub);
    if (old) this._dropPending(sub);
    const view = new LiveView(this, sub, topic, scope);
    this.views.set(sub, view);
    this._send(view.subscribeFrame());
    this._refreshState();
    return view;
  }

  unwatch(sub) {
    if (!this.views.delete(sub)) return;
    this._dropPending(sub);
    this._send({ type: "unsubscribe", subs: [sub] });
    this._refreshState();
  }

  /** Keep a whole topic live (hydrated over HTTP, then its stream, on the socket already
   * open); returns an unfollow. */
  follow(topic) {
    if (!this.topics.includes(topic)) {
      this.topics.push(topic);
      if (this._ws) this._subscribeTopic(topic, this._ws);
    }
    return () => this.unfollow(topic);
  }

  async _subscribeTopic(topic, ws) {
    this._topicsLive = false;
    this._refreshState();
    if (this.hydrateFirst && !(topic in this.watermarks)) {
      try {
        await this._hydrate([topic]);
      } catch (exc) {
        console.warn(`khala could not hydrate ${topic}:`, exc && exc.message ? exc.message : exc);
        if (this._ws === ws) ws.close(4002, "hydration failed"); // the next session tries again
        return;
      }
    }
    if (this._ws !== ws || !this.topics.includes(topic)) return; // the next session subscribes it
    const resume = topic in this.watermarks ? { [topic]: this.watermarks[topic] } : {};
    ws.send(JSON.stringify({ type: "subscribe", topics: [topic], resume_after: resume }));
  }

  unfollow(topic) {
    if (!this.topics.includes(topic)) return;
    this.topics = this.topics.filter((t) => t !== topic);
    this._send({ type: "unsubscribe", topics: [topic] });
    delete this.watermarks[topic];
    for (const [key, d] of [...this.documents]) {
      if (d.topic === topic) {
        this.documents.delete(key);
        this._emit(key, null, null);
      }
    }
  }

  _send(frame) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(frame));
  }

  // -- lifecycle --------------------------------------------------------------------------

  start() {
    if (!this._running) this._running = this._runForever();
    return this;
  }

  close() {
    this._closed = true;
    if (this._sock) this._sock.close(1000);
    this._setState("closed");
  }

  /** Drop the socket (as a network failure would); the client resumes from its watermarks. */
  reconnect() {
    if (this._sock) this._sock.close(4001, "client reconnect");
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.force) return;
    this.state = state;
    for (const cb of this._stateListeners) {
      try {
        cb(state, detail);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /** Live once the topics' replay and every live query's replay are complete. */
  _refreshState() {
    if (!this._ws) return;
    const viewsLive = [...this.views.values()].every((v) => v.live);
    this._setState(this._topicsLive && viewsLive ? "live" : "syncing");
  }

  // -- the loop ---------------------------------------------------------------------------

  async _runForever() {
    let backoff = 100;
    while (!this._closed) {
      let wait = null;
      let failed = true; // a node that would not take us: try the next URL
      try {
        await this._session();
        backoff = 100;
      } catch (exc) {
        if (this._closed) break;
        if (exc instanceof KhalaError) {
          const f = exc.frame;
          failed = false;
          if (f.code === "stale_cursor") {
            const t = typeof f.topic === "string" ? [f.topic] : this.topics;
            t.forEach((x) => this._resync.add(x));
            continue; // rehydrate and resubscribe at once
          }
          if (f.code === "slow_consumer" || f.code === "rate_limited") {
            wait = Number(f.reconnect_after_ms || 1000);
          } else if (f.code !== "token_expired") {
            console.warn("khala refused:", f.code, f.message);
            failed = f.code === "internal_error";
          } else {
            backoff = 100; // a fresh token fixes it; come back at once
          }
        } else if (exc instanceof Closed && exc.wasLive) {
          backoff = 100; // it served us and went away: come back soon (on another node)
        } else if (!(exc instanceof Closed)) {
          console.warn("khala connection failed:", exc && exc.message ? exc.message : exc);
        }
        if (exc instanceof Closed && exc.deliberate) failed = false;
      }
      if (this._closed) break;
      if (failed && this.urls.length > 1) {
        this._urlIndex = (this._urlIndex + 1) % this.urls.length;
        this.stats.failovers += 1;
      }
      const ms = wait ?? backoff * (0.5 + Math.random()); // jitter: nodes' clients do not return in step
      this._setState("reconnecting", { backoff_ms: Math.round(ms), url: this.baseUrl });
      await sleep(ms);
      backoff = Math.min(backoff * 2, this.maxBackoffS * 1000);
    }
  }

  async _session() {
    const missing = this.topics.filter((t) => !(t in this.watermarks));
    const resync = [...this._resync].filter((t) => this.topics.includes(t));
    if (resync.length) {
      this._setState("resyncing", { topics: resync });
      await this._hydrate(resync);
      this._resync.clear();
    }
    if (this.hydrateFirst && missing.length) {
      this._setState("hydrating", { topics: missing });
      await this._hydrate(missing);
    }
    this._setState(this.stats.connects ? "reconnecting" : "connecting", { url: this.baseUrl });
    const token = await this.tokenProvider();
    const ws = new WebSocket(this.wsUrl);
    this._sock = ws;
    this._topicsLive = false;
    let timers = null;
    let wasLive = false;
    try {
      await new Promise((resolve, reject) => {
        let fatal = null;
        let chain = Promise.resolve(); // frames apply in order (a patch's hash check awaits)
        ws.onopen = () => {
          this.stats.connects += 1;
          ws.send(JSON.stringify({ type: "auth", token }));
        };
        ws.onmessage = (ev) => {
          let frame;
          try {
            frame = JSON.parse(ev.data);
          } catch {
            return;
          }
          this.stats.frames += 1;
          this.stats.framesByType[frame.type] = (this.stats.framesByType[frame.type] || 0) + 1;
          if (frame.type === "ready" && !this._ws) {
            wasLive = true;
            this._onReady(ws, frame);
            timers = this._timers(ws);
            return;
          }
          chain = chain.then(async () => {
            if (fatal) return;
            try {
              await this._onFrame(frame);
              this._flushFetches();
            } catch (exc) {
              fatal = exc;
              ws.close(4000);
            }
          });
        };
        ws.onerror = () => {};
        ws.onclose = (ev) => {
          if (fatal) return reject(fatal);
          const c = new Closed("socket closed");
          c.wasLive = wasLive;
          c.deliberate = ev.code === 4001 || ev.code === 4002 || ev.code === 1000;
          reject(c);
        };
      });
    } finally {
      if (timers) clearInterval(timers);
      if (this._sock === ws) this._sock = null;
      if (this._ws === ws) this._ws = null;
    }
  }

  _onReady(ws, frame) {
    this._ws = ws;
    this.userId = frame.user_id || null;
    this.expiresAt = Number(frame.expires_at || 0);
    // A topic followed while this socket was opening has no watermark yet: hydrate it first.
    const late = this.hydrateFirst ? this.topics.filter((t) => !(t in this.watermarks)) : [];
    const ready = this.topics.filter((t) => !late.includes(t));
    if (ready.length) {
      const resume = {};
      for (const t of ready) if (t in this.watermarks) resume[t] = this.watermarks[t];
      ws.send(JSON.stringify({ type: "subscribe", topics: ready, resume_after: resume }));
    } else {
      this._topicsLive = !late.length;
    }
    for (const t of late) this._subscribeTopic(t, ws);
    for (const view of this.views.values()) ws.send(JSON.stringify(view.subscribeFrame()));
    // Fetches the last socket did not answer: the cursors moved past those updates.
    this._askPendingAgain();
    this._setState("syncing", { url: this.baseUrl });
    this._refreshState();
  }

  _timers(ws) {
    let lastBeat = Date.now();
    let refreshing = false;
    return setInterval(async () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const now = Date.now() / 1000;
      if (
        this.refreshBeforeS !== null &&
        this.expiresAt &&
        !refreshing &&
        now >= this.expiresAt - this.refreshBeforeS
      ) {
        refreshing = true;
        try {
          const token = await this.tokenProvider();
          if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "refresh_token", token }));
          // until token_refreshed says otherwise, try again in a little while
          this.expiresAt = Date.now() / 1000 + this.refreshBeforeS + 1;
        } catch (exc) {
          console.warn("token refresh failed:", exc && exc.message ? exc.message : exc);
        } finally {
          refreshing = false;
        }
      }
      if (Date.now() - lastBeat >= this.heartbeatS * 1000) {
        lastBeat = Date.now();
        ws.send(JSON.stringify({ type: "heartbeat", sent_at_ms: Date.now() }));
      }
    }, 500);
  }

  async _onFrame(frame) {
    const kind = frame.type;
    if (kind === "error" && frame.code === "rate_limited" && !frame.fatal && this._pending.size) {
      // A refused fetch leaves no trace but this error: ask again once the limit allows.
      const ws = this._ws;
      setTimeout(() => this._ws === ws && this._askPendingAgain(), Number(frame.reconnect_after_ms || 1000));
    }
    const view = typeof frame.sub === "string" && frame.sub ? this.views.get(frame.sub) : null;
    if (kind === "update_batch" && frame.sub) {
      if (!view) return; // a query unwatched meanwhile
      this.stats.batches += 1;
      await view.applyBatch(frame);
      this._refreshState();
      this._notifyBatch(frame);
    } else if (kind === "update_batch") {
      await this._apply(frame);
    } else if (kind === "documents") {
      this._applyDocuments(frame);
    } else if (kind === "token_refreshed") {
      this.expiresAt = Number(frame.expires_at || 0);
      this.stats.refreshes += 1;
      this._setState(this.state, { force: true, refreshed: true });
    } else if (kind === "error" && frame.sub && !frame.fatal) {
      this._noteError(frame);
      if (!view) return;
      view.errors.push(frame);
      if (view.errors.length > 20) view.errors.shift();
      if (frame.code === "stale_cursor") {
        // Its resume was too old: take the query's current documents instead.
        view.watermark = null;
        this._send(view.subscribeFrame());
      } else {
        console.warn(`khala refused live query ${frame.sub}:`, frame.code, frame.message);
      }
    } else if (kind === "error") {
      this._noteError(frame);
      if (frame.fatal || frame.code === "stale_cursor") throw new KhalaError(frame);
    }
  }

  async _apply(frame) {
    this.stats.batches += 1;
    for (const u of frame.updates || []) {
      const held = this.documents.get(u.doc_key);
      if (held && !isNewer(u, held)) {
        this.stats.dropped_stale += 1;
      } else if (u.deleted || (!hasPatch(u) && u.payload == null)) {
        this._cancelFetch("", u.doc_key);
        this.documents.delete(u.doc_key);
        this.stats.applied += 1;
        this._emit(u.doc_key, null, null);
      } else {
        const payload = hasPatch(u) ? await resolvePatch(u, held) : u.payload;
        if (payload === null) {
          this._needFetch(u.topic, "", u, held);
        } else {
          if (hasPatch(u)) this.stats.patched += 1;
          this._setDocument(u, payload);
        }
      }
      this.watermarks[u.topic] = Math.max(this.watermarks[u.topic] || 0, u.watermark);
    }
    const heads = frame.head_watermarks || {};
    Object.assign(this.heads, heads);
    if (frame.replay_complete) {
      for (const [t, h] of Object.entries(heads)) {
        this.watermarks[t] = Math.max(this.watermarks[t] || 0, h);
      }
      this._topicsLive = true;
      this._refreshState();
    }
    this._notifyBatch(frame);
  }

  _setDocument(u, payload) {
    const doc = {
      topic: u.topic,
      doc_key: u.doc_key,
      doc_version: u.doc_version,
      projection_version: u.projection_version || 0,
      payload,
      payload_hash: u.payload_hash,
    };
    this.documents.set(u.doc_key, doc);
    this.stats.applied += 1;
    this._emit(u.doc_key, payload, doc);
  }

  // -- whole documents on demand (`fetch` -> `documents`) ---------------------------------

  /** A patched update the client could not apply: ask for the whole document. */
  _needFetch(topic, sub, u, held) {
    const id = `${sub}\u0000${u.doc_key}`;
    const want = { doc_version: u.doc_version, projection_version: u.projection_version || 0 };
    const p = this._pending.get(id);
    if (p && !p.cancelled) {
      if (isNewer(want, p.want)) p.want = want; // already asked; the answer must be this new
      return;
    }
    this._pending.set(id, { topic, sub, key: u.doc_key, want, heldAtRequest: held || null, cancelled: false });
    const k = `${topic}\u0000${sub}`;
    if (!this._fetchOut.has(k)) this._fetchOut.set(k, new Set());
    this._fetchOut.get(k).add(u.doc_key);
  }

  _cancelFetch(sub, key) {
    const p = this._pending.get(`${sub}\u0000${key}`);
    if (p) p.cancelled = true;
  }

  _dropPending(sub) {
    for (const [id, p] of [...this._pending]) if (p.sub === sub) this._pending.delete(id);
  }

  /** Ask again for every document still awaited (after a resume, or a refused fetch). */
  _askPendingAgain() {
    for (const p of this._pending.values()) {
      if (p.cancelled) continue;
      const k = `${p.topic}\u0000${p.sub}`;
      if (!this._fetchOut.has(k)) this._fetchOut.set(k, new Set());
      this._fetchOut.get(k).add(p.key);
    }
    this._flushFetches();
  }

  _flushFetches() {
    if (!this._fetchOut.size || !this._ws) return;
    for (const [k, keys] of this._fetchOut) {
      const [topic, sub] = k.split("\u0000");
      const all = [...keys];
      for (let i = 0; i < all.length; i += MAX_FETCH_KEYS) {
        const frame = { type: "fetch", topic, doc_keys: all.slice(i, i + MAX_FETCH_KEYS), request_id: `f${++this._fetchSeq}` };
        if (sub) frame.sub = sub;
        this._send(frame);
        this.stats.fetches += 1;
      }
    }
    this._fetchOut = new Map();
  }

  /** A `documents` reply: whole documents that replace what is held if newer. It moves no
   * cursor: it is not part of the ordered stream. */
  _applyDocuments(frame) {
    const sub = typeof frame.sub === "string" ? frame.sub : "";
    const view = sub ? this.views.get(sub) : null;
    for (const u of frame.documents || []) {
      const id = `${sub}\u0000${u.doc_key}`;
      const p = this._pending.get(id);
      this._pending.delete(id);
      if (p && p.cancelled) continue; // it left the query (or was deleted) since
      this.stats.fetched += 1;
      if (view) {
        view.applyFetched(u, p ? p.heldAtRequest : null);
      } else if (!sub) {
        const held = this.documents.get(u.doc_key);
        if (u.op === "remove" || u.deleted || u.payload == null) {
          if (held && (!p || !p.heldAtRequest || !isNewer(held, p.heldAtRequest))) {
            this.documents.delete(u.doc_key);
            this._emit(u.doc_key, null, null);
          }
        } else if (!held || isNewer(u, held)) {
          this._setDocument({ ...u, topic: u.topic || frame.topic }, u.payload);
        }
      }
      // Patches kept coming on a base the answer predates: ask again.
      if (p && !p.cancelled && u.payload != null && isNewer(p.want, u)) {
        const held = view ? view.documents.get(u.doc_key) : this.documents.get(u.doc_key);
        if (!held || isNewer(p.want, held)) this._needFetch(frame.topic, sub, { ...p.want, doc_key: u.doc_key }, held);
      }
    }
    this._notifyBatch(frame);
  }

  _noteError(frame) {
    this.stats.errors.push(frame);
    if (this.stats.errors.length > 100) this.stats.errors.splice(0, this.stats.errors.length - 100);
  }

  _notifyBatch(frame) {
    for (const cb of this._batchListeners) {
      try {
        cb(frame);
      } catch (e) {
        console.error(e);
      }
    }
  }

  _emit(key, payload, doc) {
    for (const cb of this._changeListeners) {
      try {
        cb(key, payload, doc);
      } catch (e) {
        console.error(e);
      }
    }
  }

  async _hydrate(topics) {
    const token = await this.tokenProvider();
    for (const topic of topics) {
      const resp = await fetch(`${this.baseUrl}/sync/v1/topics/${encodeURIComponent(topic)}/snapshot`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const body = await resp.json();
      if (resp.status !== 200) {
        throw new KhalaError(body.error || { code: "internal_error", message: String(resp.status) });
      }
      const fresh = new Set(body.documents.map((u) => u.doc_key));
      for (const [key, d] of [...this.documents]) {
        if (d.topic === topic && !fresh.has(key)) {
          this.documents.delete(key);
          this._emit(key, null, null);
        }
      }
      for (const u of body.documents) {
        const doc = {
          topic,
          doc_key: u.doc_key,
          doc_version: u.doc_version,
          projection_version: u.projection_version || 0,
          payload: u.payload,
          payload_hash: u.payload_hash,
        };
        this.documents.set(u.doc_key, doc);
        this._emit(u.doc_key, u.payload, doc);
      }
      this.watermarks[topic] = body.watermark;
    }
    this.stats.hydrations += 1;
    this._notifyBatch({ type: "hydrated", topics });
  }
}
