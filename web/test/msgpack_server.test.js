// herald.js with `encoding: "msgpack"` against the real server (PROTOCOL.md §2, "MessagePack"):
// binary data between MessagePack and JSON clients both ways, request/reply, history, presence,
// resume and server-made subscriptions over MessagePack, HTTP publishes of MessagePack and raw
// bytes (§8), and a raw `ws` client on herald.v1.msgpack whose malformed frames get a
// MessagePack `error {code: "bad_frame"}` while the connection stays usable.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import * as reference from "@msgpack/msgpack";
import { WebSocket, WebSocketServer } from "ws";

import { connect, toBase64, fromBase64 } from "../herald.js";
import { decode, encode } from "../msgpack.js";
import { httpPublish, startProxy, startServer, until } from "./server.js";

const CONFIG = `
[[topics]]
pattern = "**"
history = 100
`;

let server;
const buses = [];
async function bus(opts = {}) {
  const b = await connect(opts.url || server.ws, { WebSocket, minDelayMs: 20, maxDelayMs: 200, ...opts });
  buses.push(b);
  return b;
}
const msgpackBus = (opts = {}) => bus({ encoding: "msgpack", ...opts });

/** Subscribes and collects messages; `got.data()` lists their data. */
async function collect(b, pattern, opts) {
  const got = [];
  await b.subscribe(pattern, (m) => got.push(m), opts);
  got.data = () => got.map((m) => m.data);
  return got;
}

const bytes = (...xs) => new Uint8Array(xs);
const hex = (u) => Buffer.from(u).toString("hex");
const allBytes = () => Uint8Array.from({ length: 256 }, (_, i) => i);

before(async () => {
  server = await startServer({ config: CONFIG });
});
after(async () => {
  for (const b of buses) b.close();
  await server?.stop();
});

