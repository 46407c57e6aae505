// Two people chat in one room in headless Chromium: messages both ways, the member list, and
// leaving. One of them is on a phone-sized screen.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../../web/herald.js";
import { httpPublish, launch, newPage, screenshot, sleep, startProxy, startServer, until } from "./harness.js";

let server;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function join(page, base, nick, room) {
  await page.goto(base.includes("?") ? `${base}#chat` : `${base}/#chat`);
  await page.fill("#chat-nick", nick);
  await page.fill("#chat-room", room);
  await page.click("#chat-join-btn");
  await page.waitForSelector("#chat-room-view:not([hidden])");
  await page.waitForFunction(() => [...document.querySelectorAll("#chat-log .chat-sys")].some((n) => n.textContent.startsWith("You joined")));
}

async function send(page, text) {
  await page.fill("#chat-text", text);
  await page.click("#chat-send");
}

const texts = (page) => page.$$eval("#chat-log .chat-msg", (ns) => ns.map((n) => `${n.querySelector(".who").textContent}: ${n.querySelector(".text").textContent}`));
const members = (page) => page.$$eval("#chat-members li", (ns) => ns.map((n) => n.firstElementChild.textContent).sort());

test("two pages chat in one room and see each other's messages and presence", async () => {
  const alice = await newPage(browser);
  const bob = await newPage(browser, { phone: true });
  await join(alice, server.http, "alice", "lobby");
  await join(bob, server.http, "bob", "lobby");

  await send(alice, "hello bob");
  await until(async () => (await texts(bob)).includes("alice: hello bob"), 5000, "bob to see alice's message");
  await send(bob, "hi alice <b>not bold</b>");
  await until(async () => (await texts(alice)).includes("bob: hi alice <b>not bold</b>"), 5000, "alice to see bob's message");
  assert.deepEqual(await texts(alice), ["alice: hello bob", "bob: hi alice <b>not bold</b>"]);
  assert.deepEqual(await texts(bob), ["alice: hello bob", "bob: hi alice <b>not bold</b>"]);
  assert.equal(await alice.$$eval("#chat-log b", (n) => n.length), 0, "text is never parsed as HTML");
  // Own messages are marked as such.
  assert.deepEqual(await alice.$$eval("#chat-log .chat-msg", (ns) => ns.map((n) => n.classList.contains("mine"))), [true, false]);

  // Both see both in the member list.
  await until(async () => (await members(alice)).join() === "alice,bob", 5000, "alice's member list");
  await until(async () => (await members(bob)).join() === "alice,bob", 5000, "bob's member list");
  await until(async () => (await alice.textContent("#chat-log")).includes("bob joined"), 5000, "the join line");

  await screenshot(alice, "chat-alice-desktop");
  await screenshot(bob, "chat-bob-phone");

  // Bob leaves: alice's list drops him and says so.
  await bob.click("#chat-leave");
  await until(async () => (await members(alice)).join() === "alice", 5000, "bob to leave alice's list");
  await until(async () => (await alice.textContent("#chat-log")).includes("bob left"), 5000, "the leave line");
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context().close();
  await bob.context().close();
});

test("the member list comes from the server's presence", async () => {
  const page = await newPage(browser);
  await join(page, server.http, "carol", "presence-room");
  // A client that never announces itself in the chat is still a member: presence knows it.
  const other = await connect(server.ws, { WebSocket });
  try {
    await other.subscribe("chat/presence-room", () => {});
    const guest = `guest-${other.session.slice(-4)}`;
    await until(async () => (await members(page)).includes(guest), 5000, "the silent member");
    assert.equal(await page.isHidden("#chat-members-note"), true, "no 'presence unavailable' note");
    other.close(); // unsubscribes: a leave
    await until(async () => !(await members(page)).includes(guest), 5000, "the leave");
    await screenshot(page, "chat-presence");
  } finally {
    other.close();
    await page.context().close();
  }
});

test("joining a room shows its history", async () => {
  const hist = await startServer({ config: '[[topics]]\npattern = "chat/**"\nhistory = 100\n' });
  try {
    const first = await newPage(browser);
    await join(first, hist.http, "dave", "archive");
    for (const t of ["one", "two", "three"]) await send(first, t);
    await until(async () => (await texts(first)).length === 3);
    const late = await newPage(browser);
    await join(late, hist.http, "erin", "archive");
    await until(async () => (await texts(late)).length === 3, 5000, "the history");
    assert.deepEqual(await texts(late), ["dave: one", "dave: two", "dave: three"]);
    assert.equal(await late.$$eval("#chat-log .chat-msg.earlier", (n) => n.length), 3);
    await screenshot(late, "chat-history");
    await first.context().close();
    await late.context().close();
  } finally {
    await hist.stop();
  }
});

