// Khala browser client: a live local cache of documents, kept by the sync protocol.
//
// The same behaviour as the Python client (src/oa/khala/client.py), so a browser and a
// script never disagree about what a document is: hydrate each topic over HTTP, subscribe
// from that watermark, apply update batches (dropping any update whose doc_version is not
// newer than the one held), refresh the token on the live socket before it expires,
// reconnect with backoff and resume from the watermarks held, rehydrate after
// `stale_cursor`. An ES module with no dependencies and no build step:
//
//   import { KhalaClient } from "/client/khala.js";
//   const k = new KhalaClient({ baseUrl, tokenProvider, topics, onChange, onState });
//   k.start();
//
// `tokenProvider` returns a Promise of a sync token (control's POST /api/sync/token).
// `state` is one of: idle, connecting, hydrating, syncing, live, reconnecting, resyncing,
// closed; `onState(state, detail)` hears every change so a page can show it.

export class KhalaError extends Error {
  constructor(frame) {
    super(`${frame.code}: ${frame.message}`);
    this.frame = frame;
  }
}

class Closed extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Updates are ordered by (projection_version, doc_version): a document re-folded by a new
// projection version keeps its doc_version and still replaces the one held.
function isNewer(u, held) {
  const pv = u.projection_version || 0;
  const heldPv = held.projection_version || 0;
  return pv > heldPv || (pv === heldPv && u.doc_version > held.doc_version);
}

export class KhalaClient {
  constructor({
    baseUrl = location.origin,
    tokenProvider,
    topics,
    onChange = null,
    onState = null,
    refreshBeforeS = 30,
    heartbeatS = 15,
    maxBackoffS = 5,
    hydrate = true,
  }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.wsUrl = this.baseUrl.replace(/^http/, "ws") + "/sync/v1/ws";
    this.tokenProvider = tokenProvider;
    this.topics = [...topics];
    this.refreshBeforeS = refreshBeforeS;
    this.heartbeatS = heartbeatS;
    this.maxBackoffS = maxBackoffS;
    this.hydrateFirst = hydrate;
    this.documents = new Map(); // doc_key -> {topic, doc_key, doc_version, payload, payload_hash}
    this.watermarks = {};
    this.heads = {};
    this.expiresAt = 0; // seconds since the epoch, from ready / token_refreshed
    this.state = "idle";
    this.stats = {
      connects: 0,
      batches: 0,
      applied: 0,
      dropped_stale: 0,
      hydrations: 0,
      refreshes: 0,
      errors: [],
    };
    this._changeListeners = new Set(onChange ? [onChange] : []);
    this._stateListeners = new Set(onState ? [onState] : []);
    this._batchListeners = new Set();
    this._ws = null;
    this._closed = false;
    this._running = null;
    this._resync = new Set(); // topics to rehydrate before the next subscribe
  }

  // -- listeners --------------------------------------------------------------------------

  /** `cb(docKey, payload|null, doc|null)` for every applied change; returns an unsubscribe. */
  onChange(cb) {
    this._changeListeners.add(cb);
    return () => this._changeListeners.delete(cb);
  }

  onState(cb) {
    this._stateListeners.add(cb);
    return () => this._stateListeners.delete(cb);
  }

  /** `cb(frame)` after each update_batch is applied (one projector transaction). */
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

  // -- lifecycle --------------------------------------------------------------------------

  start() {
    if (!this._running) this._running = this._runForever();
    return this;
  }

  close() {
    this._closed = true;
    if (this._ws) this._ws.close(1000);
    this._setState("closed");
  }

