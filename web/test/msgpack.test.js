// web/msgpack.js against @msgpack/msgpack (the reference JavaScript implementation): what ours
// encodes, theirs decodes, and the other way round; where both pick the smallest encoding the
// bytes are the same. Then every malformed input the codec must refuse. No server needed.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as msgpack from "@msgpack/msgpack";

import { decode, encode, MAX_DEPTH, MessagePackError } from "../msgpack.js";

// Theirs, with room for our deepest test values (their default stops at 100 levels).
const theirs = {
  encode: (v, opts = {}) => msgpack.encode(v, { maxDepth: 1000, ...opts }),
  decode: (b, opts = {}) => msgpack.decode(b, opts),
  ExtData: msgpack.ExtData,
};
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const bytesOf = (h) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));
const fill = (n, f) => Array.from({ length: n }, (_, i) => f(i));
const binary = (n) => Uint8Array.from(fill(n, (i) => (i * 31 + 7) & 0xff));
const objectOf = (n) => Object.fromEntries(fill(n, (i) => [`k${i}`, i]));

/** Strings of exactly `n` UTF-8 bytes: ASCII, and with 2-, 3- and 4-byte characters. */
function stringsOfBytes(n) {
  const out = ["x".repeat(n)];
  if (n >= 2) out.push("é".repeat(Math.floor(n / 2)) + "y".repeat(n % 2));
  if (n >= 3) out.push("€".repeat(Math.floor(n / 3)) + "z".repeat(n % 3));
  if (n >= 4) out.push("😀".repeat(Math.floor(n / 4)) + "w".repeat(n % 4));
  for (const s of out) assert.equal(Buffer.byteLength(s), n);
  return out;
}

function nested(depth, leaf = 1, kind = "array") {
  let v = leaf;
  for (let i = 0; i < depth; i += 1) v = kind === "array" ? [v] : { d: v };
  return v;
}

const SCALARS = [
  null, true, false,
  0, 1, 31, 127, 128, 200, 255, 256, 1000, 65535, 65536, 100000, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 53 - 1,
  -1, -31, -32, -33, -100, -128, -129, -1000, -32768, -32769, -100000, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 40), -(2 ** 53 - 1),
  0.5, -1.25, 3.141592653589793, 0.1, 1e300, -1e-300, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53, 1e21, -1e21, 2 ** 64,
  Infinity, -Infinity,
  "", "a", "hello", "héllo wörld", "日本語のテキスト", "😀🎉 emoji", "\u0000nul\u0000", "tab\tnewline\n", "\u{10ffff}",
];

const STRINGS = [31, 32, 255, 256, 65535, 65536].flatMap(stringsOfBytes);
const BINS = [0, 1, 31, 32, 255, 256, 65535, 65536].map(binary);
const ARRAYS = [0, 1, 15, 16, 255, 65535, 65536].map((n) => fill(n, (i) => i % 300));
const MAPS = [0, 1, 15, 16, 255, 65535, 65536].map(objectOf);

const NESTED = [
  { op: "msg", topic: "chat/general", seq: 42, offset: 7, epoch: "e1", ts: 1733570000123, data: { text: "hi", n: [1, 2.5, null, true], bin: new Uint8Array([0, 1, 2, 255]) } },
  { a: { b: { c: { d: [[], {}, [[[]]], { "": "" }] } } } },
  { "ключ": "значение", "キー": ["値", { "😀": 1 }], "é": { "ü": null } },
  [fill(16, (i) => ({ i, s: "x".repeat(i * 3), b: binary(i) }))],
  nested(MAX_DEPTH, "deep"),
  nested(MAX_DEPTH, 0, "map"),
];

const ALL = [...SCALARS, ...STRINGS, ...BINS, ...ARRAYS, ...MAPS, ...NESTED];

function label(v) {
  const s = typeof v === "string" ? `string of ${Buffer.byteLength(v)} bytes` : v instanceof Uint8Array ? `bin of ${v.length}` : Array.isArray(v) ? `array of ${v.length}` : v && typeof v === "object" ? `map of ${Object.keys(v).length}` : String(v);
  return s.length > 60 ? `${s.slice(0, 60)}…` : s;
}