test("with [auth], a page without a token is refused and one with a token in its address chats", async () => {
  const { createHmac } = await import("node:crypto");
  const secret = "browser-secret";
  const auth = await startServer({ config: `[auth]\nhs256_secret = "${secret}"\n` });
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "frank", exp: Math.floor(Date.now() / 1000) + 3600, publish: ["chat/**"], subscribe: ["chat/**", "$presence/chat/**"], info: { name: "Frank" } })}`;
  const jwt = `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
  const page = await newPage(browser);
  try {
    // Without a token nothing is allowed: joining fails with a clear message.
    page.on("dialog", (d) => d.dismiss());
    await page.goto(`${auth.http}/#chat`);
    await page.fill("#chat-nick", "frank");
    await page.fill("#chat-room", "secure");
    await page.click("#chat-join-btn");
    await until(async () => /forbidden/.test(await page.textContent("#chat-log")), 5000, "the forbidden join");

    const withToken = await newPage(browser);
    await join(withToken, `${auth.http}/?token=${jwt}`, "frank", "secure");
    await send(withToken, "signed in");
    await until(async () => (await texts(withToken)).includes("frank: signed in"), 5000, "the message");
    assert.deepEqual(await members(withToken), ["frank"]);
    await screenshot(withToken, "chat-with-token");
    await withToken.context().close();
  } finally {
    await page.context().close();
    await auth.stop();
  }
});

/**
 * A chat server with persisted history (`history` messages per room) that is killed and started
 * again on the same port while the page cannot reach it (a proxy refuses it), and what others
 * post meanwhile; `during` posts them. Returns the page's log afterwards.
 */
async function restartDuringChat({ history, room, during }) {
  const config = `[[topics]]\npattern = "chat/**"\nhistory = ${history}\npersist = true\n`;
  const dataDir = mkdtempSync(path.join(tmpdir(), "herald-chat-"));
  let srv = await startServer({ config, dataDir });
  const proxy = await startProxy(srv.port);
  const page = await newPage(browser);
  try {
    await join(page, proxy.http, "gina", room);
    await send(page, "before");
    await httpPublish(srv.http, `chat/${room}`, { nick: "hal", text: "one" });
    await until(async () => (await texts(page)).length === 2, 5000, "the first two");

    proxy.refuse = true;
    await srv.kill();
    srv = await startServer({ config, dataDir, listen: `127.0.0.1:${srv.port}` });
    await page.waitForSelector('#conn[data-state="reconnecting"]');
    await during(srv);
    proxy.refuse = false;
    await page.waitForSelector('#conn[data-state="open"]', { timeout: 10000 });
    return { page, srv };
  } catch (e) {
    await page.context().close();
    throw e;
  } finally {
    // The caller's checks run against `srv`; stop it afterwards.
    cleanupLater.push(async () => {
      await proxy.close();
      await srv.stop();
      rmSync(dataDir, { recursive: true, force: true });
    });
  }
}
const cleanupLater = [];
after(async () => {
  for (const fn of cleanupLater) await fn();
});

test("after a server restart the room catches up from its history, nothing twice", async () => {
  const { page, srv } = await restartDuringChat({
    history: 100,
    room: "restart",
    during: async (srv) => {
      for (const t of ["two", "three"]) await httpPublish(srv.http, "chat/restart", { nick: "hal", text: t });
    },
  });
  const want = ["gina: before", "hal: one", "hal: two", "hal: three"];
  await until(async () => (await texts(page)).length === 4, 8000, "the two sent while away");
  await until(async () => (await page.textContent("#chat-log")).includes("Reconnected: nothing was missed."), 5000, "the recovered line");
  await httpPublish(srv.http, "chat/restart", { nick: "hal", text: "four" });
  await until(async () => (await texts(page)).length === 5, 5000, "a live message after");
  await sleep(300);
  assert.deepEqual(await texts(page), [...want, "hal: four"]);
  const log = await page.textContent("#chat-log");
  assert.ok(!log.includes("could not be recovered") && !log.includes("may have been missed"), log);
  await screenshot(page, "chat-after-restart");
  assert.deepEqual(page.errors.filter((e) => !/WebSocket connection to .* failed/.test(e.message)), []);
  await page.context().close();
});

test("what the room's history no longer holds after a restart is a line, then the rest", async () => {
  const { page } = await restartDuringChat({
    history: 3,
    room: "shorthist",
    during: async (srv) => {
      for (let i = 3; i <= 8; i += 1) await httpPublish(srv.http, "chat/shorthist", { nick: "hal", text: `m${i}` });
    },
  });
  // Offsets 3..8 were posted while away; history keeps 6..8: 3..5 are a gap.
  await until(async () => (await texts(page)).length === 5, 8000, "the three still held");
  await until(async () => (await page.textContent("#chat-log")).includes("3 messages were sent while you were away and could not be recovered"), 5000, "the gap line");
  await sleep(300);
  assert.deepEqual(await texts(page), ["gina: before", "hal: one", "hal: m6", "hal: m7", "hal: m8"]);
  // The gap line sits before the messages that follow it.
  const order = await page.$$eval("#chat-log > *", (ns) => ns.map((n) => (n.classList.contains("chat-msg") ? n.querySelector(".text").textContent : n.textContent.includes("could not be recovered") ? "GAP" : null)).filter(Boolean));
  assert.deepEqual(order, ["before", "one", "GAP", "m6", "m7", "m8"]);
  assert.ok((await page.textContent("#chat-log")).includes("some messages may have been missed"));
  await screenshot(page, "chat-gap-after-restart");
  await page.context().close();
});
