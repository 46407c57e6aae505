// MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md) for herald.js: a small
// encoder and decoder of the types Herald's frames use, one ES module with no dependencies and
// no build step (herald.js imports it as `./msgpack.js`; the server serves it at /msgpack.js).
//
//   import { encode, decode } from "./msgpack.js";
//   const bytes = encode({ op: "pub", topic: "t", data: new Uint8Array([1, 2]) });
//   decode(bytes); // {op: "pub", topic: "t", data: Uint8Array [1, 2]}
//
// Types, both ways:
//   nil ⇄ null (undefined encodes as nil, except as a map value: skipped, as JSON.stringify does)
//   bool ⇄ boolean
//   int ⇄ a Number that is a safe integer (the smallest encoding); decoded 64-bit ints that are
//         not safe integers become BigInt, and a BigInt encodes as int64 (negative) or uint64
//   float ⇄ other Numbers, as float64 (float32 decodes too)
//   str ⇄ string (UTF-8; a string that is not valid UTF-8 does not decode)
//   bin ⇄ Uint8Array (ArrayBuffer, DataView and other typed arrays encode as their bytes)
//   array ⇄ Array
//   map ⇄ plain object, string keys only (a Map with string keys encodes too)
// An object with `toJSON` (a Date) encodes what it returns, as JSON.stringify would; functions
// and symbols are skipped in maps and nil in arrays, likewise. `ext` values are refused.

/** The deepest nesting of arrays and maps that encode and decode accept. */
export const MAX_DEPTH = 128;

/** A value that cannot be decoded (or encoded): the message says what and, decoding, where. */
export class MessagePackError extends Error {
  constructor(message, offset) {
    super(offset === undefined ? `msgpack: ${message}` : `msgpack: ${message} (at byte ${offset})`);
    this.name = "MessagePackError";
    if (offset !== undefined) this.offset = offset;
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const UINT32 = 0x1_0000_0000;
const MAX_UINT64 = (1n << 64n) - 1n;
const MIN_INT64 = -(1n << 63n);

// ------------------------------------------------------------------------------------------
// Encoding

class Writer {
  constructor(size = 256) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.pos = 0;
  }

  ensure(n) {
    const need = this.pos + n;
    if (need <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < need) size *= 2;
    const bytes = new Uint8Array(size);
    bytes.set(this.bytes.subarray(0, this.pos));
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer);
  }

  u8(b) {
    this.ensure(1);
    this.bytes[this.pos++] = b;
  }

  /** A type byte then a big-endian unsigned int of `size` bytes (1, 2 or 4). */
  head(type, size, n) {
    this.ensure(1 + size);
    this.bytes[this.pos++] = type;
    if (size === 1) this.view.setUint8(this.pos, n);
    else if (size === 2) this.view.setUint16(this.pos, n);
    else this.view.setUint32(this.pos, n);
    this.pos += size;
  }

