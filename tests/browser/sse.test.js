// herald.js over Server-Sent Events in Chromium, with the browser's own EventSource. The page
// talks to an HTTP proxy that refuses WebSocket upgrades (403, as some corporate proxies do),
// forwards everything else and notes the `Last-Event-ID` of each event stream request; behind
// it a TCP proxy drops connections (and refuses new ones for a moment). A page with transport
// "sse" receives what is published, its stream is cut, and the EventSource's own reconnect, with
// its Last-Event-ID, resumes the session without loss. A page on "auto" falls back to SSE.
//
// The page is a same-origin document of the proxy (`/healthz`: no app scripts of its own; a page
// on another origin is cors.test.js). herald.js is served from this worktree's web/ (the shared
// debug binary may embed another checkout's).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { httpPublish, launch, newPage, sleep, startProxy, startServer, until } from "./harness.js";

const HERALD_JS = readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../web/herald.js"), "utf8");
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

let server;
let proxy; // TCP: cuts
let front; // HTTP: refuses upgrades, records
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
  proxy = await startProxy(server.port);
  front = await startUpgradeRefusingProxy(proxy.port);
});
after(async () => {
  await browser?.close();
  await front?.close();
  await proxy?.close();
  await server?.stop();
});

/**
 * An HTTP proxy to `port` that answers every WebSocket upgrade 403 and forwards other requests,
 * streaming; `streams` lists the `Last-Event-ID` of each `/v1/events` request.
 */
