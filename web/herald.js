// Herald client for browsers and Node 20+: one ES module, no dependencies, no build step.
//
//   import { connect } from "/herald.js";
//   const bus = await connect("ws://127.0.0.1:7400/ws");
//   const unsubscribe = await bus.subscribe("chat/*", (msg) => console.log(msg.topic, msg.data));
//   await bus.publish("chat/general", { text: "hi" });
//
// The wire contract is PROTOCOL.md. What this module adds on top of a raw socket:
// - routing: the server delivers each message to a session once, however many of its patterns
//   match; this module matches the topic against every local subscription and calls each
//   distinct handler once;
// - sessions: it tracks `seq`, reconnects with exponential backoff and jitter (moving to the
//   next URL when given several), resumes with `session` + `last_seq` (so nothing is lost within
//   the server's session TTL and buffer);
// - recovery: each subscription remembers the last epoch and offset of every topic it delivered
//   (the newest 1000 topics) and when it began; when the server could not resume the session, it
//   subscribes again `since` those positions, so what history still holds arrives once and in
//   order, and what it does not is an exact topic `gap`; a message a subscription already
//   delivered is not handed to its handlers again;
// - offline behaviour: publishes are queued (bounded) and sent after reconnecting; requests,
//   history and presence calls that are waiting for an answer are rejected on disconnect;
// - tokens: `getToken` is asked for a token before every connection and on the server's
//   `expiring`, when the new one goes out as `refresh` on the open socket (no reconnect);
// - server-side subscriptions: `subscribed`/`unsubscribed` frames become events, and a
//   subscription the server removed is forgotten, so no reconnect makes it again;
// - transports: a WebSocket (`/ws`), or Server-Sent Events (`GET /v1/events`, read with the
//   browser's EventSource or, in Node, FetchEventSource below; subscribing and publishing go
//   over HTTP) with the same API and events; "auto" falls back to SSE when WebSockets do not
//   get through;
// - encodings: JSON text frames, or MessagePack binary frames (`encoding: "msgpack"`, the
//   `herald.v1.msgpack` subprotocol, with ./msgpack.js); binary data is a Uint8Array either
//   way: over JSON it travels as `{"$base64": "…"}` (see `decodeBinary`).

import { decode as msgpackDecode, encode as msgpackEncode } from "./msgpack.js";

/** Client-side error codes, beside the server's (PROTOCOL.md §6). */
export const CLIENT_CODES = Object.freeze({
  DISCONNECTED: "disconnected", // the socket dropped before the answer came
  CLOSED: "closed", // bus.close() was called
  QUEUE_FULL: "queue_full", // too many publishes queued while offline
  TIMEOUT: "timeout", // no answer in time
  CONNECT_FAILED: "connect_failed", // the first connection could not be opened
  TOKEN_FAILED: "token_failed", // getToken threw, gave no token, or gave one expiring no later
  UNSUPPORTED: "unsupported", // the transport in use cannot do that (e.g. `request` over sse)
});

/** An error from the server (`error` frame, `code` from PROTOCOL.md §6) or from this client. */
export class HeraldError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = "HeraldError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

const OPEN = 1; // WebSocket.OPEN, the same in every implementation

/** The WebSocket subprotocols of the two encodings (PROTOCOL.md §2). */
const JSON_PROTOCOL = "herald.v1";
const MSGPACK_PROTOCOL = "herald.v1.msgpack";
const ENCODINGS = ["json", "msgpack"];
/** The WebSockets of this module that carry MessagePack frames. */
const MSGPACK_SOCKETS = new WeakSet();

const DEFAULTS = {
  minDelayMs: 250, // first reconnect delay (before jitter)
  maxDelayMs: 15000, // backoff ceiling
  maxQueue: 1000, // publishes held while offline
  requestTimeoutMs: 5000, // `req` default, as the server's
  answerTimeoutMs: 15000, // how long to wait for any other answer (sub, pub, history, …)
  connectTimeoutMs: 10000, // from opening a socket to `welcome`
};

/**
 * Reconnect delay for the given attempt (0-based): exponential from `minDelayMs`, capped at
 * `maxDelayMs`, with "equal jitter" (half fixed, half random) so a server restart does not get
 * every client back in the same millisecond while no client waits much less than the curve.
 */
export function backoffDelay(attempt, minDelayMs = DEFAULTS.minDelayMs, maxDelayMs = DEFAULTS.maxDelayMs, random = Math.random) {
  const exp = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(exp / 2 + random() * (exp / 2));
}

// ------------------------------------------------------------------------------------------
// Binary data (PROTOCOL.md §2, "MessagePack"). A MessagePack connection carries it as `bin`;
// a JSON one as `{"$base64": "…"}` (standard alphabet, padded), which the server turns into
// `bin` for MessagePack readers and back.

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i += 1) B64_INDEX[B64.charCodeAt(i)] = i;

/** The bytes of a Uint8Array, ArrayBuffer or other ArrayBuffer view (a DataView, a Node Buffer); null otherwise. */
function binaryView(v) {
  if (v instanceof Uint8Array) return v;
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return null;
}

/** Standard base64 (RFC 4648 §4, padded) of bytes (a Uint8Array, ArrayBuffer or view). */
export function toBase64(bytes) {
  const b = binaryView(bytes);
  if (!b) throw new TypeError("toBase64: expected a Uint8Array, ArrayBuffer or ArrayBuffer view");
  const n = b.length;
  const parts = [];
  let out = "";
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += B64[v >> 18] + B64[(v >> 12) & 63] + B64[(v >> 6) & 63] + B64[v & 63];
    if (out.length >= 8192) {
      parts.push(out);
      out = "";
    }
  }
  if (n - i === 1) {
    const v = b[i] << 16;
    out += `${B64[v >> 18]}${B64[(v >> 12) & 63]}==`;
  } else if (n - i === 2) {
    const v = (b[i] << 16) | (b[i + 1] << 8);
    out += `${B64[v >> 18]}${B64[(v >> 12) & 63]}${B64[(v >> 6) & 63]}=`;
  }
  parts.push(out);
  return parts.join("");
}

/**
 * The bytes of standard, padded base64 text, or null when it is not exactly that (another
 * alphabet, missing padding, white space, or bits set past the last byte: what the server
 * would not take as binary either).
 */
export function fromBase64(text) {
  if (typeof text !== "string" || text.length % 4 !== 0) return null;
  const n = text.length;
  const pad = n === 0 ? 0 : text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((n / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < n; i += 4) {
    const last = i + 4 === n;
    const c = [0, 1, 2, 3].map((k) => {
      const code = text.charCodeAt(i + k);
      return code < 128 ? B64_INDEX[code] : -1;
    });
    if (c[0] < 0 || c[1] < 0) return null;
    if (last && pad === 2) {
      if ((c[1] & 15) !== 0) return null;
      out[o++] = (c[0] << 2) | (c[1] >> 4);
    } else if (last && pad === 1) {
      if (c[2] < 0 || (c[2] & 3) !== 0) return null;
      out[o++] = (c[0] << 2) | (c[1] >> 4);
      out[o++] = ((c[1] & 15) << 4) | (c[2] >> 2);
    } else {
      if (c[2] < 0 || c[3] < 0) return null;
      out[o++] = (c[0] << 2) | (c[1] >> 4);
      out[o++] = ((c[1] & 15) << 4) | (c[2] >> 2);
      out[o++] = ((c[2] & 3) << 6) | c[3];
    }
  }
  return out;
}

/** JSON.stringify's replacer for the JSON encoding: binary becomes `{"$base64": "…"}`. */
function binaryReplacer(key, value) {
  const b = binaryView(this[key]); // before toJSON: a Node Buffer's would make it `{type, data}`
  return b ? { $base64: toBase64(b) } : value;
}

/** `{"$base64": "…"}` (that one key, valid base64) as bytes; null for anything else. */
function base64Object(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return null;
  const keys = Object.keys(v);
  if (keys.length !== 1 || keys[0] !== "$base64") return null;
  return fromBase64(v.$base64);
}

/** `value` with every `{"$base64": "…"}` in it replaced by its bytes (in place where it can). */
export function decodeBinaryData(value, depth = 0) {
  if (value === null || typeof value !== "object" || depth > 256) return value;
  const bytes = base64Object(value);
  if (bytes) return bytes;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i += 1) value[i] = decodeBinaryData(value[i], depth + 1);
  } else if (!binaryView(value)) {
    for (const k of Object.keys(value)) value[k] = decodeBinaryData(value[k], depth + 1);
  }
  return value;
}

/** With `decodeBinary`: the `data` of a JSON frame (`msg`, `reply`, a history's messages). */
function decodeFrameBinary(frame) {
  if (frame.data !== undefined) frame.data = decodeBinaryData(frame.data);
  if (Array.isArray(frame.messages)) for (const m of frame.messages) if (m && typeof m === "object" && m.data !== undefined) m.data = decodeBinaryData(m.data);
}

/** A frame's bytes as a string, to compare `(un)subscribed` notes (see Bus._replayedNote). */
function bytesKey(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096));
  return s;
}

// ------------------------------------------------------------------------------------------
// Patterns (PROTOCOL.md §1), matched locally to route messages to handlers.

const REGEX_SYNTAX = /[\\^$.*+?()[\]{}|]/g; // `/` needs no escape in RegExp()

/**
 * Compiles a pattern into a predicate `topic => boolean` with the protocol's glob rules:
 * `*` and `?` stay inside a segment, `**` as a whole segment spans zero or more segments,
 * `[…]`/`[!…]` classes, `{a,b}` alternatives, and a pattern whose first segment does not start
 * with `$` never matches a system topic. Validation is the server's job; this is only routing.
 */
export function compilePattern(pattern) {
  const p = String(pattern);
  let re = "";
  let depth = 0; // inside `{…}`
  for (let i = 0; i < p.length; ) {
    const c = p[i];
    if (c === "*" && p[i + 1] === "*" && (i === 0 || p[i - 1] === "/") && (i + 2 === p.length || p[i + 2] === "/")) {
      if (i === 0 && i + 2 === p.length) {
        re += ".*";
        i += 2;
      } else if (i + 2 === p.length) {
        re = re.slice(0, -1) + "(?:/.*)?"; // `a/**`: drop the `/` just written; matches `a` too
        i += 2;
      } else {
        re += "(?:.*/)?"; // `**/`: zero or more whole segments
        i += 3;
      }
    } else if (c === "*") {
      re += "[^/]*";
      i += p[i + 1] === "*" ? 2 : 1;
    } else if (c === "?") {
      re += "[^/]";
      i += 1;
    } else if (c === "[") {
      const end = classEnd(p, i);
      if (end < 0) {
        re += "\\[";
        i += 1;
        continue;
      }
      let body = p.slice(i + 1, end);
      const negated = body[0] === "!";
      if (negated) body = body.slice(1);
      body = body.replace(/[\\[\]^/]/g, "\\$&");
      re += negated ? `[^${body}/]` : `(?:(?!/)[${body}])`;
      i = end + 1;
    } else if (c === "{") {
      re += "(?:";
      depth += 1;
      i += 1;
    } else if (c === "}" && depth > 0) {
      re += ")";
      depth -= 1;
      i += 1;
    } else if (c === "," && depth > 0) {
      re += "|";
      i += 1;
    } else if (c === "\\" && i + 1 < p.length) {
      re += p[i + 1].replace(REGEX_SYNTAX, "\\$&");
      i += 2;
    } else {
      re += c.replace(REGEX_SYNTAX, "\\$&");
      i += 1;
    }
  }
  let regex;
  try {
    regex = new RegExp(`^${re}$`, "u");
  } catch {
    return () => false; // a pattern the server would refuse anyway
  }
  const system = p.startsWith("$");
  return (topic) => (system || !topic.startsWith("$")) && regex.test(topic);
}

