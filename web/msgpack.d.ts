// Types for msgpack.js, the small MessagePack codec herald.js uses for `encoding: "msgpack"`.

/** What encodes: JSON-like values, binary, 64-bit integers as bigint. */
export type Encodable =
  | null | undefined | boolean | number | bigint | string
  | Uint8Array | ArrayBuffer | ArrayBufferView
  | Encodable[] | Map<string, Encodable> | { [key: string]: Encodable } | { toJSON(): Encodable };

/** What decodes: bin is a Uint8Array; an int beyond 2^53 (either sign) is a bigint. */
export type Decoded = null | boolean | number | bigint | string | Uint8Array | Decoded[] | { [key: string]: Decoded };

/** The deepest nesting of arrays and maps that encode and decode accept. */
export declare const MAX_DEPTH: 128;

/** Input that does not decode (with `offset`, where), or a value that does not encode. */
export declare class MessagePackError extends Error {
  readonly name: "MessagePackError";
  readonly offset?: number;
}

export interface EncodeOptions {
  /** NaN and ±Infinity as nil (as JSON.stringify makes them null); default: float64. */
  nonFiniteAsNil?: boolean;
}

/**
 * The smallest encoding of each int, floats as float64, strings as UTF-8, binary as bin, plain
 * objects and Maps (string keys) as maps; undefined, functions and symbols are skipped in maps
 * (nil in arrays); `toJSON` is honoured.
 */
export declare function encode(value: Encodable, options?: EncodeOptions): Uint8Array;

/**
 * Exactly one value; throws MessagePackError for truncated input, trailing bytes, the type
 * byte 0xc1, ext values, non-string map keys, strings that are not UTF-8, nesting deeper than 128.
 */
export declare function decode(input: Uint8Array | ArrayBuffer | ArrayBufferView): Decoded;
