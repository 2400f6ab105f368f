// Network cuts through a TCP proxy: reconnect with backoff, rejoin with `since` recovery,
// liveness pings against a blackholed link, request timeouts and `disconnected` rejections.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { SwitchboardClient } from "../switchboard.js";
import { Proxy, Server, channelName, mintToken, nextEvent, record, sleep, until } from "../testing/support.mjs";

let server;
const clients = [];
const proxies = [];

before(async () => {
  server = await new Server().start();
});

after(async () => {
  for (const client of clients) client.close();
  for (const proxy of proxies) await proxy.close();
  await server?.dispose();
});

async function proxied() {
  const proxy = await new Proxy(server.port).listen();
  proxies.push(proxy);
  return proxy;
}

function makeClient(url, options = {}) {
  const client = new SwitchboardClient({
    url,
    token: mintToken("alice"),
    reconnect: { baseMs: 50, capMs: 400 },
    ...options,
  });
  clients.push(client);
  return client;
}

test("after a network cut the client reconnects, rejoins with since, and recovers the missed messages", async () => {
  const proxy = await proxied();
  const room = channelName("news");
  const client = makeClient(proxy.url());
  const first = await client.connect();
  await client.join(room);
  const messages = record(client, "message");
  const seen = (seq) => messages.some((m) => m.channel === room && m.seq === seq);
  const before = await server.publish(room, "news", { n: 0 });
  await until(() => seen(before), 5000, "the first message");

  const states = record(client, "state");
  const rejoined = nextEvent(client, "rejoined");
  proxy.down = true;
  proxy.cut();
  await until(() => states.filter((s) => s.state === "reconnecting").length >= 3, 10000, "failed reconnect attempts");
  const missed = [];
  for (let n = 1; n <= 3; n++) missed.push(await server.publish(room, "news", { n }));
  proxy.down = false;

  assert.deepEqual(await rejoined, { channel: room, recovered: true });
  assert.notEqual(client.connectionId, first.connectionId);
  assert.deepEqual(client.rooms(), [room]);
  const live = await server.publish(room, "news", { n: 4 });
  await until(() => seen(live), 5000, "the live message after the rejoin");

  const received = messages.filter((m) => m.channel === room && typeof m.seq === "number");
  assert.deepEqual(
    received.map((m) => m.seq),
    [before, ...missed, live],
    "missed messages in seq order, then live ones, no duplicate",
  );
  assert.deepEqual(
    received.map((m) => m.payload.n),
    [0, 1, 2, 3, 4],
  );

  // Backoff: attempts count up while down, every delay within [0, cap], then open again.
  const reconnecting = states.filter((s) => s.state === "reconnecting");
  assert.deepEqual(
    reconnecting.slice(0, 3).map((s) => s.attempt),
    [1, 2, 3],
  );
  for (const state of reconnecting) assert.ok(state.delayMs >= 0 && state.delayMs <= 400, `delay ${state.delayMs}`);
  assert.equal(reconnecting[0].code, 1006);
  assert.equal(states.at(-1).state, "open");
  assert.equal(await client.request("echo", { payload: "after" }), "after");
  client.close();
});

test("presence is resynchronised after a reconnect", async () => {
  const proxy = await proxied();
  const room = channelName();
  const alice = makeClient(proxy.url());
  const bob = makeClient(server.url, { token: mintToken("bob") });
  await alice.connect();
  await bob.connect();
  await alice.join(room);
  await bob.join(room);
  const oldAlice = alice.connectionId;
  const sync = nextEvent(alice, "presence", (p) => p.event === "sync");
  const bobSeesLeave = nextEvent(bob, "presence", (p) => p.event === "leave" && p.member.connectionId === oldAlice);
  proxy.cut();
  const synced = await sync;
  assert.deepEqual(synced.members.map((m) => m.userId).sort(), ["alice", "bob"]);
  assert.ok(synced.members.some((m) => m.connectionId === alice.connectionId));
  assert.ok(!synced.members.some((m) => m.connectionId === oldAlice), "the old connection is gone");
  await bobSeesLeave;
  alice.close();
  bob.close();
});

test("a pending request rejects with disconnected when the connection drops, and is not resent", async () => {
  const proxy = await proxied();
  const client = makeClient(proxy.url(), { livenessMs: 0 });
  await client.connect();
  proxy.blackhole();
  const pending = client.request("echo", { payload: 1, timeoutMs: 10000 });
  await sleep(50);
  proxy.cut();
  await assert.rejects(pending, { name: "SwitchboardError", code: "disconnected" });
  await until(() => client.state === "open", 10000, "the reconnect");
  client.close();
});

test("a request with no reply in time rejects with timeout and the connection stays", async () => {
  const proxy = await proxied();
  const client = makeClient(proxy.url(), { livenessMs: 0 });
  await client.connect();
  proxy.blackhole();
  const startedAt = Date.now();
  await assert.rejects(client.request("echo", { payload: 1, timeoutMs: 200 }), { code: "timeout" });
  const elapsed = Date.now() - startedAt;
  assert.ok(elapsed >= 190 && elapsed < 5000, `timed out after ${elapsed} ms`);
  assert.equal(client.state, "open", "a timeout alone does not drop the connection");
  client.close();
});

test("liveness: a blackholed link is detected by a ping without pong, and the client reconnects", async () => {
  const proxy = await proxied();
  const client = makeClient(proxy.url(), { livenessMs: 200, pongTimeoutMs: 1000 });
  const first = await client.connect();
  // Healthy but quiet: pings are answered, nothing reconnects.
  await sleep(1000);
  assert.equal(proxy.accepted, 1, "pongs keep a quiet connection");
  assert.equal(client.connectionId, first.connectionId);

  const states = record(client, "state");
  const welcome = nextEvent(client, "welcome", () => true, 10000);
  const blackholedAt = Date.now();
  proxy.blackhole();
  const second = await welcome;
  const elapsed = Date.now() - blackholedAt;
  assert.notEqual(second.connectionId, first.connectionId);
  assert.ok(elapsed >= 990, `dead only after an unanswered ping and the pong timeout (${elapsed} ms)`);
  assert.equal(states[0].state, "reconnecting");
  assert.match(states[0].reason, /liveness/);
  assert.equal(proxy.accepted, 2);
  assert.equal(await client.request("echo", { payload: "alive" }), "alive");
  client.close();
});