describe("msgpack: against @msgpack/msgpack", () => {
  test("the same bytes as theirs for every value (both pick the smallest encoding)", () => {
    for (const v of ALL) assert.equal(hex(encode(v)), hex(theirs.encode(v)), label(v));
  });

  test("ours → theirs: they decode what we encode", () => {
    for (const v of ALL) assert.deepEqual(theirs.decode(encode(v)), v, label(v));
  });

  test("theirs → ours: we decode what they encode", () => {
    for (const v of ALL) assert.deepEqual(decode(theirs.encode(v)), v, label(v));
  });

  test("NaN both ways", () => {
    assert.equal(hex(encode(NaN)), hex(theirs.encode(NaN)));
    assert.ok(Number.isNaN(decode(theirs.encode(NaN))));
    assert.ok(Number.isNaN(theirs.decode(encode(NaN))));
  });

  test("-0 encodes as the int 0, as theirs", () => {
    assert.equal(hex(encode(-0)), "00");
    assert.equal(hex(encode(-0)), hex(theirs.encode(-0)));
  });

  test("64-bit ints: Number when safe, else BigInt; BigInt encodes as int64/uint64", () => {
    const big = [0n, 1n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, -1n, -(2n ** 53n), -(2n ** 63n)];
    for (const n of big) {
      assert.equal(hex(encode(n)), hex(theirs.encode(n, { useBigInt64: true })), `${n}`);
      assert.equal(theirs.decode(encode(n), { useBigInt64: true }), n, `${n}`);
      const back = decode(theirs.encode(n, { useBigInt64: true }));
      const safe = n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= BigInt(Number.MIN_SAFE_INTEGER);
      assert.equal(back, safe ? Number(n) : n, `${n}`);
    }
    assert.equal(hex(encode(2n ** 64n - 1n)), "cfffffffffffffffff");
    assert.equal(hex(encode(-(2n ** 63n))), "d38000000000000000");
    // uint64/int64 that hold a safe integer decode as Numbers; past 2^53 as BigInt.
    assert.equal(decode(bytesOf("cf 001fffffffffffff")), 2 ** 53 - 1);
    assert.equal(decode(bytesOf("cf 0020000000000000")), 2n ** 53n);
    assert.equal(decode(bytesOf("d3 ffe0000000000001")), -(2 ** 53 - 1));
    assert.equal(decode(bytesOf("d3 ffe0000000000000")), -(2n ** 53n));
    assert.equal(decode(bytesOf("d3 0000000000000005")), 5);
    // Safe Numbers of 64 bits use uint64/int64, exactly as theirs.
    assert.equal(hex(encode(2 ** 53 - 1)), "cf001fffffffffffff");
    assert.equal(hex(encode(-(2 ** 53 - 1))), "d3ffe0000000000001");
    assert.throws(() => encode(2n ** 64n), MessagePackError);
    assert.throws(() => encode(-(2n ** 63n) - 1n), MessagePackError);
  });

  test("floats are float64; float32 decodes", () => {
    assert.equal(hex(encode(1.5)), "cb3ff8000000000000");
    for (const x of [1.5, -0.25, 3.4028234663852886e38, 1e-40, 0.1]) {
      const f32 = theirs.encode(x, { forceFloat32: true });
      assert.equal(f32[0], 0xca);
      assert.equal(decode(f32), Math.fround(x));
    }
    assert.equal(decode(bytesOf("ca 7f800000")), Infinity);
  });

  test("non-minimal encodings decode too", () => {
    assert.equal(decode(bytesOf("cc 01")), 1);
    assert.equal(decode(bytesOf("ce 00000001")), 1);
    assert.equal(decode(bytesOf("d0 05")), 5);
    assert.equal(decode(bytesOf("db 00000002 6869")), "hi");
    assert.equal(decode(bytesOf("da 0000")), "");
    assert.deepEqual(decode(bytesOf("dd 00000002 01 02")), [1, 2]);
    assert.deepEqual(decode(bytesOf("df 00000001 a161 c0")), { a: null });
    assert.deepEqual(decode(bytesOf("c6 00000001 ff")), new Uint8Array([255]));
  });

  test("binary: Uint8Array, Buffer, ArrayBuffer, DataView and other views encode as bin", () => {
    const b = new Uint8Array([1, 2, 3, 4, 250, 251]);
    assert.equal(hex(encode(b)), "c406010203 04fafb".replace(/\s/g, ""));
    assert.equal(hex(encode(Buffer.from(b))), hex(encode(b)));
    assert.equal(hex(encode(b.buffer)), hex(encode(b)));
    assert.equal(hex(encode(new DataView(b.buffer, 1, 3))), "c403020304");
    assert.equal(hex(encode(b.subarray(4))), "c402fafb");
    assert.equal(hex(encode(new Uint16Array([0x0102]))), hex(encode(new Uint8Array(new Uint16Array([0x0102]).buffer))));
    const back = decode(encode({ b }));
    assert.ok(back.b instanceof Uint8Array);
    assert.deepEqual(back.b, b);
    // A copy: it does not share the input's memory.
    const frame = encode(b);
    const got = decode(frame);
    frame[2] = 99;
    assert.equal(got[0], 1);
  });

  test("decode takes a Uint8Array, an ArrayBuffer, a DataView or a Buffer (at an offset too)", () => {
    const v = { x: [1, "two", new Uint8Array([3])] };
    const bytes = encode(v);
    const padded = new Uint8Array(bytes.length + 5);
    padded.set(bytes, 3);
    const inner = padded.subarray(3, 3 + bytes.length);
    assert.deepEqual(decode(bytes), v);
    assert.deepEqual(decode(bytes.buffer), v);
    assert.deepEqual(decode(inner), v);
    assert.deepEqual(decode(new DataView(padded.buffer, 3, bytes.length)), v);
    assert.deepEqual(decode(Buffer.from(bytes)), v);
    assert.throws(() => decode("not bytes"), TypeError);
  });

  test("maps: a Map encodes like an object; undefined, functions and symbols are skipped as JSON.stringify does", () => {
    assert.equal(hex(encode(new Map([["a", 1], ["b", [2]]]))), hex(encode({ a: 1, b: [2] })));
    assert.equal(hex(encode({ a: 1, u: undefined, f() {}, s: Symbol("x"), b: 2 })), hex(encode({ a: 1, b: 2 })));
    assert.equal(hex(encode([undefined, () => 1, Symbol("s")])), "93c0c0c0");
    assert.equal(hex(encode(undefined)), "c0");
    assert.equal(hex(encode(new Map([["u", undefined]]))), "80");
    assert.throws(() => encode(new Map([[1, "x"]])), /map key must be a string/);
  });

  test("toJSON is honoured (a Date becomes its ISO string), as JSON.stringify does", () => {
    const d = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6));
    assert.deepEqual(decode(encode({ d })), { d: "2024-01-02T03:04:05.006Z" });
  });

  test("a `__proto__` key is an own property, as JSON.parse makes it", () => {
    const v = decode(theirs.encode(JSON.parse('{"__proto__": {"polluted": 1}, "a": 2}')));
    assert.equal(Object.getPrototypeOf(v), Object.prototype);
    assert.deepEqual(Object.keys(v), ["__proto__", "a"]);
    assert.deepEqual(v.__proto__, { polluted: 1 }); // eslint-disable-line no-proto
    assert.equal({}.polluted, undefined);
  });

  test("a later duplicate key wins, as in JSON.parse", () => {
    assert.deepEqual(decode(bytesOf("82 a161 01 a161 02")), { a: 2 });
  });

  test("nonFiniteAsNil makes NaN and infinities nil (as JSON makes them null)", () => {
    assert.equal(hex(encode([NaN, Infinity, -Infinity, 1.5], { nonFiniteAsNil: true })), "94c0c0c0cb3ff8000000000000");
    assert.equal(hex(encode(Infinity)), "cb7ff0000000000000");
  });

  test("random values: the same bytes as theirs, and back", () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = (a) => a[Math.floor(rand() * a.length)];
    const gen = (depth) => {
      const r = rand();
      if (depth > 4 || r < 0.5) {
        return pick([
          () => null,
          () => rand() < 0.5,
          () => Math.floor((rand() - 0.5) * 2 ** pick([4, 7, 8, 15, 16, 31, 32, 40, 53])),
          () => (rand() - 0.5) * 10 ** Math.floor(rand() * 40 - 20),
          () => fill(Math.floor(rand() * 40), () => pick(["a", "é", "日", "😀", "\n", "z"])).join(""),
          () => binary(Math.floor(rand() * 300)),
        ])();
      }
      const n = Math.floor(rand() * 10);
      if (r < 0.75) return fill(n, () => gen(depth + 1));
      return Object.fromEntries(fill(n, (i) => [`${pick(["k", "ключ", "😀", ""])}${i}`, gen(depth + 1)]));
    };
    for (let i = 0; i < 500; i += 1) {
      const v = gen(0);
      const ours = encode(v);
      assert.equal(hex(ours), hex(theirs.encode(v)));
      assert.deepEqual(decode(ours), v);
      assert.deepEqual(theirs.decode(ours), v);
    }
  });
});

