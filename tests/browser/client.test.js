// herald.js in the browser, with the browser's own WebSocket: imported as a module by a page
// on another origin (so the server must send CORS headers for it), then publish, subscribe,
// request/reply and a resume after the page's socket is closed under it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, newPage, screenshot, startProxy, startServer } from "./harness.js";

let server;
let proxy;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
  proxy = await startProxy(server.port); // another port: another origin
});
after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

test("a page on another origin imports /herald.js and uses the bus", async () => {
  const page = await newPage(browser);
  await page.goto(`${proxy.http}/#about`);
  const result = await page.evaluate(
    async ({ http, ws }) => {
      const { connect, HeraldError } = await import(`${http}/herald.js`);
      const bus = await connect(ws);
      const got = [];
      await bus.subscribe("page/**", (m) => got.push([m.seq, m.topic, m.data]));
      await bus.subscribe("svc/add", (m) => m.reply(m.data.a + m.data.b));
      const ack = await bus.publish("page/a", { x: 1 });
      const sum = await bus.request("svc/add", { a: 2, b: 3 });
      let error = null;
      try {
        await bus.publish("bad//topic", 1);
      } catch (e) {
        error = e instanceof HeraldError ? e.code : String(e);
      }
      // Close the socket under the bus: it reconnects and resumes on its own.
      const session = bus.session;
      const resumed = new Promise((resolve) => bus.on("resumed", resolve));
      bus.socket.close();
      // Another origin: the API answers without CORS, so send it blind (it still publishes).
      await fetch(`${http}/v1/publish`, { method: "POST", mode: "no-cors", body: JSON.stringify({ topic: "page/b", data: "while away" }) });
      await resumed;
      while (got.length < 2) await new Promise((r) => setTimeout(r, 20));
      const out = { ack, sum, error, got, sameSession: bus.session === session, native: bus.socket instanceof WebSocket };
      bus.close();
      return out;
    },
    { http: server.http, ws: server.ws },
  );
  assert.equal(result.ack.duplicate, false);
  assert.equal(typeof result.ack.offset, "number");
  assert.equal(result.sum, 5);
  assert.equal(result.error, "bad_topic");
  assert.deepEqual(result.got, [
    [1, "page/a", { x: 1 }],
    [3, "page/b", "while away"],
  ]);
  assert.equal(result.sameSession, true);
  assert.equal(result.native, true);
  await screenshot(page, "client-cross-origin");
  assert.deepEqual(page.errors, []);
});