describe("msgpack connections", () => {
  test("connect with encoding msgpack: the server selects herald.v1.msgpack, frames are binary", async () => {
    const b = await msgpackBus();
    assert.equal(b.socket.protocol, "herald.v1.msgpack");
    assert.equal(b.socket.binaryType, "arraybuffer");
    assert.equal(b.encoding, "msgpack");
    assert.equal(typeof b.welcome.session, "string");
    assert.equal(b.welcome.resumed, false);
    assert.ok(Number.isInteger(b.welcome.heartbeat_ms) && b.welcome.heartbeat_ms > 0);
    assert.ok((await b.ping()) >= 0);
    const j = await bus();
    assert.equal(j.socket.protocol, "herald.v1");
    assert.equal(j.encoding, "json");
  });

  test("a msgpack publisher's binary and JSON-like data reach msgpack subscribers intact and JSON ones as $base64", async () => {
    const pub = await msgpackBus();
    const mp = await msgpackBus();
    const js = await bus();
    const gotMp = await collect(mp, "bin/**");
    const gotJs = await collect(js, "bin/**");
    const payloads = [
      allBytes(),
      bytes(),
      { file: bytes(0xde, 0xad, 0xbe, 0xef), name: "blob.bin", size: 4 },
      { nested: [bytes(1), [bytes(2, 3)], { deep: { b: bytes(251, 252, 253, 254, 255) } }] },
      { text: "héllo 😀 日本", n: 42, neg: -7, f: 1.5, tiny: 1e-300, big: 2 ** 40, t: true, f2: false, nil: null, list: [1, "two", 3.25, null] },
      "just a string",
      12345,
      -0.5,
      null,
      [],
      {},
    ];
    for (const p of payloads) await pub.publish("bin/t", p);
    await until(() => gotMp.length === payloads.length && gotJs.length === payloads.length, 5000, "every message on both");

    assert.deepEqual(gotMp.data(), payloads, "msgpack subscriber: what was sent, binary as Uint8Array");
    assert.ok(gotMp[0].data instanceof Uint8Array);
    assert.ok(gotMp[2].data.file instanceof Uint8Array);

    const b64 = (u) => ({ $base64: Buffer.from(u).toString("base64") });
    assert.deepEqual(gotJs.data(), [
      b64(allBytes()),
      { $base64: "" },
      { file: { $base64: "3q2+7w==" }, name: "blob.bin", size: 4 },
      { nested: [{ $base64: "AQ==" }, [{ $base64: "AgM=" }], { deep: { b: { $base64: "+/z9/v8=" } } }] },
      payloads[4],
      ...payloads.slice(5),
    ]);
    // The standard alphabet, padded: `+` and `/` appear, `=` pads.
    assert.match(gotJs[0].data.$base64, /\+/);
    assert.match(gotJs[0].data.$base64, /\//);
    assert.ok(gotJs[0].data.$base64.endsWith("w=="));

    // The envelope: seq, offset, ts are integers; epoch a string; the same on both.
    for (const [m, j] of gotMp.map((m, i) => [m, gotJs[i]])) {
      for (const k of ["seq", "offset", "ts"]) assert.ok(Number.isInteger(m[k]), `${k} = ${m[k]}`);
      assert.equal(typeof m.epoch, "string");
      assert.equal(m.offset, j.offset);
      assert.equal(m.epoch, j.epoch);
      assert.equal(m.ts, j.ts);
      assert.equal(m.topic, "bin/t");
    }
  });

  test("a JSON publisher's {$base64} reaches a msgpack subscriber as a Uint8Array; other objects stay objects", async () => {
    const pub = await bus();
    const mp = await msgpackBus();
    const got = await collect(mp, "b64/**");
    await pub.publish("b64/t", { $base64: "3q2+7w==" });
    await pub.publish("b64/t", { img: { $base64: "AAEC/w==" }, list: [{ $base64: "" }, { $base64: "aGk=" }] });
    // Not exactly one `$base64` key with valid base64: plain maps.
    const notBinary = [
      { $base64: "3q2+7w==", other: 1 },
      { $base64: "not base64!" },
      { $base64: 12 },
      { $Base64: "aGk=" },
      { $base64: "aGk" }, // unpadded
      { $base64: "-_8=" }, // the URL-safe alphabet
      { $base64: "AQID\n" },
      { $base64: "AB==" }, // bits set past the last byte: not canonical
    ];
    for (const v of notBinary) await pub.publish("b64/t", v);
    // A Uint8Array published over JSON goes as {$base64} (herald.js does that) and arrives as binary.
    await pub.publish("b64/t", { raw: bytes(9, 8, 7), buf: Buffer.from("node buffer"), ab: bytes(1, 2).buffer });
    await until(() => got.length === 3 + notBinary.length, 5000, "every message");
    assert.deepEqual(got[0].data, bytes(0xde, 0xad, 0xbe, 0xef));
    assert.deepEqual(got[1].data, { img: bytes(0, 1, 2, 255), list: [bytes(), bytes(0x68, 0x69)] });
    assert.deepEqual(got.slice(2, 2 + notBinary.length).map((m) => m.data), notBinary);
    assert.deepEqual(got.at(-1).data, { raw: bytes(9, 8, 7), buf: new Uint8Array(Buffer.from("node buffer")), ab: bytes(1, 2) });
  });

  test("decodeBinary: a JSON subscriber may take {$base64} as Uint8Array too", async () => {
    const pub = await msgpackBus();
    const plain = await bus();
    const decoding = await bus({ decodeBinary: true });
    const gotPlain = await collect(plain, "dec/**");
    const gotDec = await collect(decoding, "dec/**");
    await pub.publish("dec/t", { b: bytes(1, 2, 3), s: "x" });
    await pub.publish("dec/t", { $base64: "bad!", s: "kept" });
    await until(() => gotPlain.length === 2 && gotDec.length === 2);
    assert.deepEqual(gotPlain.data(), [{ b: { $base64: "AQID" }, s: "x" }, { $base64: "bad!", s: "kept" }]);
    assert.deepEqual(gotDec.data(), [{ b: bytes(1, 2, 3), s: "x" }, { $base64: "bad!", s: "kept" }]);
    const h = await decoding.history("dec/t");
    assert.deepEqual(h.messages[0].data, { b: bytes(1, 2, 3), s: "x" });
  });

  test("64-bit integers and floats keep their values through msgpack", async () => {
    const pub = await msgpackBus();
    const mp = await msgpackBus();
    const js = await bus();
    const gotMp = await collect(mp, "num/**");
    const gotJs = await collect(js, "num/**");
    const data = { safe: 2 ** 53 - 1, negSafe: -(2 ** 53 - 1), u32: 2 ** 32 + 5, i8: -100, f: 0.1, e: 6.02e23, tiny: 5e-324, half: 0.5 };
    await pub.publish("num/t", data);
    await until(() => gotMp.length === 1 && gotJs.length === 1);
    assert.deepEqual(gotMp[0].data, data);
    assert.deepEqual(gotJs[0].data, data);
    // Beyond 2^53: exact for MessagePack readers (BigInt); JSON has only its nearest double.
    const big = { max: 2n ** 64n - 1n, min: -(2n ** 63n), odd: 2n ** 53n + 1n };
    await pub.publish("num/t", big);
    await until(() => gotMp.length === 2 && gotJs.length === 2);
    assert.deepEqual(gotMp[1].data, big);
    assert.deepEqual(gotJs[1].data, { max: 2 ** 64, min: -(2 ** 63), odd: 2 ** 53 });
  });

  test("data that does not encode rejects the publish (nothing queued); NaN goes as null, as over JSON", async () => {
    const mp = await msgpackBus();
    const js = await bus();
    const got = await collect(mp, "enc/**");
    const loop = { a: 1 };
    loop.self = loop;
    await assert.rejects(mp.publish("enc/t", { n: 2n ** 64n }), /does not fit in 64 bits/);
    await assert.rejects(mp.publish("enc/t", loop), /circular/);
    await assert.rejects(mp.request("enc/t", loop), /circular/);
    await assert.rejects(js.publish("enc/t", { n: 1n }), TypeError); // JSON has no BigInt
    await assert.rejects(js.publish("enc/t", loop), TypeError);
    await mp.publish("enc/t", { nan: NaN, inf: Infinity, ok: 1 });
    await js.publish("enc/t", { nan: NaN, ok: 2 });
    await until(() => got.length === 2);
    assert.deepEqual(got.data(), [{ nan: null, inf: null, ok: 1 }, { nan: null, ok: 2 }]);
    assert.equal(mp._queue.length + js._queue.length, 0);
  });

  test("request/reply over msgpack, with binary both ways, and between encodings", async () => {
    const responder = await msgpackBus();
    await responder.subscribe("svc/rev", (m) => m.reply({ reversed: Uint8Array.from(m.data.b).reverse(), n: m.data.n + 1 }));
    const mp = await msgpackBus();
    assert.deepEqual(await mp.request("svc/rev", { b: bytes(1, 2, 3), n: 1 }), { reversed: bytes(3, 2, 1), n: 2 });
    // A JSON requester gets the binary reply as $base64.
    const js = await bus();
    assert.deepEqual(await js.request("svc/rev", { b: { $base64: "CQo=" }, n: 10 }), { reversed: { $base64: "Cgk=" }, n: 11 });
    await assert.rejects(mp.request("svc/nobody", 1), (e) => e.code === "no_responders");
  });

  test("history over msgpack returns binary as Uint8Array (and $base64 over JSON)", async () => {
    const mp = await msgpackBus();
    const acks = [];
    acks.push(await mp.publish("hist/b", { i: 1, b: bytes(1) }, { msgId: "m1" }));
    acks.push(await mp.publish("hist/b", bytes(2, 2)));
    acks.push(await mp.publish("hist/b", "three"));
    const h = await mp.history("hist/b");
    assert.equal(h.epoch, acks[0].epoch);
    assert.deepEqual(h.messages.map((m) => m.data), [{ i: 1, b: bytes(1) }, bytes(2, 2), "three"]);
    assert.deepEqual(h.messages.map((m) => m.offset), acks.map((a) => a.offset));
    assert.equal(h.messages[0].msg_id, "m1");
    for (const m of h.messages) assert.ok(Number.isInteger(m.ts) && Number.isInteger(m.offset));
    const since = await mp.history("hist/b", { since: acks[0].offset, limit: 1 });
    assert.deepEqual(since.messages.map((m) => m.data), [bytes(2, 2)]);
    const js = await bus();
    assert.deepEqual((await js.history("hist/b")).messages.map((m) => m.data), [{ i: 1, b: { $base64: "AQ==" } }, { $base64: "AgI=" }, "three"]);
    // Rewind replays stored binary to a new msgpack subscriber.
    const late = await msgpackBus();
    const got = await collect(late, "hist/b", { rewind: 2 });
    await until(() => got.length === 2);
    assert.deepEqual(got.data(), [bytes(2, 2), "three"]);
    assert.ok(got.every((m) => m.replay === true));
  });

  test("presence over msgpack: members and join/leave events", async () => {
    const a = await msgpackBus({ client: { name: "a", avatar: bytes(7, 7) } });
    await a.subscribe("room/mp", () => {});
    const watcher = await msgpackBus();
    const events = [];
    await watcher.subscribe("$presence/room/mp", (m) => events.push(m.data));
    const p = await watcher.presence("room/mp");
    assert.equal(p.count, 1);
    assert.deepEqual(p.clients.map((c) => c.session), [a.session]);
    const c = await bus();
    const off = await c.subscribe("room/mp", () => {});
    await until(() => events.length === 1);
    assert.equal(events[0].event, "join");
    assert.equal(events[0].session, c.session);
    assert.equal((await watcher.presence("room/mp")).count, 2);
    await off();
    await until(() => events.length === 2);
    assert.equal(events[1].event, "leave");
  });

  test("a msgpack session resumes after its socket is cut, without loss", async () => {
    const proxy = await startProxy(server.port);
    try {
      const mp = await msgpackBus({ url: proxy.ws });
      const got = await collect(mp, "res/**");
      const pub = await bus();
      await pub.publish("res/t", bytes(1));
      await until(() => got.length === 1);
      const session = mp.session;
      const resumed = new Promise((r) => mp.on("resumed", r));
      proxy.cut();
      for (let i = 2; i <= 5; i += 1) await pub.publish("res/t", bytes(i));
      await resumed;
      await until(() => got.length === 5, 5000, "the messages published while away");
      assert.equal(mp.session, session);
      assert.deepEqual(got.data(), [1, 2, 3, 4, 5].map((i) => bytes(i)));
      assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5]);
    } finally {
      await proxy.close();
    }
  });

  test("a subscription made over HTTP comes as `subscribed` on a msgpack connection", async () => {
    const mp = await msgpackBus();
    const subscribed = new Promise((r) => mp.on("subscribed", r));
    const messages = [];
    mp.on("message", (m) => messages.push(m.data));
    const res = await fetch(`${server.http}/v1/subscribe`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ session: mp.session, pattern: "made/**" }) });
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await subscribed, { pattern: "made/**" });
    assert.deepEqual(mp.serverSubscriptions, [{ pattern: "made/**" }]);
    await httpPublish(server.http, "made/x", { $base64: "AA==" });
    await until(() => messages.length === 1);
    assert.deepEqual(messages, [bytes(0)]);
  });

  test("SSE stays JSON: $base64 on the stream, Uint8Array with encoding msgpack (decodeBinary by default)", async () => {
    const sse = await bus({ transport: "sse" });
    const sseMp = await bus({ transport: "sse", encoding: "msgpack" });
    assert.equal(sse.encoding, "json");
    assert.equal(sseMp.encoding, "json");
    const a = await collect(sse, "sse/**");
    const b = await collect(sseMp, "sse/**");
    const pub = await msgpackBus();
    await pub.publish("sse/t", { b: bytes(5, 6) });
    // Publishing binary over SSE (POST /v1/publish, JSON) goes as $base64.
    await sseMp.publish("sse/t", bytes(7));
    await until(() => a.length === 2 && b.length === 2);
    assert.deepEqual(a.data(), [{ b: { $base64: "BQY=" } }, { $base64: "Bw==" }]);
    assert.deepEqual(b.data(), [{ b: bytes(5, 6) }, bytes(7)]);
  });
});

