// The Switchboard plugin SDK for JavaScript: typed handlers per message type, the host API with
// JSON in and out, and host errors as the same codes a Rust plugin gets. Built into a WASM
// component against sdk/wit (the same world as Rust plugins) by `build.mjs`, with
// @bytecodealliance/componentize-js. In Node tests, `mock/register.mjs` points the host imports
// at the mock host (`mock/host.js`).

import * as realtimeHost from "switchboard:plugin/realtime@0.1.0";
import * as kvHost from "switchboard:plugin/kv@0.1.0";
import * as kvVersionedHost from "switchboard:plugin/kv-versioned@0.1.0";
import * as loggingHost from "switchboard:plugin/logging@0.1.0";
import * as envHost from "switchboard:plugin/env@0.1.0";

/** The error codes of refused host calls, as the client sees them (the same as Rust's). */
const HOST_CODES = {
  "not-found": "not_found",
  forbidden: "forbidden",
  "rate-limited": "rate_limited",
  "too-large": "too_large",
  unavailable: "unavailable",
  invalid: "invalid",
};

/** An error a handler returns on purpose: the client gets an `error` envelope with its code. */
export class HandlerError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "HandlerError";
    this.code = code;
  }
  static badRequest(message) {
    return new HandlerError("bad_request", message);
  }
  static forbidden(message) {
    return new HandlerError("forbidden", message);
  }
  static notFound(message) {
    return new HandlerError("not_found", message);
  }
  static conflict(message) {
    return new HandlerError("conflict", message);
  }
  static unavailable(message) {
    return new HandlerError("unavailable", message);
  }
  static internal(message) {
    return new HandlerError("internal", message);
  }
}

/** A host call the host refused; a handler that lets it escape answers its `code`. */
export class HostError extends HandlerError {
  constructor(tag, detail) {
    const code = HOST_CODES[tag] ?? "host_error";
    super(code, detail ?? `the host refused the call: ${tag}`);
    this.name = "HostError";
    this.tag = tag;
  }
}

/** Runs a host call; a refusal (the import's `err`) becomes a HostError. */
function call(fn, ...args) {
  try {
    return fn(...args);
  } catch (error) {
    // componentize-js throws an import's `err(host-error)` as an error whose `payload` is the
    // variant: `{tag: "rate-limited"}` or `{tag: "invalid", val: "why"}`.
    const variant = error?.payload ?? error;
    if (variant && typeof variant.tag === "string") throw new HostError(variant.tag, variant.val);
    throw error;
  }
}

const json = (value) => JSON.stringify(value ?? null);

/** Side effects on connections and channels, always within the plugin's tenant. */
export const realtime = {
  /** Sends `{type, channel?, payload}` to one connection. */
  send: (to, type, payload, channel = undefined) => call(realtimeHost.send, to, type, channel, json(payload)),
  /** Sends to every connection of a user; returns how many. */
  sendToUser: (userId, type, payload) => call(realtimeHost.sendToUser, userId, type, json(payload)),
  /** Publishes to a channel; returns the `seq` it was given (a bigint). */
  broadcast: (channel, type, payload, except = undefined) =>
    call(realtimeHost.broadcast, channel, type, json(payload), except),
  join: (who, channel) => call(realtimeHost.join, who, channel),
  leave: (who, channel) => call(realtimeHost.leave, who, channel),
  close: (who, code, reason) => call(realtimeHost.close, who, code, reason),
  /** `[connectionId, userId]` of every member of a channel. */
  members: (channel) => call(realtimeHost.members, channel),
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (value) => (typeof value === "string" ? encoder.encode(value) : value);
const ttl = (ms) => (ms === undefined || ms === null ? undefined : BigInt(ms));

function decode(key, data) {
  try {
    return JSON.parse(decoder.decode(data));
  } catch (error) {
    throw new HostError("invalid", `the value at \`${key}\` does not decode: ${error.message}`);
  }
}

/**
 * Key-value state of the tenant and plugin, shared by every node on the Redis backplane. The
 * same limits as for Rust plugins: keys 1 to 1024 bytes, values up to 1 MiB, 100000 entries
 * and `plugin_limits.kv_max_bytes` per namespace, `max_kv_ops_per_call` per call. Versions are
 * bigints.
 */
export const kv = {
  /** The value's bytes, or undefined. */
  get: (key) => call(kvHost.get, key) ?? undefined,
  /** The value as text, or undefined. */
  getText: (key) => {
    const data = call(kvHost.get, key);
    return data === undefined || data === null ? undefined : decoder.decode(data);
  },
  /** Sets bytes or text, expiring after `ttlMs` when given. */
  set: (key, value, ttlMs = undefined) => call(kvHost.set, key, bytes(value), ttl(ttlMs)),
  delete: (key) => call(kvHost.delete, key),
  /** Adds `delta` to the integer at `key` (0 when absent), atomically; returns a bigint. */
  incr: (key, delta = 1n) => call(kvHost.incr, key, BigInt(delta)),
  /** The JSON value at `key`, or undefined; a value that is not JSON is an `invalid` error. */
  getJson: (key) => {
    const data = call(kvHost.get, key);
    return data === undefined || data === null ? undefined : decode(key, data);
  },
  setJson: (key, value, ttlMs = undefined) => call(kvHost.set, key, encoder.encode(JSON.stringify(value)), ttl(ttlMs)),
  /** `{value (JSON), version}` or undefined. */
  getJsonVersioned: (key) => {
    const entry = call(kvVersionedHost.getVersioned, key);
    return entry ? { value: decode(key, entry.value), version: entry.version } : undefined;
  },
  /** Writes only if `key` is at `expected` (undefined: absent); the new version, or undefined. */
  compareAndSetJson: (key, expected, value, ttlMs = undefined) =>
    call(kvVersionedHost.compareAndSet, key, expected, encoder.encode(JSON.stringify(value)), ttl(ttlMs)) ??
    undefined,
  compareAndDelete: (key, expected) => call(kvVersionedHost.compareAndDelete, key, expected),
  /** `{keys, more}`: live keys starting with `prefix`, after `after`, at most `limit` (1..100). */
  list: (prefix, { after = undefined, limit = 100 } = {}) => call(kvVersionedHost.list, prefix, after, limit),
  /**
   * Reads the JSON value, lets `change(current | undefined)` make the next one and writes it
   * only if nobody wrote in between, retrying up to 16 times (then `conflict`).
   */
  updateJson(key, change, ttlMs = undefined) {
    for (let attempt = 0; attempt < 16; attempt += 1) {
      const current = kv.getJsonVersioned(key);
      const next = change(current?.value);
      const version = kv.compareAndSetJson(key, current?.version, next, ttlMs);
      if (version !== undefined) return { value: next, version };
    }
    throw HandlerError.conflict(`\`${key}\` kept changing: 16 attempts lost the race`);
  },
};

/** Log lines with fields of their own: `log.info("voted", {poll: "p-1"})`. */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((level) => [
    level,
    (message, fields = {}) =>
      loggingHost.log(
        level,
        String(message),
        Object.entries(fields).map(([name, value]) => [name, String(value)]),
      ),
  ]),
);