  raw(bytes) {
    this.ensure(bytes.length);
    this.bytes.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  result() {
    return this.bytes.slice(0, this.pos);
  }
}

/**
 * Encodes `value` as MessagePack. Options: `nonFiniteAsNil` (NaN and ±Infinity become nil,
 * as JSON.stringify makes them null; by default they are float64). Throws a MessagePackError
 * for what has no encoding: a BigInt outside the 64-bit ranges, a Map with a key that is not a
 * string, nesting deeper than {@link MAX_DEPTH} (or a cycle).
 */
export function encode(value, options = {}) {
  const w = new Writer();
  encodeValue(w, value, 0, !!options.nonFiniteAsNil);
  return w.result();
}

function encodeValue(w, v, depth, nonFiniteAsNil) {
  switch (typeof v) {
    case "undefined":
      w.u8(0xc0);
      return;
    case "boolean":
      w.u8(v ? 0xc3 : 0xc2);
      return;
    case "number":
      if (Number.isSafeInteger(v)) encodeInt(w, v);
      else if (nonFiniteAsNil && !Number.isFinite(v)) w.u8(0xc0);
      else encodeFloat(w, v);
      return;
    case "bigint":
      encodeBigInt(w, v);
      return;
    case "string":
      encodeString(w, v);
      return;
    case "function":
    case "symbol":
      w.u8(0xc0); // as JSON.stringify does in an array (a map skips them)
      return;
    default:
      break;
  }
  if (v === null) {
    w.u8(0xc0);
    return;
  }
  const bytes = binaryBytes(v);
  if (bytes) {
    const n = bytes.length;
    if (n < 0x100) w.head(0xc4, 1, n);
    else if (n < 0x10000) w.head(0xc5, 2, n);
    else w.head(0xc6, 4, n);
    w.raw(bytes);
    return;
  }
  if (typeof v.toJSON === "function") {
    encodeValue(w, v.toJSON(), depth, nonFiniteAsNil);
    return;
  }
  if (depth >= MAX_DEPTH) throw new MessagePackError(`nested deeper than ${MAX_DEPTH} levels (or circular)`);
  if (Array.isArray(v)) {
    const n = v.length;
    if (n < 16) w.u8(0x90 | n);
    else if (n < 0x10000) w.head(0xdc, 2, n);
    else w.head(0xdd, 4, n);
    for (let i = 0; i < n; i += 1) encodeValue(w, v[i], depth + 1, nonFiniteAsNil);
    return;
  }
  let entries;
  if (v instanceof Map) {
    entries = [];
    for (const [k, x] of v) {
      if (typeof k !== "string") throw new MessagePackError(`a map key must be a string, not ${describe(k)}`);
      if (!skipped(x)) entries.push([k, x]);
    }
  } else {
    entries = [];
    for (const k of Object.keys(v)) {
      const x = v[k];
      if (!skipped(x)) entries.push([k, x]);
    }
  }
  const n = entries.length;
  if (n < 16) w.u8(0x80 | n);
  else if (n < 0x10000) w.head(0xde, 2, n);
  else w.head(0xdf, 4, n);
  for (const [k, x] of entries) {
    encodeString(w, k);
    encodeValue(w, x, depth + 1, nonFiniteAsNil);
  }
}

/** What a map leaves out, as JSON.stringify does. */
function skipped(x) {
  return x === undefined || typeof x === "function" || typeof x === "symbol";
}

/** The bytes of a Uint8Array, ArrayBuffer or other ArrayBuffer view; null for anything else. */
function binaryBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer || (typeof SharedArrayBuffer === "function" && v instanceof SharedArrayBuffer)) return new Uint8Array(v);
  return null;
}

function encodeInt(w, n) {
  if (n >= 0) {
    if (n < 0x80) w.u8(n);
    else if (n < 0x100) w.head(0xcc, 1, n);
    else if (n < 0x10000) w.head(0xcd, 2, n);
    else if (n < UINT32) w.head(0xce, 4, n);
    else {
      w.ensure(9);
      w.bytes[w.pos] = 0xcf;
      w.view.setUint32(w.pos + 1, Math.floor(n / UINT32));
      w.view.setUint32(w.pos + 5, n % UINT32);
      w.pos += 9;
    }
    return;
  }
  if (n >= -32) w.u8(n & 0xff); // negative fixint 0xe0..0xff
  else if (n >= -0x80) {
    w.ensure(2);
    w.bytes[w.pos] = 0xd0;
    w.view.setInt8(w.pos + 1, n);
    w.pos += 2;
  } else if (n >= -0x8000) {
    w.ensure(3);
    w.bytes[w.pos] = 0xd1;
    w.view.setInt16(w.pos + 1, n);
    w.pos += 3;
  } else if (n >= -0x8000_0000) {
    w.ensure(5);
    w.bytes[w.pos] = 0xd2;
    w.view.setInt32(w.pos + 1, n);
    w.pos += 5;
  } else {
    w.ensure(9);
    w.bytes[w.pos] = 0xd3;
    w.view.setBigInt64(w.pos + 1, BigInt(n));
    w.pos += 9;
  }
}