/** Index of the `]` closing the class that opens at `start`, or -1. A `]` first is literal. */
function classEnd(p, start) {
  let i = start + 1;
  if (p[i] === "!") i += 1;
  if (p[i] === "]") i += 1;
  for (; i < p.length; i += 1) if (p[i] === "]") return i;
  return -1;
}

/** Whether `topic` matches `pattern` (see {@link compilePattern}). */
export function matchPattern(pattern, topic) {
  return compilePattern(pattern)(topic);
}

// ------------------------------------------------------------------------------------------
// Positions: what a subscription has delivered, per topic, for recovery and de-duplication.

/** The most topics a `since` may list (the server refuses more) and a subscription remembers. */
export const MAX_SINCE_TOPICS = 1000;

/**
 * The last epoch and offset delivered of each topic (the `limit` most recently delivered
 * topics; the least recently delivered one is forgotten first) and the earliest `ts` delivered.
 * A message at or before a topic's position in the same epoch counts as already delivered.
 *
 * Why the earliest `ts`: a recovery replays, for topics it does not list, what is newer than
 * `since.ts`. A topic it does not list is one this subscription never had a message of, so all
 * of it since the subscription began is missing. The newest `ts` seen would lose some: messages
 * of different topics do not arrive in `ts` order, and a replay cut short by a disconnect has
 * not reached the topics after it.
 */
export class Positions {
  constructor(limit = MAX_SINCE_TOPICS) {
    this.limit = limit;
    /** Earliest `ts` delivered or seeded (Unix ms, the server's clock), or undefined. */
    this.ts = undefined;
    this._topics = new Map(); // topic -> {epoch, offset}, least recently delivered first
  }

  get size() {
    return this._topics.size;
  }

  /** `{epoch, offset}` of `topic`, or undefined. */
  get(topic) {
    const p = this._topics.get(topic);
    return p && { epoch: p.epoch, offset: p.offset };
  }

  /** Whether offset `offset` of `topic` in `epoch` is covered (delivered, or given up by a gap). */
  has(topic, epoch, offset) {
    const p = this._topics.get(topic);
    return p !== undefined && p.epoch === epoch && offset <= p.offset;
  }

  /** Records a delivery; false, changing nothing, when it was delivered already. */
  deliver(topic, epoch, offset, ts) {
    if (this.has(topic, epoch, offset)) return false;
    this._set(topic, epoch, offset);
    if (typeof ts === "number" && !(ts >= this.ts)) this.ts = ts;
    return true;
  }

  /** Records that nothing up to `offset` of `epoch` will come (a topic gap); false if known. */
  cover(topic, epoch, offset) {
    return this.deliver(topic, epoch, offset, undefined);
  }

  _set(topic, epoch, offset) {
    this._topics.delete(topic); // re-inserted last: the most recently delivered
    this._topics.set(topic, { epoch, offset });
    if (this._topics.size > this.limit) this._topics.delete(this._topics.keys().next().value);
  }

  /** Takes a `since` as positions already delivered (`{epoch, offset}` needs `topic`). */
  seed(since, topic) {
    if (!since || typeof since !== "object") return;
    if (since.topics && typeof since.topics === "object") {
      for (const [t, p] of Object.entries(since.topics)) if (p && typeof p.offset === "number") this._set(t, String(p.epoch), p.offset);
    } else if (topic !== undefined && typeof since.offset === "number" && since.epoch !== undefined) {
      this._set(topic, String(since.epoch), since.offset);
    }
    if (typeof since.ts === "number" && !(since.ts >= this.ts)) this.ts = since.ts;
  }

  /**
   * The `since` to continue from: `{topics: {topic: {epoch, offset}}, ts}`, `ts` the earlier of
   * the earliest `ts` known and `startTs` (when the subscription began, by the local clock: a
   * clock ahead of the server's is corrected by the first `ts` delivered).
   */
  since(startTs) {
    // fromEntries makes own properties, even of a topic named `__proto__`.
    const topics = Object.fromEntries([...this._topics].map(([t, p]) => [t, { epoch: p.epoch, offset: p.offset }]));
    const ts = this.ts === undefined ? startTs : startTs === undefined ? this.ts : Math.min(this.ts, startTs);
    return ts === undefined ? { topics } : { topics, ts };
  }
}

/** What `getToken` threw (or its timeout), as a `token_failed` error with the original as `cause`. */
function tokenError(e) {
  if (e instanceof HeraldError && e.code === CLIENT_CODES.TOKEN_FAILED) return e;
  return new HeraldError(CLIENT_CODES.TOKEN_FAILED, `getToken: ${e && e.message ? e.message : e}`, { cause: e });
}

/** True when `pattern` has no glob syntax: it names one topic. */
function isExact(pattern) {
  return !/[*?[{\\]/.test(pattern);
}

// ------------------------------------------------------------------------------------------
// URLs. A server is named by its WebSocket endpoint (`ws://host/ws`) or its event stream
// (`http://host/v1/events`); either form (or `http://host`) works for either transport.

const TRANSPORTS = ["auto", "websocket", "sse"];
/** "auto", once a WebSocket worked: failed attempts in a row before asking whether SSE would do. */
const AUTO_PATIENCE = 5;

function defaultUrl(transport) {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new TypeError("connect(url): a URL is needed outside a web page");
  const secure = loc.protocol === "https:";
  if (transport === "sse") return `${secure ? "https:" : "http:"}//${loc.host}/v1/events`;
  return `${secure ? "wss:" : "ws:"}//${loc.host}/ws`;
}

/**
 * For the WebSocket: ws(s)://, http(s):// (→ ws(s)://…/ws when no path; `…/v1/events` →
 * `…/ws`) and, in a page, relative URLs. For SSE: http(s)://…/v1/events, from any of those.
 */
function normalizeUrl(url, transport = "websocket") {
  if (url == null || url === "") return defaultUrl(transport);
  const base = globalThis.location && globalThis.location.href ? globalThis.location.href : undefined;
  const u = new URL(String(url), base);
  const path = u.pathname;
  if (transport === "sse") {
    if (u.protocol === "ws:") u.protocol = "http:";
    if (u.protocol === "wss:") u.protocol = "https:";
    if (path === "/") u.pathname = "/v1/events";
    else if (path.endsWith("/ws")) u.pathname = `${path.slice(0, -3)}/v1/events`;
    return u.toString();
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (path === "/" && !String(url).endsWith("/")) u.pathname = "/ws";
  else if (path.endsWith("/v1/events")) u.pathname = `${path.slice(0, -10)}/ws`;
  return u.toString();
}

/** The HTTP root of the server a URL names (`http://host/prefix`, no trailing `/`). */
function httpRoot(url) {
  const u = new URL(url);
  if (u.protocol === "ws:") u.protocol = "http:";
  if (u.protocol === "wss:") u.protocol = "https:";
  const path = u.pathname.replace(/\/(?:ws|v1\/events)$/, "").replace(/\/$/, "");
  return `${u.origin}${path}`;
}

/**
 * Stops listening to a socket we are done with. `onerror` stays a no-op: the `ws` package
 * throws on an `error` event that nobody listens to (e.g. closing while still connecting).
 */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
  if (ws instanceof SseSocket) ws.ondrop = null;
}

function subKey(pattern, group) {
  return group ? `${pattern}\u0000${group}` : pattern;
}

/** The URLs given to `connect(url | [url, …], {urls})`, without normalizing. */
function givenUrls(url, extra) {
  const given = [...(Array.isArray(url) ? url : url == null || url === "" ? [] : [url]), ...(Array.isArray(extra) ? extra : [])];
  return given.length ? given : [undefined];
}

/** Those URLs normalized for `transport`, without repeats (default: this page's). */
function urlList(given, transport) {
  return [...new Set(given.map((u) => normalizeUrl(u, transport)))];
}

/** `fetch`, called as a function of the global (a browser's refuses another `this`). */
function globalFetch() {
  return typeof globalThis.fetch === "function" ? (...args) => globalThis.fetch(...args) : null;
}

// ------------------------------------------------------------------------------------------
// Server-Sent Events (PROTOCOL.md §2): `GET /v1/events` is the session's stream; what a
// WebSocket would send (`sub`, `unsub`, `pub`, `history`, `presence`, `ping`) goes over HTTP.

/**
 * A small `EventSource` over `fetch` streaming, for Node (which has no EventSource) or for a
 * page that wants what the browser's cannot do: request headers (`Authorization`) and a
 * `Last-Event-ID` on the first request (to resume a session known from before). As the
 * standard one it reconnects by itself after a network error or the end of the stream,
 * `retry` ms later (the server's `retry:` field), sending `Last-Event-ID`; an HTTP status
 * other than 200 or a type other than `text/event-stream` fails it for good (`readyState`
 * CLOSED, `status` and `failure` say why). Comments (`: heartbeat`) call `oncomment`; with
 * `idleTimeoutMs` a connection that sent nothing at all that long is dropped and reconnected
 * (a half-open TCP connection never ends by itself).
 */
export class FetchEventSource {
  constructor(url, { headers, lastEventId, fetch, retryMs = 1000, idleTimeoutMs = 0 } = {}) {
    this.url = String(url);
    this.withCredentials = false;
    this.readyState = FetchEventSource.CONNECTING;
    /** The id of the last event (sent back as `Last-Event-ID` when reconnecting). */
    this.lastEventId = lastEventId ? String(lastEventId) : "";
    /** The HTTP status of the last response, or undefined. */
    this.status = undefined;
    /** Why the last connection failed: `{status, code?, message}` (an HTTP error body) or the thrown error. */
    this.failure = undefined;
    this.retryMs = retryMs;
    this._idleTimeoutMs = idleTimeoutMs;
    this.onopen = this.onmessage = this.onerror = this.oncomment = null;
    this._headers = { ...(headers || {}) };
    this._fetch = fetch || globalFetch();
    if (typeof this._fetch !== "function") throw new TypeError("FetchEventSource: no fetch");
    this._listeners = new Map();
    this._conn = 0; // the current connection's number: what an older one does is ignored
    this._abort = null;
    this._timer = null;
    this._watchdog = null;
    this._heard = 0;
    this._connect();
  }

  /** A connection silent this long (ms; 0: no limit) is dropped and reopened. Settable while open. */
  get idleTimeoutMs() {
    return this._idleTimeoutMs;
  }

  set idleTimeoutMs(ms) {
    this._idleTimeoutMs = ms;
    if (this.readyState === FetchEventSource.OPEN) this._watch(this._conn, this._abort);
  }

  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  _dispatch(ev) {
    const on = this[`on${ev.type}`];
    if (typeof on === "function" && (ev.type === "message" || ev.type === "open" || ev.type === "error")) on.call(this, ev);
    const set = this._listeners.get(ev.type);
    if (set) for (const fn of [...set]) fn.call(this, ev);
  }

  /** Stops for good (no reconnect). */
  close() {
    this.readyState = FetchEventSource.CLOSED;
    this._conn += 1;
    clearTimeout(this._timer);
    clearInterval(this._watchdog);
    this._watchdog = null;
    if (this._abort) this._abort.abort();
    this._abort = null;
  }

  async _connect() {
    const conn = ++this._conn;
    const abort = new AbortController();
    this._abort = abort;
    const headers = { accept: "text/event-stream", "cache-control": "no-cache", ...this._headers };
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    let res;
    try {
      res = await this._fetch(this.url, { headers, signal: abort.signal, cache: "no-store" });
    } catch (e) {
      if (conn === this._conn) this._reconnect(e);
      return;
    }
    if (conn !== this._conn) {
      abort.abort();
      return;
    }
    this.status = res.status;
    const type = (res.headers.get("content-type") || "").toLowerCase();
    if (res.status !== 200 || !type.startsWith("text/event-stream")) {
      let message = `HTTP ${res.status}`;
      let code;
      try {
        const text = await res.text();
        try {
          const body = JSON.parse(text);
          if (body && body.error) ({ code, message } = body.error);
        } catch {
          if (text) message = `HTTP ${res.status}: ${text.slice(0, 200)}`;
        }
      } catch {
        /* the body did not come: the status says enough */
      }
      if (conn !== this._conn) return;
      this.failure = { status: res.status, ...(code ? { code } : {}), message: res.status === 200 ? `not an event stream (${type || "no content-type"})` : message };
      this._fail();
      return;
    }
    this.readyState = FetchEventSource.OPEN;
    this.failure = undefined;
    this._heard = Date.now();
    this._watch(conn, abort);
    this._dispatch({ type: "open" });
    const parser = new SseParser((ev) => {
      if (conn !== this._conn) return;
      if (ev.lastEventId !== undefined) this.lastEventId = ev.lastEventId;
      if (ev.type) this._dispatch({ type: ev.type, data: ev.data, lastEventId: this.lastEventId });
    }, (c) => {
      if (conn === this._conn && typeof this.oncomment === "function") this.oncomment(c);
    }, (ms) => {
      this.retryMs = ms;
    });
    try {
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (conn !== this._conn) {
          try {
            reader.cancel();
          } catch {
            /* gone */
          }
          return;
        }
        if (done) break;
        this._heard = Date.now();
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode(), true);
      if (conn === this._conn) this._reconnect(undefined);
    } catch (e) {
      if (conn === this._conn) this._reconnect(e);
    }
  }

  /** With `idleTimeoutMs`: a connection that stays silent that long is dropped and reopened. */
  _watch(conn, abort) {
    clearInterval(this._watchdog);
    this._watchdog = null;
    const ms = this._idleTimeoutMs;
    if (!(ms > 0)) return;
    const every = Math.max(50, Math.min(1000, ms / 4));
    this._watchdog = setInterval(() => {
      if (conn !== this._conn) return;
      if (Date.now() - this._heard < ms) return;
      abort.abort();
      this._reconnect(new Error(`nothing heard for ${ms} ms`));
    }, every);
    if (this._watchdog.unref) this._watchdog.unref();
  }

  _reconnect(error) {
    if (this.readyState === FetchEventSource.CLOSED) return;
    this._conn += 1; // what the broken connection still does is ignored
    clearInterval(this._watchdog);
    this._watchdog = null;
    if (error !== undefined) this.failure = error;
    this.readyState = FetchEventSource.CONNECTING;
    this._dispatch({ type: "error", error });
    if (this.readyState !== FetchEventSource.CONNECTING) return; // closed by a listener
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), this.retryMs);
  }

  _fail() {
    this.close();
    this._dispatch({ type: "error" });
  }
}
FetchEventSource.CONNECTING = 0;
FetchEventSource.OPEN = 1;
FetchEventSource.CLOSED = 2;