describe("HTTP publishes (PROTOCOL.md §8)", () => {
  test("a MessagePack body with bin data, and a raw application/octet-stream body", async () => {
    const mp = await msgpackBus();
    const js = await bus();
    const gotMp = await collect(mp, "http/**");
    const gotJs = await collect(js, "http/**");
    let res = await fetch(`${server.http}/v1/publish`, { method: "POST", headers: { "content-type": "application/msgpack" }, body: encode({ topic: "http/mp", data: { b: bytes(1, 2), s: "x" }, msg_id: "h-1" }) });
    assert.equal(res.status, 200, await res.clone().text());
    const ack = await res.json();
    assert.equal(ack.duplicate, false);
    assert.ok(Number.isInteger(ack.offset));
    res = await fetch(`${server.http}/v1/publish?topic=http/raw&msg_id=h-2`, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: allBytes() });
    assert.equal(res.status, 200, await res.clone().text());
    res = await fetch(`${server.http}/v1/publish/batch`, { method: "POST", headers: { "content-type": "application/msgpack" }, body: encode([{ topic: "http/batch", data: bytes(3) }, { topic: "http/batch", data: 4 }]) });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).length, 2);
    for (const bad of [bytes(0xc1), new Uint8Array([...encode({ topic: "http/x", data: 1 }), 0])]) {
      res = await fetch(`${server.http}/v1/publish`, { method: "POST", headers: { "content-type": "application/msgpack" }, body: bad });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.code, "bad_request");
    }
    await until(() => gotMp.length === 4 && gotJs.length === 4, 5000, "the HTTP publishes");
    assert.deepEqual(gotMp.data(), [{ b: bytes(1, 2), s: "x" }, allBytes(), bytes(3), 4]);
    assert.deepEqual(gotJs.data(), [{ b: { $base64: "AQI=" }, s: "x" }, { $base64: toBase64(allBytes()) }, { $base64: "Aw==" }, 4]);
    assert.equal(gotMp[0].msg_id, "h-1");
    assert.equal(gotMp[1].msg_id, "h-2");
  });
});