  /** Drop the socket (as a network failure would); the client resumes from its watermarks. */
  reconnect() {
    if (this._ws) this._ws.close(4001, "client reconnect");
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

  // -- the loop ---------------------------------------------------------------------------

  async _runForever() {
    let backoff = 100;
    while (!this._closed) {
      let wait = null;
      try {
        await this._session();
        backoff = 100;
      } catch (exc) {
        if (this._closed) break;
        if (exc instanceof KhalaError) {
          const f = exc.frame;
          if (f.code === "stale_cursor") {
            const t = typeof f.topic === "string" ? [f.topic] : this.topics;
            t.forEach((x) => this._resync.add(x));
            continue; // rehydrate and resubscribe at once
          }
          if (f.code === "slow_consumer" || f.code === "rate_limited") {
            wait = Number(f.reconnect_after_ms || 1000);
          } else if (f.code !== "token_expired") {
            console.warn("khala refused:", f.code, f.message);
          } else {
            backoff = 100; // a fresh token fixes it; come back at once
          }
        } else if (!(exc instanceof Closed)) {
          console.warn("khala connection failed:", exc && exc.message ? exc.message : exc);
        }
      }
      if (this._closed) break;
      this._setState("reconnecting", { backoff_ms: wait ?? backoff });
      await sleep(wait ?? backoff * (0.5 + Math.random()));
      backoff = Math.min(backoff * 2, this.maxBackoffS * 1000);
    }
  }

  async _session() {
    const missing = this.topics.filter((t) => !(t in this.watermarks));
    const resync = [...this._resync];
    if (resync.length) {
      this._setState("resyncing", { topics: resync });
      await this._hydrate(resync);
      this._resync.clear();
    }
    if (this.hydrateFirst && missing.length) {
      this._setState("hydrating", { topics: missing });
      await this._hydrate(missing);
    }
    this._setState(this.stats.connects ? "reconnecting" : "connecting");
    const token = await this.tokenProvider();
    const ws = new WebSocket(this.wsUrl);
    this._ws = ws;
    let timers = null;
    try {
      await new Promise((resolve, reject) => {
        let fatal = null;
        let authed = false;
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
          if (frame.type === "ready" && !authed) {
            authed = true;
            this.expiresAt = Number(frame.expires_at || 0);
            const resume = {};
            for (const t of this.topics) if (t in this.watermarks) resume[t] = this.watermarks[t];
            ws.send(JSON.stringify({ type: "subscribe", topics: this.topics, resume_after: resume }));
            this._setState("syncing");
            timers = this._timers(ws);
            return;
          }
          try {
            this._onFrame(frame);
          } catch (exc) {
            fatal = exc;
            ws.close(4000);
          }
        };
        ws.onerror = () => {};
        ws.onclose = () => (fatal ? reject(fatal) : reject(new Closed("socket closed")));
      });
    } finally {
      if (timers) clearInterval(timers);
      if (this._ws === ws) this._ws = null;
    }
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

  _onFrame(frame) {
    const kind = frame.type;
    if (kind === "update_batch") {
      this._apply(frame);
    } else if (kind === "token_refreshed") {
      this.expiresAt = Number(frame.expires_at || 0);
      this.stats.refreshes += 1;
      this._setState(this.state, { force: true, refreshed: true });
    } else if (kind === "error") {
      this.stats.errors.push(frame);
      if (frame.fatal || frame.code === "stale_cursor") throw new KhalaError(frame);
    }
  }

  _apply(frame) {
    this.stats.batches += 1;
    for (const u of frame.updates || []) {
      const held = this.documents.get(u.doc_key);
      if (held && !isNewer(u, held)) {
        this.stats.dropped_stale += 1;
      } else {
        const payload = u.deleted ? null : u.payload;
        let doc = null;
        if (payload === null || payload === undefined) {
          this.documents.delete(u.doc_key);
        } else {
          doc = {
            topic: u.topic,
            doc_key: u.doc_key,
            doc_version: u.doc_version,
            projection_version: u.projection_version || 0,
            payload,
            payload_hash: u.payload_hash,
          };
          this.documents.set(u.doc_key, doc);
        }
        this.stats.applied += 1;
        this._emit(u.doc_key, doc ? payload : null, doc);
      }
      this.watermarks[u.topic] = Math.max(this.watermarks[u.topic] || 0, u.watermark);
    }
    const heads = frame.head_watermarks || {};
    Object.assign(this.heads, heads);
    if (frame.replay_complete) {
      for (const [t, h] of Object.entries(heads)) {
        this.watermarks[t] = Math.max(this.watermarks[t] || 0, h);
      }
      this._setState("live");
    }
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
    for (const cb of this._batchListeners) cb({ type: "hydrated", topics });
  }
}