/** The `text/event-stream` format (HTML §9.2.6), fed text as it comes. */
class SseParser {
  constructor(onEvent, onComment, onRetry) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.buf = "";
    this.type = "";
    this.data = "";
    this.id = undefined; // the last event ID buffer: kept across events, as the standard says
    this.first = true;
  }

  push(text, end = false) {
    let buf = this.buf + text;
    if (this.first && buf.length > 0) {
      this.first = false;
      if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1);
    }
    const eol = /\r\n|\r|\n/g;
    let pos = 0;
    let m;
    while ((m = eol.exec(buf))) {
      // A `\r` last may be the first half of a `\r\n` still on its way.
      if (m[0] === "\r" && m.index === buf.length - 1 && !end) break;
      this.line(buf.slice(pos, m.index));
      pos = m.index + m[0].length;
    }
    this.buf = buf.slice(pos);
    // An event not ended by a blank line when the stream ends is not dispatched.
    if (end) this.buf = "";
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line[0] === ":") {
      this.onComment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data += `${value}\n`;
    else if (field === "id") {
      if (!value.includes("\u0000")) this.id = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.onRetry(Number(value));
    }
  }

  dispatch() {
    const type = this.type || "message";
    const data = this.data;
    this.type = "";
    this.data = "";
    // The source's last event id is set even by an event without data, which is not dispatched.
    if (data === "") this.onEvent({ type: "", lastEventId: this.id });
    else this.onEvent({ type, data: data.slice(0, -1), lastEventId: this.id });
  }
}

/** Why a MessagePack WebSocket is no good: the server did not select its subprotocol. */
function refusedReason(selected, detail) {
  const chose = selected ? `"${selected}"` : "none";
  return `the server did not select the ${MSGPACK_PROTOCOL} subprotocol (it selected ${chose}${detail ? `: ${detail}` : ""}): it has no MessagePack support`;
}

/** The events of the server's stream (an `EventSource` only hears the names listened to). */
const SSE_EVENTS = ["welcome", "msg", "gap", "subscribed", "unsubscribed", "error", "close", "bye", "expiring", "message"];

