// A mock host for Node tests of JavaScript plugins: every host call lands in `mockHost`, which a
// test sets up and inspects. It enforces what a real host does: the key-value limits, TTLs
// against `mockHost.nowMs`, and the per-call quota from `beginCall()` (or `reset()`). Refusals
// are thrown as componentize-js throws them: an Error whose `payload` is `{tag, val?}`.

const MAX_KEY_BYTES = 1024;
const MAX_VALUE_BYTES = 1024 * 1024;
const MAX_ENTRIES = 100_000;
const MAX_LIST_PAGE = 100;
const ENTRY_COST = 96;

function fresh() {
  return {
    /** Every `send`: {to, type, channel, payloadJson}. */
    sent: [],
    /** Every `sendToUser`: {userId, type, payloadJson}. */
    sentToUsers: [],
    /** Every `broadcast`: {channel, type, payloadJson, except, seq}. */
    broadcasts: [],
    /** Members per channel: [connectionId, userId][]. */
    members: new Map(),
    closes: [],
    /** key -> {value: Uint8Array, version: bigint, expiresAtMs?: number}. */
    kv: new Map(),
    /** Every log line: {level, message, fields}. */
    logs: [],
    /** Config values answered by `env.config`. */
    config: new Map(),
    /** The clock answered by `env.nowMs`, and against which TTLs run. */
    nowMs: 0,
    /** As a tenant's `plugin_limits` sets them. */
    limits: { maxKvOpsPerCall: 1000, kvMaxBytes: 64 * 1024 * 1024 },
    kvVersion: 0n,
    kvOps: 0,
    seqs: new Map(),
  };
}

/** The mock host's state. */
export const mockHost = fresh();

/** Starts again from an empty host. */
export function reset() {
  Object.assign(mockHost, fresh());
}

/** Starts a new call, as the host would: the per-call quotas start again. */
export function beginCall() {
  mockHost.kvOps = 0;
}

/** A connection as the host describes it. */
export function conn(id, userId, claims = {}) {
  return { id, userId, tenant: "default", claimsJson: JSON.stringify(claims), attachment: undefined, connectedAtMs: 0n };
}

/** A message as the host passes it. */
export function message(type, payload = null, { channel = undefined, correlationId = "c-1" } = {}) {
  return { msgType: type, channel, payloadJson: JSON.stringify(payload), correlationId, receivedAtMs: 0n };
}

function refuse(tag, val = undefined) {
  const payload = val === undefined ? { tag } : { tag, val };
  return Object.assign(new Error(`${JSON.stringify(payload)} (see error.payload)`), { payload });
}

const byteLength = (text) => new TextEncoder().encode(text).length;

function kvBegin(key) {
  if (mockHost.kvOps >= mockHost.limits.maxKvOpsPerCall) throw refuse("rate-limited");
  mockHost.kvOps += 1;
  if (key !== undefined && (key.length === 0 || byteLength(key) > MAX_KEY_BYTES)) {
    throw refuse("invalid", `keys are 1..${MAX_KEY_BYTES} bytes`);
  }
  for (const [name, entry] of mockHost.kv) {
    if (entry.expiresAtMs !== undefined && mockHost.nowMs >= entry.expiresAtMs) mockHost.kv.delete(name);
  }
}

const cost = (key, value) => byteLength(key) + value.length + ENTRY_COST;

/** Writes when the entry is as expected ("any", undefined: absent, or a version). */
function kvWrite(key, expected, value, expiresAtMs) {
  if (value.length > MAX_VALUE_BYTES) throw refuse("too-large");
  const current = mockHost.kv.get(key);
  if (expected !== "any" && (expected === undefined ? current !== undefined : current?.version !== expected)) {
    return undefined;
  }
  let held = 0;
  for (const [name, entry] of mockHost.kv) held += cost(name, entry.value);
  const replaced = current ? cost(key, current.value) : 0;
  if ((!current && mockHost.kv.size >= MAX_ENTRIES) || held - replaced + cost(key, value) > mockHost.limits.kvMaxBytes) {
    throw refuse("too-large");
  }
  mockHost.kvVersion += 1n;
  mockHost.kv.set(key, { value: Uint8Array.from(value), version: mockHost.kvVersion, expiresAtMs });
  return mockHost.kvVersion;
}

