// herald.js with `encoding: "msgpack"` in Chromium, with the browser's own WebSocket: a page on
// another origin imports /herald.js from the server (which imports ./msgpack.js, so the server
// must serve that too, with CORS), connects on herald.v1.msgpack, receives a Node publisher's
// binary data as Uint8Array, and publishes binary that a Node JSON subscriber sees as $base64.
// Against a server without MessagePack, connect rejects `unsupported` (a browser fails such a
// handshake without saying why: herald.js asks the server which subprotocol it would select).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";

import { connect } from "../../web/herald.js";
import { launch, newPage, screenshot, startProxy, startServer, until } from "./harness.js";

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../web");

let server;
let proxy;
let browser;
const buses = [];
before(async () => {
  // Topics keep history (the page reads some back).
  [server, browser] = await Promise.all([startServer({ config: '[[topics]]\npattern = "**"\nhistory = 100\n' }), launch()]);
  proxy = await startProxy(server.port); // another port: another origin
});
after(async () => {
  for (const b of buses) b.close();
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

async function nodeBus(opts = {}) {
  const b = await connect(server.ws, { WebSocket, ...opts });
  buses.push(b);
  return b;
}

test("the server serves msgpack.js beside herald.js, as JavaScript, with CORS", async () => {
  for (const file of ["herald.js", "msgpack.js"]) {
    const res = await fetch(`${server.http}/${file}`);
    assert.equal(res.status, 200, file);
    assert.match(res.headers.get("content-type"), /javascript/, file);
    assert.equal(res.headers.get("access-control-allow-origin"), "*", file);
    assert.equal(await res.text(), readFileSync(path.join(WEB, file), "utf8"), `${file} is this worktree's`);
  }
});

test("a page connects with encoding msgpack, receives binary as Uint8Array and publishes binary", async () => {
  const page = await newPage(browser);
  await page.goto(`${proxy.http}/#about`);
  const jsonSub = await nodeBus();
  const fromPage = [];
  await jsonSub.subscribe("page/**", (m) => fromPage.push(m.data));

  const opened = await page.evaluate(
    async ({ http, ws }) => {
      const { connect } = await import(`${http}/herald.js`);
      const bus = (window.bus = await connect(ws, { encoding: "msgpack" }));
      const got = (window.got = []);
      await bus.subscribe("feed/**", (m) => {
        const d = m.data;
        const describe = (v) =>
          v instanceof Uint8Array ? { bytes: Array.from(v) } : Array.isArray(v) ? v.map(describe) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, describe(x)])) : v;
        got.push({ seq: m.seq, topic: m.topic, isBinary: d instanceof Uint8Array, data: describe(d) });
      });
      await bus.subscribe("svc/sum", (m) => m.reply({ sum: m.data.reduce((a, b) => a + b, 0), echo: m.data }));
      return {
        protocol: bus.socket.protocol,
        binaryType: bus.socket.binaryType,
        native: bus.socket instanceof WebSocket,
        encoding: bus.encoding,
      };
    },
    { http: server.http, ws: server.ws },
  );
  assert.deepEqual(opened, { protocol: "herald.v1.msgpack", binaryType: "arraybuffer", native: true, encoding: "msgpack" });

  // A Node MessagePack publisher, and a JSON one with {$base64}.
  const mpPub = await nodeBus({ encoding: "msgpack" });
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  await mpPub.publish("feed/bin", all);
  await mpPub.publish("feed/mixed", { name: "pic.png", body: new Uint8Array([137, 80, 78, 71]), size: 4, ratio: 0.75 });
  const jsonPub = await nodeBus();
  await jsonPub.publish("feed/b64", { $base64: "3q2+7w==" });
  await until(async () => (await page.evaluate(() => window.got.length)) === 3, 5000, "the page to receive 3 messages");
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got, [
    { seq: 1, topic: "feed/bin", isBinary: true, data: { bytes: Array.from(all) } },
    { seq: 2, topic: "feed/mixed", isBinary: false, data: { name: "pic.png", body: { bytes: [137, 80, 78, 71] }, size: 4, ratio: 0.75 } },
    { seq: 3, topic: "feed/b64", isBinary: true, data: { bytes: [0xde, 0xad, 0xbe, 0xef] } },
  ]);

  // The page publishes binary (a Uint8Array, an ArrayBuffer, a DataView): JSON sees $base64.
  const acks = await page.evaluate(async () => {
    const out = [];
    out.push(await window.bus.publish("page/a", new Uint8Array([1, 2, 3, 250])));
    out.push(await window.bus.publish("page/b", { file: new Uint8Array([255, 254]).buffer, note: "héllo 😀" }));
    out.push(await window.bus.publish("page/c", [new DataView(new Uint8Array([9, 8, 7, 6]).buffer, 1, 2)]));
    return out;
  });
  for (const a of acks) assert.equal(a.duplicate, false);
  await until(() => fromPage.length === 3, 5000, "the Node JSON subscriber to receive 3");
  assert.deepEqual(fromPage, [{ $base64: "AQID+g==" }, { file: { $base64: "//4=" }, note: "héllo 😀" }, [{ $base64: "CAc=" }]]);

  // Request/reply from Node (MessagePack) to the page, and history read by the page.
  assert.deepEqual(await mpPub.request("svc/sum", [1, 2, 3]), { sum: 6, echo: [1, 2, 3] });
  const history = await page.evaluate(async () => {
    const h = await window.bus.history("feed/bin");
    return h.messages.map((m) => ({ isBinary: m.data instanceof Uint8Array, length: m.data.length }));
  });
  assert.deepEqual(history, [{ isBinary: true, length: 256 }]);

  await screenshot(page, "msgpack-page");
  await page.evaluate(() => window.bus.close());
  assert.deepEqual(page.errors, []);
});

