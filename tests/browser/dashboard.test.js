// The dashboard charts /v1/stats: with traffic flowing, its rates are non-zero.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../../web/herald.js";
import { launch, newPage, screenshot, sleep, startServer, until } from "./harness.js";

let server;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const tile = (page, id) => page.$eval(`#tile-${id} .value`, (n) => Number(n.dataset.value || "NaN"));

test("the dashboard shows non-zero rates while messages flow", async () => {
  const subscribers = [];
  for (let i = 0; i < 3; i += 1) {
    const b = await connect(server.ws, { WebSocket });
    await b.subscribe("load/**", () => {});
    subscribers.push(b);
  }
  const page = await newPage(browser);
  await page.goto(`${server.http}/#dashboard`);
  await page.waitForSelector("#chart-rates .uplot");

  // Bounded load in the background (at most 150 batches of 20 messages, ~15 s), stopped once
  // the page has shown it.
  let stop = false;
  const load = (async () => {
    for (let round = 0; round < 150 && !stop; round += 1) {
      const batch = Array.from({ length: 20 }, (_, i) => ({ topic: `load/t${i % 5}`, data: { round, i } }));
      const res = await fetch(`${server.http}/v1/publish/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(batch),
      });
      assert.equal(res.status, 200);
      await sleep(100);
    }
  })();
  try {
    await until(async () => (await tile(page, "in")) > 0 && (await tile(page, "out")) > 0, 10000, "non-zero rates");
    await sleep(3000); // a few more polls, so the charts have a line to show
  } finally {
    stop = true;
    await load;
  }
  const inRate = await tile(page, "in");
  const outRate = await tile(page, "out");
  await screenshot(page, "dashboard");
  assert.ok(outRate >= inRate, `three subscribers: out (${outRate}) ≥ in (${inRate})`);
  assert.ok((await tile(page, "connections")) >= 3);
  assert.ok((await tile(page, "subscriptions")) >= 3);
  assert.ok((await tile(page, "held")) > 0, "sessions hold what they were sent, for resume");
  // The charts drew points, and the topics table lists the busy topics.
  assert.equal(await page.$$eval(".uplot canvas", (n) => n.length), 6);
  const last = (name) => page.$eval(`#chart-${name}`, (n) => (n.dataset.last || "").split(",").map(Number));
  const [topics] = await last("topics");
  assert.ok(topics >= 5, `the topics chart follows the five busy topics (last point ${topics})`);
  assert.ok(Number(await page.$eval("#chart-topics", (n) => n.dataset.points)) >= 2, "the topics chart has a line");
  assert.ok((await tile(page, "p99")) >= 0, "latency from /v1/stats");
  await until(async () => (await page.textContent("#dash-topics")).includes("load/t"), 8000, "the topics table");
  await until(async () => /live/.test(await page.textContent("#dash-status")), 2000);

  const phone = await newPage(browser, { phone: true });
  await phone.goto(`${server.http}/#dashboard`);
  await phone.waitForSelector("#chart-rates .uplot");
  await sleep(1200);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
  await screenshot(phone, "dashboard-phone");
  assert.deepEqual([...page.errors, ...phone.errors], []);
  for (const b of subscribers) b.close();
});
