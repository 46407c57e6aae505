// permessage-deflate (PROTOCOL.md §2, "Compression") with Node's `ws`: the client offers it
// (`perMessageDeflate: true`, what `ws` does by default), the server accepts, and large and
// small messages go both ways intact, compressed where they are large.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";

import { startServer, until } from "./server.js";

/** Application-like JSON: a page of orders, ~`n` × 110 bytes. */
function orders(n) {
  const status = ["paid", "pending", "shipped"];
  return {
    page: 1,
    orders: Array.from({ length: n }, (_, i) => ({
      id: `ord_${((i * 0x9e3779b9) >>> 0).toString(16).padStart(8, "0")}`,
      customer: `cus_${100000 + i * 37}`,
      status: status[i % 3],
      total: (1700 + ((i * 1309) % 9000)) / 100,
      currency: "EUR",
    })),
  };
}

/** A `ws` client that collects the server's frames, parsed. */
async function open(url, perMessageDeflate) {
  const ws = new WebSocket(url, { perMessageDeflate });
  let answered; // the response's Sec-WebSocket-Extensions
  ws.once("upgrade", (res) => (answered = res.headers["sec-websocket-extensions"]));
  const frames = [];
  ws.on("message", (data, isBinary) => {
    assert.equal(isBinary, false);
    frames.push(JSON.parse(data.toString()));
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const next = async (pred, what) => {
    await until(() => frames.some(pred), 10000, what);
    return frames.splice(frames.findIndex(pred), 1)[0];
  };
  const send = (v) => ws.send(JSON.stringify(v));
  const ask = async (v) => {
    send(v);
    return next((f) => f.id === v.id && (f.op === "ok" || f.op === "error"), `answer to ${v.id}`);
  };
  send({ op: "hello" });
  await next((f) => f.op === "welcome", "welcome");
  return { ws, answered, frames, next, send, ask, bytesRead: () => ws._socket.bytesRead };
}

describe("permessage-deflate with Node's ws", () => {
  let server;
  const clients = [];
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    for (const c of clients) c.ws.terminate();
    await server.stop();
  });
  const client = async (deflate) => {
    const c = await open(server.ws, deflate);
    clients.push(c);
    return c;
  };

  test("the server accepts ws's offer and answers server_no_context_takeover", async () => {
    const c = await client(true);
    assert.equal(c.ws.extensions, "permessage-deflate");
    assert.equal(c.answered, "permessage-deflate; server_no_context_takeover");
    const n = await client({ clientNoContextTakeover: true });
    assert.equal(n.ws.extensions, "permessage-deflate");
    assert.equal(
      n.answered,
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    const plain = await client(false);
    assert.equal(plain.ws.extensions, "");
    assert.equal(plain.answered, undefined);
  });

  test("large and small messages arrive intact, both ways, compressed when large", async () => {
    const subs = [await client(true), await client(true), await client(false)];
    for (const s of subs) {
      const ok = await s.ask({ op: "sub", id: "s", pattern: "shop/**" });
      assert.equal(ok.op, "ok");
    }
    // ws compresses what it sends from 1 KiB on (its default threshold): the big ones.
    const pubs = [await client(true), await client({ clientNoContextTakeover: true })];
    const big = orders(200); // ~22 KB
    const small = { text: "hi" };
    const before = subs.map((s) => s.bytesRead());
    let seq = 0;
    for (const p of pubs) {
      for (const data of [big, small, big, orders(500)]) {
        seq += 1;
        const ok = await p.ask({ op: "pub", id: `p${seq}`, topic: "shop/orders", data });
        assert.equal(ok.op, "ok", JSON.stringify(ok));
        for (const s of subs) {
          const m = await s.next((f) => f.op === "msg" && f.seq === seq, `msg ${seq}`);
          assert.deepEqual(m.data, data);
          assert.equal(m.topic, "shop/orders");
        }
      }
    }
    const read = subs.map((s, i) => s.bytesRead() - before[i]);
    // The two deflate subscribers read the same bytes, a fraction of the plain one's.
    assert.equal(read[0], read[1]);
    assert.ok(read[0] * 3 < read[2], `compressed ${read[0]} vs plain ${read[2]}`);
  });
});
