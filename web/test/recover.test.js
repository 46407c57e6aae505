// Recovery of a lost session per topic (sub.since {topics, ts}): the server is killed with
// SIGKILL and started again on the same port (with its data dir, or in memory), messages are
// published while the subscriber cannot reach it (a proxy refuses its connections), and the
// subscriber's new session must get what it missed: exactly once, in offset order, or an exact
// topic gap for what history no longer holds.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../herald.js";
import { httpPublish, sleep, startProxy, startServer, until } from "./server.js";

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

/** A server the test can kill and start again on the same port, with the same data dir. */
async function restartable(config, { persist = true } = {}) {
  const dataDir = persist ? mkdtempSync(path.join(tmpdir(), "herald-data-")) : undefined;
  const srv = { server: await startServer({ config, dataDir }) };
  const port = srv.server.port;
  srv.proxy = await startProxy(port);
  srv.http = () => srv.server.http;
  /** SIGKILL, then the same command line again on the same port. */
  srv.restart = async () => {
    await srv.server.kill();
    srv.server = await startServer({ config, dataDir, listen: `127.0.0.1:${port}` });
  };
  cleanup.push(async () => {
    await srv.proxy.close();
    await srv.server.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });
  return srv;
}

/** A subscriber through the proxy, recording everything in one timeline. */
async function subscriber(srv, pattern, opts = {}) {
  const bus = await connect(srv.proxy.ws, { WebSocket, minDelayMs: 50, maxDelayMs: 200 });
  cleanup.push(() => bus.close());
  const rec = { bus, msgs: [], timeline: [], gaps: [], onGaps: [], recovered: [], opens: [] };
  bus.on("gap", (g) => {
    rec.gaps.push(g);
    rec.timeline.push(["gap", g.topic, g.from_offset, g.to_offset]);
  });
  bus.on("recovered", (e) => rec.recovered.push(e));
  bus.on("open", (e) => rec.opens.push(e));
  rec.off = await bus.subscribe(
    pattern,
    (m) => {
      rec.msgs.push(m);
      rec.timeline.push(["msg", m.topic, m.offset]);
    },
    { ...opts, onGap: (g) => rec.onGaps.push(g) },
  );
  return rec;
}

/** The offsets received per topic, in arrival order. */
function offsetsByTopic(msgs) {
  const by = {};
  for (const m of msgs) (by[m.topic] ||= []).push(m.offset);
  return by;
}

/** Takes the subscriber's server away (refused at the proxy) and restarts the server. */
async function outage(srv, rec) {
  srv.proxy.refuse = true;
  await srv.restart();
  await until(() => rec.bus.state === "reconnecting", 5000, "the subscriber to notice");
}

test("after a SIGKILL restart a pattern subscription gets every acked message once, in offset order", async () => {
  const srv = await restartable('[[topics]]\npattern = "t/**"\nhistory = 10000\npersist = true\n');
  const rec = await subscriber(srv, "t/**");
  const acked = []; // {topic, offset, epoch}
  const pub = async (topic, data) => {
    const ok = await httpPublish(srv.http(), topic, data);
    acked.push({ topic, offset: ok.offset, epoch: ok.epoch });
  };

  for (let i = 1; i <= 5; i += 1) {
    await pub("t/a", `a${i}`);
    await pub("t/b/c", `bc${i}`);
  }
  for (let i = 1; i <= 3; i += 1) await pub("t/d", `d${i}`);
  await until(() => rec.msgs.length === 13, 5000, "the first 13");
  const sessionBefore = rec.bus.session;

  await outage(srv, rec);
  // Published while the subscriber cannot connect: on known topics, and on one it never saw
  // (recovered by `ts`, not by offset).
  for (let i = 6; i <= 10; i += 1) {
    await pub("t/a", `a${i}`);
    await pub("t/b/c", `bc${i}`);
  }
  for (let i = 1; i <= 4; i += 1) await pub("t/new", `n${i}`);
  const duringOutage = acked.length;

  // It reconnects while more is published: the seam between replay and live.
  srv.proxy.refuse = false;
  for (let i = 11; i <= 30; i += 1) await pub("t/a", `a${i}`);
  await until(() => rec.msgs.length >= acked.length, 10000, `all ${acked.length} messages (have ${rec.msgs.length})`);
  await sleep(300); // anything repeated would come now

  const want = {};
  for (const a of acked) (want[a.topic] ||= []).push(a.offset);
  for (const offsets of Object.values(want)) offsets.sort((x, y) => x - y);
  assert.deepEqual(offsetsByTopic(rec.msgs), want, "each acked message once per topic, in offset order");
  assert.equal(rec.msgs.length, acked.length);
  for (const m of rec.msgs) assert.equal(m.epoch, acked.find((a) => a.topic === m.topic).epoch, "the persisted epoch");
  assert.deepEqual(rec.gaps, []);
  assert.deepEqual(rec.onGaps, []);
  assert.deepEqual(rec.recovered, [{ pattern: "t/**", recovered: true }]);
  assert.equal(rec.off.recovered, true);
  assert.equal(rec.opens.length, 1);
  assert.equal(rec.opens[0].resumed, false, "a new session: recovery, not resume");
  assert.notEqual(rec.bus.session, sessionBefore);
  // What was published during the outage came from history.
  const missed = rec.msgs.slice(13).filter((m) => acked.slice(13, duringOutage).some((a) => a.topic === m.topic && a.offset === m.offset));
  assert.equal(missed.length, duringOutage - 13);
  assert.ok(missed.every((m) => m.replay === true), "replayed");
});