test("a page against a server without MessagePack: connect rejects unsupported, and JSON still works there", async () => {
  // An older Herald: it selects herald.v1 only (and answers HTTP, so "auto" could fall back).
  const srv = http.createServer((req, res) => res.end("ok"));
  const wss = new WebSocketServer({ server: srv, handleProtocols: (offered) => (offered.has("herald.v1") ? "herald.v1" : false) });
  wss.on("connection", (ws) => ws.on("message", () => ws.send(JSON.stringify({ op: "welcome", session: "s_old", resumed: false, heartbeat_ms: 25000 }))));
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const old = `ws://127.0.0.1:${srv.address().port}/ws`;
  const page = await newPage(browser);
  try {
    await page.goto(`${server.http}/healthz`);
    const result = await page.evaluate(async (url) => {
      const { connect } = await import("/herald.js");
      const out = {};
      for (const transport of ["websocket", "auto"]) {
        try {
          const bus = await connect(url, { encoding: "msgpack", transport });
          out[transport] = { connected: bus.transport };
          bus.close();
        } catch (e) {
          out[transport] = { code: e.code, encoding: e.encoding, message: e.message };
        }
      }
      const json = await connect(url, { transport: "websocket" });
      out.json = { protocol: json.socket.protocol, session: json.session };
      json.close();
      return out;
    }, old);
    for (const transport of ["websocket", "auto"]) {
      assert.equal(result[transport].code, "unsupported", `${transport}: ${JSON.stringify(result[transport])}`);
      assert.equal(result[transport].encoding, "msgpack");
      assert.match(result[transport].message, /herald\.v1\.msgpack.*selected "herald\.v1"/);
    }
    assert.deepEqual(result.json, { protocol: "herald.v1", session: "s_old" });
    // Chromium logs the failed handshakes (and /favicon.ico's 404); nothing else may go wrong.
    assert.deepEqual(page.errors.filter((e) => !/WebSocket connection to .* failed|Failed to load resource: .*404/.test(e.message)), []);
  } finally {
    await page.context().close();
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    await new Promise((r) => srv.close(() => r()));
  }
});