const expiry = (ttlMs) => (ttlMs === undefined ? undefined : mockHost.nowMs + Number(ttlMs));

export const realtime = {
  send(to, type, channel, payloadJson) {
    mockHost.sent.push({ to, type, channel, payloadJson });
  },
  sendToUser(userId, type, payloadJson) {
    mockHost.sentToUsers.push({ userId, type, payloadJson });
    return 1;
  },
  broadcast(channel, type, payloadJson, except) {
    const seq = (mockHost.seqs.get(channel) ?? 0n) + 1n;
    mockHost.seqs.set(channel, seq);
    mockHost.broadcasts.push({ channel, type, payloadJson, except, seq });
    return seq;
  },
  join(who, channel) {
    const members = mockHost.members.get(channel) ?? [];
    if (!members.some(([id]) => id === who)) members.push([who, ""]);
    mockHost.members.set(channel, members);
  },
  leave(who, channel) {
    const members = mockHost.members.get(channel) ?? [];
    const kept = members.filter(([id]) => id !== who);
    if (kept.length === members.length) throw refuse("not-found");
    mockHost.members.set(channel, kept);
  },
  close(who, code, reason) {
    mockHost.closes.push({ who, code, reason });
  },
  setAttachment(who, data) {
    if (data.length > 4096) throw refuse("too-large");
  },
  members(channel) {
    return [...(mockHost.members.get(channel) ?? [])];
  },
};

export const kv = {
  get(key) {
    kvBegin(key);
    return mockHost.kv.get(key)?.value;
  },
  set(key, value, ttlMs) {
    kvBegin(key);
    kvWrite(key, "any", value, expiry(ttlMs));
  },
  delete(key) {
    kvBegin(key);
    return mockHost.kv.delete(key);
  },
  incr(key, delta) {
    kvBegin(key);
    const entry = mockHost.kv.get(key);
    const text = entry ? new TextDecoder().decode(entry.value) : "0";
    if (!/^-?\d+$/.test(text)) throw refuse("invalid", "the value is not an integer");
    const next = BigInt(text) + BigInt(delta);
    if (next > 2n ** 63n - 1n || next < -(2n ** 63n)) throw refuse("invalid", "integer overflow");
    kvWrite(key, "any", new TextEncoder().encode(next.toString()), entry?.expiresAtMs);
    return next;
  },
};

export const kvVersioned = {
  getVersioned(key) {
    kvBegin(key);
    const entry = mockHost.kv.get(key);
    return entry ? { value: entry.value, version: entry.version } : undefined;
  },
  compareAndSet(key, expected, value, ttlMs) {
    kvBegin(key);
    return kvWrite(key, expected, value, expiry(ttlMs));
  },
  compareAndDelete(key, expected) {
    kvBegin(key);
    if (mockHost.kv.get(key)?.version !== expected) return false;
    return mockHost.kv.delete(key);
  },
  list(prefix, after, limit) {
    kvBegin(undefined);
    if (byteLength(prefix) > MAX_KEY_BYTES || (after !== undefined && byteLength(after) > MAX_KEY_BYTES)) {
      throw refuse("invalid", `prefixes and cursors are at most ${MAX_KEY_BYTES} bytes`);
    }
    if (!(limit >= 1 && limit <= MAX_LIST_PAGE)) throw refuse("invalid", `a page holds 1..${MAX_LIST_PAGE} keys`);
    // Byte order, as the host lists: compare UTF-8, not UTF-16.
    const order = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
    const keys = [...mockHost.kv.keys()]
      .filter((key) => key.startsWith(prefix) && (after === undefined || order(key, after) > 0))
      .sort(order);
    return { keys: keys.slice(0, limit), more: keys.length > limit };
  },
};

export const logging = {
  log(level, message, fields) {
    mockHost.logs.push({ level, message, fields: Object.fromEntries(fields) });
  },
};

export const env = {
  nowMs: () => BigInt(mockHost.nowMs),
  configGet: (key) => mockHost.config.get(key),
};