test("history = 5 and 20 messages during the outage: a topic gap with the exact offsets, then the held ones", async () => {
  const srv = await restartable('[[topics]]\npattern = "t/**"\nhistory = 5\npersist = true\n');
  const rec = await subscriber(srv, "t/**");
  let epoch;
  for (let i = 1; i <= 3; i += 1) epoch = (await httpPublish(srv.http(), "t/a", i)).epoch;
  await until(() => rec.msgs.length === 3);

  await outage(srv, rec);
  for (let i = 4; i <= 23; i += 1) await httpPublish(srv.http(), "t/a", i);
  srv.proxy.refuse = false;
  await until(() => rec.msgs.length === 8, 10000, `offsets 19..23 (have ${rec.msgs.length})`);
  await sleep(300);

  const gap = { topic: "t/a", from_offset: 4, to_offset: 18, reason: "history", epoch };
  assert.deepEqual(rec.gaps, [gap]);
  assert.deepEqual(rec.onGaps, [gap]);
  assert.deepEqual(rec.timeline, [
    ["msg", "t/a", 1],
    ["msg", "t/a", 2],
    ["msg", "t/a", 3],
    ["gap", "t/a", 4, 18],
    ["msg", "t/a", 19],
    ["msg", "t/a", 20],
    ["msg", "t/a", 21],
    ["msg", "t/a", 22],
    ["msg", "t/a", 23],
  ]);
  assert.deepEqual(rec.msgs.map((m) => m.data), [1, 2, 3, 19, 20, 21, 22, 23]);
  assert.deepEqual(rec.recovered, [{ pattern: "t/**", recovered: false }]);
  assert.equal(rec.off.recovered, false);

  // Live delivery goes on after the recovery.
  await httpPublish(srv.http(), "t/a", 24);
  await until(() => rec.msgs.length === 9);
  assert.equal(rec.msgs[8].offset, 24);
});

test("in memory a restart is a new epoch: an epoch gap, and its offsets are not taken for duplicates", async () => {
  const srv = await restartable('[[topics]]\npattern = "t/**"\nhistory = 100\n', { persist: false });
  const rec = await subscriber(srv, "t/**");
  let oldEpoch;
  for (let i = 1; i <= 3; i += 1) oldEpoch = (await httpPublish(srv.http(), "t/a", `old${i}`)).epoch;
  await until(() => rec.msgs.length === 3);

  await outage(srv, rec);
  // Offsets 1 and 2 again, in the new epoch: a filter by offset alone would drop them.
  const first = await httpPublish(srv.http(), "t/a", "new1");
  await httpPublish(srv.http(), "t/a", "new2");
  assert.notEqual(first.epoch, oldEpoch);
  assert.equal(first.offset, 1);
  srv.proxy.refuse = false;
  await until(() => rec.msgs.length === 5, 10000, `the new epoch's two (have ${rec.msgs.length})`);
  await sleep(200);

  assert.deepEqual(rec.msgs.map((m) => [m.data, m.offset]), [["old1", 1], ["old2", 2], ["old3", 3], ["new1", 1], ["new2", 2]]);
  assert.equal(rec.gaps.length, 1, JSON.stringify(rec.gaps));
  const [gap] = rec.gaps;
  assert.equal(gap.topic, "t/a");
  assert.equal(gap.reason, "epoch");
  assert.equal(gap.epoch, first.epoch);
  // The new epoch is held from its start: nothing of it is missing (an empty range).
  assert.equal(gap.from_offset, 1);
  assert.ok(gap.to_offset < gap.from_offset, `empty range: ${JSON.stringify(gap)}`);
  assert.deepEqual(rec.timeline.slice(3, 4), [["gap", "t/a", gap.from_offset, gap.to_offset]], "the gap comes before the replay");
  assert.deepEqual(rec.recovered, [{ pattern: "t/**", recovered: false }]);
});