test("a MessagePack publish body that is an array, not a map, is 400 bad_request", async () => {
  const res = await fetch(`${server.http}/v1/publish`, { method: "POST", headers: { "content-type": "application/msgpack" }, body: encode(["http/array", 1]) });
  assert.equal(res.status, 400);
});

// ------------------------------------------------------------------------------------------
// A raw client on herald.v1.msgpack: what the server sends, byte for byte.

/** A raw `ws` socket on herald.v1.msgpack, welcomed; `next(pred)` waits for a decoded frame. */
async function rawClient() {
  const ws = new WebSocket(server.ws, "herald.v1.msgpack");
  const frames = [];
  const waiters = [];
  ws.on("message", (data, isBinary) => {
    // Decoded by the reference implementation, not ours.
    const raw = new Uint8Array(data);
    const f = { isBinary, raw, frame: isBinary ? reference.decode(raw, { useBigInt64: true }) : String(data) };
    frames.push(f);
    for (const w of [...waiters]) if (w.pred(f)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(f);
    }
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  assert.equal(ws.protocol, "herald.v1.msgpack");
  const taken = new Set();
  const client = {
    ws,
    frames,
    /** The first frame not taken yet that `pred` accepts (waiting for it), and takes it. */
    next(pred = () => true, ms = 3000) {
      const found = frames.find((f) => !taken.has(f) && pred(f));
      if (found) {
        taken.add(found);
        return Promise.resolve(found);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no such frame within ${ms} ms; got ${JSON.stringify(frames.filter((f) => !taken.has(f)).map((f) => f.frame), (k, v) => (typeof v === "bigint" ? `${v}n` : v))}`)), ms);
        waiters.push({
          pred: (f) => !taken.has(f) && pred(f),
          resolve: (f) => {
            clearTimeout(timer);
            taken.add(f);
            resolve(f);
          },
        });
      });
    },
    send: (frame) => ws.send(encode(frame)),
    close: () => ws.close(),
  };
  client.send({ op: "hello" });
  const welcome = await client.next((f) => f.frame.op === "welcome");
  assert.equal(welcome.isBinary, true);
  return client;
}

const op = (name) => (f) => f.frame && f.frame.op === name;

describe("a raw client on herald.v1.msgpack", () => {
  let c;
  before(async () => {
    c = await rawClient();
  });
  after(() => c?.close());

  test("every server frame is one binary MessagePack map; ints are ints (seq, offset, ts), floats float64", async () => {
    c.send({ op: "sub", pattern: "raw/**", id: 1 });
    const ok = await c.next(op("ok"));
    assert.equal(ok.frame.id, 1);
    c.send({ op: "pub", topic: "raw/t", data: { f: 1.5, i: 3, b: bytes(1, 2) }, id: 2 });
    const msg = await c.next(op("msg"));
    const ack = await c.next(op("ok"));
    assert.equal(ack.frame.id, 2);
    for (const f of c.frames) assert.equal(f.isBinary, true);
    // The raw bytes: after each key, the type byte of its value.
    const after = (raw, key) => {
      const k = encode(key);
      for (let i = 0; i + k.length < raw.length; i += 1) if (k.every((b, j) => raw[i + j] === b)) return raw[i + k.length];
      return undefined;
    };
    const isInt = (b) => b <= 0x7f || (b >= 0xcc && b <= 0xcf) || (b >= 0xd0 && b <= 0xd3) || b >= 0xe0;
    for (const key of ["seq", "offset", "ts"]) assert.ok(isInt(after(msg.raw, key)), `${key}: type byte 0x${after(msg.raw, key)?.toString(16)}`);
    assert.equal(after(msg.raw, "f"), 0xcb, "1.5 is a float64");
    assert.equal(after(msg.raw, "b"), 0xc4, "binary is bin 8");
    assert.ok(Number.isInteger(decode(msg.raw).ts));
    // Smallest int encodings, float64, key order as sent: the bytes msgpack.js makes of the frame.
    for (const f of c.frames) assert.equal(hex(encode(decode(f.raw))), hex(f.raw));
    assert.deepEqual(msg.frame.data, { f: 1.5, i: 3, b: bytes(1, 2) });
    assert.equal(typeof msg.frame.epoch, "string");
  });

  // Each malformed frame gets a MessagePack `error {code: "bad_frame"}`, and the connection
  // stays open: a publish right after it is answered.
  const malformed = {
    "the unused type byte 0xc1": bytes(0xc1),
    "a truncated map": encode({ op: "pub", topic: "raw/t", data: "x" }).subarray(0, 10),
    "trailing bytes after the map": new Uint8Array([...encode({ op: "ping" }), 0xc0]),
    "an ext value": new Uint8Array([0x82, ...encode("op"), ...encode("pub"), ...encode("data"), 0xd4, 0x01, 0x00]),
    "a non-string map key": new Uint8Array([0x82, ...encode("op"), ...encode("ping"), 0x01, 0x02]),
    "a string that is not UTF-8": new Uint8Array([0x82, ...encode("op"), ...encode("pub"), ...encode("topic"), 0xa2, 0xc3, 0x28]),
    "NaN": new Uint8Array([0x83, ...encode("op"), ...encode("pub"), ...encode("topic"), ...encode("raw/t"), ...encode("data"), ...encode(NaN)]),
    "an infinity": new Uint8Array([0x83, ...encode("op"), ...encode("pub"), ...encode("topic"), ...encode("raw/t"), ...encode("data"), ...encode(-Infinity)]),
    "nesting of 129 (the frame and 128 arrays)": reference.encode({ op: "pub", topic: "raw/t", data: JSON.parse(`${"[".repeat(128)}${"]".repeat(128)}`) }, { maxDepth: 1000 }),
    "an array, not a map": encode(["op", "ping"]),
    "a string, not a map": encode("ping"),
    "an empty frame": bytes(),
    "a text frame": '{"op":"ping"}',
  };
  let n = 100;
  for (const [what, frame] of Object.entries(malformed)) {
    test(`${what}: error bad_frame (MessagePack), and the connection goes on`, async () => {
      c.ws.send(frame, { binary: typeof frame !== "string" });
      const err = await c.next(op("error"));
      assert.equal(err.isBinary, true, "the error is a binary frame");
      assert.equal(err.frame.code, "bad_frame", JSON.stringify(err.frame));
      assert.equal(typeof err.frame.message, "string");
      assert.equal(c.ws.readyState, WebSocket.OPEN);
      const id = (n += 1);
      c.send({ op: "pub", topic: "raw/after", data: { after: what, b: bytes(id & 0xff) }, id });
      const ok = await c.next((f) => f.frame.op === "ok" && f.frame.id === id);
      assert.ok(Number.isInteger(ok.frame.offset));
    });
  }

  test("nesting of exactly 128 is accepted", async () => {
    // The frame map is one level: data may nest 127 more.
    const data = JSON.parse(`${"[".repeat(127)}${"]".repeat(127)}`);
    c.send({ op: "pub", topic: "raw/deep", data, id: 900 });
    const answer = await c.next((f) => f.frame.id === 900);
    assert.equal(answer.frame.op, "ok", JSON.stringify(answer.frame));
  });

  test("an unknown op gets a MessagePack error with the id, and the connection stays open", async () => {
    c.send({ op: "nope", id: 901 });
    const err = await c.next((f) => f.frame.id === 901);
    assert.equal(err.frame.op, "error");
    assert.equal(err.frame.code, "unknown_op");
    assert.equal(c.ws.readyState, WebSocket.OPEN);
  });
});

describe("a server without MessagePack", () => {
  /** A WebSocket server that knows herald.v1 only (an older Herald). */
  async function fakeServer() {
    const srv = http.createServer((req, res) => res.end("ok"));
    const wss = new WebSocketServer({ server: srv, handleProtocols: (offered) => (offered.has("herald.v1") ? "herald.v1" : false) });
    wss.on("connection", (ws) => ws.on("message", () => ws.send(JSON.stringify({ op: "welcome", session: "s", resumed: false, heartbeat_ms: 25000 }))));
    await new Promise((r) => srv.listen(0, "127.0.0.1", r));
    return {
      url: `ws://127.0.0.1:${srv.address().port}/ws`,
      close: () => new Promise((r) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        srv.close(() => r());
      }),
    };
  }

  test("connect rejects with unsupported when the server selects no subprotocol (and auto does not fall back to SSE)", async () => {
    const fake = await fakeServer();
    try {
      await assert.rejects(connect(fake.url, { WebSocket, encoding: "msgpack" }), (e) => {
        assert.equal(e.code, "unsupported");
        assert.equal(e.encoding, "msgpack");
        assert.match(e.message, /herald\.v1\.msgpack/);
        return true;
      });
      // JSON still connects there.
      const b = await connect(fake.url, { WebSocket });
      b.close();
    } finally {
      await fake.close();
    }
  });

  test("a WebSocket that opens on another subprotocol (as a browser's would) is refused too", async () => {
    // What a browser does when the server answers no subprotocol: it opens with protocol "".
    class LaxWebSocket extends EventTarget {
      constructor(url) {
        super();
        this.url = url;
        this.protocol = "";
        this.readyState = 0;
        this.sent = [];
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.({});
        }, 0);
      }
      send(d) {
        this.sent.push(d);
      }
      close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code: 1000, reason: "" }), 0);
      }
    }
    const opened = [];
    class Recording extends LaxWebSocket {
      constructor(url, protocols) {
        super(url);
        opened.push({ protocols, ws: this });
      }
    }
    await assert.rejects(connect("ws://127.0.0.1:9/ws", { WebSocket: Recording, encoding: "msgpack" }), (e) => e.code === "unsupported" && /selected none/.test(e.message));
    assert.deepEqual(opened[0].protocols, ["herald.v1.msgpack"]);
    assert.equal(opened[0].ws.binaryType, "arraybuffer");
    assert.deepEqual(opened[0].ws.sent, [], "no hello on the wrong subprotocol");
  });

  test("encoding must be json or msgpack", () => {
    assert.throws(() => connect(server.ws, { WebSocket, encoding: "cbor" }), /encoding must be "json" or "msgpack"/);
  });
});

describe("base64 helpers", () => {
  test("toBase64/fromBase64 match Node's, strictly", () => {
    for (let n = 0; n < 70; n += 1) {
      const b = Uint8Array.from({ length: n }, (_, i) => (i * 97 + n) & 0xff);
      const s = toBase64(b);
      assert.equal(s, Buffer.from(b).toString("base64"));
      assert.deepEqual(fromBase64(s), b);
    }
    assert.equal(toBase64(allBytes().buffer), Buffer.from(allBytes()).toString("base64"));
    for (const bad of ["a", "abc", "ab=c", "a===", "ab==cd==", "ab\ncd==", "ab-_", "AB==", "AAB=", "ab=", 12, null]) assert.equal(fromBase64(bad), null, String(bad));
    assert.deepEqual(fromBase64(""), bytes());
  });
});
