// Live queries and deltas for the browser client (used by khala.js; no build step).
//
// A LiveView is the client side of one live query: the current result of one subscription
// (one document, one stream, or an exact list), kept by the server's updates, with its own
// cursor. The same semantics as the Python client's LiveView (src/oa/khala/live_view.py):
// a list's (re)subscribe replays its whole current content, and at `replay_complete` the
// view drops what it holds that the replay did not name; updates not newer than what the
// view holds are dropped, so a resume never applies anything twice.
//
// Deltas: an update may carry `patch` (RFC 6902, applied with the vendored fast-json-patch)
// against `base_version`; the result must hash (sha256 over canonical JSON, as Python's
// oa.canonical.canonical_json) to the update's `payload_hash`, else the client asks for the
// whole document (`fetch`).

import { applyPatch } from "./vendor/fast-json-patch/index.mjs";

// -- canonical JSON and its hash -----------------------------------------------------------

/** Compares strings by code point (= UTF-8 byte order, which Python's and orjson's key sort
 * and Postgres' COLLATE "C" use). JS's `<` compares UTF-16 units, which puts U+E000..U+FFFF
 * after the surrogate pairs of astral characters; the fixup below undoes that. */
export function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x = x <= 0xdfff ? x + 0x2000 : x - 0x800;
    if (y >= 0xd800) y = y <= 0xdfff ? y + 0x2000 : y - 0x800;
    return x - y;
  }
  return a.length - b.length;
}

/** Keys sorted by code point, `,`/`:` separators, no escaping beyond JSON's own: the same
 * bytes as oa.canonical.canonical_json for documents of strings, integers, booleans, null,
 * arrays and objects. (A float that Python writes as `1.0` reaches JS as `1`: its hash then
 * differs, and the client takes the whole document: slower, never wrong.) */
export function canonicalJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort(compareCodePoints);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

const subtle = globalThis.crypto && globalThis.crypto.subtle;

/** sha256 hex of the canonical JSON, or null where Web Crypto is absent (a page served over
 * plain http from a host other than localhost is not a secure context). */