test("a second subscription's rewind does not repeat to the first what it delivered", async () => {
  const server = await startServer({ config: '[[topics]]\npattern = "d/**"\nhistory = 100\n' });
  cleanup.push(() => server.stop());
  const bus = await connect(server.ws, { WebSocket });
  cleanup.push(() => bus.close());
  const wide = [];
  const narrow = [];
  await bus.subscribe("d/**", (m) => wide.push(m.offset));
  for (let i = 1; i <= 3; i += 1) await bus.publish("d/a", i);
  await until(() => wide.length === 3);
  await bus.subscribe("d/a", (m) => narrow.push([m.offset, !!m.replay]), { rewind: 3 });
  await bus.publish("d/a", 4);
  await until(() => narrow.length === 4, 5000, "the rewind and the live message");
  await sleep(100);
  assert.deepEqual(narrow, [[1, true], [2, true], [3, true], [4, false]]);
  assert.deepEqual(wide, [1, 2, 3, 4], "the replay went to the new subscription only");
});

test("bus.since(pattern) is what a page can save to recover after a reload", async () => {
  const server = await startServer({ config: '[[topics]]\npattern = "r/**"\nhistory = 100\n' });
  cleanup.push(() => server.stop());
  const first = await connect(server.ws, { WebSocket, reconnect: false });
  const got1 = [];
  await first.subscribe("r/**", (m) => got1.push(m.data));
  for (let i = 1; i <= 3; i += 1) await httpPublish(server.http, i === 2 ? "r/b" : "r/a", i);
  await until(() => got1.length === 3);
  const saved = JSON.parse(JSON.stringify(first.since("r/**")));
  assert.equal(first.since("r/nothing"), null);
  assert.deepEqual(Object.keys(saved.topics).sort(), ["r/a", "r/b"]);
  assert.equal(saved.topics["r/a"].offset, 2);
  assert.equal(typeof saved.ts, "number");
  first.close();
  for (let i = 4; i <= 6; i += 1) await httpPublish(server.http, i === 5 ? "r/b" : "r/a", i);

  const second = await connect(server.ws, { WebSocket });
  cleanup.push(() => second.close());
  const got2 = [];
  const off = await second.subscribe("r/**", (m) => got2.push(m.data), { since: saved });
  await until(() => got2.length === 3, 5000, `the three published in between (have ${got2})`);
  await sleep(100);
  assert.deepEqual(got2.sort(), [4, 5, 6]);
  assert.equal(off.recovered, true);
});

test("a recovery cut off before its answer is sent again on the resumed session, and still counts", async () => {
  const srv = await restartable('[[topics]]\npattern = "t/**"\nhistory = 10000\npersist = true\n');
  const rec = await subscriber(srv, "t/**");
  for (let i = 1; i <= 3; i += 1) await httpPublish(srv.http(), "t/a", i);
  await until(() => rec.msgs.length === 3);

  await outage(srv, rec);
  for (let i = 4; i <= 8; i += 1) await httpPublish(srv.http(), "t/a", i);
  // The first open after the outage sends the recovery; its answer (and the replay) is held back
  // and the socket cut, so the client resumes that session without knowing how it went.
  let held = false;
  const stop = rec.bus.on("open", () => {
    if (held) return;
    held = true;
    srv.proxy.stallDownstream();
    setTimeout(() => srv.proxy.cut(), 100);
  });
  srv.proxy.refuse = false;
  await until(() => rec.opens.length === 2, 8000, "the resume after the cut");
  stop();
  await until(() => rec.msgs.length === 8, 8000, `the five published during the outage (have ${rec.msgs.length})`);
  await httpPublish(srv.http(), "t/a", 9);
  await until(() => rec.msgs.length === 9);
  await sleep(200);
  assert.deepEqual(rec.opens.map((o) => o.resumed), [false, true]);
  assert.deepEqual(rec.msgs.map((m) => m.data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(rec.gaps, []);
  assert.deepEqual(rec.recovered, [{ pattern: "t/**", recovered: true }]);
  assert.equal(rec.off.recovered, true);
});