function encodeBigInt(w, n) {
  if (n > MAX_UINT64 || n < MIN_INT64) throw new MessagePackError(`${n} does not fit in 64 bits`);
  w.ensure(9);
  if (n < 0n) {
    w.bytes[w.pos] = 0xd3;
    w.view.setBigInt64(w.pos + 1, n);
  } else {
    w.bytes[w.pos] = 0xcf;
    w.view.setBigUint64(w.pos + 1, n);
  }
  w.pos += 9;
}

function encodeFloat(w, x) {
  w.ensure(9);
  w.bytes[w.pos] = 0xcb;
  w.view.setFloat64(w.pos + 1, x);
  w.pos += 9;
}

function encodeString(w, s) {
  // ASCII-only short strings (most keys and values) without a TextEncoder call.
  const len = s.length;
  if (len < 32) {
    let ascii = true;
    for (let i = 0; i < len; i += 1) {
      if (s.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      w.ensure(1 + len);
      w.bytes[w.pos++] = 0xa0 | len;
      for (let i = 0; i < len; i += 1) w.bytes[w.pos++] = s.charCodeAt(i);
      return;
    }
  }
  const bytes = utf8Encoder.encode(s);
  const n = bytes.length;
  if (n < 32) w.u8(0xa0 | n);
  else if (n < 0x100) w.head(0xd9, 1, n);
  else if (n < 0x10000) w.head(0xda, 2, n);
  else w.head(0xdb, 4, n);
  w.raw(bytes);
}

function describe(k) {
  if (k === null) return "null";
  if (typeof k === "bigint") return `the bigint ${k}`;
  if (typeof k === "object") return Array.isArray(k) ? "an array" : k instanceof Uint8Array ? "binary" : "a map";
  return `the ${typeof k} ${String(k)}`;
}

// ------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes exactly one MessagePack value from `input` (a Uint8Array, ArrayBuffer or other
 * ArrayBuffer view). Throws a MessagePackError for truncated input, bytes after the value, the
 * unused type byte 0xc1, an `ext` value, a map key that is not a string, a string that is not
 * UTF-8, or nesting deeper than {@link MAX_DEPTH}. `bin` values are copies (they do not share
 * `input`'s memory).
 */
export function decode(input) {
  const view = binaryBytes(input);
  if (!view) throw new TypeError("msgpack decode: expected a Uint8Array, ArrayBuffer or ArrayBuffer view");
  // A plain Uint8Array (a Node Buffer's `slice` would share memory instead of copying).
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const r = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), pos: 0 };
  if (bytes.length === 0) throw new MessagePackError("truncated input: nothing to decode", 0);
  const value = decodeValue(r, 0);
  if (r.pos !== bytes.length) throw new MessagePackError(`${bytes.length - r.pos} trailing byte(s) after the value`, r.pos);
  return value;
}

function need(r, n, at) {
  if (r.pos + n > r.bytes.length) throw new MessagePackError(`truncated input: ${n} byte(s) needed, ${r.bytes.length - r.pos} left`, at);
}