/** A call the sse transport has no way to make. */
function unsupported(what) {
  return new HeraldError(CLIENT_CODES.UNSUPPORTED, `${what} is not available over the sse transport (it needs a WebSocket: connect with transport "websocket")`, { transport: "sse" });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * What the Bus talks to on the "sse" transport, in place of a WebSocket and with its
 * interface (`readyState`, `send(text)`, `close()`, `onopen`, `onmessage`, `onclose`): the
 * `hello` opens the event stream (`GET /v1/events`, the token as `?token=` for a browser's
 * `EventSource`, which cannot send headers; as `Authorization` for a {@link FetchEventSource},
 * which also resumes a known session with `Last-Event-ID`); the stream's events come out as
 * frames; `sub`, `unsub` and `pub` become POSTs, one at a time and in order (as frames on a
 * socket are), `history`, `presence` and `ping` GETs, and their answers frames with the
 * request's `id`. What has no HTTP form is answered `unsupported`.
 *
 * The event source reconnects by itself when the stream breaks, and its `Last-Event-ID`
 * resumes the session: that is `ondrop` (the Bus waits for the next `welcome` on this same
 * socket). `onclose` is for what it cannot come back from: a failure before the first
 * `welcome`, an HTTP error (401 becomes 4001), or the server's `close` with 1008 (taken over)
 * or 4001 (the token expired: a new one needs a new stream).
 */
class SseSocket {
  constructor(url, { EventSource, fetch, answerTimeoutMs }) {
    this.url = url;
    this.protocol = "";
    this.readyState = 0;
    /** The session of the last `welcome`: where `sub` and `unsub` go. */
    this.session = null;
    /** The EventSource (the browser's or a {@link FetchEventSource}), once `hello` opened it. */
    this.eventSource = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = this.ondrop = null;
    const u = new URL(url);
    u.search = "";
    u.hash = "";
    this._events = u.toString().replace(/\/$/, ""); // `…/v1/events`, for `…/<session>/sub`
    this._root = httpRoot(url);
    this._ES = EventSource;
    this._own = !EventSource || EventSource === FetchEventSource || EventSource.prototype instanceof FetchEventSource;
    this._fetch = fetch;
    this._answerTimeoutMs = answerTimeoutMs;
    this._token = undefined;
    this._welcomed = false; // a `welcome` came: a broken stream after it is a drop, not a failure
    this._dropped = false; // a drop was reported and no `welcome` came since
    this._ending = null; // what the server said as it ended the stream (`close`, `bye`)
    this._chain = Promise.resolve(); // sub, unsub and pub, one after the other
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: "open" });
    }, 0);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("the event stream is closed");
    const frame = JSON.parse(text);
    const id = frame.id;
    switch (frame.op) {
      case "hello":
        this._stream(frame);
        return;
      case "sub":
      case "unsub": {
        if (frame.ack === "manual") return this._answerSoon(id, unsupported("a manual-ack subscription (`ack: \"manual\"`)"));
        const body = { ...frame };
        delete body.op;
        delete body.id;
        const op = frame.op;
        // `sub` and `unsub` are idempotent: a request lost on the way is sent again.
        this._serial(id, () => this._http("POST", () => `${this._events}/${encodeURIComponent(this.session)}/${op}`, body, true), (ok) => ({ op: "ok", ...ok }));
        return;
      }
      case "pub": {
        const body = { topic: frame.topic, data: frame.data === undefined ? null : frame.data };
        if (frame.msg_id !== undefined) body.msg_id = frame.msg_id;
        if (frame.retain) body.retain = true;
        // Only a publish with a `msg_id` is safe to send again (the server de-duplicates it).
        this._serial(id, () => this._http("POST", () => `${this._root}/v1/publish`, body, body.msg_id !== undefined), (ok) => ({ op: "ok", offset: ok.offset, epoch: ok.epoch, duplicate: !!ok.duplicate }));
        return;
      }
      case "history": {
        const q = new URLSearchParams({ topic: frame.topic });
        if (frame.since !== undefined) q.set("since", String(frame.since));
        if (frame.limit !== undefined) q.set("limit", String(frame.limit));
        this._parallel(id, () => this._http("GET", () => `${this._root}/v1/history?${q}`), (ok) => ({ op: "ok", epoch: ok.epoch, messages: ok.messages || [] }));
        return;
      }
      case "presence": {
        const q = new URLSearchParams({ topic: frame.topic });
        this._parallel(id, () => this._http("GET", () => `${this._root}/v1/presence?${q}`), (ok) => ({ op: "ok", count: ok.count, clients: ok.clients || [] }));
        return;
      }
      case "ping":
        // The stream's liveness is the event source's business; this is the server's round trip.
        this._parallel(id, () => this._http("GET", () => `${this._root}/healthz`), () => ({ op: "pong" }));
        return;
      case "req":
        return this._answerSoon(id, unsupported("request/reply (`request`)"));
      case "refresh":
        return this._answerSoon(id, unsupported("a live token refresh"));
      case "ack":
        return this._answerSoon(id, unsupported("`ack`"));
      default:
        return this._answerSoon(id, unsupported(`'${frame.op}'`));
    }
  }

  /** Closes the stream; `onclose` follows (unless the Bus stopped listening first). */
  close(code = 1005, reason = "") {
    if (this.readyState === 3) return;
    this._closeSource();
    this.readyState = 3;
    setTimeout(() => {
      if (this.onclose) this.onclose({ code, reason });
    }, 0);
  }

  _closeSource() {
    const source = this.eventSource;
    this.eventSource = null;
    if (source) source.close();
  }

  /** Gone for good: the Bus decides what comes next (a new socket, or nothing). */
  _fail(code, reason) {
    if (this.readyState === 3) return;
    this._closeSource();
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }

  _stream(hello) {
    this._token = typeof hello.token === "string" && hello.token !== "" ? hello.token : undefined;
    const u = new URL(this.url);
    let source;
    if (this._own) {
      const headers = this._token ? { authorization: `Bearer ${this._token}` } : {};
      const lastEventId = hello.session ? `${hello.session}:${hello.last_seq || 0}` : undefined;
      source = new (this._ES || FetchEventSource)(u.toString(), { headers, lastEventId, fetch: this._fetch });
    } else {
      // A browser's EventSource sends no headers of its own; nor a Last-Event-ID before its
      // first reconnect, so a session known from before cannot be resumed with it.
      if (this._token) u.searchParams.set("token", this._token);
      source = new this._ES(u.toString());
    }
    this.eventSource = source;
    for (const name of SSE_EVENTS) source.addEventListener(name, (ev) => this._onEvent(source, name, ev));
  }

  _onEvent(source, name, ev) {
    if (source !== this.eventSource || this.readyState === 3) return;
    // The source's own `error` (the connection) has no data; the server's `error` frame has.
    if (name === "error" && typeof ev.data !== "string") {
      this._onSourceError(source);
      return;
    }
    if (name === "close") {
      let c = {};
      try {
        c = JSON.parse(ev.data) || {};
      } catch {
        /* a close without details */
      }
      const code = Number(c.code) || 1000;
      const reason = typeof c.reason === "string" ? c.reason : "";
      // Taken over by another connection, or the token expired: the event source must not
      // come back by itself (with the same token it would only be refused).
      if (code === 1008 || code === 4001) this._fail(code, reason);
      else this._ending = { code, reason };
      return;
    }
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      frame = null;
    }
    if (frame && frame.op === "welcome") {
      this.session = frame.session;
      this._welcomed = true;
      this._dropped = false;
      this._ending = null;
      // Our own source sees the heartbeat comments: a stream silent for two is dead.
      if (this._own && frame.heartbeat_ms > 0) source.idleTimeoutMs = 2 * frame.heartbeat_ms + 1000;
    } else if (frame && frame.op === "bye") {
      this._ending = { code: 1001, reason: frame.reason || "shutdown" };
    }
    if (this.onmessage) this.onmessage({ data: ev.data });
  }

  _onSourceError(source) {
    if (this._welcomed && source.readyState !== 2) {
      // The stream broke and the event source is on its way back (Last-Event-ID).
      if (this._dropped) return;
      this._dropped = true;
      const why = this._ending || { code: 1006, reason: "event stream lost" };
      this._ending = null;
      if (this.ondrop) this.ondrop(why);
      return;
    }
    // It cannot come back: before any welcome (nothing to resume yet), or an HTTP error.
    if (this._own) {
      const f = source.failure;
      const code = f && f.status === 401 ? 4001 : 1006;
      const reason = !f ? "event stream failed" : f.status !== undefined ? `${f.code ? `${f.code}: ` : ""}${f.message}` : String(f.message || f);
      this._fail(code, reason);
      return;
    }
    // A browser's EventSource does not say why. Whether the token is refused matters (a fixed
    // one would be refused forever): ask where the credentials are checked and nothing opens.
    this._closeSource();
    this.readyState = 2;
    const done = (code, reason) => {
      this.readyState = 1;
      this._fail(code, reason);
    };
    if (!this._token || !this._fetch) return done(1006, "event stream failed");
    this._fetch(`${this._events}/-/unsub`, { method: "POST", headers: { authorization: `Bearer ${this._token}`, "content-type": "application/json" }, body: "{}", cache: "no-store" }).then(
      async (res) => {
        let message = "";
        if (res.status === 401) {
          try {
            message = (await res.json()).error.message;
          } catch {
            /* no body */
          }
        }
        done(res.status === 401 ? 4001 : 1006, res.status === 401 ? `unauthorized${message ? `: ${message}` : ""}` : "event stream failed");
      },
      () => done(1006, "event stream failed"),
    );
  }

  /** Runs `run` after the calls before it; its answer (or error) goes out as a frame. */
  _serial(id, run, shape) {
    const step = this._chain.then(run).then(
      (ok) => this._answer(id, null, shape(ok || {})),
      (err) => this._answer(id, err),
    );
    this._chain = step.catch(() => {});
  }

  _parallel(id, run, shape) {
    Promise.resolve()
      .then(run)
      .then(
        (ok) => this._answer(id, null, shape(ok || {})),
        (err) => this._answer(id, err),
      );
  }

  /** {@link _answer}, after the `send` that asked returned. */
  _answerSoon(id, err) {
    Promise.resolve().then(() => this._answer(id, err));
  }

  /** Hands the answer to a call to the Bus as the frame a WebSocket would have carried. */
  _answer(id, err, frame) {
    if (this.readyState === 3 || !this.onmessage) return;
    let out;
    if (err) {
      out = { op: "error", code: err.code || "internal", message: err.message || String(err) };
      if (id !== undefined) out.id = id;
    } else {
      if (id === undefined) return; // success without an id is silent, as on a socket
      out = { ...frame, id };
    }
    this.onmessage({ data: JSON.stringify(out) });
  }

  /**
   * An HTTP call with this stream's credentials; resolves with the JSON answer, rejects with a
   * HeraldError (the server's `{error: {code, message}}`, or `disconnected` when the request
   * did not get through: with `retry`, not before it was tried again for `answerTimeoutMs`).
   */
  async _http(method, url, body, retry = false) {
    const start = Date.now();
    for (let attempt = 0; ; attempt += 1) {
      const headers = {};
      if (this._token) headers.authorization = `Bearer ${this._token}`;
      if (body !== undefined) headers["content-type"] = "application/json";
      const target = url();
      let res;
      try {
        res = await this._fetch(target, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
      } catch (e) {
        if (retry && this.readyState !== 3 && Date.now() - start < this._answerTimeoutMs) {
          await sleep(Math.min(2000, 100 * 2 ** attempt));
          continue;
        }
        throw new HeraldError(CLIENT_CODES.DISCONNECTED, `${method} ${new URL(target).pathname} did not get through: ${e && e.message ? e.message : e}`);
      }
      let json = null;
      try {
        json = await res.json();
      } catch {
        /* not JSON */
      }
      if (res.ok) return json;
      const e = (json && json.error) || {};
      throw new HeraldError(e.code || (res.status === 404 ? "not_found" : res.status === 401 ? "unauthorized" : "internal"), e.message || `HTTP ${res.status}`, { status: res.status });
    }
  }
}

/**
 * Opens a connection and resolves with a {@link Bus} once the server said `welcome`.
 * `url` may be a list (or `options.urls` add to it): the first connection tries each in turn,
 * and each reconnect attempt moves on to the next. Rejects when the first connection cannot be
 * opened to any of them (later drops reconnect on their own).
 *
 * options: `token` (string, or a function returning one, called before every connection),
 * `getToken` (a function returning a token, or a promise of one: called before every
 * connection and on `expiring`, to refresh the token on the open socket), `WebSocket` (a
 * constructor, for Node 20 without a global one: e.g. the `ws` package),
 * `session` + `lastSeq` (resume a session from an earlier page load), `client` (sent in hello),
 * `minDelayMs`, `maxDelayMs` (reconnect backoff), `maxQueue` (offline publishes),
 * `requestTimeoutMs`, `answerTimeoutMs`, `connectTimeoutMs`, `reconnect` (false: never
 * reconnect), `transport` ("auto", the default: a WebSocket, and SSE for good once two
 * WebSockets in a row failed to open while the server answers HTTP, the `transport` event;
 * "websocket"; "sse"), `EventSource` (a constructor for the sse transport; default the global
 * one, else {@link FetchEventSource}), `fetch` (for the sse transport's HTTP calls),
 * `encoding` ("json", the default: text frames; "msgpack": binary MessagePack frames on the
 * `herald.v1.msgpack` subprotocol, which the server must select, else `connect` rejects with
 * `unsupported`; the sse transport is JSON either way), `decodeBinary` (on JSON frames, turn
 * `{"$base64": "…"}` objects in received `data` into Uint8Arrays, as a MessagePack connection
 * receives them; default: true with encoding "msgpack", for its SSE fallback, else false).
 */
export function connect(url, options = {}) {
  const bus = new Bus(url, options);
  return bus.open().then(() => bus);
}

