// A page keeps receiving, with nothing lost, after its socket is killed: the Inspector watches
// a pattern while a TCP proxy between page and server drops the connection (and refuses new
// ones for a moment) and messages keep being published over HTTP.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { httpPublish, launch, newPage, screenshot, sleep, startProxy, startServer, until } from "./harness.js";

let server;
let proxy;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
  proxy = await startProxy(server.port);
});
after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

const rows = (page) =>
  page.$$eval("#ins-stream .item.msg", (ns) => ns.map((n) => ({ seq: Number(n.dataset.seq), topic: n.dataset.topic, data: JSON.parse(n.querySelector(".data").textContent) })));

test("a page keeps receiving, with nothing lost, after its socket is killed", async () => {
  const page = await newPage(browser);
  await page.goto(`${proxy.http}/#inspector`);
  await page.fill("#ins-pattern", "feed/**");
  await page.click("#ins-sub button[type=submit]");
  await page.waitForSelector('#ins-subs .chip[data-pattern="feed/**"]');

  for (let i = 1; i <= 10; i += 1) await httpPublish(server.http, `feed/${i % 3}`, i);
  await until(async () => (await rows(page)).length === 10, 5000, "the first 10");

  for (let round = 0; round < 2; round += 1) {
    proxy.refuse = true;
    assert.ok(proxy.cut() > 0, "the page's socket was cut");
    await page.waitForSelector('#conn[data-state="reconnecting"]');
    const from = 11 + round * 20;
    for (let i = from; i < from + 20; i += 1) await httpPublish(server.http, `feed/${i % 3}`, i);
    await sleep(200);
    proxy.refuse = false;
    await until(async () => (await rows(page)).length === from + 19, 8000, `messages up to ${from + 19}`);
  }
  const got = await rows(page);
  assert.deepEqual(got.map((r) => r.data), Array.from({ length: 50 }, (_, i) => i + 1), "every message once, in order");
  assert.deepEqual(got.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 1), "seq without holes");
  const log = await page.textContent("#ins-stream");
  assert.equal((log.match(/resumed session/g) || []).length, 2);
  assert.ok(!log.includes("gap:"), "no gap");
  await page.waitForSelector('#conn[data-state="open"]');
  assert.equal(await page.textContent("#ins-lastseq"), "50");
  await screenshot(page, "inspector-after-resume");
  // Chromium logs each refused reconnect attempt; anything else would be a bug.
  assert.deepEqual(page.errors.filter((e) => !/WebSocket connection to .* failed/.test(e.message)), []);
});

test("the inspector publishes, and reports errors in its form", async () => {
  const page = await newPage(browser);
  await page.goto(`${server.http}/#inspector`);
  await page.fill("#ins-pattern", "demo/**");
  await page.click("#ins-sub button[type=submit]");
  await page.waitForSelector('#ins-subs .chip[data-pattern="demo/**"]');
  await page.fill("#ins-topic", "demo/hello");
  await page.fill("#ins-data", '{"text":"from the form"}');
  await page.click("#ins-pub button[type=submit]");
  await until(async () => (await rows(page)).length === 1, 5000, "the published message");
  assert.deepEqual((await rows(page))[0], { seq: 1, topic: "demo/hello", data: { text: "from the form" } });
  assert.match(await page.textContent("#ins-pub-result"), /published: offset \d+/);

  await page.fill("#ins-data", "{not json");
  await page.click("#ins-pub button[type=submit]");
  assert.match(await page.textContent("#ins-pub-result"), /not valid JSON/);
  await page.fill("#ins-data", "1");
  await page.fill("#ins-topic", "demo//bad");
  await page.click("#ins-pub button[type=submit]");
  await until(async () => /bad_topic/.test(await page.textContent("#ins-pub-result")), 5000, "the bad_topic error");

  // Unsubscribing from the chip stops the stream.
  await page.click('#ins-subs .chip[data-pattern="demo/**"] button');
  await page.waitForSelector('#ins-subs .chip[data-pattern="demo/**"]', { state: "detached" });
  await httpPublish(server.http, "demo/hello", "unseen");
  await sleep(200);
  assert.equal((await rows(page)).length, 1);
  await screenshot(page, "inspector-publish");
});
