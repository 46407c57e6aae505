// A page keeps receiving, with nothing lost afterwards, when the *server* closes its socket (the
// resume test cuts it in a proxy instead): a server with `slow_consumer = "disconnect"` gives up
// on a page that stopped reading — a proxy holds back what the server sends — and closes it with
// 4008 once its unsent backlog is full. The page reconnects, resumes its session, is told what
// it missed as a gap, and then receives every message again.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { httpPublish, launch, newPage, screenshot, startProxy, startServer, until } from "./harness.js";

const CONFIG = `
[session]
buffer_messages = 16
slow_consumer = "disconnect"
`;

let server;
let proxy;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer({ config: CONFIG }), launch()]);
  proxy = await startProxy(server.port);
});
after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

/** The Inspector's message rows: seq, and the `n` each message carries (its data is cut at 4000 characters). */
const rows = (page) =>
  page.$$eval("#ins-stream .item.msg", (ns) =>
    ns.map((n) => ({ seq: Number(n.dataset.seq), n: Number((n.querySelector(".data").textContent.match(/"n":(\d+)/) || [])[1]) })),
  );
const logText = (page) => page.textContent("#ins-stream");

async function slowConsumers() {
  const res = await fetch(`${server.http}/v1/stats`);
  return (await res.json()).slow_consumers;
}

test("a page keeps receiving, with nothing lost afterwards, after the server closes its socket (4008)", async () => {
  const page = await newPage(browser);
  await page.goto(`${proxy.http}/#inspector`);
  await page.fill("#ins-pattern", "feed/**");
  await page.click("#ins-sub button[type=submit]");
  await page.waitForSelector('#ins-subs .chip[data-pattern="feed/**"]');
  let n = 0;
  for (; n < 5; ) await httpPublish(server.http, "feed/a", { n: ++n });
  await until(async () => (await rows(page)).length === 5, 5000, "the first 5");

  // The page stops reading (as a busy or badly connected client would); the server keeps
  // publishing to it until it gives up on it.
  proxy.stallDownstream();
  const pad = "x".repeat(16_000);
  for (let round = 0; (await slowConsumers()) === 0; round += 1) {
    assert.ok(round < 400, "the server never gave up on the stalled page");
    const batch = Array.from({ length: 20 }, () => ({ topic: "feed/a", data: { n: ++n, pad } }));
    const res = await fetch(`${server.http}/v1/publish/batch`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(batch),
    });
    assert.equal(res.status, 200);
  }
  proxy.flow();

  // The server's close reaches the page, which comes back on the same session.
  await until(async () => /connection closed \(4008 slow consumer\)/.test(await logText(page)), 8000, "the 4008 close");
  await until(async () => /resumed session/.test(await logText(page)), 8000, "the resume");
  await page.waitForSelector('#conn[data-state="open"]');

  // Afterwards, nothing is lost.
  const first = n + 1;
  for (let i = 0; i < 20; i += 1) await httpPublish(server.http, "feed/b", { n: ++n });
  await until(async () => (await rows(page)).some((r) => r.n === n), 8000, `message ${n}`);

  const got = await rows(page);
  const log = await logText(page);
  const seqs = got.map((r) => r.seq);
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `seqs only go up: ${seqs}`);
  // Every seq the session used is either shown or reported missing by a gap.
  const gaps = [...log.matchAll(/gap: seq (\d+)–(\d+) lost/g)].map((m) => [Number(m[1]), Number(m[2])]);
  assert.ok(gaps.length >= 1, `what the page missed is reported: ${log.slice(-2000)}`);
  const last = seqs.at(-1);
  for (let s = 1; s <= last; s += 1) {
    assert.ok(seqs.includes(s) || gaps.some(([a, b]) => a <= s && s <= b), `seq ${s} neither shown nor in a gap`);
  }
  assert.deepEqual(got.slice(0, 5).map((r) => r.n), [1, 2, 3, 4, 5], "what came before the stall");
  const after = got.filter((r) => r.n >= first);
  assert.deepEqual(after.map((r) => r.n), Array.from({ length: 20 }, (_, i) => first + i), "every message after the resume, in order");
  assert.deepEqual(after.map((r) => r.seq), Array.from({ length: 20 }, (_, i) => after[0].seq + i), "with no hole in seq");
  assert.equal((log.match(/resumed session/g) || []).length, 1);
  assert.equal(await page.textContent("#ins-lastseq"), String(last));
  await screenshot(page, "inspector-after-server-close");
  assert.deepEqual(page.errors, []);
});