function decodeValue(r, depth) {
  const at = r.pos;
  need(r, 1, at);
  const b = r.bytes[r.pos++];
  if (b < 0x80) return b; // positive fixint
  if (b >= 0xe0) return b - 0x100; // negative fixint
  if (b < 0x90) return decodeMap(r, b & 0x0f, depth, at);
  if (b < 0xa0) return decodeArray(r, b & 0x0f, depth, at);
  if (b < 0xc0) return decodeString(r, b & 0x1f, at);
  const v = r.view;
  switch (b) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      return decodeBin(r, len(r, 1, at), at);
    case 0xc5:
      return decodeBin(r, len(r, 2, at), at);
    case 0xc6:
      return decodeBin(r, len(r, 4, at), at);
    case 0xca:
      need(r, 4, at);
      r.pos += 4;
      return v.getFloat32(r.pos - 4);
    case 0xcb:
      need(r, 8, at);
      r.pos += 8;
      return v.getFloat64(r.pos - 8);
    case 0xcc:
      return len(r, 1, at);
    case 0xcd:
      return len(r, 2, at);
    case 0xce:
      return len(r, 4, at);
    case 0xcf: {
      need(r, 8, at);
      const n = v.getBigUint64(r.pos);
      r.pos += 8;
      return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    case 0xd0:
      need(r, 1, at);
      r.pos += 1;
      return v.getInt8(r.pos - 1);
    case 0xd1:
      need(r, 2, at);
      r.pos += 2;
      return v.getInt16(r.pos - 2);
    case 0xd2:
      need(r, 4, at);
      r.pos += 4;
      return v.getInt32(r.pos - 4);
    case 0xd3: {
      need(r, 8, at);
      const n = v.getBigInt64(r.pos);
      r.pos += 8;
      return n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(n) : n;
    }
    case 0xd9:
      return decodeString(r, len(r, 1, at), at);
    case 0xda:
      return decodeString(r, len(r, 2, at), at);
    case 0xdb:
      return decodeString(r, len(r, 4, at), at);
    case 0xdc:
      return decodeArray(r, len(r, 2, at), depth, at);
    case 0xdd:
      return decodeArray(r, len(r, 4, at), depth, at);
    case 0xde:
      return decodeMap(r, len(r, 2, at), depth, at);
    case 0xdf:
      return decodeMap(r, len(r, 4, at), depth, at);
    case 0xc1:
      throw new MessagePackError("type byte 0xc1 is never used", at);
    default:
      // 0xc7..0xc9 (ext 8/16/32) and 0xd4..0xd8 (fixext 1..16)
      throw new MessagePackError(`ext values are not supported (type byte 0x${b.toString(16)})`, at);
  }
}

/** A big-endian unsigned int of `size` bytes (1, 2 or 4). */
function len(r, size, at) {
  need(r, size, at);
  const v = r.view;
  const n = size === 1 ? v.getUint8(r.pos) : size === 2 ? v.getUint16(r.pos) : v.getUint32(r.pos);
  r.pos += size;
  return n;
}

function decodeBin(r, n, at) {
  need(r, n, at);
  r.pos += n;
  return r.bytes.slice(r.pos - n, r.pos);
}

function decodeString(r, n, at) {
  need(r, n, at);
  const start = r.pos;
  r.pos += n;
  if (n < 32) {
    // Short ASCII (most keys) without a TextDecoder call.
    let s = "";
    for (let i = start; i < start + n; i += 1) {
      const c = r.bytes[i];
      if (c > 0x7f) {
        s = null;
        break;
      }
      s += String.fromCharCode(c);
    }
    if (s !== null) return s;
  }
  try {
    return utf8Decoder.decode(r.bytes.subarray(start, start + n));
  } catch {
    throw new MessagePackError("a string that is not valid UTF-8", at);
  }
}

function enter(depth, at) {
  if (depth >= MAX_DEPTH) throw new MessagePackError(`nested deeper than ${MAX_DEPTH} levels`, at);
}

function decodeArray(r, n, depth, at) {
  enter(depth, at);
  // Every element takes a byte at least: a length beyond what is left is a truncation (and no
  // huge array is allocated for it).
  need(r, n, at);
  const out = new Array(n);
  for (let i = 0; i < n; i += 1) out[i] = decodeValue(r, depth + 1);
  return out;
}

function decodeMap(r, n, depth, at) {
  enter(depth, at);
  need(r, 2 * n, at);
  const out = {};
  for (let i = 0; i < n; i += 1) {
    const keyAt = r.pos;
    const key = decodeValue(r, depth + 1);
    if (typeof key !== "string") throw new MessagePackError(`a map key must be a string, not ${describe(key)}`, keyAt);
    const value = decodeValue(r, depth + 1);
    // An own property even for "__proto__", as JSON.parse makes it.
    if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    else out[key] = value;
  }
  return out;
}
