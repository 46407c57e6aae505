// Types for herald.js, the Herald client for browsers and Node 20+. Wire contract: PROTOCOL.md.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * What a message's `data` may hold: JSON, and binary. Publishing, a Uint8Array (or an
 * ArrayBuffer, a DataView, another typed array) goes as MessagePack `bin`, or over JSON as
 * `{"$base64": "…"}`. Received over MessagePack (or over JSON with `decodeBinary`), binary is
 * a Uint8Array; a MessagePack integer beyond 2^53 is a bigint.
 */
export type Data = null | boolean | number | bigint | string | Uint8Array | ArrayBuffer | ArrayBufferView | Data[] | { [key: string]: Data };

/** How binary data looks on a JSON connection without `decodeBinary` (standard base64, padded). */
export interface Base64Data {
  $base64: string;
}

/** Frame encodings: JSON text frames, or MessagePack binary frames (`herald.v1.msgpack`). */
export type Encoding = "json" | "msgpack";

/** Error codes the server sends (PROTOCOL.md §6) and the ones this client adds. */
export type ServerErrorCode =
  | "bad_frame" | "bad_json" | "unknown_op" | "bad_topic" | "bad_pattern" | "bad_request"
  | "unauthorized" | "forbidden" | "too_large" | "rate_limited" | "too_many_subscriptions"
  | "no_responders" | "timeout" | "not_found" | "unavailable" | "internal";
export type ClientErrorCode = "disconnected" | "closed" | "queue_full" | "timeout" | "connect_failed" | "token_failed" | "unsupported";

export declare const CLIENT_CODES: Readonly<{
  DISCONNECTED: "disconnected";
  CLOSED: "closed";
  QUEUE_FULL: "queue_full";
  TIMEOUT: "timeout";
  CONNECT_FAILED: "connect_failed";
  TOKEN_FAILED: "token_failed";
  /**
   * The transport in use cannot do that (over SSE: `request`, `ack`, `ack: "manual"`), or the
   * server cannot (`encoding: "msgpack"` with a server that did not select herald.v1.msgpack).
   */
  UNSUPPORTED: "unsupported";
}>;

export declare class HeraldError extends Error {
  constructor(code: string, message?: string, extra?: object);
  readonly name: "HeraldError";
  /** A server code from PROTOCOL.md §6 or a client code. */
  readonly code: ServerErrorCode | ClientErrorCode | string;
  /** The request id the server echoed, for server errors. */
  readonly id?: number | string;
  /** The WebSocket close code, for `connect_failed`. */
  readonly closeCode?: number;
  /** What `getToken` threw, for `token_failed`. */
  readonly cause?: unknown;
  /** The HTTP status, for errors of the sse transport's HTTP calls. */
  readonly status?: number;
  /** "sse", for `unsupported` over SSE. */
  readonly transport?: Transport;
  /** "msgpack", for `unsupported` when the server has no MessagePack subprotocol. */
  readonly encoding?: "msgpack";
  /** The URL of the server that refused, for `unsupported` on a reconnect (the `error` event). */
  readonly url?: string;
}

/** How a bus reaches the server. */
export type Transport = "websocket" | "sse";

/** A delivered message: the server's `msg` frame without `op`, plus helpers. */
export interface Message<T = Data> {
  topic: string;
  data: T;
  /** The session's sequence number: 1, 2, 3, … across all subscriptions. */
  seq: number;
  /** The topic's offset (rises by 1 per published message). */
  offset: number;
  /** The topic's epoch (changes when its history is lost). */
  epoch: string;
  /** The server's receive time, Unix milliseconds. */
  ts: number;
  msg_id?: string;
  /** Set on requests: where the answer goes (use `reply`). */
  reply_to?: string;
  retained?: boolean;
  replay?: boolean;
  redelivered?: boolean;
  deliveries?: number;
  /** Acknowledges the message (`ack: "manual"` group subscriptions). */
  ack(): void;
  /** Answers a request (present when `reply_to` is). */
  reply?(data: Data): Promise<PublishResult>;
}

export type Handler<T = Data> = (msg: Message<T>) => void;

/** Where a topic stands: its epoch and an offset in it. */
export interface Position {
  epoch: string;
  offset: number;
}

