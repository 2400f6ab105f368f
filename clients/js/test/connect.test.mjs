// Connecting, request/reply, close-code policy and auth failure, against the real server.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { SwitchboardClient, SwitchboardError } from "../switchboard.js";
import { Proxy, Server, mintToken, nextEvent, record, sleep, until } from "../testing/support.mjs";

let server;
const clients = [];

before(async () => {
  server = await new Server().start();
});

after(async () => {
  for (const client of clients) client.close();
  await server?.dispose();
});

function makeClient(options = {}) {
  const client = new SwitchboardClient({
    url: server.url,
    token: mintToken("alice"),
    reconnect: { baseMs: 20, capMs: 200 },
    ...options,
  });
  clients.push(client);
  return client;
}

test("connect resolves with the welcome and reports state changes", async () => {
  const client = makeClient();
  const states = record(client, "state");
  const welcomes = record(client, "welcome");
  assert.equal(client.state, "idle");
  const welcome = await client.connect();
  assert.equal(welcome.userId, "alice");
  assert.equal(welcome.tenant, "default");
  assert.equal(typeof welcome.connectionId, "string");
  assert.equal(typeof welcome.heartbeatSec, "number");
  assert.equal(client.state, "open");
  assert.equal(client.connectionId, welcome.connectionId);
  assert.equal(client.userId, "alice");
  assert.deepEqual(welcomes, [welcome]);
  assert.deepEqual(
    states.map((s) => s.state),
    ["connecting", "open"],
  );
  assert.equal(await client.connect(), welcome, "connect() while open resolves with the welcome");
  client.close();
});

test("request resolves with the ack payload and rejects with the error code", async () => {
  const client = makeClient();
  await client.connect();
  assert.deepEqual(await client.request("echo", { payload: { text: "hi", n: [1, 2] } }), { text: "hi", n: [1, 2] });
  const pong = await client.request("ping");
  assert.equal(pong, undefined, "a pong has no payload");

  const unknown = await client.request("no-such-type", { payload: 1 }).then(
    () => assert.fail("an unknown type must reject"),
    (error) => error,
  );
  assert.ok(unknown instanceof SwitchboardError);
  assert.equal(unknown.code, "unknown_type");
  assert.equal(typeof unknown.message, "string");

  const badRequest = await client.request("broadcast", { payload: 1 }).catch((error) => error);
  assert.equal(badRequest.code, "bad_request", "broadcast without a channel is refused by the plugin");
  assert.equal(client.state, "open", "errors never close the connection");
  client.close();
});

test("an uncorrelated error is emitted as an error event", async () => {
  const client = makeClient();
  await client.connect();
  const error = nextEvent(client, "error");
  assert.equal(client.send("no-such-type", { payload: {} }), true);
  assert.equal((await error).code, "unknown_type");
  client.close();
});

test("requests while not connected reject with not_connected; send returns false", async () => {
  const client = makeClient();
  await assert.rejects(client.request("echo"), { code: "not_connected" });
  assert.equal(client.send("echo"), false);
  await assert.rejects(client.join("x"), { code: "not_connected" });
});

test("close() closes with 1000, clears state and never reconnects", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    const client = makeClient({ url: proxy.url() });
    await client.connect();
    await client.join("lobby");
    const closed = nextEvent(client, "closed");
    client.close();
    assert.deepEqual(await closed, { code: 1000, reason: "client closed" });
    assert.equal(client.state, "closed");
    assert.deepEqual(client.rooms(), []);
    await sleep(500);
    assert.equal(proxy.accepted, 1, "no further connection after close()");
    assert.equal(client.state, "closed");
  } finally {
    await proxy.close();
  }
});

test("a bad token rejects connect() without retrying", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    const client = makeClient({ url: proxy.url(), token: mintToken("mallory", { secret: "not-the-secret" }) });
    const closed = record(client, "closed");
    const error = await client.connect().catch((e) => e);
    assert.ok(error instanceof SwitchboardError);
    assert.equal(error.code, "connect_failed");
    assert.equal(client.state, "closed");
    assert.equal(closed.length, 1);
    await sleep(500);
    assert.equal(proxy.accepted, 1, "the failed first connect is not retried");
  } finally {
    await proxy.close();
  }
});

