// The JavaScript SDK against its mock host: the router's answers and error codes, the
// key-value helpers with the host's limits, and log fields.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { beginCall, conn, message, mockHost, reset } from "../mock/host.js";
import { HandlerError, Router, env, kv, log } from "../src/index.js";

const ada = conn("n-1", "ada");

beforeEach(() => reset());

function outcome(router, type, payloadJson) {
  beginCall();
  const msg = { ...message(type), payloadJson };
  try {
    return { reply: router.handle(ada, msg) };
  } catch (error) {
    return { error };
  }
}

test("the router answers JSON, and every failure with a code", () => {
  const router = new Router("t", "1.0.0")
    .on("ok", ({ payload }) => ({ got: payload }))
    .on("nothing", () => undefined)
    .on("refuse", () => {
      throw HandlerError.forbidden("no");
    })
    .on("host", () => kv.get(""))
    .on("bug", () => {
      throw new TypeError("oops");
    });
  assert.deepEqual(router.manifest().handles, ["ok", "nothing", "refuse", "host", "bug"]);
  assert.equal(outcome(router, "ok", '{"a":1}').reply, '{"got":{"a":1}}');
  assert.equal(outcome(router, "nothing", "null").reply, "null");
  assert.deepEqual(outcome(router, "refuse", "null").error, { code: "forbidden", message: "no" });
  assert.deepEqual(outcome(router, "host", "null").error, { code: "invalid", message: "keys are 1..1024 bytes" });
  assert.deepEqual(outcome(router, "bug", "null").error, { code: "internal", message: "the handler failed" });
  assert.match(mockHost.logs.at(-1).message, /TypeError: oops/);
  assert.equal(outcome(router, "ok", "{not json").error.code, "bad_request");
  assert.equal(outcome(router, "missing", "null").error.code, "unknown_type");
});

test("hooks are declared by what is registered, and a throwing join hook refuses", () => {
  const router = new Router("t", "1").withHooks({
    authorizeJoin: (_, channel) => {
      if (channel === "boom") throw new Error("bug");
      return channel.startsWith("open:");
    },
  });
  const exported = router.export();
  assert.deepEqual(exported.describe().hooks, { onConnect: false, onDisconnect: false, authorizeJoin: true, onTick: false });
  assert.equal(exported.authorizeJoin(ada, "open:1"), true);
  assert.equal(exported.authorizeJoin(ada, "closed"), false);
  assert.equal(exported.authorizeJoin(ada, "boom"), false);
});

test("versions guard writes, and updateJson retries until it wins", () => {
  const first = kv.compareAndSetJson("k", undefined, { n: 1 });
  assert.equal(typeof first, "bigint");
  assert.equal(kv.compareAndSetJson("k", undefined, { n: 2 }), undefined, "present now");
  const second = kv.compareAndSetJson("k", first, { n: 2 });
  assert.ok(second > first);
  assert.equal(kv.compareAndDelete("k", first), false);
  assert.equal(kv.compareAndDelete("k", second), true);
  const { value } = kv.updateJson("count", (current) => (current ?? 0) + 1);
  assert.equal(value, 1);
  assert.equal(kv.incr("n", 5), 5n);
});

test("a stored value that is not JSON is an invalid error, never undefined", () => {
  kv.set("raw", "not json");
  assert.throws(() => kv.getJson("raw"), (error) => error.code === "invalid" && /`raw`/.test(error.message));
  assert.equal(kv.getJson("absent"), undefined);
});

test("the host's limits hold: sizes, the namespace's bytes, TTLs, pages and the per-call quota", () => {
  assert.throws(() => kv.set("x".repeat(1025), "v"), { code: "invalid" });
  assert.throws(() => kv.set("big", new Uint8Array(1024 * 1024 + 1)), { code: "too_large" });
  mockHost.limits.kvMaxBytes = 300;
  kv.set("a", "x".repeat(100));
  assert.throws(() => kv.set("b", "x".repeat(100)), { code: "too_large" });
  mockHost.limits.kvMaxBytes = 64 * 1024 * 1024;
  kv.set("t", "1", 100);
  mockHost.nowMs += 100;
  assert.equal(kv.get("t"), undefined, "expired");
  kv.set("p:2", "x");
  kv.set("p:10", "x");
  assert.deepEqual(kv.list("p:", { limit: 1 }), { keys: ["p:10"], more: true });
  assert.deepEqual(kv.list("p:", { after: "p:10" }), { keys: ["p:2"], more: false });
  assert.throws(() => kv.list("p:", { limit: 101 }), { code: "invalid" });
  beginCall();
  mockHost.limits.maxKvOpsPerCall = 1;
  kv.get("a");
  assert.throws(() => kv.get("a"), { code: "rate_limited" });
});

test("log lines carry their fields, and env answers the clock and config", () => {
  log.warn("slow", { ms: 12, path: "/x" });
  assert.deepEqual(mockHost.logs.at(-1), { level: "warn", message: "slow", fields: { ms: "12", path: "/x" } });
  mockHost.nowMs = 1234;
  mockHost.config.set("mode", "fast");
  assert.equal(env.nowMs(), 1234);
  assert.equal(env.config("mode"), "fast");
  assert.equal(env.config("other"), undefined);
});