/**
 * A `since` for any pattern: every held message after each listed topic's offset, and for the
 * matching topics not listed, those with `ts` after `ts` (Unix ms). At most 1000 topics.
 */
export interface SinceTopics {
  topics?: { [topic: string]: Position };
  ts?: number;
}

/** Offsets of one topic that a recovering subscription cannot replay (`op: "gap"` with `topic`). */
export interface TopicGapEvent {
  topic: string;
  /** The first offset missing, in `epoch`. */
  from_offset: number;
  /** The last offset missing; below `from_offset` (an empty range) when a new epoch is held from its start. */
  to_offset: number;
  /** "history": no longer held (trimmed, or past `max_rewind`); "epoch": the topic's epoch changed. */
  reason: "history" | "epoch" | string;
  /** The topic's current epoch. */
  epoch: string;
}

export type GapHandler = (gap: TopicGapEvent) => void;

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  group?: string;
  /** With a group: "manual" needs `msg.ack()`, else the message is redelivered. */
  ack?: "auto" | "manual";
  /** Replay the N latest stored messages of each matching topic first (`replay: true`). */
  rewind?: number;
  /**
   * Start after a position: `{epoch, offset}` (exact topics only) or `{topics, ts}` (any pattern;
   * e.g. what `bus.since(pattern)` gave before a page reload). Not with `group` or `rewind`.
   */
  since?: Position | SinceTopics;
  /** Called with this subscription's topic gaps (what a recovery could not replay). */
  onGap?: GapHandler;
}

/** Unsubscribes the handler (the server is told when a pattern's last handler goes). */
export interface Unsubscribe {
  (): Promise<void>;
  readonly pattern: string;
  /**
   * From the server's answer to a `since` subscription, and updated by every recovery after a
   * lost session: false when something could not be replayed (see the `gap` events).
   */
  readonly recovered?: boolean;
}

export interface PublishOptions {
  /** De-duplication key: repeating it within the server's window is not delivered again. */
  msgId?: string;
  /** Keep as the topic's retained message (`data: null` clears it). */
  retain?: boolean;
}

export interface PublishResult {
  offset: number;
  epoch: string;
  duplicate: boolean;
}

export interface RequestOptions {
  /** Default 5000, server maximum 60000. */
  timeoutMs?: number;
}

export interface HistoryOptions {
  /** Only messages after this offset. */
  since?: number;
  /** Default 100, maximum 1000. */
  limit?: number;
}

export interface StoredMessage<T = Data> {
  offset: number;
  topic: string;
  data: T;
  ts: number;
  msg_id?: string;
}

export interface History<T = Data> {
  epoch: string;
  messages: StoredMessage<T>[];
}

export interface PresenceClient {
  session: string;
  user: string | null;
  info: Json;
}

export interface Presence {
  count: number;
  clients: PresenceClient[];
}

export interface OpenEvent {
  session: string;
  resumed: boolean;
  /** The session before this connection (differs from `session` when it was not resumed). */
  previousSession: string | null;
  /** The URL this connection went to. */
  url: string;
  transport: Transport;
  /** The frames' encoding on this connection ("json" over SSE, whatever was asked). */
  encoding: Encoding;
}

/** "auto" gave up on the WebSocket: the bus uses SSE from now on. */
export interface TransportEvent {
  name: "sse";
  /** Why, for logs. */
  reason: string;
  /** The event stream URL it uses now. */
  url: string;
}

export interface CloseEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
  /** The URL of the connection that closed. */
  url: string;
}

/** Seqs of the session's stream that will never come (no `topic`). */
export interface SessionGapEvent {
  from_seq: number;
  to_seq: number;
  reason: "overflow" | "expired" | string;
}

/** A session gap, or a topic gap (tell them apart by `topic`). */
export type GapEvent = SessionGapEvent | TopicGapEvent;

/**
 * After a subscription was sent again on a new session (the old one was lost); it comes with the
 * server's answer, before the replayed messages and topic gaps.
 */
export interface RecoveredEvent {
  pattern: string;
  group?: string;
  /** True when the server replayed everything missed; false with a gap, or for a group. */
  recovered: boolean;
}