async function startUpgradeRefusingProxy(port) {
  const sockets = new Set();
  const p = { refused: 0, streams: [] };
  const srv = http.createServer((req, res) => {
    if (new URL(req.url, "http://x").pathname === "/v1/events") p.streams.push({ lastEventId: req.headers["last-event-id"] });
    const up = http.request({ host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
      // Upstream cut mid-answer: so is the page's connection (a proxy would not end it cleanly).
      r.on("close", () => {
        if (!r.complete) res.destroy();
      });
    });
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  srv.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  srv.on("upgrade", (req, socket) => {
    p.refused += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\n\r\nno upgrades, sorry.\r\n");
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  p.http = `http://127.0.0.1:${srv.address().port}`;
  p.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy();
      srv.close(() => r());
    });
  return p;
}

/** A page on `origin` that loads this worktree's herald.js. */
async function pageOn(origin) {
  const page = await newPage(browser);
  await page.route("**/herald.js", (route) => route.fulfill({ status: 200, contentType: "text/javascript", body: HERALD_JS }));
  await page.goto(`${origin}/healthz`);
  return page;
}

/** In the page: a bus (as `window.bus`) recording messages and events in `window.rec`. */
async function openBus(page, options) {
  return page.evaluate(async (options) => {
    const { Bus } = await import("/herald.js");
    const rec = (window.rec = { msgs: [], events: [] });
    const bus = (window.bus = new Bus(undefined, options));
    for (const name of ["open", "resumed", "close", "gap", "recovered", "transport", "error"]) {
      bus.on(name, (e) => rec.events.push([name, e instanceof Error ? { code: e.code, message: e.message } : e]));
    }
    await bus.open();
    await bus.subscribe("feed/**", (m) => rec.msgs.push({ seq: m.seq, topic: m.topic, data: m.data }));
    return {
      transport: bus.transport,
      url: bus.url,
      session: bus.session,
      native: bus.socket.eventSource instanceof EventSource,
    };
  }, options);
}

const msgs = (page) => page.evaluate(() => window.rec.msgs);
const events = (page) => page.evaluate(() => window.rec.events);
const busState = (page) => page.evaluate(() => ({ state: window.bus.state, session: window.bus.session, lastSeq: window.bus.lastSeq, transport: window.bus.transport }));

test("a page on transport sse receives through EventSource and resumes by Last-Event-ID after the stream is cut", async () => {
  const page = await pageOn(front.http);
  const streams = front.streams.length;
  const opened = await openBus(page, { transport: "sse" });
  assert.equal(opened.transport, "sse");
  assert.equal(opened.url, `${front.http}/v1/events`);
  assert.equal(opened.native, true, "the browser's own EventSource");

  // Published by a backend, and by the page itself (POST /v1/publish).
  for (let i = 1; i <= 5; i += 1) await httpPublish(server.http, `feed/${i % 3}`, i);
  const ack = await page.evaluate(async () => {
    const out = [];
    for (let i = 6; i <= 10; i += 1) out.push(await window.bus.publish(`feed/${i % 3}`, i));
    return out;
  });
  assert.deepEqual(ack.map((a) => a.duplicate), [false, false, false, false, false]);
  await until(async () => (await msgs(page)).length === 10, 5000, "the first 10");

  for (let round = 0; round < 2; round += 1) {
    proxy.refuse = true;
    assert.ok(proxy.cut() > 0, "the page's stream was cut");
    await until(async () => (await busState(page)).state === "reconnecting", 5000, "the drop to be noticed");
    const from = 11 + round * 20;
    for (let i = from; i < from + 20; i += 1) await httpPublish(server.http, `feed/${i % 3}`, i);
    await sleep(300);
    proxy.refuse = false;
    await until(async () => (await msgs(page)).length === from + 19, 10000, `messages up to ${from + 19}`);
  }
  const got = await msgs(page);
  assert.deepEqual(got.map((m) => m.data), range(1, 50), "every message once, in order");
  assert.deepEqual(got.map((m) => m.seq), range(1, 50), "seq without holes");
  const state = await busState(page);
  assert.equal(state.session, opened.session, "the same session");
  assert.equal(state.state, "open");
  assert.equal(state.lastSeq, 50);
  const names = (await events(page)).map(([n]) => n);
  assert.deepEqual(names, ["open", "close", "open", "resumed", "close", "open", "resumed"]);
  // The first request had nothing to resume; the EventSource's reconnects named the session.
  const seen = front.streams.slice(streams);
  assert.equal(seen[0].lastEventId, undefined);
  const resumes = seen.slice(1).map((s) => s.lastEventId);
  assert.ok(resumes.length >= 2, `reconnects: ${JSON.stringify(seen)}`);
  for (const id of resumes) assert.match(id, new RegExp(`^${opened.session}:\\d+$`));
  // Chromium logs each refused reconnect attempt; anything else would be a bug.
  assert.deepEqual(page.errors.filter((e) => !/ERR_|Failed to load resource|EventSource/.test(e.message)), []);
  await page.evaluate(() => window.bus.close());
});

test("auto falls back to SSE in the page when /ws is refused, and says so", async () => {
  const page = await pageOn(front.http);
  const before = front.refused;
  const opened = await openBus(page, {});
  assert.equal(opened.transport, "sse");
  assert.equal(opened.url, `${front.http}/v1/events`);
  assert.equal(opened.native, true);
  assert.equal(front.refused - before, 2, "two WebSocket attempts, then SSE");
  const evs = await events(page);
  assert.deepEqual(evs.map(([n]) => n), ["transport", "open"]);
  assert.equal(evs[0][1].name, "sse");

  await httpPublish(server.http, "feed/x", "from a backend");
  await page.evaluate(() => window.bus.publish("feed/y", "from the page"));
  await until(async () => (await msgs(page)).length === 2, 5000, "both messages");
  assert.deepEqual((await msgs(page)).map((m) => [m.seq, m.data]), [[1, "from a backend"], [2, "from the page"]]);
  assert.deepEqual(page.errors.filter((e) => !/WebSocket connection to .* failed|403/.test(e.message)), []);
  await page.evaluate(() => window.bus.close());
});

test("with FetchEventSource a page resumes its saved session after a reload (the browser's EventSource cannot)", async () => {
  const page = await pageOn(front.http);
  const saved = await page.evaluate(async () => {
    const { Bus, FetchEventSource } = await import("/herald.js");
    const bus = new Bus(undefined, { transport: "sse", EventSource: FetchEventSource });
    await bus.open();
    const got = [];
    await bus.subscribe("reload/t", (m) => got.push(m.data));
    await bus.publish("reload/t", 1);
    while (got.length < 1) await new Promise((r) => setTimeout(r, 20));
    localStorage.setItem("herald", JSON.stringify({ session: bus.session, lastSeq: bus.lastSeq }));
    return { session: bus.session, lastSeq: bus.lastSeq, own: bus.socket.eventSource instanceof FetchEventSource };
  });
  assert.equal(saved.own, true);
  assert.equal(saved.lastSeq, 1);
  await page.reload(); // the page goes away without unsubscribing
  for (let i = 2; i <= 4; i += 1) await httpPublish(server.http, "reload/t", i);
  const after = await page.evaluate(async () => {
    const { Bus, FetchEventSource } = await import("/herald.js");
    const { session, lastSeq } = JSON.parse(localStorage.getItem("herald"));
    const bus = new Bus(undefined, { transport: "sse", EventSource: FetchEventSource, session, lastSeq });
    const got = [];
    bus.subscribe("reload/t", (m) => got.push([m.seq, m.data])); // before open: ready for the replay
    await bus.open();
    while (got.length < 3) await new Promise((r) => setTimeout(r, 20));
    const out = { resumed: bus.welcome.resumed, session: bus.session, got };
    bus.close();
    return out;
  });
  assert.equal(after.resumed, true);
  assert.equal(after.session, saved.session);
  assert.deepEqual(after.got, [[2, 2], [3, 3], [4, 4]]);
  assert.deepEqual(page.errors, []);
});
