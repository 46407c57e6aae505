// The Dashboard's Sessions card, against a server with [auth]: with the admin key typed in the
// page, it lists a user's sessions and their subscriptions, removes one subscription (the
// client is told so) and disconnects all of the user's sessions (their sockets close with
// 4003), leaving other users alone. Without the key, or with a wrong one, it says why.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { launch, newPage, screenshot, sleep, startServer, until } from "./harness.js";

const SECRET = "admin-test-secret";
const ADMIN = "adm";
const CONFIG = `[auth]\nhs256_secret = "${SECRET}"\nadmin_keys = ["${ADMIN}"]\n`;

let server;
let browser;
before(async () => {
  [server, browser] = await Promise.all([startServer({ config: CONFIG }), launch()]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** An HS256 JWT for `user`, allowed to subscribe to everything the test uses. */
function jwt(user) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const claims = { sub: user, exp: Math.floor(Date.now() / 1000) + 3600, subscribe: ["news/**", "chat/**", "jobs/**"] };
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/**
 * A raw protocol client of `user` with the subscriptions `subs` ({pattern, group?}), so that
 * the test sees exactly the frames the server pushes. Resolves once every `sub` is answered.
 */
async function client(user, subs) {
  const ws = new WebSocket(`${server.ws}?token=${jwt(user)}`);
  const c = { ws, user, frames: [], closed: null, session: null };
  ws.on("message", (m) => c.frames.push(JSON.parse(m.toString())));
  c.gone = new Promise((resolve) =>
    ws.on("close", (code, reason) => {
      c.closed = { code, reason: reason.toString() };
      resolve(c.closed);
    }),
  );
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  ws.send(JSON.stringify({ op: "hello" }));
  c.session = (await until(() => c.frames.find((f) => f.op === "welcome"), 5000, `${user}'s welcome`)).session;
  subs.forEach((s, i) => ws.send(JSON.stringify({ op: "sub", id: i + 1, ...s })));
  await until(() => c.frames.filter((f) => f.op === "ok").length === subs.length, 5000, `${user}'s subscriptions`);
  return c;
}

/** What the table shows: {session: {connected, user, subs: ["pattern" or "pattern@group", sorted]}}. */
const table = (page) =>
  page.$$eval("#ses-rows tr[data-session]", (trs) =>
    Object.fromEntries(
      trs.map((tr) => [
        tr.dataset.session,
        {
          connected: tr.dataset.connected === "true",
          user: tr.children[1].textContent,
          subs: [...tr.querySelectorAll(".chip")].map((c) => (c.dataset.group ? `${c.dataset.pattern}@${c.dataset.group}` : c.dataset.pattern)).sort(),
        },
      ]),
    ),
  );
const result = (page) => page.textContent("#ses-result");

/** Types `key` in the Dashboard's admin key field (folded away until its summary is clicked). */
async function enterKey(page, key) {
  if (!(await page.$eval("#dash-key", (n) => n.closest("details").open))) await page.click("#view-dashboard details > summary");
  await page.fill("#dash-key", key);
}

async function find(page, user) {
  await page.fill("#ses-user", user);
  await page.click("#ses-find button[type=submit]");
}

/** Asks the server itself (not the page) for the sessions of `user`. */
async function sessionsOf(user) {
  const res = await fetch(`${server.http}/v1/sessions?user=${user}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(res.status, 200);
  return res.json();
}

/** The page's errors, but for the failed requests this test makes on purpose (401s). */
const unexpected = (page) => page.errors.filter((e) => !/Failed to load resource: the server responded with a status of 401/.test(e.message));

test("an admin finds alice's sessions, unsubscribes one, disconnects her; bob is left alone", async () => {
  const a1 = await client("alice", [{ pattern: "news/**" }, { pattern: "chat/general" }]);
  const a2 = await client("alice", [{ pattern: "chat/*" }, { pattern: "jobs/*", group: "workers" }]);
  const bob = await client("bob", [{ pattern: "chat/*" }]);

  const page = await newPage(browser);
  const requests = [];
  page.on("request", (r) => requests.push({ url: r.url(), auth: r.headers().authorization }));
  await page.goto(`${server.http}/#dashboard`);

  // No key: the server's 401, said in the page, and the key field is shown.
  await find(page, "alice");
  await until(async () => /HTTP 401/.test(await result(page)), 5000, "the 401");
  assert.match(await result(page), /^cannot list the sessions: HTTP 401 unauthorized: missing credentials.* — enter the admin key$/);
  assert.equal(await page.$eval("#ses-result", (n) => n.className), "result err");
  assert.ok(await page.$eval("#dash-key", (n) => n.closest("details").open), "the key field is unfolded");

  // A wrong key: refused too, with what the server said.
  await enterKey(page, "not-the-key");
  await find(page, "alice");
  await until(async () => /unknown API key/.test(await result(page)), 5000, "the refused key");
  assert.match(await result(page), /^cannot list the sessions: HTTP 401 unauthorized: unknown API key.* — check the admin key$/);
  assert.equal(await page.$$eval("#ses-rows tr[data-session]", (n) => n.length), 0);
  await page.locator("#ses").scrollIntoViewIfNeeded();
  await screenshot(page, "admin-sessions-refused");

  // The right key: alice's two sessions, connected, with their subscriptions.
  await enterKey(page, ADMIN);
  await find(page, "alice");
  await until(async () => Object.keys(await table(page)).length === 2, 5000, "alice's two sessions");
  assert.equal(await result(page), "");
  assert.deepEqual(await table(page), {
    [a1.session]: { connected: true, user: "alice", subs: ["chat/general", "news/**"] },
    [a2.session]: { connected: true, user: "alice", subs: ["chat/*", "jobs/*@workers"] },
  });
  assert.match(await page.textContent("#ses-summary"), /^2 sessions of alice · listed /);
  assert.equal(await page.textContent("#ses-kick-user"), "Disconnect all of alice");
  // The key went in a header, never into an address.
  const listed = requests.filter((r) => r.url.includes("/v1/sessions"));
  assert.equal(listed.at(-1).auth, `Bearer ${ADMIN}`);
  assert.equal(listed.at(-1).url, `${server.http}/v1/sessions?user=alice`);
  assert.deepEqual(requests.filter((r) => r.url.includes(ADMIN) || r.url.includes("not-the-key")), []);
  await page.locator("#ses").scrollIntoViewIfNeeded();
  await screenshot(page, "admin-sessions");

  // Unsubscribe a1 from news/**: its client is told, the list is fetched again without it.
  await page.click(`#ses-rows tr[data-session="${a1.session}"] .chip[data-pattern="news/**"] button`);
  const note = await until(() => a1.frames.find((f) => f.op === "unsubscribed"), 5000, "the unsubscribed frame");
  assert.deepEqual(note, { op: "unsubscribed", pattern: "news/**", reason: "server" });
  await until(async () => /^unsubscribed /.test(await result(page)), 5000, "the unsubscribe result");
  assert.equal(await result(page), `unsubscribed ${a1.session} from news/**`);
  assert.deepEqual((await table(page))[a1.session].subs, ["chat/general"]);

  // A queue group's subscription is removed with its group.
  await page.click(`#ses-rows tr[data-session="${a2.session}"] .chip[data-pattern="jobs/*"] button`);
  const groupNote = await until(() => a2.frames.find((f) => f.op === "unsubscribed"), 5000, "the group's unsubscribed frame");
  assert.deepEqual(groupNote, { op: "unsubscribed", pattern: "jobs/*", group: "workers", reason: "server" });
  await until(async () => (await table(page))[a2.session]?.subs.length === 1, 5000, "the refreshed row");
  assert.deepEqual((await table(page))[a2.session].subs, ["chat/*"]);
  assert.ok(a1.frames.filter((f) => f.op === "unsubscribed").length === 1, "a1 was told once");

  // Disconnect all of alice: both sockets close with 4003, and the list is empty.
  await page.click("#ses-kick-user");
  const [c1, c2] = await Promise.all([a1.gone, a2.gone]);
  assert.equal(c1.code, 4003);
  assert.equal(c2.code, 4003);
  await until(async () => /^disconnected user alice: 2 sessions$/.test(await result(page)), 5000, "the disconnect result");
  assert.equal(await page.$$eval("#ses-rows tr[data-session]", (n) => n.length), 0);
  assert.equal(await page.textContent("#ses-rows"), "alice has no sessions on this server.");
  assert.match(await page.textContent("#ses-summary"), /^0 sessions of alice/);
  assert.ok(await page.$eval("#ses-kick-user", (n) => n.hidden), "nothing left to disconnect");
  assert.deepEqual(await sessionsOf("alice"), [], "not resumable: the sessions are gone");

  // Bob is untouched: still open, still subscribed, told nothing.
  await sleep(200);
  assert.equal(bob.ws.readyState, WebSocket.OPEN);
  assert.equal(bob.closed, null);
  assert.deepEqual(bob.frames.filter((f) => f.op === "unsubscribed"), []);
  assert.deepEqual(await sessionsOf("bob"), [{ session: bob.session, user: "bob", connected: true, subscriptions: [{ pattern: "chat/*" }] }]);
  await find(page, "bob");
  await until(async () => Object.keys(await table(page)).length === 1, 5000, "bob's session");
  assert.deepEqual(await table(page), { [bob.session]: { connected: true, user: "bob", subs: ["chat/*"] } });

  assert.deepEqual(unexpected(page), []);
  bob.ws.close();
  await page.context().close();
});

test("one session disconnected as resumable stays listed, detached; the user's other one stays connected", async () => {
  const c1 = await client("carol", [{ pattern: "chat/*" }]);
  const c2 = await client("carol", [{ pattern: "news/**" }]);
  const page = await newPage(browser);
  await page.goto(`${server.http}/#dashboard`);
  await enterKey(page, ADMIN);
  await find(page, "carol");
  await until(async () => Object.keys(await table(page)).length === 2, 5000, "carol's two sessions");

  await page.check("#ses-resumable");
  await page.click(`#ses-rows tr[data-session="${c1.session}"] td.actions button`);
  assert.equal((await c1.gone).code, 4003);
  await until(async () => /^disconnected session /.test(await result(page)), 5000, "the disconnect result");
  assert.equal(await result(page), `disconnected session ${c1.session}: 1 session (resumable)`);
  // The list was fetched again after the disconnect: c1 is detached (kept for a resume).
  await until(async () => (await table(page))[c1.session]?.connected === false, 5000, "c1 detached");
  assert.deepEqual(await table(page), {
    [c1.session]: { connected: false, user: "carol", subs: ["chat/*"] },
    [c2.session]: { connected: true, user: "carol", subs: ["news/**"] },
  });
  assert.equal(await page.$eval(`#ses-rows tr[data-session="${c1.session}"] .state`, (n) => n.textContent), "detached");
  assert.equal(c2.closed, null);
  await page.locator("#ses").scrollIntoViewIfNeeded();
  await screenshot(page, "admin-sessions-detached");

  // On a phone the card fits (the table scrolls inside its box, not the page).
  const phone = await newPage(browser, { phone: true });
  await phone.goto(`${server.http}/#dashboard`);
  await enterKey(phone, ADMIN);
  await find(phone, "carol");
  await until(async () => Object.keys(await table(phone)).length === 2, 5000, "carol's sessions on a phone");
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
  await phone.locator("#ses").scrollIntoViewIfNeeded();
  await screenshot(phone, "admin-sessions-phone");

  assert.deepEqual([...unexpected(page), ...unexpected(phone)], []);
  c2.ws.close();
  await page.context().close();
  await phone.context().close();
});