export class Bus {
  constructor(url, options = {}) {
    const mode = options.transport === undefined ? "auto" : options.transport;
    if (!TRANSPORTS.includes(mode)) throw new TypeError(`transport must be "auto", "websocket" or "sse", not ${JSON.stringify(mode)}`);
    this._mode = mode;
    /** The transport in use: "websocket" or "sse" ("auto" starts with "websocket"). */
    this.transport = mode === "sse" ? "sse" : "websocket";
    this._givenUrls = givenUrls(url, options.urls);
    /** Every URL to connect to, in the order tried (in the form of the transport in use). */
    this.urls = urlList(this._givenUrls, this.transport);
    this._urlIndex = 0;
    /** The URL in use (or being tried). */
    this.url = this.urls[0];
    this.options = { ...DEFAULTS, ...options };
    this._WS = options.WebSocket || globalThis.WebSocket;
    this._ES = options.EventSource || globalThis.EventSource; // none (Node): FetchEventSource
    this._fetch = options.fetch || globalFetch();
    if (this.transport === "websocket" && typeof this._WS !== "function") {
      throw new TypeError('no WebSocket: pass options.WebSocket (in Node 20, e.g. the `ws` package), or use transport: "sse"');
    }
    if (mode === "sse" && typeof this._fetch !== "function") throw new TypeError("the sse transport needs fetch: pass options.fetch");
    const encoding = options.encoding === undefined ? "json" : options.encoding;
    if (!ENCODINGS.includes(encoding)) throw new TypeError(`encoding must be "json" or "msgpack", not ${JSON.stringify(encoding)}`);
    this._encoding = encoding;
    this._decodeBinary = options.decodeBinary === undefined ? encoding === "msgpack" : !!options.decodeBinary;
    this._encodingRefused = false; // the first connection: a server did not select herald.v1.msgpack
    this._wsFails = 0; // WebSockets in a row that failed to open
    this._wsRefusals = 0; // of those, the last ones in a row while the server answered HTTP
    this._wsWorked = false; // a WebSocket of this bus was welcomed once
    /** Current WebSocket (or, over SSE, what stands for it: see `socket.eventSource`), or null between connections. */
    this.socket = null;
    /** Server session id (kept across reconnects while the server resumes it). */
    this.session = options.session || null;
    /** Highest `seq` seen (or covered by a `gap`): what a resume asks to continue after. */
    this.lastSeq = options.session ? options.lastSeq || 0 : 0;
    /** `connecting` | `open` | `reconnecting` | `closed`. */
    this.state = "connecting";
    /** The last `welcome` frame. */
    this.welcome = null;

    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer, kind, frame}
    this._subs = new Map(); // key -> {pattern, group, ack, rewind, since, match, handlers:Set, onGap:Map, confirmed, waiters, positions, recovering, recovered, startTs}
    this._unsubQueue = new Map(); // key -> {pattern, group}: unsubscribes to send after reconnect
    this._serverSubs = new Map(); // key -> {pattern, group, match}: subscriptions the server made (`subscribed`)
    this._notesSinceMsg = []; // texts of `(un)subscribed` frames since the last `msg`
    this._noteReplay = []; // those a resume is expected to send again
    this._staleExp = undefined; // an `exp` getToken could not move: no refresh for it again
    this._refreshingExp = undefined; // the `exp` of the refresh in flight
    this._queue = []; // publishes waiting for a socket: {frame, resolve, reject}
    this._listeners = new Map();
    this._attempt = 0;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._lastHeard = 0;
    this._retryAfterMs = 0;
    this._connectTimer = null;
    this._failures = []; // the first connection's failed URLs
  }

  // ---- events --------------------------------------------------------------------------

  /**
   * Listens to `open`, `close`, `resumed`, `gap` (a session gap `{from_seq, to_seq, reason}` or
   * a topic gap `{topic, from_offset, to_offset, reason, epoch}`), `recovered`, `error`,
   * `expiring` `{exp}`, `refreshed` `{exp}`, `refresh_failed` (a HeraldError), `subscribed`
   * `{pattern, group?}`, `unsubscribed` `{pattern, group?, reason}`, `message` (a message of a
   * server-made subscription that no local one matches), `transport` `{name, reason, url}` ("auto"
   * fell back to SSE); returns a function that stops.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  _emit(event, payload) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (e) {
        if (event !== "error") this._emit("error", e);
      }
    }
  }

  /**
   * The encoding of the frames on the transport in use: "msgpack" on a WebSocket with
   * `encoding: "msgpack"`, else "json" (the sse transport is always JSON).
   */
  get encoding() {
    return this.transport === "websocket" ? this._encoding : "json";
  }

  /** True while a socket is open and welcomed. */
  get connected() {
    return this.state === "open";
  }

  // ---- connection lifecycle --------------------------------------------------------------

  /**
   * Opens the first connection; resolves once welcomed (see {@link connect}). Subscribing on a
   * new `Bus` before `open()` (without awaiting) makes its handlers ready for the messages a
   * resumed session replays first, e.g. after a page reload with a saved `session`/`lastSeq`.
   */
  open() {
    if (this._opened) return this._opened;
    this._opened = new Promise((resolve, reject) => {
      this._firstOpen = { resolve, reject };
      this._open();
    });
    return this._opened;
  }

  /**
   * The token for a connection: `getToken()`, else `token` (or what its function returns). A
   * function that does not settle within `connectTimeoutMs` fails: a hung token service must
   * not hang the bus, and the next attempt asks again.
   */
  _token() {
    const get = typeof this.options.getToken === "function" ? this.options.getToken : this.options.token;
    if (typeof get !== "function") return Promise.resolve(get);
    const ms = this.options.connectTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new HeraldError(CLIENT_CODES.TOKEN_FAILED, `getToken did not answer within ${ms} ms`)), ms);
      Promise.resolve()
        .then(get)
        .then(
          (t) => (clearTimeout(timer), resolve(t)),
          (e) => (clearTimeout(timer), reject(e)),
        );
    });
  }

  async _open() {
    let token;
    try {
      token = await this._token();
    } catch (e) {
      if (this.state === "closed") return;
      const err = tokenError(e);
      // Between connections nothing else would tell: no `close` comes for an attempt.
      if (!this._firstOpen) this._emit("error", err);
      this._onSocketGone(null, { code: 4001, reason: err.message });
      return;
    }
    if (this.state === "closed") return;
    const msgpack = this.transport === "websocket" && this._encoding === "msgpack";
    let ws;
    try {
      ws =
        this.transport === "sse"
          ? new SseSocket(this.url, { EventSource: this._ES, fetch: this._fetch, answerTimeoutMs: this.options.answerTimeoutMs })
          : new this._WS(this.url, msgpack ? [MSGPACK_PROTOCOL] : JSON_PROTOCOL);
      if (msgpack) {
        ws.binaryType = "arraybuffer";
        MSGPACK_SOCKETS.add(ws);
      }
    } catch (e) {
      this._onSocketGone(null, { code: 1006, reason: String(e && e.message ? e.message : e) });
      return;
    }
    this.socket = ws;
    let opened = false; // a WebSocket that never opens may be one a proxy refuses (see _afterGone)
    let failure = ""; // what the socket's `error` event said, if anything (the `ws` package does)
    // A socket can hang while connecting (a silently dropped SYN, a stuck proxy): give up on
    // it after connectTimeoutMs and count it as a failed attempt.
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (this.socket !== ws || this.state === "open" || this.state === "closed") return;
      this._onSocketGone(ws, { code: 4000, reason: "connect timeout", neverOpened: !opened });
      try {
        ws.close();
      } catch {
        /* never opened */
      }
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      opened = true;
      if (msgpack && ws.protocol !== MSGPACK_PROTOCOL) {
        // A server without MessagePack (it selected herald.v1, or nothing).
        this._onSocketGone(ws, { code: 1002, reason: refusedReason(ws.protocol), encodingRefused: true });
        try {
          ws.close(1000, "subprotocol");
        } catch {
          /* closing already */
        }
        return;
      }
      const hello = { op: "hello" };
      if (token) hello.token = token;
      if (this.session) {
        hello.session = this.session;
        hello.last_seq = this.lastSeq;
      }
      if (this.options.client !== undefined) hello.client = this.options.client;
      this._sendRaw(ws, hello);
    };
    ws.onmessage = (ev) => {
      if (this.socket !== ws) return;
      this._lastHeard = Date.now();
      if (msgpack) {
        this._onBinaryMessage(ev.data);
        return;
      }
      if (typeof ev.data !== "string") return; // a JSON connection has text frames only
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        this._emit("error", new HeraldError("bad_json", "server sent a frame that is not JSON"));
        return;
      }
      if (this._decodeBinary && frame && typeof frame === "object") decodeFrameBinary(frame);
      this._onFrame(frame, ev.data);
    };
    ws.onerror = (ev) => {
      // Always followed by `close`, which carries what can be known; some implementations (the
      // `ws` package) say why here.
      const why = ev && (ev.message || (ev.error && ev.error.message));
      if (why) failure = String(why);
    };
    ws.onclose = (ev) => {
      // The `ws` package fails the handshake itself when the server selects no subprotocol.
      if (msgpack && !opened && /subprotocol/i.test(failure)) {
        this._onSocketGone(ws, { code: ev.code, reason: refusedReason(null, failure), encodingRefused: true });
        return;
      }
      this._onSocketGone(ws, { code: ev.code, reason: ev.reason || (opened ? "" : failure), neverOpened: !opened });
    };
    if (ws instanceof SseSocket) ws.ondrop = (ev) => this._onStreamDrop(ws, ev);
  }

  /** A binary message on a MessagePack connection: one frame, a MessagePack map. */
  _onBinaryMessage(data) {
    if (typeof data === "string") {
      this._emit("error", new HeraldError("bad_frame", "server sent a text frame on a MessagePack connection"));
      return;
    }
    const bytes = binaryView(data);
    if (!bytes) {
      this._emit("error", new HeraldError("bad_frame", `server frame of an unexpected type (${Object.prototype.toString.call(data)}): binaryType should be "arraybuffer"`));
      return;
    }
    let frame;
    try {
      frame = msgpackDecode(bytes);
    } catch (e) {
      this._emit("error", new HeraldError("bad_frame", `server sent a frame that is not MessagePack: ${e.message}`, { cause: e }));
      return;
    }
    if (frame === null || typeof frame !== "object" || Array.isArray(frame) || binaryView(frame)) {
      this._emit("error", new HeraldError("bad_frame", "server sent a MessagePack frame that is not a map"));
      return;
    }
    // The `(un)subscribed` notes are compared by their bytes (see _replayedNote).
    const note = frame.op === "subscribed" || frame.op === "unsubscribed" ? bytesKey(bytes) : undefined;
    this._onFrame(frame, note);
  }

  _sendRaw(ws, frame) {
    try {
      return this._sendOrThrow(ws, frame);
    } catch (e) {
      this._emit("error", e);
      return false;
    }
  }

  /**
   * Sends `frame` on `ws`; false when it is not open or the send failed. A frame that does not
   * encode (data that JSON or MessagePack cannot hold: a cycle, a BigInt over JSON) throws.
   */
  _sendOrThrow(ws, frame) {
    if (!ws || ws.readyState !== OPEN) return false;
    // NaN and infinities go as null (nil), as JSON.stringify sends them.
    const encoded = MSGPACK_SOCKETS.has(ws) ? msgpackEncode(frame, { nonFiniteAsNil: true }) : JSON.stringify(frame, binaryReplacer);
    try {
      ws.send(encoded);
      return true;
    } catch (e) {
      this._emit("error", e);
      return false;
    }
  }

  /** Sends a frame on the current welcomed socket; false when offline. */
  _send(frame) {
    return this.state === "open" && this._sendRaw(this.socket, frame);
  }

  _onSocketGone(ws, { code, reason, neverOpened = false, encodingRefused = false }) {
    if (ws && this.socket !== ws) return;
    this.socket = null;
    clearTimeout(this._connectTimer);
    this._stopHeartbeat();
    const wasOpen = this.state === "open";
    if (ws) detach(ws);
    this._failPending(CLIENT_CODES.DISCONNECTED, `connection lost (${code}${reason ? ` ${reason}` : ""})`);
    if (this.state === "closed") return;
    // A MessagePack WebSocket that did not open: a browser fails the handshake, without saying
    // why, when the server selects no subprotocol. Ask the server which one it would select.
    if (ws && neverOpened && !encodingRefused && MSGPACK_SOCKETS.has(ws)) {
      this._selectedSubprotocol(this.url).then((selected) => {
        if (this.state === "closed" || this.socket !== null) return;
        if (selected !== null && selected !== MSGPACK_PROTOCOL) this._socketFailed(ws, { code, reason: refusedReason(selected), wasOpen, neverOpened: false, encodingRefused: true });
        else this._socketFailed(ws, { code, reason, wasOpen, neverOpened, encodingRefused: false });
      });
      return;
    }
    this._socketFailed(ws, { code, reason, wasOpen, neverOpened, encodingRefused });
  }

  /** {@link _onSocketGone}, once the socket is let go of: what the failure means. */
  _socketFailed(ws, { code, reason, wasOpen, neverOpened, encodingRefused }) {
    if (encodingRefused) {
      // Not a failure to reach the server (no reason to try SSE): it lacks MessagePack.
      if (this._firstOpen) this._encodingRefused = true;
      else this._emit("error", new HeraldError(CLIENT_CODES.UNSUPPORTED, `${this.url}: ${reason}`, { encoding: "msgpack", url: this.url }));
    }
    if (ws && this.transport === "websocket") this._wsFails = neverOpened ? this._wsFails + 1 : 0;
    // A WebSocket that did not open: the server down, or something on the way (a proxy, a
    // firewall) refusing the upgrade? Only in the second case does SSE stand a chance: ask
    // whether the server answers plain HTTP. Before any WebSocket of this bus worked, at once;
    // after, only once an outage lasted AUTO_PATIENCE attempts (a restarting server is the
    // likelier cause, and a browser logs every failed probe).
    if (ws && neverOpened && this._mode === "auto" && this.transport === "websocket" && this._fetch && this._wsFails >= (this._wsWorked ? AUTO_PATIENCE : 1)) {
      const url = this.url;
      this._reachable(url).then((reachable) => {
        if (this.state !== "closed" && this.socket === null) this._afterGone({ code, reason, wasOpen, refused: reachable });
      });
      return;
    }
    this._afterGone({ code, reason, wasOpen, refused: false });
  }

  /**
   * The subprotocol the server at `url` selects when offered herald.v1.msgpack and herald.v1
   * ("" for none), from a WebSocket opened and closed at once (no `hello`); null when it does
   * not open either (within connectTimeoutMs, at most 5 s).
   */
  _selectedSubprotocol(url) {
    return new Promise((resolve) => {
      let probe;
      try {
        probe = new this._WS(url, [MSGPACK_PROTOCOL, JSON_PROTOCOL]);
      } catch {
        resolve(null);
        return;
      }
      let settled = false;
      const done = (selected) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        detach(probe);
        try {
          probe.close(1000, "probe");
        } catch {
          /* not open */
        }
        resolve(selected);
      };
      const timer = setTimeout(() => done(null), Math.min(this.options.connectTimeoutMs, 5000));
      probe.onopen = () => done(typeof probe.protocol === "string" ? probe.protocol : "");
      probe.onerror = () => {};
      probe.onclose = () => done(null);
    });
  }

  /**
   * What follows a lost connection: the next attempt (at once while the first connection tries
   * its URLs, else after a backoff), or the end. `refused`: a WebSocket did not open although
   * the server answers HTTP; twice in a row, and "auto" falls back to SSE for good.
   */
  _afterGone({ code, reason, wasOpen, refused }) {
    let switched = false;
    if (!refused) this._wsRefusals = 0;
    else {
      this._wsRefusals += 1;
      if (this._wsRefusals >= 2) {
        switched = true;
        this._useSse(`the WebSocket failed to open ${this._wsFails} times in a row (${code}${reason ? ` ${reason}` : ""}) while the server answers HTTP`);
      }
    }
    if (this._firstOpen) {
      const again = () => {
        this._reconnectTimer = setTimeout(() => {
          this._reconnectTimer = null;
          this._open();
        }, 0);
      };
      if (switched) {
        // The first connection tries each URL again, over SSE.
        this._failures = [];
        this._urlIndex = 0;
        this.url = this.urls[0];
        again();
        return;
      }
      // The first connection tries each URL once, one after the other, without waiting (and
      // a WebSocket refused by something on the way once more, to tell whether to fall back).
      if (!refused) this._failures.push(`${this.url} (${code}${reason ? ` ${reason}` : ""})`);
      if (refused || this._failures.length < this.urls.length) {
        this._nextUrl();
        this._reconnectTimer = setTimeout(() => {
          this._reconnectTimer = null;
          this._open();
        }, 0);
        return;
      }
      const first = this._firstOpen;
      this._firstOpen = null;
      this.state = "closed";
      if (this._encodingRefused) {
        first.reject(new HeraldError(CLIENT_CODES.UNSUPPORTED, `encoding "msgpack" is not available: ${this._failures.join(", ")}; connect with encoding "json"`, { closeCode: code, encoding: "msgpack" }));
        return;
      }
      first.reject(new HeraldError(CLIENT_CODES.CONNECT_FAILED, `could not connect to ${this._failures.join(", ")}`, { closeCode: code }));
      return;
    }
    // 1008: another connection took over this session (e.g. the same page in another tab)
    // 4001: the token was refused or expired; retrying with the same token cannot help.
    const fatal = code === 1008 || (code === 4001 && typeof this.options.token !== "function" && typeof this.options.getToken !== "function");
    const willReconnect = this.options.reconnect !== false && !fatal;
    this.state = willReconnect ? "reconnecting" : "closed";
    if (wasOpen || !willReconnect) this._emit("close", { code, reason, willReconnect, url: this.url });
    if (willReconnect) {
      // A server's `bye.retry_ms` is about that server: another URL is tried without it.
      const retryAfter = this.urls.length > 1 ? 0 : this._retryAfterMs;
      const delay = Math.max(retryAfter, backoffDelay(this._attempt, this.options.minDelayMs, this.options.maxDelayMs));
      this._retryAfterMs = 0;
      this._attempt += 1;
      this._nextUrl();
      this._reconnectTimer = setTimeout(() => {
        this._reconnectTimer = null;
        this._open();
      }, delay);
    } else {
      this._failQueue(CLIENT_CODES.CLOSED, "connection closed and will not reconnect");
    }
  }

  /** "auto" gives up on the WebSocket: from now on this bus uses SSE (the `transport` event). */
  _useSse(reason) {
    this.transport = "sse";
    this.urls = urlList(this._givenUrls, "sse");
    this._urlIndex = Math.min(this._urlIndex, this.urls.length - 1);
    this.url = this.urls[this._urlIndex];
    this._emit("transport", { name: "sse", reason, url: this.url });
  }

  /**
   * Whether the server behind `url` answers HTTP (any status will do: in a page, an opaque
   * `no-cors` answer too). False when nothing answers within connectTimeoutMs (at most 5 s).
   */
  _reachable(url) {
    const ms = Math.min(this.options.connectTimeoutMs, 5000);
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (abort) abort.abort();
        resolve(false);
      }, ms);
      const init = { cache: "no-store", signal: abort ? abort.signal : undefined };
      if (typeof globalThis.document !== "undefined") init.mode = "no-cors";
      Promise.resolve()
        .then(() => this._fetch(`${httpRoot(url)}/healthz`, init))
        .then(
          (res) => {
            clearTimeout(timer);
            try {
              if (res.body && res.body.cancel) res.body.cancel().catch(() => {});
            } catch {
              /* nothing to let go */
            }
            resolve(true);
          },
          () => {
            clearTimeout(timer);
            resolve(false);
          },
        );
    });
  }

  /**
   * SSE: the stream broke and its event source reconnects by itself, with a `Last-Event-ID`
   * that resumes the session. The bus is `reconnecting` until the next `welcome` on the same
   * socket. Calls made over HTTP meanwhile are not cut (their answers do not need the stream).
   * With several URLs, a stream not back within connectTimeoutMs gives way to the next one.
   */
  _onStreamDrop(sock, { code, reason }) {
    if (this.socket !== sock || this.state === "closed") return;
    if (this.options.reconnect === false) {
      this._onSocketGone(sock, { code, reason });
      sock.close(1000, "no reconnect");
      return;
    }
    const wasOpen = this.state === "open";
    this._stopHeartbeat();
    this.state = "reconnecting";
    if (wasOpen) this._emit("close", { code, reason, willReconnect: true, url: this.url });
    clearTimeout(this._connectTimer);
    if (this.urls.length > 1) {
      this._connectTimer = setTimeout(() => {
        if (this.socket !== sock || this.state !== "reconnecting") return;
        this._onSocketGone(sock, { code, reason });
        sock.close(1000, "failover");
      }, this.options.connectTimeoutMs);
    }
  }

  /** Moves to the next URL (a no-op with one). */
  _nextUrl() {
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this.url = this.urls[this._urlIndex];
  }

  _onWelcome(frame) {
    const previous = this.session;
    clearTimeout(this._connectTimer);
    this.welcome = frame;
    this.session = frame.session;
    this._attempt = 0;
    this._failures = [];
    if (!frame.resumed) this.lastSeq = 0;
    this.state = "open";
    this._staleExp = undefined;
    this._refreshingExp = undefined;
    // A resume sends again the notes that followed the last `msg` seen (see _replayedNote).
    this._noteReplay = frame.resumed ? this._notesSinceMsg : [];
    this._notesSinceMsg = [];
    if (this.transport === "websocket") {
      this._wsFails = 0;
      this._wsRefusals = 0;
      this._wsWorked = true;
      this._startHeartbeat(frame.heartbeat_ms);
    } else {
      // Over SSE the event source watches its stream (see FetchEventSource.idleTimeoutMs).
      this._stopHeartbeat();
    }
    if (frame.resumed) {
      // The server kept our subscriptions; send what we could not while offline, and a
      // recovery whose answer the drop cut off (it may not have reached the server).
      for (const [key, u] of this._unsubQueue) {
        this._send({ op: "unsub", pattern: u.pattern, ...(u.group ? { group: u.group } : {}) });
        this._unsubQueue.delete(key);
      }
      for (const sub of this._subs.values()) {
        if (!sub.confirmed) this._sendSub(sub, "first");
        else if (sub.recovering) this._sendSub(sub, sub.recovering, true);
      }
    } else {
      // A new session: subscribe again, continuing where each subscription stopped. What the
      // server had subscribed ended with the old session; it is not ours to make again.
      this._unsubQueue.clear();
      const ended = this.serverSubscriptions;
      this._serverSubs.clear();
      for (const s of ended) this._emit("unsubscribed", { ...s, reason: "session" });
      for (const sub of this._subs.values()) this._sendSub(sub, !sub.confirmed ? "first" : sub.group ? "plain" : "recover");
    }
    // Queued publishes go after the subscriptions so the server handles them in that order.
    const queued = this._queue;
    this._queue = [];
    for (const q of queued) this._sendPub(q);
    if (this._firstOpen) {
      const first = this._firstOpen;
      this._firstOpen = null;
      first.resolve();
    }
    const info = { session: frame.session, resumed: !!frame.resumed, previousSession: previous, url: this.url, transport: this.transport, encoding: this.encoding };
    this._emit("open", info);
    if (frame.resumed) this._emit("resumed", info);
  }

  _startHeartbeat(heartbeatMs) {
    this._stopHeartbeat();
    const every = Math.max(1000, Number(heartbeatMs) || 25000);
    this._lastHeard = Date.now();
    // The server's pings are WebSocket control frames that page scripts never see, so the
    // client checks liveness itself: a `ping` when quiet, and a reconnect when nothing at all
    // came back for two intervals (a half-open TCP connection never fires `close`).
    this._heartbeatTimer = setInterval(() => {
      const quiet = Date.now() - this._lastHeard;
      if (quiet >= 2 * every + 1000) {
        const ws = this.socket;
        this._onSocketGone(ws, { code: 4000, reason: "heartbeat timeout" });
        try {
          ws.close(4000, "heartbeat timeout");
        } catch {
          /* already closing */
        }
      } else if (quiet >= every) {
        this._send({ op: "ping" });
      }
    }, every);
    if (this._heartbeatTimer.unref) this._heartbeatTimer.unref();
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  /** Closes the connection for good: leaves every subscription, rejects what is pending. */
  close() {
    if (this.state === "closed") return;
    const ws = this.socket;
    if (this.state === "open") {
      // Unsubscribing makes presence leaves immediate instead of waiting for the session TTL.
      for (const sub of this._subs.values()) {
        this._send({ op: "unsub", pattern: sub.pattern, ...(sub.group ? { group: sub.group } : {}) });
      }
    }
    this.state = "closed";
    clearTimeout(this._connectTimer);
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopHeartbeat();
    this.socket = null;
    const subs = [...this._subs.values()];
    this._subs.clear();
    this._serverSubs.clear();
    this._failPending(CLIENT_CODES.CLOSED, "bus closed");
    for (const sub of subs) {
      const waiters = sub.waiters;
      sub.waiters = [];
      for (const w of waiters) w.reject(new HeraldError(CLIENT_CODES.CLOSED, "bus closed"));
    }
    this._failQueue(CLIENT_CODES.CLOSED, "bus closed");
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, "bye");
      } catch {
        /* already closed */
      }
    }
    if (this._firstOpen) {
      const first = this._firstOpen;
      this._firstOpen = null;
      first.reject(new HeraldError(CLIENT_CODES.CLOSED, "bus closed"));
    }
    this._emit("close", { code: 1000, reason: "closed by client", willReconnect: false, url: this.url });
  }

  // ---- incoming frames -------------------------------------------------------------------

  _onFrame(frame, text) {
    switch (frame.op) {
      case "welcome":
        this._onWelcome(frame);
        break;
      case "msg":
        this._onMsg(frame);
        break;
      case "gap":
        if (frame.topic !== undefined) {
          this._onTopicGap(frame);
          break;
        }
        if (typeof frame.to_seq === "number" && frame.to_seq > this.lastSeq) this.lastSeq = frame.to_seq;
        this._notesSinceMsg = [];
        this._noteReplay = [];
        this._emit("gap", { from_seq: frame.from_seq, to_seq: frame.to_seq, reason: frame.reason });
        break;
      case "ok":
      case "reply":
      case "pong":
        this._answer(frame, null);
        break;
      case "error": {
        const err = new HeraldError(frame.code, frame.message, { id: frame.id });
        if (!this._answer(frame, err)) this._emit("error", err);
        break;
      }
      case "bye":
        // The server is going away and says when to come back: reconnect no sooner.
        this._retryAfterMs = Number(frame.retry_ms) || 0;
        break;
      case "expiring":
        this._onExpiring(frame);
        break;
      case "subscribed":
        if (!this._replayedNote(text)) this._onSubscribed(frame);
        break;
      case "unsubscribed":
        if (!this._replayedNote(text)) this._onUnsubscribed(frame);
        break;
      default:
        break; // newer server frames are ignored, as the protocol asks of unknown fields
    }
  }

  /** Settles the pending request the frame answers; false if none waits for it. */
  _answer(frame, err) {
    if (frame.id === undefined || frame.id === null) return false;
    const p = this._pending.get(frame.id);
    if (!p) return false;
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(frame);
    return true;
  }

  _onMsg(frame) {
    if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return; // already seen (a resume may replay the edge)
      this.lastSeq = frame.seq;
      this._notesSinceMsg = [];
      this._noteReplay = [];
    }
    const msg = frame;
    delete msg.op;
    if (msg.reply_to) {
      const to = msg.reply_to;
      Object.defineProperty(msg, "reply", { value: (data) => this.publish(to, data), enumerable: false });
    }
    const seq = msg.seq;
    Object.defineProperty(msg, "ack", { value: () => this.ack(seq), enumerable: false });
    const tracked = typeof msg.offset === "number" && msg.offset > 0 && typeof msg.epoch === "string" && msg.epoch !== "";
    const called = new Set();
    let matched = false;
    for (const sub of this._subs.values()) {
      if (!sub.match(msg.topic)) continue;
      matched = true;
      // A plain subscription skips what it delivered already (a recovery's replay may repeat
      // what a resumed session had sent, or a rewind what another subscription had).
      if (tracked && sub.positions && !sub.positions.deliver(msg.topic, msg.epoch, msg.offset, msg.ts)) continue;
      for (const handler of sub.handlers) {
        if (called.has(handler)) continue;
        called.add(handler);
        try {
          handler(msg);
        } catch (e) {
          this._emit("error", e);
        }
      }
    }
    // Only the server asked for it (`subscribed`): the app has no handler of its own. What
    // matches nothing (e.g. sent before a local `unsub` reached the server) is dropped.
    if (!matched && [...this._serverSubs.values()].some((s) => s.match(msg.topic))) this._emit("message", msg);
  }

  // ---- tokens and server-side subscriptions ----------------------------------------------

  /**
   * `expiring`: with `getToken`, the new token goes out as `refresh` on this socket, so the
   * stream goes on without a reconnect. Should that fail (`refresh_failed`), the server closes
   * with 4001 at `exp` and the reconnect asks getToken again.
   */
  async _onExpiring(frame) {
    const exp = frame.exp;
    this._emit("expiring", { exp });
    if (typeof this.options.getToken !== "function") return;
    // The server says `expiring` again at once after a refresh that did not move `exp`: asking
    // getToken again would only loop (e.g. one that caches its token until it expires).
    if (exp <= this._staleExp) return;
    // Nor for a repeat while the refresh is in flight: the `ok` and the next `expiring` may be
    // handled before the refresh's continuation runs (the `ws` package emits the frames of one
    // read without a microtask between them).
    if (exp <= this._refreshingExp) return;
    this._refreshingExp = exp;
    try {
      await this._refresh(exp);
    } finally {
      if (this._refreshingExp === exp) this._refreshingExp = undefined;
    }
  }

  /** Gets a token and sends it as `refresh`; reports how it went. */
  async _refresh(exp) {
    const ws = this.socket;
    // A socket that changed meanwhile fetched a token of its own: this refresh is moot.
    const current = () => this.socket === ws && this.state === "open";
    let token;
    try {
      token = await this._token();
      if (typeof token !== "string" || token === "") throw new HeraldError(CLIENT_CODES.TOKEN_FAILED, "getToken gave no token");
    } catch (e) {
      if (current()) this._emit("refresh_failed", tokenError(e));
      return;
    }
    if (!current()) return;
    let ok;
    try {
      ok = await this._call({ op: "refresh", token });
    } catch (e) {
      if (current()) this._emit("refresh_failed", e);
      return;
    }
    if (typeof ok.exp === "number" && typeof exp === "number" && ok.exp <= exp) {
      this._staleExp = exp;
      this._emit("refresh_failed", new HeraldError(CLIENT_CODES.TOKEN_FAILED, `getToken gave a token that expires no later (exp ${ok.exp}) than the one expiring`));
      return;
    }
    this._emit("refreshed", { exp: ok.exp });
  }

  /**
   * Whether an `(un)subscribed` is one a resume sent again: the server cannot know whether
   * the notes after the last `msg` arrived, so it sends them again, in order, after `welcome`.
   */
  _replayedNote(text) {
    const again = this._noteReplay.length > 0 && this._noteReplay[0] === text;
    if (again) this._noteReplay.shift();
    else this._noteReplay = [];
    // Bounded as the server's notes are; past it a repeat is only caught by the state checks.
    if (typeof text === "string" && this._notesSinceMsg.length < 4096) this._notesSinceMsg.push(text);
    return again;
  }

  /** `subscribed`: the server made a subscription; its messages come as `message` events. */
  _onSubscribed(frame) {
    const s = { pattern: frame.pattern, ...(frame.group ? { group: frame.group } : {}) };
    const key = subKey(s.pattern, s.group);
    if (this._serverSubs.has(key)) return; // a repeat the replay check could not tell
    this._serverSubs.set(key, { ...s, match: compilePattern(s.pattern) });
    this._emit("subscribed", s);
  }

  /**
   * `unsubscribed`: the server removed a subscription (`reason` "server": a backend did;
   * "forbidden": a refreshed token no longer allows it). A local one is forgotten, handlers
   * and positions with it, so that no reconnect or recovery subscribes it again. One whose
   * first `sub` is still unanswered stays: the notice is about an earlier one, and the answer
   * to that `sub` decides.
   */
  _onUnsubscribed(frame) {
    const s = { pattern: frame.pattern, ...(frame.group ? { group: frame.group } : {}) };
    const key = subKey(s.pattern, s.group);
    const sub = this._subs.get(key);
    this._serverSubs.delete(key);
    if (sub && !sub.confirmed) return;
    if (sub) this._subs.delete(key);
    this._emit("unsubscribed", { ...s, reason: frame.reason });
  }

  /** The subscriptions the server made for this session (`subscribed`) and has not removed. */
  get serverSubscriptions() {
    return [...this._serverSubs.values()].map(({ pattern, group }) => (group ? { pattern, group } : { pattern }));
  }

  /** A topic gap: to the matching plain subscriptions that had not covered it yet, then the bus. */
  _onTopicGap(frame) {
    const gap = { topic: frame.topic, from_offset: frame.from_offset, to_offset: frame.to_offset, reason: frame.reason, epoch: frame.epoch };
    const known = typeof gap.to_offset === "number" && typeof gap.epoch === "string";
    let matched = false;
    let news = false;
    const called = new Set();
    for (const sub of this._subs.values()) {
      if (!sub.positions || !sub.match(gap.topic)) continue;
      matched = true;
      if (sub.recovering) sub.recoveryGaps += 1;
      // Several recovering subscriptions may each be told of the same gap: once is enough.
      if (known && !sub.positions.cover(gap.topic, gap.epoch, gap.to_offset)) continue;
      news = true;
      for (const fn of sub.onGap.values()) {
        if (called.has(fn)) continue;
        called.add(fn);
        try {
          fn(gap);
        } catch (e) {
          this._emit("error", e);
        }
      }
    }
    if (news || !matched) this._emit("gap", gap);
  }

  // ---- requests --------------------------------------------------------------------------

  /** Sends `frame` with a fresh id and resolves with the answer frame. */
  _call(frame, timeoutMs = this.options.answerTimeoutMs) {
    return new Promise((resolve, reject) => {
      if (this.state === "closed") return reject(new HeraldError(CLIENT_CODES.CLOSED, "bus closed"));
      if (this.state !== "open") return reject(new HeraldError(CLIENT_CODES.DISCONNECTED, `not connected: '${frame.op}' needs a connection`));
      const id = this._nextId++;
      const timer = setTimeout(() => {
        if (this._pending.delete(id)) reject(new HeraldError(CLIENT_CODES.TIMEOUT, `no answer to '${frame.op}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, frame });
      let sent;
      try {
        sent = this.state === "open" && this._sendOrThrow(this.socket, { ...frame, id });
      } catch (e) {
        sent = e; // the frame does not encode: the call's error
      }
      if (sent !== true) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(sent instanceof Error ? sent : new HeraldError(CLIENT_CODES.DISCONNECTED, "not connected"));
      }
    });
  }

  _failPending(code, message) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      if (p.onDisconnect) p.onDisconnect(code, message);
      else p.reject(new HeraldError(code, message));
    }
  }

  _failQueue(code, message) {
    const queued = this._queue;
    this._queue = [];
    for (const q of queued) q.reject(new HeraldError(code, message));
  }

  /**
   * Publishes `data` (any JSON; binary as a Uint8Array, ArrayBuffer or view: `bin` over
   * MessagePack, `{"$base64": "…"}` over JSON, which the server hands MessagePack readers as
   * `bin`) to `topic`. Resolves with `{offset, epoch, duplicate}` once the
   * server stored and routed it. While offline the publish waits in a bounded queue and goes
   * out after reconnecting; if the connection drops after it was sent but before the answer,
   * it is sent again when it has a `msgId` (the server's de-duplication makes that safe), and
   * rejected with `disconnected` otherwise (it may or may not have been published).
   */
  publish(topic, data, opts = {}) {
    return new Promise((resolve, reject) => {
      if (this.state === "closed") return reject(new HeraldError(CLIENT_CODES.CLOSED, "bus closed"));
      const frame = { op: "pub", topic, data: data === undefined ? null : data };
      if (opts.msgId !== undefined) frame.msg_id = String(opts.msgId);
      if (opts.retain) frame.retain = true;
      const q = { frame, resolve, reject };
      if (this.state === "open") this._sendPub(q);
      else this._enqueue(q);
    });
  }

  _enqueue(q) {
    if (this._queue.length >= this.options.maxQueue) {
      q.reject(new HeraldError(CLIENT_CODES.QUEUE_FULL, `offline publish queue is full (${this.options.maxQueue})`));
      return;
    }
    this._queue.push(q);
  }

  _sendPub(q) {
    const id = this._nextId++;
    const timeoutMs = this.options.answerTimeoutMs;
    const timer = setTimeout(() => {
      if (this._pending.delete(id)) q.reject(new HeraldError(CLIENT_CODES.TIMEOUT, `no answer to 'pub' within ${timeoutMs} ms`));
    }, timeoutMs);
    const entry = {
      timer,
      frame: q.frame,
      resolve: (ok) => q.resolve({ offset: ok.offset, epoch: ok.epoch, duplicate: !!ok.duplicate }),
      reject: q.reject,
      onDisconnect: (code, message) => {
        if (code === CLIENT_CODES.DISCONNECTED && q.frame.msg_id !== undefined) this._enqueue(q);
        else q.reject(new HeraldError(code, message));
      },
    };
    this._pending.set(id, entry);
    let sent;
    try {
      sent = this.state === "open" && this._sendOrThrow(this.socket, { ...q.frame, id });
    } catch (e) {
      // Data that does not encode would not go later either: the publish's error.
      this._pending.delete(id);
      clearTimeout(timer);
      q.reject(e);
      return;
    }
    if (!sent) {
      this._pending.delete(id);
      clearTimeout(timer);
      this._enqueue(q);
    }
  }

  /**
   * Subscribes `handler` to `pattern`; resolves, once the server confirmed, with a function
   * that unsubscribes (and has `pattern` and `recovered` properties). The handler gets the
   * whole message: `{topic, data, seq, offset, epoch, ts, msg_id?, reply_to?, retained?,
   * replay?, redelivered?, deliveries?}` plus `msg.ack()` and, for requests, `msg.reply(data)`.
   * Options: `group`, `ack` ("auto" | "manual", with a group), `rewind` (N latest per topic),
   * `since` (`{epoch, offset}` for an exact topic, or `{topics: {topic: {epoch, offset}}, ts}`),
   * `onGap` (called with the topic gaps of this subscription). Subscribing while offline waits
   * for the connection.
   */
  subscribe(pattern, handler, opts = {}) {
    if (typeof handler !== "function") return Promise.reject(new TypeError("subscribe(pattern, handler): handler must be a function"));
    if (this.state === "closed") return Promise.reject(new HeraldError(CLIENT_CODES.CLOSED, "bus closed"));
    if (opts.ack === "manual" && this.transport === "sse") return Promise.reject(unsupported('a manual-ack subscription (`ack: "manual"`)'));
    const key = subKey(pattern, opts.group);
    let sub = this._subs.get(key);
    const fresh = !sub;
    if (!sub) {
      sub = {
        key,
        pattern,
        group: opts.group,
        ack: opts.ack,
        rewind: opts.rewind,
        since: opts.since,
        match: compilePattern(pattern),
        handlers: new Set(),
        onGap: new Map(), // handler -> its onGap
        confirmed: false,
        waiters: [],
        // Groups share their messages with other members: nothing to remember or recover.
        positions: opts.group ? null : new Positions(),
        recovering: null, // the mode of a resubscription waiting for its answer
        recoveryGaps: 0, // topic gaps while recovering
        recovered: undefined,
        startTs: Date.now() - 1000, // when it began (local clock, a second early): see Positions
      };
      if (sub.positions) sub.positions.seed(opts.since, pattern);
      this._subs.set(key, sub);
      this._unsubQueue.delete(key);
    }
    sub.handlers.add(handler);
    if (typeof opts.onGap === "function") sub.onGap.set(handler, opts.onGap);
    const unsubscribe = () => this._unsubscribe(sub, handler);
    unsubscribe.pattern = pattern;
    Object.defineProperty(unsubscribe, "recovered", { get: () => sub.recovered, enumerable: true });
    return new Promise((resolve, reject) => {
      const done = () => resolve(unsubscribe);
      if (!fresh && sub.confirmed) return done();
      sub.waiters.push({ resolve: done, reject, handler });
      if (fresh && this.state === "open") this._sendSub(sub, "first");
    });
  }

  /**
   * What a plain subscription would continue from: `{topics, ts}`, usable as `since` in a later
   * `subscribe` (e.g. saved across a page reload); null when there is no such subscription.
   */
  since(pattern) {
    const sub = this._subs.get(subKey(pattern));
    return sub && sub.positions ? sub.positions.since(sub.startTs) : null;
  }

  /**
   * Sends `sub`. `mode`: "first" (as asked: `rewind`, `since`), "recover" (after a lost session:
   * `since` the subscription's positions and last `ts`), "offset" (the server refused that, as
   * one before recovery does: an exact topic continues after its last offset), "plain". Should
   * the server refuse a recovery, the next mode is tried: live messages matter more than the
   * replay.
   */
  _sendSub(sub, mode, resend = false) {
    const frame = { op: "sub", pattern: sub.pattern };
    if (sub.group) frame.group = sub.group;
    if (sub.ack) frame.ack = sub.ack;
    const last = isExact(sub.pattern) && sub.positions ? sub.positions.get(sub.pattern) : undefined;
    if (mode === "first") {
      if (sub.rewind !== undefined) frame.rewind = sub.rewind;
      if (sub.since) frame.since = sub.since;
    } else if (mode === "recover") {
      frame.since = sub.positions.since(sub.startTs);
    } else if (mode === "offset") {
      frame.since = last;
    }
    const next = mode === "recover" && last ? "offset" : mode === "recover" || mode === "offset" ? "plain" : null;
    if (mode !== "first") sub.recovering = mode;
    if (mode === "recover" && !resend) sub.recoveryGaps = 0;
    const id = this._nextId++;
    const timer = setTimeout(() => {
      if (!this._pending.delete(id)) return;
      sub.recovering = null;
      this._subFailed(sub, new HeraldError(CLIENT_CODES.TIMEOUT, `no answer to 'sub' within ${this.options.answerTimeoutMs} ms`));
    }, this.options.answerTimeoutMs);
    this._pending.set(id, {
      timer,
      frame,
      resolve: (ok) => {
        if (this._subs.get(sub.key) !== sub) return;
        sub.confirmed = true;
        sub.recovering = null;
        if (mode === "first") {
          if (ok.recovered !== undefined) sub.recovered = ok.recovered;
        } else {
          // Without `recovered`, the server had the subscription already: the recovery sent
          // before a drop reached it, and its gaps came in the resumed stream before this answer.
          sub.recovered = mode !== "plain" && (ok.recovered === undefined ? mode === "recover" && resend && sub.recoveryGaps === 0 : ok.recovered === true);
          this._emit("recovered", { pattern: sub.pattern, ...(sub.group ? { group: sub.group } : {}), recovered: sub.recovered });
        }
        const waiters = sub.waiters;
        sub.waiters = [];
        for (const w of waiters) w.resolve();
      },
      reject: (err) => {
        sub.recovering = null;
        if (next && this._subs.get(sub.key) === sub) this._sendSub(sub, next);
        else this._subFailed(sub, err);
      },
      // The connection dropped before the answer: the subscription stays and is sent again
      // after reconnecting (`sub` is idempotent).
      onDisconnect: (code, message) => {
        if (code === CLIENT_CODES.CLOSED) this._subFailed(sub, new HeraldError(code, message));
      },
    });
    this._send({ ...frame, id });
  }

  _subFailed(sub, err) {
    if (sub.confirmed) {
      // A resubscription was refused (e.g. permissions changed with a new token).
      this._emit("error", err);
      return;
    }
    if (this._subs.get(sub.key) === sub) this._subs.delete(sub.key);
    const waiters = sub.waiters;
    sub.waiters = [];
    for (const w of waiters) w.reject(err);
  }

  _unsubscribe(sub, handler) {
    const key = sub.key;
    // A subscription the server removed is gone already; a later one of the same pattern is
    // not this function's to end.
    if (this._subs.get(key) !== sub || !sub.handlers.delete(handler)) return Promise.resolve();
    sub.onGap.delete(handler);
    if (sub.handlers.size > 0) return Promise.resolve();
    this._subs.delete(key);
    this._serverSubs.delete(key); // the server holds one subscription per pattern and group
    const frame = { op: "unsub", pattern: sub.pattern };
    if (sub.group) frame.group = sub.group;
    if (this.state === "open") {
      return this._call(frame).then(
        () => undefined,
        (err) => {
          if (err.code === CLIENT_CODES.DISCONNECTED) this._unsubQueue.set(key, { pattern: sub.pattern, group: sub.group });
          else if (err.code !== CLIENT_CODES.CLOSED) throw err;
        },
      );
    }
    if (this.state !== "closed") this._unsubQueue.set(key, { pattern: sub.pattern, group: sub.group });
    return Promise.resolve();
  }

  /** Acknowledges a message of a `ack: "manual"` group subscription (also `msg.ack()`). */
  ack(seq) {
    if (this.transport === "sse") throw unsupported("`ack`");
    this._send({ op: "ack", seq });
  }

  /**
   * Sends a request and resolves with the reply's `data`. Rejects with `no_responders` (nobody
   * subscribed), `timeout`, or `disconnected` (the connection dropped while waiting, or there
   * was none: requests are not queued).
   */
  async request(topic, data, opts = {}) {
    if (this.transport === "sse") throw unsupported("request/reply (`request`)");
    const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
    const frame = { op: "req", topic, data: data === undefined ? null : data, timeout_ms: timeoutMs };
    // The server answers `timeout` itself; the local timer only covers a lost answer.
    const reply = await this._call(frame, timeoutMs + 2000);
    return reply.data;
  }

  /** A topic's stored messages: `{epoch, messages: [{offset, topic, data, ts, msg_id?}]}`. */
  async history(topic, opts = {}) {
    const frame = { op: "history", topic };
    if (opts.since !== undefined) frame.since = opts.since;
    if (opts.limit !== undefined) frame.limit = opts.limit;
    const ok = await this._call(frame);
    return { epoch: ok.epoch, messages: ok.messages || [] };
  }

  /** Who is subscribed to an exact topic: `{count, clients: [{session, user, info}]}`. */
  async presence(topic) {
    const ok = await this._call({ op: "presence", topic });
    return { count: ok.count, clients: ok.clients || [] };
  }

  /** Round trip to the server in milliseconds. */
  async ping() {
    const start = Date.now();
    await this._call({ op: "ping" });
    return Date.now() - start;
  }
}

export default connect;