/** The connection's token expires at `exp`: `getToken` is asked for the next one. */
export interface ExpiringEvent {
  /** Unix seconds. */
  exp: number;
}

/** The server took the new token on the open socket. */
export interface RefreshedEvent {
  /** The new token's expiry, Unix seconds. */
  exp: number;
}

/** A subscription the server made for this session (HTTP `POST /v1/subscribe`). */
export interface SubscribedEvent {
  pattern: string;
  group?: string;
}

export interface UnsubscribedEvent {
  pattern: string;
  group?: string;
  /**
   * "server": a backend removed it (HTTP `POST /v1/unsubscribe`); "forbidden": a refreshed token
   * no longer allows it; "session" (from this client): a server-made one ended with its session
   * (the server did not resume it).
   */
  reason: "server" | "forbidden" | "session" | string;
}

export interface BusEvents {
  open: OpenEvent;
  resumed: OpenEvent;
  close: CloseEvent;
  /** Session gaps and topic gaps (a topic gap reaches the bus once, however many subscriptions match). */
  gap: GapEvent;
  recovered: RecoveredEvent;
  /**
   * Errors the server sent without a request to answer, exceptions thrown by handlers, and
   * `token_failed` when `getToken` failed before a reconnect (the attempt is retried).
   */
  error: Error;
  expiring: ExpiringEvent;
  refreshed: RefreshedEvent;
  /**
   * The token could not be refreshed: `token_failed` (getToken threw, gave nothing, or gave a
   * token that expires no later) or the server's `unauthorized`/`forbidden` (another `sub`).
   * The server closes with 4001 at `exp`; the reconnect asks getToken again.
   */
  refresh_failed: HeraldError;
  subscribed: SubscribedEvent;
  /** A subscription the server removed; a local one is forgotten (no reconnect makes it again). */
  unsubscribed: UnsubscribedEvent;
  /** A message of a server-made subscription (`subscribed`) that no local subscription matches. */
  message: Message;
  /** "auto" fell back to SSE (before that connection's `open`). */
  transport: TransportEvent;
}

/** A constructor compatible with the browser's WebSocket (e.g. the `ws` package in Node 20). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** A constructor compatible with the browser's EventSource. */
export type EventSourceConstructor = new (url: string) => EventSource;

export interface ConnectOptions {
  /**
   * "auto" (default): a WebSocket; once two in a row failed to open while the server answers
   * plain HTTP (a proxy refusing upgrades; before any WebSocket of the bus worked, else after
   * an outage of 5 attempts), SSE for good (`transport` event). "websocket": never SSE. "sse":
   * `GET /v1/events`, with subscribing and publishing over HTTP.
   */
  transport?: "auto" | Transport;
  /**
   * For the sse transport: default the global EventSource (browsers), else FetchEventSource
   * (Node). Pass FetchEventSource in a page to send the token as a header and resume a saved
   * session, which the browser's cannot.
   */
  EventSource?: EventSourceConstructor | typeof FetchEventSource | unknown;
  /** For the sse transport's HTTP calls (default: the global fetch). */
  fetch?: typeof fetch;
  /** More URLs, after the one(s) given to `connect`: failover targets. */
  urls?: string[];
  /** A token, or a function returning one (called before every connection). */
  token?: string | (() => string | Promise<string>);
  /**
   * Called before every connection and on the server's `expiring`, when the token it returns
   * replaces the old one on the open socket (`refresh`, no reconnect). Wins over `token`. It has
   * `connectTimeoutMs` to answer.
   */
  getToken?: () => string | Promise<string>;
  /** Needed where there is no global WebSocket (Node 20). */
  WebSocket?: WebSocketConstructor | unknown;
  /** Resume a session saved earlier (with `lastSeq`). */
  session?: string;
  lastSeq?: number;
  /** Sent as `hello.client`. */
  client?: Json;
  /** Set to false to never reconnect. */
  reconnect?: boolean;
  /** Reconnect backoff: first delay (default 250) and ceiling (default 15000), before jitter. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Publishes held while offline (default 1000); beyond, `publish` rejects `queue_full`. */
  maxQueue?: number;
  /** Default request timeout (5000). */
  requestTimeoutMs?: number;
  /** How long to wait for the server to answer any other call (15000). */
  answerTimeoutMs?: number;
  /** From opening a socket to the server's `welcome` (10000); then the attempt counts as failed. */
  connectTimeoutMs?: number;
  /**
   * "json" (default): text frames. "msgpack": every WebSocket frame is binary MessagePack (the
   * `herald.v1.msgpack` subprotocol; binary `data` travels as `bin`, not base64). A server that
   * does not select that subprotocol fails the first connection with `unsupported` (and is an
   * `error` event on a reconnect). The sse transport (and "auto"'s fallback to it) stays JSON.
   */
  encoding?: Encoding;
  /**
   * On JSON frames (encoding "json", and SSE): turn every `{"$base64": "…"}` in received `data`
   * (a message's, a reply's, history's) into a Uint8Array, as MessagePack delivers it. Default:
   * false with encoding "json" (such objects stay as they are), true with "msgpack" (so its SSE
   * fallback delivers binary alike).
   */
  decodeBinary?: boolean;
}

