// The SSE transport (`transport: "sse"`, and "auto" falling back to it): a session over
// `GET /v1/events` read by FetchEventSource (Node has no EventSource), subscriptions and
// publishes over HTTP, against the real server. Streams are cut by a TCP proxy (server.js) and
// WebSocket upgrades refused by a small HTTP proxy here that forwards everything else.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";

import { Bus, FetchEventSource, HeraldError, connect } from "../herald.js";
import { httpPublish, sleep, startProxy, startServer, until } from "./server.js";

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

/** A server (with `config`) and a TCP proxy in front of it, stopped after the tests. */
async function serverWithProxy(opts = {}) {
  const server = await startServer(opts);
  const proxy = await startProxy(server.port);
  cleanup.push(async () => {
    await proxy.close();
    await server.stop();
  });
  return { server, proxy };
}

/** A bus on the SSE transport (closed after the tests); fast reconnects. */
async function sseBus(url, opts = {}) {
  const b = new Bus(url, { transport: "sse", minDelayMs: 20, maxDelayMs: 200, ...opts });
  cleanup.push(() => b.close());
  await b.open();
  return b;
}

/** Everything a bus says, in order. */
function record(b) {
  const log = [];
  for (const name of ["open", "resumed", "close", "gap", "recovered", "transport", "error"]) b.on(name, (e) => log.push([name, e]));
  log.of = (name) => log.filter(([n]) => n === name).map(([, e]) => e);
  return log;
}

/**
 * An HTTP proxy that refuses WebSocket upgrades with 403 (as some corporate proxies do) and
 * forwards every other request, streaming. `allowUpgrades = true` makes it forward upgrades
 * too; `cut()` ends the connections it holds.
 */