test("an unreachable server rejects connect()", async () => {
  const proxy = await new Proxy(server.port).listen();
  proxy.down = true;
  try {
    const client = makeClient({ url: proxy.url() });
    await assert.rejects(client.connect(), { code: "connect_failed" });
    assert.equal(client.state, "closed");
  } finally {
    await proxy.close();
  }
});

test("the token function is called before every connect, so a reconnect gets a fresh token", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    let calls = 0;
    const client = makeClient({
      url: proxy.url(),
      token: async () => {
        calls += 1;
        // The second call (the first reconnect) hands out an invalid token: 401, retried.
        return calls === 2 ? "not-a-jwt" : mintToken("alice");
      },
    });
    await client.connect();
    assert.equal(calls, 1);
    const states = record(client, "state");
    const reopened = nextEvent(client, "welcome");
    proxy.cut();
    await reopened;
    assert.ok(calls >= 3, `token function called per attempt (${calls})`);
    const reconnecting = states.filter((s) => s.state === "reconnecting");
    assert.ok(reconnecting.length >= 2, "the 401 after a session counts as a failed attempt and is retried");
    assert.deepEqual(reconnecting.map((s) => s.attempt).slice(0, 2), [1, 2]);
    for (const s of reconnecting) assert.ok(s.delayMs >= 0 && s.delayMs <= 200, `delay ${s.delayMs} within cap`);
    assert.equal(await client.request("echo", { payload: 7 }), 7);
    client.close();
  } finally {
    await proxy.close();
  }
});

test("an invalid envelope (1008) is a client bug: closed for good, no reconnect", async () => {
  const client = makeClient();
  await client.connect();
  const closed = nextEvent(client, "closed");
  client.send("", { payload: {} });
  const info = await closed;
  assert.equal(info.code, 1008);
  assert.match(info.reason, /^invalid envelope/);
  assert.equal(client.state, "closed");
});

test("the rate-limit close (1008) reconnects with backoff", async () => {
  const client = makeClient({ url: `ws://127.0.0.1:${server.port}/ws/limited` });
  const first = await client.connect();
  assert.equal(first.tenant, "limited");
  const reconnecting = nextEvent(client, "state", (s) => s.state === "reconnecting");
  for (let i = 0; i < 10; i++) client.send("ping");
  const state = await reconnecting;
  assert.equal(state.code, 1008);
  assert.equal(state.reason, "rate limit exceeded");
  await until(() => client.state === "open" && client.connectionId !== first.connectionId, 10000, "reconnect");
  client.close();
});

test("connect() while reconnecting waits for the next welcome, or rejects when the client gives up", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    const client = makeClient({ url: proxy.url(), reconnect: { baseMs: 50, capMs: 100, maxAttempts: 50 } });
    const first = await client.connect();
    proxy.down = true;
    proxy.cut();
    await until(() => client.state === "reconnecting", 5000, "reconnecting");
    const waiting = client.connect();
    proxy.down = false;
    const second = await waiting;
    assert.notEqual(second.connectionId, first.connectionId);

    proxy.down = true;
    proxy.cut();
    await until(() => client.state === "reconnecting", 5000, "reconnecting again");
    const abandoned = client.connect();
    client.close();
    await assert.rejects(abandoned, { code: "closed", closeCode: 1000 });
  } finally {
    await proxy.close();
  }
});

test("maxAttempts bounds the reconnects, then the client is closed", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    const client = makeClient({ url: proxy.url(), reconnect: { baseMs: 10, capMs: 50, maxAttempts: 3 } });
    await client.connect();
    const closed = nextEvent(client, "closed");
    proxy.down = true;
    proxy.cut();
    const info = await closed;
    assert.equal(typeof info.code, "number");
    assert.equal(client.state, "closed");
    assert.equal(proxy.accepted, 1 + 3, "exactly three reconnect attempts");
  } finally {
    await proxy.close();
  }
});

test("reconnect: false closes for good on any drop", async () => {
  const proxy = await new Proxy(server.port).listen();
  try {
    const client = makeClient({ url: proxy.url(), reconnect: false });
    await client.connect();
    const closed = nextEvent(client, "closed");
    proxy.cut();
    assert.equal((await closed).code, 1006);
    await sleep(300);
    assert.equal(proxy.accepted, 1);
  } finally {
    await proxy.close();
  }
});
