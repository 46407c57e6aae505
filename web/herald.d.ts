// Types for herald.js, the Herald client for browsers and Node 20+. Wire contract: PROTOCOL.md.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Error codes the server sends (PROTOCOL.md §6) and the ones this client adds. */
export type ServerErrorCode =
  | "bad_frame" | "bad_json" | "unknown_op" | "bad_topic" | "bad_pattern" | "bad_request"
  | "unauthorized" | "forbidden" | "too_large" | "rate_limited" | "too_many_subscriptions"
  | "no_responders" | "timeout" | "not_found" | "unavailable" | "internal";
export type ClientErrorCode = "disconnected" | "closed" | "queue_full" | "timeout" | "connect_failed";

export declare const CLIENT_CODES: Readonly<{
  DISCONNECTED: "disconnected";
  CLOSED: "closed";
  QUEUE_FULL: "queue_full";
  TIMEOUT: "timeout";
  CONNECT_FAILED: "connect_failed";
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
}

/** A delivered message: the server's `msg` frame without `op`, plus helpers. */
export interface Message<T = Json> {
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
  reply?(data: Json): Promise<PublishResult>;
}

export type Handler<T = Json> = (msg: Message<T>) => void;

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  group?: string;
  /** With a group: "manual" needs `msg.ack()`, else the message is redelivered. */
  ack?: "auto" | "manual";
  /** Replay the N latest stored messages of each matching topic first (`replay: true`). */
  rewind?: number;
  /** Exact topics only: everything after this offset of this epoch. */
  since?: { epoch: string; offset: number };
}

/** Unsubscribes the handler (the server is told when a pattern's last handler goes). */
export interface Unsubscribe {
  (): Promise<void>;
  readonly pattern: string;
  /** From the server's answer to a `since` subscription: false when the offset was not held. */
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

export interface StoredMessage<T = Json> {
  offset: number;
  topic: string;
  data: T;
  ts: number;
  msg_id?: string;
}

export interface History<T = Json> {
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
}

export interface CloseEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}

export interface GapEvent {
  from_seq: number;
  to_seq: number;
  reason: "overflow" | "expired" | string;
}

export interface BusEvents {
  open: OpenEvent;
  resumed: OpenEvent;
  close: CloseEvent;
  gap: GapEvent;
  /** Errors the server sent without a request to answer, and exceptions thrown by handlers. */
  error: Error;
}

/** A constructor compatible with the browser's WebSocket (e.g. the `ws` package in Node 20). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ConnectOptions {
  /** A token, or a function returning one (called before every connection). */
  token?: string | (() => string | Promise<string>);
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
}

export declare class Bus {
  constructor(url: string, options?: ConnectOptions);
  readonly url: string;
  /** The current WebSocket, or null between connections. */
  readonly socket: WebSocket | null;
  readonly session: string | null;
  /** Highest seq seen or covered by a gap. */
  readonly lastSeq: number;
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly connected: boolean;
  /** The last `welcome` frame. */
  readonly welcome: { session: string; resumed: boolean; heartbeat_ms: number; max_frame: number } | null;

  /**
   * Opens the first connection (what `connect` does). Subscribe before calling it (without
   * awaiting) to catch what a resumed session replays first.
   */
  open(): Promise<void>;
  subscribe<T = Json>(pattern: string, handler: Handler<T>, options?: SubscribeOptions): Promise<Unsubscribe>;
  publish(topic: string, data: Json, options?: PublishOptions): Promise<PublishResult>;
  request<T = Json>(topic: string, data: Json, options?: RequestOptions): Promise<T>;
  history<T = Json>(topic: string, options?: HistoryOptions): Promise<History<T>>;
  presence(topic: string): Promise<Presence>;
  ack(seq: number): void;
  /** Round trip in milliseconds. */
  ping(): Promise<number>;
  on<E extends keyof BusEvents>(event: E, fn: (payload: BusEvents[E]) => void): () => void;
  off<E extends keyof BusEvents>(event: E, fn: (payload: BusEvents[E]) => void): void;
  /** Leaves every subscription, closes the socket, rejects what is pending. */
  close(): void;
}

/** Opens a connection; resolves once the server welcomed it. URL default (in a page): same origin `/ws`. */
export declare function connect(url?: string, options?: ConnectOptions): Promise<Bus>;
export default connect;

/** Whether a topic matches a pattern, by the protocol's glob rules (PROTOCOL.md §1). */
export declare function matchPattern(pattern: string, topic: string): boolean;
export declare function compilePattern(pattern: string): (topic: string) => boolean;
/** Reconnect delay of an attempt: exponential with equal jitter. */
export declare function backoffDelay(attempt: number, minDelayMs?: number, maxDelayMs?: number, random?: () => number): number;
