// Types of the JavaScript plugin SDK (src/index.js), for TypeScript plugins and editors.

/** A connection as the host describes it. */
export interface ConnInfo {
  id: string;
  userId: string;
  tenant: string;
  /** The verified JWT claims as JSON text. */
  claimsJson: string;
  attachment?: Uint8Array;
  connectedAtMs: bigint;
}

/** What a handler gets. */
export interface Request<P = unknown> {
  payload: P;
  conn: ConnInfo;
  type: string;
  channel?: string;
  correlationId?: string;
  receivedAtMs: number;
}

export class HandlerError extends Error {
  constructor(code: string, message: string);
  code: string;
  static badRequest(message: string): HandlerError;
  static forbidden(message: string): HandlerError;
  static notFound(message: string): HandlerError;
  static conflict(message: string): HandlerError;
  static unavailable(message: string): HandlerError;
  static internal(message: string): HandlerError;
}

/** A refused host call: `code` is `not_found`, `forbidden`, `rate_limited`, `too_large`, `unavailable` or `invalid`. */
export class HostError extends HandlerError {
  tag: string;
}

export interface Hooks {
  onConnect?(conn: ConnInfo): void;
  onDisconnect?(conn: ConnInfo, code: number): void;
  authorizeJoin?(conn: ConnInfo, channel: string): boolean;
  onTick?(nowMs: bigint): void;
}

export interface Manifest {
  name: string;
  version: string;
  handles: string[];
  hooks: { onConnect: boolean; onDisconnect: boolean; authorizeJoin: boolean; onTick: boolean };
  tickIntervalMs?: number;
}

export class Router {
  constructor(name: string, version: string);
  on<P = unknown, R = unknown>(type: string, handler: (request: Request<P>) => R): Router;
  withHooks(hooks: Hooks, tickIntervalMs?: number): Router;
  manifest(): Manifest;
  /** The plugin world's `handler` export: `export const handler = router.export()`. */
  export(): object;
}

export const realtime: {
  send(to: string, type: string, payload: unknown, channel?: string): void;
  sendToUser(userId: string, type: string, payload: unknown): number;
  broadcast(channel: string, type: string, payload: unknown, except?: string): bigint;
  join(who: string, channel: string): void;
  leave(who: string, channel: string): void;
  close(who: string, code: number, reason: string): void;
  members(channel: string): [connectionId: string, userId: string][];
};

export interface Versioned<T> {
  value: T;
  version: bigint;
}

export const kv: {
  get(key: string): Uint8Array | undefined;
  getText(key: string): string | undefined;
  set(key: string, value: Uint8Array | string, ttlMs?: number | bigint): void;
  delete(key: string): boolean;
  incr(key: string, delta?: number | bigint): bigint;
  getJson<T = unknown>(key: string): T | undefined;
  setJson(key: string, value: unknown, ttlMs?: number | bigint): void;
  getJsonVersioned<T = unknown>(key: string): Versioned<T> | undefined;
  compareAndSetJson(key: string, expected: bigint | undefined, value: unknown, ttlMs?: number | bigint): bigint | undefined;
  compareAndDelete(key: string, expected: bigint): boolean;
  list(prefix: string, options?: { after?: string; limit?: number }): { keys: string[]; more: boolean };
  updateJson<T>(key: string, change: (current: T | undefined) => T, ttlMs?: number | bigint): Versioned<T>;
};

type LogFn = (message: string, fields?: Record<string, unknown>) => void;
export const log: { trace: LogFn; debug: LogFn; info: LogFn; warn: LogFn; error: LogFn };

export const env: {
  nowMs(): number;
  config(key: string): string | undefined;
};
