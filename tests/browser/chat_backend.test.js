// The chat with an application backend, in headless Chromium: the example backend
// (examples/chat_backend.rs) and Herald with examples/chat_backend.toml pointed at it. A page
// logs in at the backend (a cookie), connects to Herald with it, and its messages come back
// moderated by the backend; a page without the cookie is refused; the backend logs the signed
// webhooks it gets.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { launch, newPage, screenshot, startServer, until } from "./harness.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SECRET = "chat-example-secret"; // the example's default, and the toml's

/** The example's binary: $CHAT_BACKEND_BIN, else where `cargo test`/`cargo build --example` puts it. */
function backendBin() {
  const bin = process.env.CHAT_BACKEND_BIN || path.join(ROOT, "target/debug/examples/chat_backend");
  if (!existsSync(bin)) throw new Error(`chat_backend not found at ${bin}: run \`cargo build --example chat_backend\` or set CHAT_BACKEND_BIN`);
  return bin;
}

/** Starts the backend on a free port, allowing `origin`; resolves once it listens. */
async function startBackend(origin) {
  const child = spawn(backendBin(), ["--listen", "127.0.0.1:0", "--origin", origin], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stderr.on("data", (c) => (err += c));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat_backend did not start:\n${out}${err}`)), 10000);
    child.stdout.on("data", (c) => {
      out += c;
      const m = out.match(/listening on http:\/\/(\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`chat_backend exited (${code}):\n${out}${err}`)));
  });
  const exit = new Promise((resolve) => child.on("exit", resolve));
  return {
    addr,
    http: `http://${addr}`,
    lines: () => out.split("\n"),
    stderr: () => err,
    async stop() {
      child.kill("SIGTERM");
      await exit;
    },
  };
}

/** A port free now (Herald's: the backend must know the page's origin before Herald starts). */
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let browser;
let backend;
let herald;
before(async () => {
  const port = await freePort();
  backend = await startBackend(`http://127.0.0.1:${port}`);
  // The example's config as a user runs it, pointed at this backend (`--listen` wins over
  // the file's `listen`).
  const config = readFileSync(path.join(ROOT, "examples/chat_backend.toml"), "utf8").replaceAll("127.0.0.1:9000", backend.addr);
  [herald, browser] = await Promise.all([startServer({ config, listen: `127.0.0.1:${port}` }), launch()]);
});
after(async () => {
  await browser?.close();
  await herald?.stop();
  await backend?.stop();
});

const texts = (page) => page.$$eval("#chat-log .chat-msg", (ns) => ns.map((n) => `${n.querySelector(".who").textContent}: ${n.querySelector(".text").textContent}`));
const logText = (page) => page.textContent("#chat-log");

async function joinRoom(page, room) {
  await page.fill("#chat-room", room);
  await page.click("#chat-join-btn");
}