export const env = {
  /** Milliseconds since the Unix epoch, as a number. */
  nowMs: () => Number(envHost.nowMs()),
  /** A value from this plugin's section of the tenant config, or undefined. */
  config: (key) => envHost.configGet(key) ?? undefined,
};

/** The manifest's hooks flags. */
const NO_HOOKS = { onConnect: false, onDisconnect: false, authorizeJoin: false, onTick: false };

/**
 * Message types and their handlers. `handler({payload, conn, type, channel, correlationId})`
 * gets the payload parsed; what it returns is the ack's payload (JSON); a thrown HandlerError
 * (or a HostError it did not catch) becomes the client's `error` with that code; anything else
 * thrown is logged and answered `internal`.
 */
export class Router {
  constructor(name, version) {
    this.name = name;
    this.version = version;
    this.routes = new Map();
    this.hooks = { ...NO_HOOKS };
    this.hookHandlers = {};
    this.tickIntervalMs = undefined;
  }

  /** Registers the handler of `type`. */
  on(type, handler) {
    this.routes.set(type, handler);
    return this;
  }

  /** Lifecycle hooks: `{onConnect(conn), onDisconnect(conn, code), authorizeJoin(conn, channel), onTick(nowMs)}`. */
  withHooks(handlers, tickIntervalMs = undefined) {
    for (const name of Object.keys(NO_HOOKS)) {
      if (handlers[name]) {
        this.hooks[name] = true;
        this.hookHandlers[name] = handlers[name];
      }
    }
    this.tickIntervalMs = tickIntervalMs;
    return this;
  }

  /** The manifest: the types are the registered ones. */
  manifest() {
    return {
      name: this.name,
      version: this.version,
      handles: [...this.routes.keys()],
      hooks: { ...this.hooks },
      tickIntervalMs: this.tickIntervalMs,
    };
  }

  /** Runs the handler of `msg.msgType`; returns the reply's JSON text, or throws `{code, message}`. */
  handle(conn, msg) {
    const handler = this.routes.get(msg.msgType);
    if (!handler) throw plain(new HandlerError("unknown_type", msg.msgType));
    let payload;
    try {
      payload = JSON.parse(msg.payloadJson);
    } catch (error) {
      throw plain(HandlerError.badRequest(`the payload is not JSON: ${error.message}`));
    }
    try {
      const reply = handler({
        payload,
        conn,
        type: msg.msgType,
        channel: msg.channel,
        correlationId: msg.correlationId,
        receivedAtMs: Number(msg.receivedAtMs),
      });
      return json(reply);
    } catch (error) {
      if (error instanceof HandlerError) throw plain(error);
      loggingHost.log("error", `handler of \`${msg.msgType}\` threw: ${error?.stack ?? error}`, []);
      throw plain(HandlerError.internal("the handler failed"));
    }
  }

  /** The `handler` export of the plugin world, for `export const handler = router.export()`. */
  export() {
    const hook = (name, fallback) => (...args) => {
      const fn = this.hookHandlers[name];
      if (!fn) return fallback;
      try {
        return fn(...args);
      } catch (error) {
        loggingHost.log("error", `hook \`${name}\` threw: ${error?.stack ?? error}`, []);
        return fallback;
      }
    };
    return {
      describe: () => this.manifest(),
      init: () => {},
      onMessage: (conn, msg) => this.handle(conn, msg),
      onConnect: hook("onConnect", undefined),
      onDisconnect: hook("onDisconnect", undefined),
      // A hook that throws refuses the join, as a trapped Rust hook does.
      authorizeJoin: hook("authorizeJoin", false),
      onTick: hook("onTick", undefined),
    };
  }
}

/** The handler-error record the world expects (a plain object, as componentize-js lifts it). */
function plain(error) {
  return { code: error.code, message: error.message };
}