describe("msgpack: malformed input throws", () => {
  const refuses = (bytes, re, what) => assert.throws(() => decode(bytes), (e) => e instanceof MessagePackError && e instanceof Error && re.test(e.message), what);

  test("truncated input: every proper prefix of a valid encoding", () => {
    const whole = encode({ op: "pub", topic: "t/é", data: { b: binary(300), n: [1, -200, 70000, 2 ** 40, 1.5, "s".repeat(40)], big: 2n ** 63n, m: objectOf(20) } });
    assert.ok(whole.length > 400);
    for (let n = 0; n < whole.length; n += 1) refuses(whole.subarray(0, n), /truncated input/, `prefix of ${n} bytes`);
  });

  test("truncated headers and bodies of each type", () => {
    for (const h of ["cc", "cd00", "ce000000", "cf00000000000000", "d0", "d1ff", "d2ffffff", "d3ffffffffffffff", "ca0000", "cb00000000000000", "c4", "c402ff", "c5", "c60000", "d9", "d905616263", "da0001", "db00000001", "a3616263".slice(0, 6), "92 01", "dc0002 01", "dd00000003", "81 a161", "de0001 a161", "df00000001"]) {
      refuses(bytesOf(h), /truncated input/, h);
    }
  });

  test("a huge length with little input is a truncation (nothing allocated for it)", () => {
    refuses(bytesOf("dd ffffffff 01"), /truncated input/);
    refuses(bytesOf("df ffffffff a161 01"), /truncated input/);
    refuses(bytesOf("c6 ffffffff 00"), /truncated input/);
    refuses(bytesOf("db ffffffff 61"), /truncated input/);
  });

  test("the type byte 0xc1", () => {
    refuses(bytesOf("c1"), /0xc1/);
    refuses(bytesOf("92 01 c1"), /0xc1/);
    refuses(bytesOf("81 a161 c1"), /0xc1/);
  });

  test("ext values (fixext 1/2/4/8/16, ext 8/16/32), ours and theirs (a timestamp)", () => {
    for (const h of ["d4 01 00", "d5 01 0000", "d6 01 00000000", "d7 01 0000000000000000", "d8 01 00000000000000000000000000000000", "c7 01 01 00", "c8 0001 01 00", "c9 00000001 01 00"]) {
      refuses(bytesOf(h), /ext values are not supported/, h);
    }
    refuses(theirs.encode(new Date(0)), /ext/);
    refuses(theirs.encode({ a: [new theirs.ExtData(5, new Uint8Array([1, 2, 3]))] }), /ext/);
  });

  test("map keys that are not strings", () => {
    for (const h of ["81 01 02", "81 c0 01", "81 c3 01", "81 c401ff 01", "81 90 01", "81 80 01", "81 cb3ff8000000000000 01", "82 a161 01 d0ff 02", "de0001 cd0100 01"]) {
      refuses(bytesOf(h), /map key must be a string/, h);
    }
    refuses(bytesOf("81 01 a3 6f6e65"), /map key must be a string, not the number 1/);
    refuses(bytesOf("81 cd"), /truncated input/); // a truncated key is a truncation
  });

  test(`nesting deeper than ${MAX_DEPTH}`, () => {
    assert.equal(MAX_DEPTH, 128);
    assert.deepEqual(decode(theirs.encode(nested(MAX_DEPTH))), nested(MAX_DEPTH));
    assert.deepEqual(decode(encode(nested(MAX_DEPTH, 1, "map"))), nested(MAX_DEPTH, 1, "map"));
    refuses(theirs.encode(nested(MAX_DEPTH + 1)), /nested deeper than 128/);
    refuses(theirs.encode(nested(MAX_DEPTH + 1, 1, "map")), /nested deeper than 128/);
    refuses(theirs.encode({ a: [{ b: nested(MAX_DEPTH - 2, "x", "map") }] }), /nested deeper than 128/);
    refuses(new Uint8Array(100000).fill(0x91), /nested deeper than 128/); // no stack overflow either
    assert.throws(() => encode(nested(MAX_DEPTH + 1)), /nested deeper than 128/);
    const loop = { a: 1 };
    loop.self = loop;
    assert.throws(() => encode(loop), /circular/);
  });

  test("trailing bytes", () => {
    refuses(bytesOf("01 02"), /1 trailing byte/);
    refuses(bytesOf("c0 c0 c0"), /2 trailing byte/);
    refuses(new Uint8Array([...encode({ op: "ping" }), 0]), /trailing/);
  });

  test("strings that are not UTF-8", () => {
    for (const h of ["a2 c328", "a1 ff", "a3 eda080", "d9 02 e282", "a4 f0288c28"]) refuses(bytesOf(h), /not valid UTF-8/, h);
    // A map key too.
    refuses(bytesOf("81 a1ff 01"), /not valid UTF-8/);
  });

  test("empty input", () => {
    refuses(new Uint8Array(0), /truncated input/);
  });

  test("the error says where", () => {
    try {
      decode(bytesOf("93 01 02 c1"));
      assert.fail("no error");
    } catch (e) {
      assert.equal(e.name, "MessagePackError");
      assert.equal(e.offset, 3);
      assert.match(e.message, /at byte 3/);
    }
  });
});
