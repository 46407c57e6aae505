// Test support (no tests here): starts the real herald binary on an ephemeral port, cuts
// connections through a TCP proxy, and waits for conditions. Shared by web/test/*.test.js and
// tests/browser/*.test.js.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The server binary: $HERALD_BIN, else target/debug/herald (built by `cargo build`). */
export function heraldBin() {
  const bin = process.env.HERALD_BIN || path.join(ROOT, "target/debug/herald");
  if (!existsSync(bin)) throw new Error(`herald binary not found at ${bin}: run \`cargo build\` or set HERALD_BIN`);
  return bin;
}

/**
 * Starts `herald --listen 127.0.0.1:0` (with `config`, TOML text, when given; `dataDir` for
 * `--data-dir`; `listen` e.g. to restart on the same port) and resolves once it logged
 * `listening on http://ADDR`. Returns {addr, http, ws, port, stop(), kill(), output()}.
 */
export async function startServer({ config, listen = "127.0.0.1:0", dataDir } = {}) {
  const args = ["--listen", listen];
  if (dataDir) args.push("--data-dir", dataDir);
  if (config) {
    const dir = mkdtempSync(path.join(tmpdir(), "herald-test-"));
    const file = path.join(dir, "herald.toml");
    writeFileSync(file, config);
    args.push("--config", file);
  }
  const child = spawn(heraldBin(), args, {
    env: { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG || "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`herald did not say where it listens within 20 s:\n${log}`));
    }, 20000);
    const onData = (chunk) => {
      log += chunk.toString();
      // Colour codes may surround the words; the address itself is plain.
      const m = log.replace(/\x1b\[[0-9;]*m/g, "").match(/listening on http:\/\/([^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`herald exited (${code}) before listening:\n${log}`));
    });
  });
  const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  let exited = false;
  const exit = new Promise((resolve) => child.on("exit", () => { exited = true; resolve(); }));
  return {
    addr,
    port,
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    output: () => log,
    async stop() {
      if (exited) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(t);
    },
    /** SIGKILL: no `bye`, no flush; resolves once the process is gone. */
    async kill() {
      if (exited) return;
      child.kill("SIGKILL");
      await exit;
    },
  };
}

/**
 * A TCP proxy to `port`: clients connect to `proxy.port`; `cut()` destroys every connection
 * at once (as a network failure or a server dropping the socket would); `target` can be
 * changed to send later connections elsewhere.
 */
export async function startProxy(port) {
  const live = new Set();
  const proxy = {
    target: port,
    connections: 0,
    /** When true, new connections are dropped at once (the server looks down). */
    refuse: false,
    /** Stops forwarding on the current connections, both ways, without closing them. */
    freeze() {
      for (const s of live) {
        s.unpipe();
        s.pause();
      }
    },
    /**
     * Stops forwarding what the server sends on the current connections (the page's side still
     * reaches the server): to the server, the client has stopped reading. {@link flow} undoes it.
     */
    stallDownstream() {
      for (const s of live) {
        if (!s.peer) continue;
        s.unpipe(s.peer);
        s.pause();
      }
    },
    /** Forwards again what {@link stallDownstream} held back (nothing is lost: it was queued). */
    flow() {
      for (const s of live) if (s.peer && !s.destroyed) s.pipe(s.peer);
    },
    cut() {
      const n = live.size;
      for (const s of live) s.destroy();
      live.clear();
      return n;
    },
  };
  const server = net.createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    proxy.connections += 1;
    const upstream = net.connect(proxy.target, "127.0.0.1");
    upstream.peer = client; // server → page, for stallDownstream()
    live.add(client);
    live.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.port = server.address().port;
  proxy.ws = `ws://127.0.0.1:${proxy.port}/ws`;
  proxy.http = `http://127.0.0.1:${proxy.port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      proxy.cut();
      server.close(() => resolve());
    });
  return proxy;
}

/** Resolves when `fn()` returns something truthy (polling every 20 ms); rejects after `ms`. */
export async function until(fn, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** POST /v1/publish; resolves with the JSON answer (throws on an HTTP error). */
export async function httpPublish(base, topic, data, extra = {}) {
  const res = await fetch(`${base}/v1/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, data, ...extra }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`publish ${topic}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
