// permessage-deflate (PROTOCOL.md §2, "Compression") in Chromium: the browser's own WebSocket
// offers it, the server's answer negotiates it (`ws.extensions` in the page), and large and
// small messages arrive intact both ways. A TCP proxy between the page and the server counts
// the bytes each way, which shows that the large ones really went compressed.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";

import { httpPublish, launch, newPage, startServer, until } from "./harness.js";

let server;
let browser;
let counter;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
  counter = await countingProxy(server.port);
});
after(async () => {
  await browser?.close();
  await counter?.close();
  await server?.stop();
});

/** A TCP proxy to `port` that counts the bytes going each way. */
async function countingProxy(port) {
  const p = { up: 0, down: 0, sockets: new Set() };
  const srv = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const s of [client, upstream]) {
      p.sockets.add(s);
      s.on("error", () => {}).on("close", () => p.sockets.delete(s));
    }
    client.on("data", (b) => (p.up += b.length));
    upstream.on("data", (b) => (p.down += b.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  p.ws = `ws://127.0.0.1:${srv.address().port}/ws`;
  p.close = () =>
    new Promise((r) => {
      for (const s of p.sockets) s.destroy();
      srv.close(() => r());
    });
  return p;
}

/** Application-like JSON: a page of orders, ~`n` × 110 bytes. */
function orders(n) {
  const status = ["paid", "pending", "shipped"];
  return {
    page: 1,
    orders: Array.from({ length: n }, (_, i) => ({
      id: `ord_${((i * 0x9e3779b9) >>> 0).toString(16).padStart(8, "0")}`,
      customer: `cus_${100000 + i * 37}`,
      status: status[i % 3],
      total: (1700 + ((i * 1309) % 9000)) / 100,
      currency: "EUR",
    })),
  };
}

test("Chromium negotiates permessage-deflate; large and small messages arrive intact both ways", async () => {
  const page = await newPage(browser);
  await page.goto(`${server.http}/healthz`);
  const opened = await page.evaluate(async (url) => {
    const ws = (window.ws = new WebSocket(url));
    window.frames_ = [];
    ws.onmessage = (e) => window.frames_.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("the WebSocket did not open"));
    });
    const next = (pred) =>
      new Promise((resolve) => {
        const look = () => {
          const i = window.frames_.findIndex(pred);
          if (i >= 0) resolve(window.frames_.splice(i, 1)[0]);
          else setTimeout(look, 10);
        };
        look();
      });
    window.next = next;
    ws.send(JSON.stringify({ op: "hello" }));
    await next((f) => f.op === "welcome");
    ws.send(JSON.stringify({ op: "sub", id: "s", pattern: "shop/**" }));
    const ok = await next((f) => f.id === "s");
    return { extensions: ws.extensions, ok: ok.op };
  }, counter.ws);
  assert.equal(opened.ok, "ok");
  assert.equal(opened.extensions, "permessage-deflate; server_no_context_takeover");

  // Server to page: published over HTTP, large and small.
  const big = orders(300); // ~33 KB of JSON
  const small = { text: "hi" };
  const down = counter.down;
  for (const data of [big, small, orders(40), small]) await httpPublish(server.http, "shop/in", data);
  const got = await page.evaluate(async () => {
    const out = [];
    for (let seq = 1; seq <= 4; seq += 1) out.push(await window.next((f) => f.op === "msg" && f.seq === seq));
    return out.map((m) => m.data);
  });
  assert.deepEqual(got, [big, small, orders(40), small]);
  const plain = [big, small, orders(40), small].reduce((n, d) => n + JSON.stringify(d).length, 0);
  const read = counter.down - down;
  assert.ok(read * 3 < plain, `page read ${read} bytes for ${plain} bytes of data`);

  // Page to server: the browser compresses what it sends (with context takeover); the server
  // inflates it, answers, and delivers it back.
  const up = counter.up;
  const echoed = await page.evaluate(
    async ({ big, small }) => {
      const out = [];
      let seq = 4;
      for (const [i, data] of [big, small, big, small].entries()) {
        window.ws.send(JSON.stringify({ op: "pub", id: `p${i}`, topic: "shop/out", data }));
        const ok = await window.next((f) => f.id === `p${i}`);
        if (ok.op !== "ok") throw new Error(JSON.stringify(ok));
        seq += 1;
        out.push((await window.next((f) => f.op === "msg" && f.seq === seq)).data);
      }
      return out;
    },
    { big, small },
  );
  assert.deepEqual(echoed, [big, small, big, small]);
  const sent = counter.up - up;
  assert.ok(sent * 3 < 2 * JSON.stringify(big).length, `page sent ${sent} bytes`);
  await until(async () => (await page.evaluate(() => window.ws.readyState)) === 1, 1000, "still open");
  // (The page's favicon is a 404: not an error of this test.)
  assert.deepEqual(page.errors.filter((e) => !/Failed to load resource/.test(e.message)), []);
});