export declare class Bus {
  constructor(url?: string | string[], options?: ConnectOptions);
  /** The URL in use (or being tried). */
  readonly url: string;
  /** Every URL, in the order tried: the first connection tries each; each reconnect moves to the next. */
  readonly urls: string[];
  /** "websocket" or "sse": the transport in use ("auto" starts with "websocket"). */
  readonly transport: Transport;
  /** The frames' encoding on the transport in use: "msgpack" on a WebSocket with `encoding: "msgpack"`, else "json". */
  readonly encoding: Encoding;
  /**
   * The current WebSocket, or null between connections. Over SSE, what stands for it (the same
   * `readyState`, `close()`), with the stream's `eventSource` and `session`.
   */
  readonly socket: WebSocket | { readonly readyState: number; readonly eventSource: EventSource | FetchEventSource | null; readonly session: string | null; close(): void } | null;
  readonly session: string | null;
  /** Highest seq seen or covered by a gap. */
  readonly lastSeq: number;
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly connected: boolean;
  /** The last `welcome` frame. */
  readonly welcome: { session: string; resumed: boolean; heartbeat_ms: number; max_frame: number } | null;
  /** Subscriptions the server made for this session and has not removed (see `subscribed`). */
  readonly serverSubscriptions: SubscribedEvent[];

  /**
   * Opens the first connection (what `connect` does). Subscribe before calling it (without
   * awaiting) to catch what a resumed session replays first.
   */
  open(): Promise<void>;
  subscribe<T = Data>(pattern: string, handler: Handler<T>, options?: SubscribeOptions): Promise<Unsubscribe>;
  /** What a plain subscription would continue from (to pass as `since` later); null if none. */
  since(pattern: string): Required<SinceTopics> | null;
  /** `data`: JSON, with binary as a Uint8Array (see {@link Data}). */
  publish(topic: string, data: Data, options?: PublishOptions): Promise<PublishResult>;
  /** Over SSE: rejects `unsupported`. */
  request<T = Data>(topic: string, data: Data, options?: RequestOptions): Promise<T>;
  /** Over SSE: `GET /v1/history`. */
  history<T = Data>(topic: string, options?: HistoryOptions): Promise<History<T>>;
  /** Over SSE: `GET /v1/presence` (with `[auth]`, an admin key's call). */
  presence(topic: string): Promise<Presence>;
  /** Over SSE: throws `unsupported`. */
  ack(seq: number): void;
  /** Round trip in milliseconds (over SSE: to `GET /healthz`). */
  ping(): Promise<number>;
  on<E extends keyof BusEvents>(event: E, fn: (payload: BusEvents[E]) => void): () => void;
  off<E extends keyof BusEvents>(event: E, fn: (payload: BusEvents[E]) => void): void;
  /** Leaves every subscription, closes the socket, rejects what is pending. */
  close(): void;
}

/**
 * Opens a connection; resolves once the server welcomed it. URL default (in a page): same origin
 * `/ws`. With several URLs the first connection tries each in turn (rejecting `connect_failed`
 * when none answers) and each reconnect attempt moves to the next.
 */
export declare function connect(url?: string | string[], options?: ConnectOptions): Promise<Bus>;
export default connect;