async function startUpgradeRefusingProxy(port) {
  const sockets = new Set();
  const proxy = { upgrades: 0, refused: 0, allowUpgrades: false };
  const server = http.createServer((req, res) => {
    const up = http.request({ host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
      r.on("close", () => {
        if (!r.complete) res.destroy(); // upstream cut mid-answer: so is the client's connection
      });
    });
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("upgrade", (req, socket, head) => {
    proxy.upgrades += 1;
    if (!proxy.allowUpgrades) {
      proxy.refused += 1;
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\n\r\nno upgrades, sorry.\r\n");
      return;
    }
    const upstream = net.connect(port, "127.0.0.1", () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(`${raw}\r\n`);
      if (head && head.length) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    sockets.add(upstream);
    const drop = () => {
      socket.destroy();
      upstream.destroy();
      sockets.delete(upstream);
    };
    socket.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.port = server.address().port;
  proxy.http = `http://127.0.0.1:${proxy.port}`;
  proxy.ws = `ws://127.0.0.1:${proxy.port}/ws`;
  proxy.cut = () => {
    const n = sockets.size;
    for (const s of sockets) s.destroy();
    sockets.clear();
    return n;
  };
  proxy.close = () =>
    new Promise((r) => {
      proxy.cut();
      server.close(() => r());
    });
  return proxy;
}

/** Reads a raw `/v1/events` response until its `welcome` and returns that frame (the stream is then closed). */
async function rawWelcome(url, headers = {}) {
  const abort = new AbortController();
  const res = await fetch(url, { headers, signal: abort.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/event-stream/);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before welcome: ${text}`);
      text += dec.decode(value, { stream: true });
      const m = text.match(/event: welcome\ndata: (.*)\n\n/);
      if (m) return { welcome: JSON.parse(m[1]), text };
    }
  } finally {
    abort.abort();
  }
}

describe("FetchEventSource", () => {
  /** A fetch that answers with `chunks` (strings), one read each, then ends. */
  function fakeFetch(chunks, { status = 200, type = "text/event-stream" } = {}) {
    const seen = [];
    const fn = async (url, init) => {
      seen.push(init.headers);
      const enc = new TextEncoder();
      const body = new ReadableStream({
        start(c) {
          for (const ch of chunks) c.enqueue(enc.encode(ch));
          c.close();
        },
      });
      return new Response(body, { status, headers: { "content-type": type } });
    };
    fn.seen = seen;
    return fn;
  }

  test("parses events split anywhere, CRLF and CR line ends, comments, ids and retry", async () => {
    const stream = ["\ufeffretry: 5", "0\r\n\r\n: a comment\n\nid: s:1\r", "\nevent: msg\ndata: {\"a\":", "1}\n", "\ndata: two\ndata: lines\r\rid: s:2\n\n", "event: x\ndata: cut off"];
    const f = fakeFetch(stream);
    const got = [];
    const comments = [];
    const es = new FetchEventSource("http://test/v1/events", { fetch: f, headers: { authorization: "Bearer t" }, lastEventId: "s:0" });
    es.addEventListener("msg", (e) => got.push(["msg", e.data, e.lastEventId]));
    es.onmessage = (e) => got.push(["message", e.data, e.lastEventId]);
    es.oncomment = (c) => comments.push(c);
    let errors = 0;
    es.onerror = () => {
      errors += 1;
      es.close(); // the stream ended: it would reconnect; this test is done
    };
    await until(() => errors === 1, 2000, "the end of the stream");
    assert.deepEqual(got, [
      ["msg", '{"a":1}', "s:1"],
      ["message", "two\nlines", "s:1"],
    ]);
    assert.deepEqual(comments, ["a comment"]);
    assert.equal(es.lastEventId, "s:2", "an id-only event still sets the last event id");
    assert.equal(es.retryMs, 50);
    assert.equal(f.seen[0].authorization, "Bearer t");
    assert.equal(f.seen[0]["last-event-id"], "s:0");
    assert.equal(es.readyState, FetchEventSource.CLOSED);
  });

  test("reconnects with Last-Event-ID after the stream ends; an HTTP error fails it for good", async () => {
    let calls = 0;
    const headers = [];
    const f = async (url, init) => {
      calls += 1;
      headers.push(init.headers["last-event-id"]);
      if (calls === 1) return new Response(`id: s:${calls}\ndata: x\n\nretry: 10\n\n`, { headers: { "content-type": "text/event-stream" } });
      return new Response('{"error":{"code":"unauthorized","message":"token expired"}}', { status: 401, headers: { "content-type": "application/json" } });
    };
    const es = new FetchEventSource("http://test/", { fetch: f });
    const states = [];
    es.onerror = () => states.push(es.readyState);
    await until(() => es.readyState === FetchEventSource.CLOSED, 2000, "the failure");
    assert.deepEqual(headers, [undefined, "s:1"]);
    assert.deepEqual(states, [FetchEventSource.CONNECTING, FetchEventSource.CLOSED]);
    assert.deepEqual(es.failure, { status: 401, code: "unauthorized", message: "token expired" });
  });
});

describe("over SSE", () => {
  let server;
  let proxy;
  before(async () => {
    ({ server, proxy } = await serverWithProxy({ config: '[[topics]]\npattern = "hist/**"\nhistory = 100\n' }));
  });

  test("subscribe, publish, unsubscribe, history and ping, over the stream and HTTP", async () => {
    const b = await sseBus(server.http);
    assert.equal(b.transport, "sse");
    assert.equal(b.url, `${server.http}/v1/events`);
    assert.equal(b.state, "open");
    assert.match(b.session, /^s_/);
    assert.ok(b.socket.eventSource instanceof FetchEventSource, "Node has no EventSource: herald.js reads the stream itself");

    const got = [];
    const off = await b.subscribe("room/*", (m) => got.push(m));
    const ack = await b.publish("room/a", { n: 1 }, { msgId: "m-1" });
    assert.equal(ack.duplicate, false);
    assert.equal(typeof ack.offset, "number");
    assert.equal(typeof ack.epoch, "string");
    assert.equal((await b.publish("room/a", { n: 1 }, { msgId: "m-1" })).duplicate, true);
    await httpPublish(server.http, "room/b", "from a backend");
    await httpPublish(server.http, "elsewhere", "not subscribed");
    await until(() => got.length === 2);
    assert.deepEqual(got.map((m) => [m.seq, m.topic, m.data]), [[1, "room/a", { n: 1 }], [2, "room/b", "from a backend"]]);
    assert.equal(b.lastSeq, 2);

    // Publishes from one bus are handled in order, as on a socket.
    const acks = await Promise.all(range(1, 20).map((i) => b.publish("room/order", i)));
    assert.deepEqual(acks.map((a) => a.offset), range(acks[0].offset, acks[0].offset + 19));
    await until(() => got.length === 22);
    assert.deepEqual(got.slice(2).map((m) => m.data), range(1, 20));

    await off();
    await httpPublish(server.http, "room/a", "after unsubscribe");
    await b.publish("hist/t", "kept");
    const h = await b.history("hist/t");
    assert.deepEqual(h.messages.map((m) => m.data), ["kept"]);
    assert.ok((await b.ping()) >= 0);
    await sleep(100);
    assert.equal(got.length, 22, "nothing after unsubscribing");
  });

  test("server errors come back as HeraldErrors; what SSE cannot do is refused naming it", async () => {
    const b = await sseBus(server.http);
    await assert.rejects(b.subscribe("bad//pattern", () => {}), (e) => e instanceof HeraldError && e.code === "bad_pattern");
    await assert.rejects(b.publish("bad//topic", 1), (e) => e.code === "bad_topic");
    await assert.rejects(b.request("svc/x", 1), (e) => e instanceof HeraldError && e.code === "unsupported" && /sse transport/.test(e.message));
    await assert.rejects(b.subscribe("jobs", () => {}, { group: "g", ack: "manual" }), (e) => e.code === "unsupported" && /sse/.test(e.message));
    assert.throws(() => b.ack(1), (e) => e.code === "unsupported");
    // The bus goes on.
    const got = [];
    await b.subscribe("still/works", (m) => got.push(m.data));
    await b.publish("still/works", "yes");
    await until(() => got.length === 1);
  });

  test("a stream cut by the network resumes by Last-Event-ID: nothing lost, nothing twice", async () => {
    const b = await sseBus(proxy.http);
    const log = record(b);
    const got = [];
    await b.subscribe("live/**", (m) => got.push(m));
    for (let i = 1; i <= 5; i += 1) await httpPublish(server.http, "live/a", i);
    await until(() => got.length === 5);
    const { session, socket } = b;

    proxy.refuse = true;
    assert.ok(proxy.cut() > 0);
    await until(() => b.state === "reconnecting", 3000, "the drop");
    for (let i = 6; i <= 20; i += 1) await httpPublish(server.http, i % 2 ? "live/a" : "live/b/c", i);
    const queued = b.publish("live/a", 21); // offline: queued until the stream is back
    await sleep(300);
    proxy.refuse = false;

    assert.equal((await queued).duplicate, false);
    await until(() => got.length === 21, 8000, "the messages published while cut off");
    assert.deepEqual(got.map((m) => m.data), range(1, 21));
    assert.deepEqual(got.map((m) => m.seq), range(1, 21));
    assert.equal(b.session, session, "the same session");
    assert.equal(b.socket, socket, "resumed by the event source itself, not a new connection");
    assert.deepEqual(log.map(([n, e]) => [n, n === "close" ? e.willReconnect : e.session === session]), [["close", true], ["open", true], ["resumed", true]]);
    assert.equal(log.of("resumed")[0].transport, "sse");

    await httpPublish(server.http, "live/a", 22);
    await until(() => got.length === 22);
    assert.equal(got[21].seq, 22);
  });

  test("a reconnect made by the bus (a new stream) resumes too, with Last-Event-ID", async () => {
    const b = await sseBus(server.http);
    const got = [];
    await b.subscribe("again/t", (m) => got.push(m.data));
    await b.publish("again/t", 1);
    await until(() => got.length === 1);
    const session = b.session;
    const first = b.socket;
    first.close(); // as if it failed for good: the bus opens a new one
    await until(() => b.connected && b.socket !== first, 5000, "the new stream");
    await b.publish("again/t", 2);
    await until(() => got.length === 2);
    assert.equal(b.session, session);
    assert.equal(b.welcome.resumed, true);
    assert.deepEqual(got, [1, 2]);
  });

  test("a saved session and lastSeq resume after a 'reload': the missed messages replay first", async () => {
    const a = await sseBus(server.http);
    await a.subscribe("reload/t", () => {});
    await a.publish("reload/t", 1);
    await until(() => a.lastSeq === 1);
    const { session, lastSeq } = a;
    a.socket.eventSource.close(); // the page goes away without a word (nor an unsubscribe)
    await httpPublish(server.http, "reload/t", 2);
    await httpPublish(server.http, "reload/t", 3);

    const b = new Bus(server.http, { transport: "sse", session, lastSeq });
    cleanup.push(() => b.close());
    const got = [];
    b.subscribe("reload/t", (m) => got.push([m.seq, m.data]));
    await b.open();
    await until(() => got.length === 2);
    assert.equal(b.welcome.resumed, true);
    assert.deepEqual(got, [[2, 2], [3, 3]]);
  });

  test("a bad or unknown Last-Event-ID gets a new session (resumed: false), never an error", async () => {
    for (const id of ["garbage", "s_nope:5", ":", "s_x:-1"]) {
      const { welcome, text } = await rawWelcome(`${server.http}/v1/events?pattern=x`, { "last-event-id": id });
      assert.equal(welcome.resumed, false, id);
      assert.match(text, new RegExp(`^retry: 1000\\n\\nid: ${welcome.session}:0\\nevent: welcome\\n`), id);
    }
    const b = new Bus(server.http, { transport: "sse", session: "s_gone_long_ago", lastSeq: 7 });
    cleanup.push(() => b.close());
    const opens = [];
    b.on("open", (e) => opens.push(e));
    await b.open();
    assert.equal(opens[0].resumed, false);
    assert.equal(opens[0].previousSession, "s_gone_long_ago");
    assert.notEqual(b.session, "s_gone_long_ago");
    assert.equal(b.lastSeq, 0);
    const got = [];
    await b.subscribe("fresh/t", (m) => got.push(m.seq));
    await b.publish("fresh/t", 1);
    await until(() => got.length === 1);
    assert.deepEqual(got, [1]);
  });

  test("another connection taking the session over closes this one for good (1008)", async () => {
    const a = await sseBus(server.http);
    const closes = [];
    a.on("close", (e) => closes.push(e));
    const b = await sseBus(server.http, { session: a.session, lastSeq: a.lastSeq });
    assert.equal(b.session, a.session);
    await until(() => closes.length === 1, 3000, "the takeover");
    assert.equal(closes[0].code, 1008);
    assert.equal(closes[0].willReconnect, false);
    assert.equal(a.state, "closed");
  });

  test("a lost session recovers from history with since, as over a WebSocket", async () => {
    const b = await sseBus(proxy.http);
    const log = record(b);
    const got = [];
    await b.subscribe("hist/rec/*", (m) => got.push(m.data));
    for (let i = 1; i <= 3; i += 1) await httpPublish(server.http, `hist/rec/${i % 2}`, i);
    await until(() => got.length === 3);
    const byTopic = (t) => got.filter((d) => d % 2 === t);
    const old = b.session;
    // The server ends the session (not resumable) while the client cannot get back at once.
    proxy.refuse = true;
    const res = await fetch(`${server.http}/v1/disconnect`, { method: "POST", body: JSON.stringify({ session: old }) });
    assert.deepEqual(await res.json(), { disconnected: 1 });
    await until(() => b.state === "reconnecting", 3000, "the close");
    for (let i = 4; i <= 6; i += 1) await httpPublish(server.http, `hist/rec/${i % 2}`, i);
    proxy.refuse = false;
    await until(() => got.length === 6, 8000, "the recovered messages");
    // Each topic in order (a recovery replays topic by topic), every message once.
    assert.deepEqual([...got].sort(), range(1, 6));
    assert.deepEqual(byTopic(0), [2, 4, 6]);
    assert.deepEqual(byTopic(1), [1, 3, 5]);
    assert.notEqual(b.session, old);
    assert.equal(log.of("close")[0].code, 4003);
    assert.deepEqual(log.of("recovered"), [{ pattern: "hist/rec/*", recovered: true }]);
    assert.equal(log.of("open").at(-1).resumed, false);
  });
});

test("over SSE: seqs a full buffer dropped while cut off are one exact gap", async () => {
  const { server, proxy } = await serverWithProxy({ config: "[session]\nbuffer_messages = 5\n" });
  const b = await sseBus(proxy.http);
  const log = record(b);
  const got = [];
  await b.subscribe("gap/t", (m) => got.push(m.seq));
  for (let i = 1; i <= 3; i += 1) await httpPublish(server.http, "gap/t", i);
  await until(() => got.length === 3);
  proxy.refuse = true;
  proxy.cut();
  await until(() => b.state === "reconnecting", 3000, "the drop");
  for (let i = 4; i <= 23; i += 1) await httpPublish(server.http, "gap/t", i);
  proxy.refuse = false;
  await until(() => b.lastSeq === 23, 8000, "the resume");
  const gaps = log.of("gap");
  assert.equal(gaps.length, 1);
  assert.deepEqual(gaps[0], { from_seq: 4, to_seq: 18, reason: "overflow" });
  assert.deepEqual(got, [1, 2, 3, 19, 20, 21, 22, 23], "every seq once: delivered or in the gap");
  assert.equal(log.of("resumed").length, 1);
});

test("over SSE: a stream gone silent (half-open) is dropped after two heartbeats and resumed", async () => {
  const { server, proxy } = await serverWithProxy({ config: 'heartbeat = "500ms"\n' });
  const b = await sseBus(proxy.http);
  const got = [];
  await b.subscribe("quiet/t", (m) => got.push(m.data));
  await httpPublish(server.http, "quiet/t", 1);
  await until(() => got.length === 1);
  const session = b.session;
  proxy.freeze(); // nothing gets through any more, and no end comes either
  await httpPublish(server.http, "quiet/t", 2);
  await until(() => got.length === 2, 8000, "the message after the silent stream was replaced");
  assert.equal(b.session, session);
  assert.deepEqual(got, [1, 2]);
});

test("over SSE: shutdown says bye; the restarted server's new session recovers what was missed", async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "herald-sse-"));
  const config = '[[topics]]\npattern = "dur/**"\nhistory = 100\npersist = true\n';
  let server = await startServer({ config, dataDir });
  const port = server.port;
  cleanup.push(async () => {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const b = await sseBus(server.http);
  const log = record(b);
  const got = [];
  await b.subscribe("dur/t", (m) => got.push(m.data));
  for (let i = 1; i <= 3; i += 1) await b.publish("dur/t", i);
  await until(() => got.length === 3);
  await server.stop();
  await until(() => log.of("close").length === 1, 3000, "the close");
  assert.equal(log.of("close")[0].code, 1001, "bye: shutdown");
  server = await startServer({ config, dataDir, listen: `127.0.0.1:${port}` });
  for (let i = 4; i <= 5; i += 1) await httpPublish(server.http, "dur/t", i);
  await until(() => got.length === 5, 10000, "the recovery");
  assert.deepEqual(got, range(1, 5));
  assert.equal(log.of("open").at(-1).resumed, false);
  assert.deepEqual(log.of("recovered"), [{ pattern: "dur/t", recovered: true }]);
});

describe("over SSE with [auth]", () => {
  const SECRET = "sse-test-secret";
  const token = (claims) => {
    const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
    return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
  };
  let server;
  before(async () => {
    ({ server } = await serverWithProxy({ config: `[auth]\nhs256_secret = "${SECRET}"\nadmin_keys = ["admin-key"]\n` }));
  });

  test("the token's permissions apply to the stream, its subscriptions and its publishes", async () => {
    const t = token({ sub: "ann", subscribe: ["team/**"], publish: ["team/**"] });
    const b = await sseBus(server.http, { token: t });
    const got = [];
    await b.subscribe("team/*", (m) => got.push(m.data));
    await b.publish("team/x", "hello");
    await until(() => got.length === 1);
    await assert.rejects(b.subscribe("other/*", () => {}), (e) => e.code === "forbidden");
    await assert.rejects(b.publish("other/x", 1), (e) => e.code === "forbidden");
    // The session is the user's: another user cannot act on it.
    const res = await fetch(`${server.http}/v1/events/${b.session}/sub`, {
      method: "POST",
      headers: { authorization: `Bearer ${token({ sub: "bob", subscribe: ["team/**"] })}` },
      body: JSON.stringify({ pattern: "team/y" }),
    });
    assert.equal(res.status, 404);
  });

  test("a refused token fails the first connection with 4001 and does not loop", async () => {
    await assert.rejects(sseBus(server.http, { token: "not-a-jwt" }), (e) => e.code === "connect_failed" && e.closeCode === 4001);
  });

  test("at the token's exp the stream closes with 4001 and a token function gives the next stream a new one", async () => {
    let n = 0;
    const b = await sseBus(server.http, {
      token: () => token({ sub: "cat", subscribe: ["t/**"], publish: ["t/**"], exp: Math.floor(Date.now() / 1000) + (++n === 1 ? 2 : 3600) }),
    });
    const log = record(b);
    const got = [];
    await b.subscribe("t/x", (m) => got.push(m.data));
    const session = b.session;
    await until(() => log.of("close").length === 1, 5000, "the close at exp");
    assert.equal(log.of("close")[0].code, 4001);
    assert.equal(log.of("close")[0].willReconnect, true);
    await until(() => b.connected, 5000, "the reconnect");
    assert.equal(n, 2);
    assert.equal(b.session, session, "resumed with the new token (same user)");
    await b.publish("t/x", "after");
    await until(() => got.length === 1);
  });
});

describe("transport auto", () => {
  let server;
  let proxy;
  before(async () => {
    server = await startServer();
    proxy = await startUpgradeRefusingProxy(server.port);
    cleanup.push(async () => {
      await proxy.close();
      await server.stop();
    });
  });

  test("uses the WebSocket when it opens", async () => {
    const b = await connect(server.ws, { WebSocket });
    cleanup.push(() => b.close());
    assert.equal(b.transport, "websocket");
    assert.equal(b.socket.constructor, WebSocket);
  });

  test("falls back to SSE when the WebSocket is refused twice and the server answers HTTP", async () => {
    const before = proxy.refused;
    const b = new Bus(proxy.http, { WebSocket });
    cleanup.push(() => b.close());
    const log = record(b);
    await b.open();
    assert.equal(proxy.refused - before, 2, "two WebSocket attempts");
    assert.equal(b.transport, "sse");
    assert.equal(b.url, `${proxy.http}/v1/events`);
    assert.deepEqual(log.map(([n]) => n), ["transport", "open"]);
    assert.equal(log.of("transport")[0].name, "sse");
    assert.match(log.of("transport")[0].reason, /WebSocket failed to open 2 times/);
    const got = [];
    await b.subscribe("auto/t", (m) => got.push(m.data));
    await b.publish("auto/t", 1);
    await httpPublish(server.http, "auto/t", 2);
    await until(() => got.length === 2);
    assert.deepEqual(got, [1, 2]);
  });

  test("a bus on the WebSocket falls back when upgrades start being refused, and keeps its session", async () => {
    proxy.allowUpgrades = true;
    const b = await connect(proxy.ws, { WebSocket, minDelayMs: 20, maxDelayMs: 100 });
    cleanup.push(() => b.close());
    const log = record(b);
    assert.equal(b.transport, "websocket");
    const got = [];
    await b.subscribe("later/t", (m) => got.push(m.data));
    await b.publish("later/t", 1);
    await until(() => got.length === 1);
    const session = b.session;
    proxy.allowUpgrades = false;
    proxy.cut();
    await httpPublish(server.http, "later/t", 2);
    await until(() => b.connected && b.transport === "sse", 8000, "the fallback");
    await until(() => got.length === 2, 5000, "the message sent meanwhile");
    assert.equal(b.session, session, "the SSE stream resumed the WebSocket's session");
    assert.deepEqual(got, [1, 2]);
    assert.equal(log.of("transport").length, 1);
    proxy.allowUpgrades = false;
  });

  test("does not fall back when nothing answers at all (the server is down)", async () => {
    const b = new Bus("ws://127.0.0.1:9/ws", { WebSocket });
    const log = record(b);
    await assert.rejects(b.open(), (e) => e.code === "connect_failed");
    assert.equal(b.transport, "websocket");
    assert.deepEqual(log.of("transport"), []);
  });

  test("transport \"websocket\" never falls back; an unknown transport is refused", async () => {
    await assert.rejects(connect(proxy.ws, { WebSocket, transport: "websocket" }), (e) => e.code === "connect_failed");
    assert.throws(() => new Bus(proxy.ws, { WebSocket, transport: "carrier-pigeon" }), TypeError);
  });
});
