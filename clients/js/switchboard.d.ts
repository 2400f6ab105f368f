// Type declarations of switchboard.js (the Switchboard JavaScript client). See README.md.

/** The subprotocol of the v1 wire protocol, always offered. */
export declare const PROTOCOL: "switchboard.v1";

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The reconnect policy; `false` in `ClientOptions.reconnect` turns reconnecting off. */
export interface ReconnectOptions {
  /** Backoff base in ms (default 250): attempt n waits a random time in [0, min(cap, base * 2^n)). */
  baseMs?: number;
  /** Backoff cap in ms (default 10000). */
  capMs?: number;
  /** Failed attempts in a row before giving up with `closed` (default Infinity). */
  maxAttempts?: number;
  /** Overrides the close-code policy (`shouldReconnectAfterClose`) for closes of an established session. */
  shouldReconnect?: (code: number, reason: string) => boolean;
}

/** Options of `new SwitchboardClient(...)`. */
export interface ClientOptions {
  /** `ws://host:port/ws` (tenant `default`) or `ws://host:port/ws/{tenant}`. */
  url: string;
  /** A JWT, or a function called before every (re)connect that returns one. */
  token: string | (() => string | Promise<string>);
  /** A WebSocket implementation; default `globalThis.WebSocket`. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** Reconnect policy, or `false` for none (default `{baseMs: 250, capMs: 10000, maxAttempts: Infinity}`). */
  reconnect?: ReconnectOptions | false;
  /** Default timeout of `request()` in ms (default 10000). */
  requestTimeoutMs?: number;
  /** After this long with nothing received, send an app-level `ping` (default 20000; 0 turns liveness off). */
  livenessMs?: number;
  /** How long to wait for anything after that ping before the link counts as dead (default 5000). */
  pongTimeoutMs?: number;
  /** How long one (re)connect attempt may take until the welcome (default 10000). */
  connectTimeoutMs?: number;
}

/** The client's connection state (`idle` until the first `connect()`). */
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** The payload of the server's `welcome`. */
export interface Welcome {
  connectionId: string;
  userId: string;
  tenant: string;
  heartbeatSec: number;
  heartbeatTimeoutSec: number;
  [key: string]: unknown;
}

/** One member of a room. */
export interface Member {
  userId: string;
  connectionId: string;
}

/** A server envelope as delivered to `message` listeners. */
export interface Envelope {
  type: string;
  channel?: string;
  payload?: Json;
  /** Set on channel messages (broadcasts and publishes): strictly increasing per channel. */
  seq?: number;
  correlationId?: string;
}

/** The value of a `state` event. */
export interface StateEvent {
  state: ClientState;
  /** For `connecting` (0) and `reconnecting`: the number of the attempt about to be made. */
  attempt?: number;
  /** For `reconnecting`: the backoff delay before that attempt. */
  delayMs?: number;
  /** For `reconnecting` and `closed`: the close code that caused it (1006 for a failed attempt). */
  code?: number;
  reason?: string;
}

/** The value of a `presence` event. */
export interface PresenceEvent {
  channel: string;
  /** `sync`: the member list was (re)seeded from a join ack. */
  event: "join" | "leave" | "sync";
  /** The member who joined or left (absent for `sync`). */
  member?: Member;
  /** The members after the change. */
  members: Member[];
}

/** The value of a `rejoined` event. */
export interface RejoinedEvent {
  channel: string;
  /** True when the server replayed everything missed since the last seq seen. */
  recovered: boolean;
}

/** An error payload (`code`, `message`), as in `error` events. */
export interface ErrorPayload {
  code: string;
  message: string;
  /** Set when a rejoin failed and the room was forgotten. */
  channel?: string;
}

/** The value of a `closed` event. */
export interface ClosedEvent {
  code: number;
  reason: string;
}

/** Event names and the values their listeners receive. */
export interface ClientEvents {
  state: StateEvent;
  welcome: Welcome;
  message: Envelope;
  presence: PresenceEvent;
  rejoined: RejoinedEvent;
  error: ErrorPayload;
  closed: ClosedEvent;
}

/** Options of `request()` and `send()`. */
export interface RequestOptions {
  channel?: string;
  payload?: Json;
  /** Only for `request()`: overrides `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** The result of `join()`. */
export interface JoinResult {
  members: Member[];
  /** True only when `since` was given and the server replayed everything after it. */
  recovered: boolean;
}

/**
 * An error reply of the server (`unknown_type`, `bad_request`, `forbidden`, `not_member`,
 * `handler_failed`, `handler_timeout`, `overloaded`) or a client-side failure (`timeout`,
 * `disconnected`, `not_connected`, `connect_failed`, `closed`).
 */
export declare class SwitchboardError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  readonly name: "SwitchboardError";
  readonly code: string;
  /** For `connect_failed`: the close code of the failed attempt. */
  readonly closeCode?: number;
  readonly closeReason?: string;
  /** For an error reply: the server's payload. */
  readonly payload?: ErrorPayload;
}

/** The delay before a 0-based reconnect attempt: uniform in [0, min(capMs, baseMs * 2^attempt)). */
export declare function backoffDelay(
  attempt: number,
  policy: { baseMs: number; capMs: number },
  random?: () => number,
): number;

/** The default close-code policy: whether a close of an established session is retried. */
export declare function shouldReconnectAfterClose(code: number, reason?: string): boolean;

/** A WebSocket client of a Switchboard server with reconnect, rooms, presence and requests. */
export declare class SwitchboardClient {
  constructor(options: ClientOptions);

  readonly state: ClientState;
  /** The current connection's id, or null while not connected. */
  readonly connectionId: string | null;
  /** The user id from the last welcome, or null. */
  readonly userId: string | null;
  /** The last welcome payload, or null. */
  readonly welcome: Welcome | null;

  /** Subscribe; returns a function that unsubscribes. */
  on<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): void;

  /** Resolves on the first welcome; rejects (`connect_failed`) when the first attempt fails. */
  connect(): Promise<Welcome>;
  /** Close with 1000; no reconnect. Pending requests reject with `disconnected`. */
  close(): void;

  /** Join and remember a room (rejoined after reconnects, with `since` recovery). */
  join(channel: string, options?: { since?: number; timeoutMs?: number }): Promise<JoinResult>;
  /** Leave and forget a room. */
  leave(channel: string, options?: { timeoutMs?: number }): Promise<unknown>;
  /** The current members of a joined room. */
  presence(channel: string): Member[];
  /** The joined room names. */
  rooms(): string[];
  /** The last seq seen on a channel. */
  lastSeq(channel: string): number | undefined;

  /** Send with a correlationId; resolves with the ack payload, rejects with a SwitchboardError. */
  request<T = Json | undefined>(type: string, options?: RequestOptions): Promise<T>;
  /** Fire and forget; false when not connected (nothing is queued). */
  send(type: string, options?: Omit<RequestOptions, "timeoutMs">): boolean;
}
