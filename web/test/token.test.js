// herald.js with `getToken` against a server with `refresh_notice = "2s"` and tokens that live
// about 4 s: the token is refreshed on the open socket when the server says `expiring`, a
// narrower token removes subscriptions, every reconnect asks for a new token, and a getToken
// that fails surfaces as an event without hanging. Then server-side (un)subscribe over HTTP.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../herald.js";
import { sleep, startProxy, startServer, until } from "./server.js";

const SECRET = "web-token-test-secret";
const ADMIN = "adm";
const CONFIG = `
[auth]
hs256_secret = "${SECRET}"
refresh_notice = "2s"
admin_keys = ["${ADMIN}"]
`;

/** Each test ends, passing or not: a client that hangs fails it. */
const T = { timeout: 30000 };

const nowS = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT for `sub` (default "ann", allowed everything), living `life` seconds. */
function jwt({ life = 4, ...claims } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "ann", exp: nowS() + life, publish: ["**"], subscribe: ["**"], ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** `exp` of a JWT made by {@link jwt}. */
const expOf = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).exp;

/** An admin call of the HTTP API; resolves with the JSON answer (throws on an HTTP error). */
async function admin(method, path, body) {
  const res = await fetch(`${server.http}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** The patterns the server holds for `session` (GET /v1/sessions). */
async function serverPatterns(session, user = "ann") {
  const rows = await admin("GET", `/v1/sessions?user=${user}`);
  const row = rows.find((r) => r.session === session);
  return row ? row.subscriptions.map((s) => s.pattern).sort() : null;
}

/** Every event of `bus` worth asserting on, in order, as `[name, payload]`. */
function record(bus) {
  const events = [];
  for (const name of ["open", "close", "expiring", "refreshed", "refresh_failed", "subscribed", "unsubscribed", "message", "error"]) {
    bus.on(name, (payload) => events.push([name, payload]));
  }
  events.of = (name) => events.filter(([n]) => n === name).map(([, p]) => p);
  return events;
}

let server;
let publisher;
const closers = [];
async function bus(url, opts) {
  const b = await connect(url, { WebSocket, minDelayMs: 50, maxDelayMs: 200, ...opts });
  closers.push(() => b.close());
  return b;
}
/** Publishes as a user whose token outlives the tests. */
const publish = (topic, data) => publisher.publish(topic, data);

before(async () => {
  server = await startServer({ config: CONFIG });
  publisher = await bus(server.ws, { token: jwt({ sub: "publisher", life: 3600 }) });
});
after(async () => {
  for (const close of closers) await close();
  await server.stop();
});

test("getToken is asked on connect and on expiring; the refresh keeps the socket and the stream", T, async () => {
  const tokens = [];
  const b = await bus(server.ws, { getToken: async () => (tokens.push(jwt()), tokens.at(-1)) });
  assert.equal(tokens.length, 1, "asked once to connect");
  const events = record(b);
  const socket = b.socket;
  const session = b.session;
  const got = [];
  await b.subscribe("t/**", (m) => got.push(m.data));

  await until(() => events.of("refreshed").length >= 1, 6000, "refreshed");
  assert.equal(tokens.length, 2, "asked again on expiring");
  assert.deepEqual(events.of("expiring")[0], { exp: expOf(tokens[0]) });
  assert.equal(events.of("refreshed")[0].exp, expOf(tokens[1]));
  assert.ok(expOf(tokens[1]) > expOf(tokens[0]));

  // Past the first token's exp (which would have closed the socket with 4001).
  await until(() => nowS() > expOf(tokens[0]) + 1, 6000, "the first token's exp");
  await publish("t/a", "after the first exp");
  await until(() => got.includes("after the first exp"), 3000, "a message after the first exp");
  // The second token expires too: its refresh goes the same way.
  await until(() => events.of("refreshed").length >= 2, 6000, "a second refresh");
  assert.equal(b.socket, socket, "the same socket");
  assert.equal(b.session, session, "the same session");
  assert.deepEqual(events.of("open"), [], "no reconnect");
  assert.deepEqual(events.of("close"), []);
  assert.deepEqual(events.of("refresh_failed"), []);
  assert.deepEqual(events.of("error"), []);
});

test("a refresh to a narrower token removes what it no longer allows; no reconnect subscribes it again", T, async () => {
  let calls = 0;
  const getToken = () => {
    calls += 1;
    return calls === 1 ? jwt({ subscribe: ["a/**", "b/**"] }) : jwt({ life: 3600, subscribe: ["a/**"] });
  };
  const b = await bus(server.ws, { getToken });
  const events = record(b);
  const a = [];
  const bs = [];
  await b.subscribe("a/**", (m) => a.push(m.data));
  await b.subscribe("b/**", (m) => bs.push(m.data));
  await publish("b/x", "before");
  await until(() => bs.length === 1, 3000, "b/x");

  await until(() => events.of("unsubscribed").length === 1, 6000, "unsubscribed");
  assert.deepEqual(events.of("unsubscribed"), [{ pattern: "b/**", reason: "forbidden" }]);
  await until(() => events.of("refreshed").length === 1, 3000, "refreshed");
  assert.equal(b.since("b/**"), null, "b/** is forgotten");
  assert.notEqual(b.since("a/**"), null);
  await publish("b/y", "after");
  await publish("a/y", "after");
  await until(() => a.includes("after"), 3000, "a/y");
  assert.deepEqual(bs, ["before"]);
  assert.deepEqual(events.of("message"), [], "b/y reached nobody");
  assert.deepEqual(await serverPatterns(b.session), ["a/**"]);

  // A new session: the client subscribes again what it has, which is a/** only (b/** would be
  // refused `forbidden` and surface as an error).
  const old = b.session;
  await admin("POST", "/v1/disconnect", { session: old });
  await until(() => events.of("open").length === 1, 5000, "the reconnect");
  assert.equal(events.of("open")[0].resumed, false);
  assert.equal(calls, 3, "the reconnect asked for a token");
  await until(async () => (await serverPatterns(b.session))?.length === 1, 3000, "the resubscription");
  assert.deepEqual(await serverPatterns(b.session), ["a/**"]);
  await publish("a/z", "new session");
  await until(() => a.includes("new session"), 3000, "a/z");
  assert.deepEqual(events.of("error"), []);
  assert.deepEqual(events.of("refresh_failed"), []);
});

test("every reconnect asks getToken again, so a dropped connection comes back with a fresh token", T, async () => {
  const proxy = await startProxy(server.port);
  closers.push(() => proxy.close());
  let calls = 0;
  const b = await bus(proxy.ws, { getToken: () => (calls += 1, jwt({ life: 3600 })) });
  const events = record(b);
  const got = [];
  await b.subscribe("r/**", (m) => got.push(m.data));
  assert.equal(calls, 1);
  proxy.cut();
  await until(() => events.of("open").length === 1, 5000, "the reconnect");
  assert.equal(events.of("open")[0].resumed, true);
  assert.equal(calls, 2);
  await publish("r/1", "resumed");
  await until(() => got.includes("resumed"), 3000, "r/1");
});

test("a getToken that throws on expiring: refresh_failed, close 4001 at exp, and a reconnect asks again", T, async () => {
  let calls = 0;
  const getToken = async () => {
    calls += 1;
    if (calls === 2) throw new Error("token service down");
    return jwt({ life: calls === 1 ? 4 : 3600 });
  };
  const b = await bus(server.ws, { getToken });
  const events = record(b);
  const session = b.session;
  const got = [];
  await b.subscribe("f/**", (m) => got.push(m.data));

  await until(() => events.of("refresh_failed").length === 1, 6000, "refresh_failed");
  const err = events.of("refresh_failed")[0];
  assert.equal(err.code, "token_failed");
  assert.equal(err.cause.message, "token service down");
  assert.equal(b.state, "open", "the socket stays until exp");

  await until(() => events.of("open").length === 1, 6000, "the reconnect after exp");
  assert.deepEqual(events.of("close").map((c) => [c.code, c.willReconnect]), [[4001, true]]);
  assert.equal(calls, 3, "the reconnect asked for a token");
  assert.equal(events.of("open")[0].resumed, true, "the same user resumes the session");
  assert.equal(b.session, session);
  await publish("f/1", "back");
  await until(() => got.includes("back"), 3000, "f/1");
});

test("a refresh with another user's token is refused: refresh_failed forbidden, then a reconnect", T, async () => {
  let calls = 0;
  const getToken = () => {
    calls += 1;
    return calls === 1 ? jwt() : calls === 2 ? jwt({ sub: "mallory", life: 3600 }) : jwt({ life: 3600 });
  };
  const b = await bus(server.ws, { getToken });
  const events = record(b);
  await until(() => events.of("refresh_failed").length === 1, 6000, "refresh_failed");
  assert.equal(events.of("refresh_failed")[0].code, "forbidden");
  await until(() => events.of("open").length === 1, 6000, "the reconnect after exp");
  assert.deepEqual(events.of("close").map((c) => c.code), [4001]);
  assert.equal(calls, 3);
  assert.deepEqual(events.of("refreshed"), []);
});

test("a getToken that keeps giving the expiring token does not loop refreshing", T, async () => {
  const first = jwt();
  let calls = 0;
  // Caches its token until it has expired, as a careless token service might.
  const getToken = () => (calls += 1, nowS() < expOf(first) ? first : jwt({ life: 3600 }));
  const b = await bus(server.ws, { getToken });
  const events = record(b);
  await until(() => events.of("refresh_failed").length === 1, 6000, "refresh_failed");
  assert.equal(events.of("refresh_failed")[0].code, "token_failed");
  await sleep(300);
  assert.equal(calls, 2, "asked once on expiring, not again for the same exp");
  await until(() => events.of("open").length === 1, 6000, "the reconnect after exp");
  assert.equal(calls, 3);
  assert.ok(events.of("expiring").length <= 2, `${events.of("expiring").length} expiring events`);
});

test("a getToken that throws fails the first connect, and a reconnect retries until it works", T, async () => {
  await assert.rejects(
    connect(server.ws, { WebSocket, getToken: () => { throw new Error("no login"); } }),
    (e) => e.code === "connect_failed" && e.closeCode === 4001 && /no login/.test(e.message),
  );
  // A getToken that never answers fails too (after connectTimeoutMs) instead of hanging.
  await assert.rejects(connect(server.ws, { WebSocket, connectTimeoutMs: 300, getToken: () => new Promise(() => {}) }), (e) => e.code === "connect_failed");

  const proxy = await startProxy(server.port);
  closers.push(() => proxy.close());
  let fail = false;
  let calls = 0;
  const b = await bus(proxy.ws, { getToken: () => { calls += 1; if (fail) throw new Error("offline"); return jwt({ life: 3600 }); } });
  const events = record(b);
  fail = true;
  proxy.cut();
  await until(() => events.of("error").length >= 2, 5000, "failed attempts");
  assert.ok(events.of("error").every((e) => e.code === "token_failed" && e.cause.message === "offline"));
  assert.equal(b.state, "reconnecting");
  fail = false;
  await until(() => events.of("open").length === 1, 5000, "the reconnect");
  assert.equal(events.of("open")[0].resumed, true);
  assert.ok(calls >= 4);
});

test("server-side subscribe and unsubscribe over HTTP", T, async () => {
  const proxy = await startProxy(server.port);
  closers.push(() => proxy.close());
  const b = await bus(proxy.ws, { getToken: () => jwt({ life: 3600 }) });
  const events = record(b);
  const local = [];
  const kept = [];
  await b.subscribe("local/**", (m) => local.push(m.data));
  await b.subscribe("keep/**", (m) => kept.push(m.data));

  assert.deepEqual(await admin("POST", "/v1/subscribe", { session: b.session, pattern: "news/**" }), { subscribed: 1 });
  await until(() => events.of("subscribed").length === 1, 3000, "subscribed");
  assert.deepEqual(events.of("subscribed"), [{ pattern: "news/**" }]);
  assert.deepEqual(b.serverSubscriptions, [{ pattern: "news/**" }]);
  assert.equal(b.since("news/**"), null, "not made a local subscription");

  // A resume: the server keeps the subscription and sends its `subscribed` again (no `msg`
  // came after it); the client tells it once.
  proxy.cut();
  await until(() => events.of("open").length === 1, 5000, "the resume");
  assert.equal(events.of("open")[0].resumed, true);
  await publish("news/1", "first");
  await until(() => events.of("message").length === 1, 3000, "news/1");
  assert.equal(events.of("message")[0].topic, "news/1");
  assert.equal(events.of("message")[0].data, "first");
  assert.equal(events.of("subscribed").length, 1);

  // Removed by the server: no more messages.
  assert.deepEqual(await admin("POST", "/v1/unsubscribe", { session: b.session, pattern: "news/**" }), { unsubscribed: 1 });
  await until(() => events.of("unsubscribed").length === 1, 3000, "unsubscribed");
  assert.deepEqual(events.of("unsubscribed"), [{ pattern: "news/**", reason: "server" }]);
  assert.deepEqual(b.serverSubscriptions, []);
  await publish("news/2", "gone");

  // A subscription the client made, removed by the server: forgotten, so that neither a
  // resume nor a new session brings it back.
  await admin("POST", "/v1/unsubscribe", { session: b.session, pattern: "local/**" });
  await until(() => events.of("unsubscribed").length === 2, 3000, "unsubscribed local/**");
  assert.deepEqual(events.of("unsubscribed")[1], { pattern: "local/**", reason: "server" });
  assert.equal(b.since("local/**"), null);

  // Another resume before any `msg`: both `unsubscribed` come again, and are told once.
  proxy.cut();
  await until(() => events.of("open").length === 2, 5000, "the second resume");
  assert.equal(events.of("open")[1].resumed, true);
  await publish("local/1", "gone");
  await publish("keep/1", "kept");
  await until(() => kept.includes("kept"), 3000, "keep/1");
  assert.equal(events.of("unsubscribed").length, 2);
  assert.deepEqual(await serverPatterns(b.session), ["keep/**"]);

  await admin("POST", "/v1/disconnect", { session: b.session });
  await until(() => events.of("open").length === 3, 5000, "the new session");
  assert.equal(events.of("open")[2].resumed, false);
  await until(async () => (await serverPatterns(b.session))?.length === 1, 3000, "the resubscription");
  assert.deepEqual(await serverPatterns(b.session), ["keep/**"]);
  await publish("local/2", "gone");
  await publish("news/3", "gone");
  await publish("keep/2", "kept again");
  await until(() => kept.includes("kept again"), 3000, "keep/2");
  assert.deepEqual(local, []);
  assert.deepEqual(events.of("message").map((m) => m.data), ["first"]);
  assert.equal(events.of("unsubscribed").length, 2, "no repeats after the resumes");
  assert.deepEqual(events.of("error"), []);
});

test("a server-made subscription ends with its session: unsubscribed with reason session", T, async () => {
  const b = await bus(server.ws, { getToken: () => jwt({ life: 3600 }) });
  const events = record(b);
  await admin("POST", "/v1/subscribe", { session: b.session, pattern: "s/**", group: "workers" });
  await until(() => events.of("subscribed").length === 1, 3000, "subscribed");
  assert.deepEqual(b.serverSubscriptions, [{ pattern: "s/**", group: "workers" }]);
  await admin("POST", "/v1/disconnect", { session: b.session });
  await until(() => events.of("open").length === 1, 5000, "the new session");
  assert.deepEqual(events.of("unsubscribed"), [{ pattern: "s/**", group: "workers", reason: "session" }]);
  assert.deepEqual(b.serverSubscriptions, []);
  assert.deepEqual(await serverPatterns(b.session), []);
});