export async function payloadHash(value) {
  if (!subtle) return null;
  const digest = await subtle.digest("SHA-256", new TextEncoder().encode(canonicalJson(value)));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The document a patched update produces from `held`, or null when the client must fetch
 * the whole document: it holds no base, the patch does not apply, or the hash differs. */
export async function resolvePatch(u, held) {
  if (!held || held.payload == null) return null;
  if (held.doc_version !== u.base_version || (held.projection_version || 0) !== (u.projection_version || 0)) {
    return null;
  }
  let doc;
  try {
    // validate, do not mutate the held document (the library clones it first)
    doc = applyPatch(held.payload, u.patch, true, false).newDocument;
  } catch {
    return null;
  }
  const hash = await payloadHash(doc);
  return hash !== null && hash === u.payload_hash ? doc : null;
}

/** Updates are ordered by (projection_version, doc_version). */
export function isNewer(u, held) {
  const pv = u.projection_version || 0;
  const heldPv = held.projection_version || 0;
  return pv > heldPv || (pv === heldPv && u.doc_version > held.doc_version);
}

export const hasPatch = (u) => Array.isArray(u.patch);

// -- list order (as the server's `order_key` and `store.list_documents`) -------------------

/** A payload field as Postgres' `->>` gives it: strings as they are, null/missing as null. */
export function fieldText(payload, name) {
  const v = payload ? payload[name] : undefined;
  if (v === null || v === undefined || typeof v === "string") return v ?? null;
  if (typeof v === "boolean") return v ? "true" : "false";
  return canonicalJson(v);
}

function compareRanked(a, b, orderBy, ascending) {
  const va = fieldText(a.payload, orderBy);
  const vb = fieldText(b.payload, orderBy);
  if ((va === null) !== (vb === null)) return va === null ? 1 : -1; // missing values last
  const sign = ascending ? 1 : -1;
  const byValue = va === null ? 0 : compareCodePoints(va, vb);
  return sign * (byValue || compareCodePoints(a.doc_key, b.doc_key));
}

// -- the view ------------------------------------------------------------------------------

export class LiveView {
  constructor(client, sub, topic, scope) {
    this.client = client;
    this.sub = sub;
    this.topic = topic;
    this.scope = { ...scope };
    this.documents = new Map(); // doc_key -> the update as applied (payload whole)
    this.watermark = null; // this subscription's own cursor (resume_after)
    this.live = false; // its replay is complete
    this.applied = 0;
    this.droppedStale = 0;
    this.patched = 0; // patches applied and verified by hash
    this.errors = [];
    this._listeners = new Set();
    this._replayed = null; // a list's keys named since its (re)subscribe
  }

  get isList() {
    return !("doc_key" in this.scope) && !("stream" in this.scope);
  }

  /** `fn({sub, op: "upsert"|"remove", doc_key, doc_version, payload})` per applied change;
   * returns an unsubscribe. */
  onChange(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  get(docKey) {
    const d = this.documents.get(docKey);
    return d ? d.payload : null;
  }

  /** Payloads in the list's order (doc_key order for a document or a stream). */
  results() {
    return this.entries().map((d) => d.payload);
  }

  /** The held entries ({doc_key, doc_version, payload, ...}) in the same order. */
  entries() {
    const docs = [...this.documents.values()];
    if (!this.isList) return docs.sort((a, b) => compareCodePoints(a.doc_key, b.doc_key));
    const orderBy = this.scope.order_by || this.client.defaultOrder(this.topic);
    const asc = Boolean(this.scope.ascending);
    return docs.sort((a, b) => compareRanked(a, b, orderBy, asc));
  }

  close() {
    return this.client.unwatch(this.sub);
  }

  subscribeFrame() {
    const frame = { type: "subscribe", sub: this.sub, topic: this.topic, scope: this.scope };
    if (this.watermark !== null && !this.isList) frame.resume_after = { [this.topic]: this.watermark };
    this.live = false;
    this._replayed = this.isList ? new Set() : null;
    return frame;
  }

  /** One update_batch of this query, in order (patches are checked by hash, which awaits). */
  async applyBatch(frame) {
    for (const u of frame.updates || []) {
      const key = u.doc_key;
      if (this._replayed && u.op !== "remove") this._replayed.add(key);
      if (u.op === "remove" || u.deleted) {
        this.client._cancelFetch(this.sub, key); // a fetch answered later must not bring it back
        this._remove(key, u.doc_version);
        continue;
      }
      await this._upsert(u);
    }
    if (frame.replay_complete) {
      if (this._replayed) {
        for (const key of [...this.documents.keys()]) if (!this._replayed.has(key)) this._remove(key);
        this._replayed = null;
      }
      const head = (frame.head_watermarks || {})[this.topic];
      if (Number.isInteger(head)) this.watermark = Math.max(this.watermark ?? 0, head);
      this.live = true;
    }
  }

  /** A whole document from a `documents` reply (moves no cursor). */
  applyFetched(u, heldAtRequest) {
    if (u.op === "remove" || u.deleted || u.payload == null) {
      const held = this.documents.get(u.doc_key);
      // Only if nothing newer arrived since the fetch was asked for.
      if (held && (!heldAtRequest || !isNewer(held, heldAtRequest))) this._remove(u.doc_key, u.doc_version);
      return;
    }
    const held = this.documents.get(u.doc_key);
    if (held && !isNewer(u, held)) {
      this.droppedStale += 1;
      return;
    }
    this._set(u, u.payload);
  }

  async _upsert(u) {
    const held = this.documents.get(u.doc_key);
    if (held && !isNewer(u, held)) {
      this.droppedStale += 1;
      return;
    }
    if (!hasPatch(u)) {
      this._set(u, u.payload);
      return;
    }
    const doc = await resolvePatch(u, held);
    if (doc === null) {
      this.client._needFetch(this.topic, this.sub, u, held);
      return;
    }
    this.patched += 1;
    this.client.stats.patched += 1;
    this._set(u, doc);
  }

  _set(u, payload) {
    const entry = {
      topic: u.topic || this.topic,
      doc_key: u.doc_key,
      doc_version: u.doc_version,
      projection_version: u.projection_version || 0,
      payload,
      payload_hash: u.payload_hash,
      watermark: u.watermark,
    };
    this.documents.set(u.doc_key, entry);
    this._emit("upsert", u.doc_key, u.doc_version, payload, entry);
  }

  _remove(key, version) {
    const gone = this.documents.get(key);
    if (!gone) return;
    this.documents.delete(key);
    this._emit("remove", key, version ?? gone.doc_version, null, null);
  }

  _emit(op, key, version, payload, entry) {
    this.applied += 1;
    const change = { sub: this.sub, op, doc_key: key, doc_version: version, payload };
    for (const fn of this._listeners) {
      try {
        fn(change);
      } catch (e) {
        console.error(e);
      }
    }
    this.client._emit(key, payload, entry);
  }
}
