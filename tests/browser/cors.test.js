// The SSE transport from a page on another origin: the page is served from
// http://localhost:PORT and talks to http://127.0.0.1:PORT (another host, so another origin to
// Chromium). Its EventSource and its POSTs (publish, subscribe: JSON bodies, so preflighted)
// work only because the HTTP API answers CORS (PROTOCOL.md §8, "Browsers on other origins").

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { httpPublish, launch, newPage, startServer, until } from "./harness.js";

let server;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a page on another origin subscribes and publishes over SSE", async () => {
  const page = await newPage(browser);
  await page.goto(`http://localhost:${server.port}/healthz`);
  const target = `http://127.0.0.1:${server.port}`;
  const opened = await page.evaluate(async (target) => {
    const { Bus } = await import("/herald.js");
    window.got = [];
    const bus = (window.bus = new Bus(`${target}/v1/events`, { transport: "sse" }));
    await bus.open();
    await bus.subscribe("x/**", (m) => window.got.push(m.data));
    const ack = await bus.publish("x/page", "from the page");
    return { origin: location.origin, url: bus.url, transport: bus.transport, ack };
  }, target);
  assert.equal(opened.origin, `http://localhost:${server.port}`);
  assert.equal(opened.url, `${target}/v1/events`);
  assert.equal(opened.transport, "sse");
  assert.equal(opened.ack.duplicate, false);
  await httpPublish(server.http, "x/backend", "from a backend");
  await until(async () => (await page.evaluate(() => window.got.length)) === 2, 5000, "both messages");
  assert.deepEqual(await page.evaluate(() => window.got), ["from the page", "from a backend"]);
  // (The only 404 is the favicon of /healthz.)
  assert.deepEqual(page.errors.filter((e) => !/status of 404/.test(e.message)), []);
  await page.evaluate(() => window.bus.close());
});
