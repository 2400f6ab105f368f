// The poll plugin's logic in Node, against the SDK's mock host:
//   node --import ../../sdk/js/mock/register.mjs --test test/
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { beginCall, conn, message, mockHost, reset } from "../../../sdk/js/mock/host.js";
import { handler } from "../src/index.js";

const ada = conn("n-1", "ada");
const bob = conn("n-2", "bob");

/** One call as the host makes it: the reply's payload, or the error record it threw. */
function call(who, type, payload) {
  beginCall();
  try {
    return { reply: JSON.parse(handler.onMessage(who, message(type, payload))) };
  } catch (error) {
    return { error };
  }
}

beforeEach(() => reset());

test("the manifest lists the registered types", () => {
  const manifest = handler.describe();
  assert.equal(manifest.name, "poll-js");
  assert.deepEqual(manifest.handles, [
    "poll:create",
    "poll:vote",
    "poll:results",
    "poll:delete",
    "poll:watch",
    "poll:unwatch",
  ]);
  assert.deepEqual(manifest.hooks, { onConnect: false, onDisconnect: false, authorizeJoin: true, onTick: false });
});

test("a vote counts once per user and a new vote moves it", () => {
  const { reply } = call(ada, "poll:create", { question: "Tea?", options: ["yes", "no"] });
  assert.deepEqual(reply, { id: "1" });
  assert.deepEqual(call(ada, "poll:vote", { poll: "1", choice: 0 }).reply.tally, [1, 0]);
  assert.deepEqual(call(ada, "poll:vote", { poll: "1", choice: 0 }).reply.tally, [1, 0]);
  assert.deepEqual(call(bob, "poll:vote", { poll: "1", choice: 0 }).reply.tally, [2, 0]);
  assert.deepEqual(call(ada, "poll:vote", { poll: "1", choice: 1 }).reply.tally, [1, 1]);
  const results = call(bob, "poll:results", { poll: "1" }).reply;
  assert.deepEqual(results, { id: "1", question: "Tea?", options: ["yes", "no"], createdAtMs: 0, tally: [1, 1] });
  // The creator hears of bob's vote, not of its own.
  assert.deepEqual(
    mockHost.sentToUsers.map(({ userId, type }) => [userId, type]),
    [["ada", "poll:voted"]],
  );
  assert.deepEqual(
    mockHost.broadcasts.map(({ channel, type }) => [channel, type]),
    [["poll:1", "poll:tally"], ["poll:1", "poll:tally"], ["poll:1", "poll:tally"]],
  );
  assert.deepEqual(mockHost.logs.at(-1), {
    level: "info",
    message: "vote counted",
    fields: { poll: "1", choice: "1", user: "ada" },
  });
});

test("a tally written by another call meanwhile is not overwritten", () => {
  call(ada, "poll:create", { question: "Q", options: ["a", "b"] });
  // Another node's vote lands between this call's read and its write: the first
  // compare-and-set loses, the retry reads the new tally.
  const originalGet = mockHost.kv.get.bind(mockHost.kv);
  let raced = false;
  mockHost.kv.get = (key) => {
    const entry = originalGet(key);
    if (key === "tally:1" && !raced) {
      raced = true;
      mockHost.kvVersion += 1n;
      mockHost.kv.set("tally:1", { value: new TextEncoder().encode("[0,5]"), version: mockHost.kvVersion });
    }
    return entry;
  };
  assert.deepEqual(call(ada, "poll:vote", { poll: "1", choice: 0 }).reply.tally, [1, 5]);
});

test("bad input is refused with the documented codes and changes nothing", () => {
  call(ada, "poll:create", { question: "Q", options: ["a", "b"] });
  const cases = [
    ["poll:create", { question: "", options: ["a", "b"] }, "bad_request"],
    ["poll:create", { question: "Q", options: ["a"] }, "bad_request"],
    ["poll:vote", { poll: "1", choice: 2 }, "bad_request"],
    ["poll:vote", { poll: "1", choice: "0" }, "bad_request"],
    ["poll:vote", { poll: "9", choice: 0 }, "not_found"],
    ["poll:vote", { poll: "../x", choice: 0 }, "bad_request"],
    ["poll:results", null, "bad_request"],
  ];
  for (const [type, payload, code] of cases) {
    const { error } = call(ada, type, payload);
    assert.equal(error?.code, code, `${type} ${JSON.stringify(payload)}`);
  }
  assert.deepEqual(call(ada, "poll:results", { poll: "1" }).reply.tally, [0, 0]);
  assert.equal(mockHost.broadcasts.length, 0);
});

test("a refused host call answers its code: the per-call quota", () => {
  call(ada, "poll:create", { question: "Q", options: ["a", "b"] });
  mockHost.limits.maxKvOpsPerCall = 3;
  assert.equal(call(ada, "poll:vote", { poll: "1", choice: 0 }).error?.code, "rate_limited");
});

test("only the creator deletes a poll, with its tally and every ballot", () => {
  call(ada, "poll:create", { question: "Q", options: ["a", "b"] });
  call(ada, "poll:create", { question: "Other", options: ["a", "b"] });
  call(ada, "poll:vote", { poll: "1", choice: 0 });
  call(bob, "poll:vote", { poll: "1", choice: 1 });
  call(bob, "poll:vote", { poll: "2", choice: 1 });
  assert.equal(call(bob, "poll:delete", { poll: "1" }).error?.code, "forbidden");
  assert.deepEqual(call(ada, "poll:delete", { poll: "1" }).reply, { deleted: 2 });
  assert.equal(call(ada, "poll:results", { poll: "1" }).error?.code, "not_found");
  assert.deepEqual(
    [...mockHost.kv.keys()].filter((key) => key.includes(":1")),
    [],
    "nothing of poll 1 is left",
  );
  assert.deepEqual(call(bob, "poll:results", { poll: "2" }).reply.tally, [0, 1]);
});

test("watching joins the poll's channel and sends the tally; joins of unknown polls are refused", () => {
  mockHost.nowMs = 1_700_000_000_000;
  call(ada, "poll:create", { question: "Q", options: ["a", "b"] });
  assert.equal(call(ada, "poll:results", { poll: "1" }).reply.createdAtMs, 1_700_000_000_000);
  assert.deepEqual(call(bob, "poll:watch", { poll: "1" }).reply, { watchers: 1 });
  assert.deepEqual(mockHost.members.get("poll:1"), [["n-2", ""]]);
  assert.deepEqual(mockHost.sent.at(-1), {
    to: "n-2",
    type: "poll:tally",
    channel: "poll:1",
    payloadJson: JSON.stringify({ poll: "1", tally: [0, 0] }),
  });
  assert.deepEqual(call(bob, "poll:unwatch", { poll: "1" }).reply, {});
  assert.equal(call(bob, "poll:unwatch", { poll: "1" }).error?.code, "not_found");
  assert.equal(handler.authorizeJoin(bob, "poll:1"), true);
  assert.equal(handler.authorizeJoin(bob, "poll:2"), false);
  assert.equal(handler.authorizeJoin(bob, "poll:x"), false);
  assert.equal(handler.authorizeJoin(bob, "lobby"), true);
});