/** Whether a topic matches a pattern, by the protocol's glob rules (PROTOCOL.md §1). */
export declare function matchPattern(pattern: string, topic: string): boolean;
export declare function compilePattern(pattern: string): (topic: string) => boolean;
/** The most topics a `since` may list, and a subscription remembers. */
export declare const MAX_SINCE_TOPICS: 1000;

/**
 * A subscription's bookkeeping: the last position delivered of each topic (the `limit` most
 * recently delivered) and the earliest `ts` (a recovery replays unlisted topics after it). Used
 * by the Bus; exported for tests and tools.
 */
export declare class Positions {
  constructor(limit?: number);
  readonly limit: number;
  /** Earliest `ts` delivered or seeded. */
  readonly ts: number | undefined;
  readonly size: number;
  get(topic: string): Position | undefined;
  /** Whether the offset is at or before the topic's position in the same epoch. */
  has(topic: string, epoch: string, offset: number): boolean;
  /** Records a delivery; false when it was delivered already (a duplicate). */
  deliver(topic: string, epoch: string, offset: number, ts?: number): boolean;
  /** Records a gap up to `offset`; false when already covered. */
  cover(topic: string, epoch: string, offset: number): boolean;
  /** Takes a `since` as delivered (`topic` for the `{epoch, offset}` form). */
  seed(since: Position | SinceTopics | undefined, topic?: string): void;
  /** `ts` is the earlier of `this.ts` and `startTs` (when the subscription began). */
  since(startTs?: number): SinceTopics & { topics: { [topic: string]: Position } };
}

/** Standard base64 (padded) of bytes: what a JSON connection carries binary data as. */
export declare function toBase64(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): string;
/** The bytes of standard, padded base64 text; null when it is not exactly that. */
export declare function fromBase64(text: string): Uint8Array | null;
/** `value` with every `{"$base64": "…"}` in it replaced by its bytes (what `decodeBinary` does to `data`; in place). */
export declare function decodeBinaryData<T = Data>(value: unknown): T;

/** Reconnect delay of an attempt: exponential with equal jitter. */
export declare function backoffDelay(attempt: number, minDelayMs?: number, maxDelayMs?: number, random?: () => number): number;

/** An event of a {@link FetchEventSource}. */
export interface FetchEventSourceEvent {
  type: string;
  /** The event's data (`undefined` for `open` and `error`). */
  data?: string;
  lastEventId?: string;
  /** For `error`: what broke the connection, if anything was thrown. */
  error?: unknown;
}

/**
 * A small EventSource over `fetch` streaming (Node has none), that can also send headers and a
 * first `Last-Event-ID`. It reconnects by itself after a network error or the end of the
 * stream (`retry` ms later, sending `Last-Event-ID`); an HTTP status other than 200 or another
 * content type fails it for good.
 */
export declare class FetchEventSource {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSED: 2;
  constructor(url: string, options?: { headers?: Record<string, string>; lastEventId?: string; fetch?: typeof fetch; retryMs?: number; idleTimeoutMs?: number });
  readonly url: string;
  readonly withCredentials: false;
  readonly readyState: 0 | 1 | 2;
  readonly lastEventId: string;
  /** The last response's HTTP status. */
  readonly status: number | undefined;
  /** Why the last connection failed: `{status, code?, message}` from an HTTP error, or what was thrown. */
  readonly failure: { status: number; code?: string; message: string } | unknown;
  /** The reconnect delay (the server's `retry:` sets it). */
  retryMs: number;
  /** A connection silent this long (even without heartbeat comments) is dropped and reopened; 0: never. */
  idleTimeoutMs: number;
  onopen: ((ev: FetchEventSourceEvent) => void) | null;
  onmessage: ((ev: FetchEventSourceEvent) => void) | null;
  onerror: ((ev: FetchEventSourceEvent) => void) | null;
  /** Comment lines (`: heartbeat`), without the colon. */
  oncomment: ((text: string) => void) | null;
  addEventListener(type: string, fn: (ev: FetchEventSourceEvent) => void): void;
  removeEventListener(type: string, fn: (ev: FetchEventSourceEvent) => void): void;
  close(): void;
}