test("logged in at the backend, a page chats and its messages come back moderated, from its user", async () => {
  const page = await newPage(browser);
  page.on("dialog", (d) => d.dismiss()); // the alert of a refused join
  await page.goto(`${herald.http}/?backend=${backend.http}#chat`);
  await page.waitForSelector("#chat-login:not([hidden])");
  assert.equal(await page.isHidden("#chat-join"), true, "no joining before logging in");
  assert.equal(await page.textContent("#chat-backend-url"), backend.http);

  await page.fill("#chat-login-name", "ann");
  await page.click("#chat-login-btn");
  await page.waitForSelector("#chat-join:not([hidden])");
  assert.equal(await page.textContent("#chat-account-name"), "ann");
  assert.equal(await page.isHidden("#chat-nick-field"), true, "the name is the login's");
  await joinRoom(page, "general");
  await page.waitForSelector("#chat-room-view:not([hidden])");
  await until(async () => (await logText(page)).includes("You joined #general as ann."), 5000, "the join");

  // The backend rewrites the message: bad words starred, `from` set (the page sent no `from`).
  await page.fill("#chat-text", "what the Heck is this darn thing");
  await page.click("#chat-send");
  await until(async () => (await texts(page)).length === 1, 5000, "the message back");
  assert.deepEqual(await texts(page), ["ann: what the **** is this **** thing"]);
  assert.equal(await page.$eval("#chat-log .chat-msg", (n) => n.classList.contains("mine")), true);
  // The member list has ann from the backend's connect answer (`info.name`).
  await until(async () => (await page.$$eval("#chat-members li", (ns) => ns.map((n) => n.firstElementChild.textContent))).join() === "ann", 5000, "the member list");
  // The backend refuses what it will not carry, with its own message.
  await page.fill("#chat-text", "x".repeat(501));
  await page.click("#chat-send");
  await until(async () => (await logText(page)).includes("Not sent: too_large: at most 500 characters"), 5000, "the refusal");
  assert.equal((await texts(page)).length, 1);
  assert.equal(await page.textContent("#conn"), "connected");
  const shot = await screenshot(page, "chat-backend-moderated");
  assert.ok(existsSync(shot));

  // The admin room is the subscribe proxy's to refuse.
  await page.click("#chat-leave");
  await joinRoom(page, "admin");
  await until(async () => (await logText(page)).includes("chat/admin is for admins only"), 5000, "the admin room refused");

  // The login outlives a reload (the backend's /me reads the HttpOnly cookie); logout ends it.
  await page.reload();
  await page.waitForSelector("#chat-join:not([hidden])");
  assert.equal(await page.textContent("#chat-account-name"), "ann");
  await joinRoom(page, "general");
  await until(async () => (await texts(page)).length === 1, 5000, "the room's history, moderated");
  await page.click("#chat-room-logout");
  await page.waitForSelector("#chat-login:not([hidden])");
  assert.equal(await page.isHidden("#chat-room-view"), true);
  const cookies = await page.context().cookies(herald.http);
  assert.deepEqual(cookies.filter((c) => c.name === "chat_user"), [], "the cookie is gone");
  await page.reload();
  await page.waitForSelector("#chat-login:not([hidden])");
  assert.deepEqual(page.errors, []);
  await page.context().close();

  // The backend was told, with signed webhooks (it prints only those whose signature holds).
  await until(() => backend.lines().some((l) => l.startsWith("event presence.join ") && l.includes('"user":"ann"')), 5000, "presence.join for ann");
  await until(() => backend.lines().some((l) => l.startsWith("event session.opened ")), 5000, "session.opened");
  assert.ok(backend.lines().some((l) => /^event session\.opened .*"user":"ann"/.test(l)), backend.lines().join("\n"));
});

test("a page without the login cookie is refused with the backend's message", async () => {
  // Without `?backend` the chat connects at once: Herald's connect proxy finds no cookie.
  const page = await newPage(browser);
  const alerts = [];
  page.on("dialog", (d) => {
    alerts.push(d.message());
    d.dismiss();
  });
  await page.goto(`${herald.http}/#chat`);
  await page.fill("#chat-nick", "mallory");
  await joinRoom(page, "general");
  await until(() => alerts.length === 1, 5000, "the refusal");
  assert.match(alerts[0], /^Could not join: .*\(4001 log in first\)/);
  assert.match(await logText(page), /Could not join: .*4001 log in first/);
  assert.equal(await page.isHidden("#chat-room-view"), true);
  // With the backend known but no login, the page offers the login form, not the rooms.
  await page.goto(`${herald.http}/?backend=${backend.http}#chat`);
  await page.waitForSelector("#chat-login:not([hidden])");
  assert.equal(await page.isHidden("#chat-join"), true);
  assert.equal(await page.isHidden("#chat-login-error"), true, "not logged in is no error");
  await screenshot(page, "chat-backend-login");
  await page.context().close();
});

test("the backend refuses webhooks that are not signed with the secret", async () => {
  const body = JSON.stringify([{ id: "t-1", type: "session.opened", ts: Date.now(), data: { session: "s_forged", user: "eve" } }]);
  const post = (sig) => fetch(`${backend.http}/herald/events`, { method: "POST", headers: { "content-type": "application/json", ...(sig ? { "herald-signature": sig } : {}) }, body });
  assert.equal((await post(null)).status, 401);
  assert.equal((await post(`sha256=${createHmac("sha256", "wrong").update(body).digest("hex")}`)).status, 401);
  assert.ok(!backend.lines().some((l) => l.includes("s_forged")), "a refused batch is not logged");
  assert.equal((await post(`sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`)).status, 204);
  await until(() => backend.lines().some((l) => l.startsWith("event session.opened ") && l.includes("s_forged")), 2000, "the signed batch logged");
});
