// Corner cases the real server does not produce on demand, against a scripted fake server:
// duplicate seq dropped, a silent server after the upgrade, the subprotocols offered; and the
// pure backoff and close-code policy functions.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { SwitchboardClient, backoffDelay, shouldReconnectAfterClose } from "../switchboard.js";
import { FakeServer, nextEvent, record, until } from "../testing/support.mjs";

const clients = [];
const servers = [];

after(async () => {
  for (const client of clients) client.close();
  for (const server of servers) await server.close();
});

async function fake(onConnection) {
  const server = await new FakeServer(onConnection).listen();
  servers.push(server);
  return server;
}

function makeClient(url, options = {}) {
  const client = new SwitchboardClient({ url, token: "t0k3n", reconnect: { baseMs: 10, capMs: 50 }, ...options });
  clients.push(client);
  return client;
}

const welcome = (id) => ({
  type: "welcome",
  payload: { connectionId: id, userId: "alice", tenant: "default", heartbeatSec: 30, heartbeatTimeoutSec: 10 },
});

test("duplicate or older seq on a channel is dropped; other channels are independent", async () => {
  const server = await fake((conn) => {
    conn.send(welcome("c1"));
    conn.onEnvelope = (envelope) => {
      if (envelope.type !== "room:join") return;
      conn.send({ type: "ack", correlationId: envelope.correlationId, payload: { channel: "a", members: [] } });
      for (const [channel, seq] of [
        ["a", 1],
        ["a", 2],
        ["a", 2],
        ["b", 1],
        ["a", 1],
        ["a", 3],
      ]) {
        conn.send({ type: "news", channel, payload: { seq }, seq });
      }
      conn.send({ type: "done" });
    };
  });
  const client = makeClient(server.url);
  const messages = record(client, "message");
  await client.connect();
  await client.join("a");
  await until(() => messages.some((m) => m.type === "done"), 5000, "the scripted messages");
  assert.deepEqual(
    messages.filter((m) => m.type === "news").map((m) => `${m.channel}${m.seq}`),
    ["a1", "a2", "b1", "a3"],
  );
});

test("the token rides in a bearer subprotocol next to switchboard.v1", async () => {
  let head = null;
  const server = await fake((conn) => conn.send(welcome("c1")));
  server.server.prependListener("connection", (socket) => {
    socket.once("data", (chunk) => {
      head = chunk.toString();
    });
  });
  const client = makeClient(server.url);
  await client.connect();
  assert.match(head, /sec-websocket-protocol:\s*switchboard\.v1,\s*bearer\.t0k3n\r\n/i);
});

test("a server that upgrades but never welcomes fails connect() after connectTimeoutMs", async () => {
  const server = await fake(() => {});
  const client = makeClient(server.url, { connectTimeoutMs: 300 });
  const startedAt = Date.now();
  await assert.rejects(client.connect(), { code: "connect_failed" });
  assert.ok(Date.now() - startedAt >= 290);
  assert.equal(client.state, "closed");
});

test("close() while connecting rejects connect() with closed and stops every attempt", async () => {
  let upgrades = 0;
  const server = await fake(() => {
    upgrades += 1;
  });
  const client = makeClient(server.url, { connectTimeoutMs: 200 });
  const states = record(client, "state");
  const pending = client.connect();
  await until(() => upgrades === 1, 5000, "the upgrade");
  client.close();
  await assert.rejects(pending, { code: "closed" });
  assert.equal(client.state, "closed");
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(
    states.map((s) => s.state),
    ["connecting", "closed"],
    "no connect timeout or retry fires after close()",
  );
  assert.equal(upgrades, 1);
});

test("a rejoin ack without recovery resets the seq line, so a restarted seq is not dropped", async () => {
  let connections = 0;
  const server = await fake((conn) => {
    connections += 1;
    const generation = connections;
    conn.send(welcome(`c${generation}`));
    conn.onEnvelope = (envelope) => {
      if (envelope.type !== "room:join") return;
      const since = envelope.payload?.since;
      conn.send({
        type: "ack",
        correlationId: envelope.correlationId,
        payload: { channel: "a", members: [], ...(since === undefined ? {} : { recovered: false }) },
      });
      conn.send({ type: "news", channel: "a", payload: { generation }, seq: generation === 1 ? 5 : 1 });
      if (generation === 1) setTimeout(() => conn.destroy(), 50);
    };
  });
  const client = makeClient(server.url);
  const messages = record(client, "message");
  await client.connect();
  await client.join("a");
  const rejoined = await nextEvent(client, "rejoined");
  assert.deepEqual(rejoined, { channel: "a", recovered: false });
  await until(() => messages.length === 2, 5000, "the message after the rejoin");
  assert.deepEqual(
    messages.map((m) => [m.payload.generation, m.seq]),
    [
      [1, 5],
      [2, 1],
    ],
  );
  assert.equal(client.lastSeq("a"), 1);
});

test("the rejoin after a reconnect carries since = the last seq seen", async () => {
  const joins = [];
  let connections = 0;
  const server = await fake((conn) => {
    connections += 1;
    const generation = connections;
    conn.send(welcome(`c${generation}`));
    conn.onEnvelope = (envelope) => {
      if (envelope.type !== "room:join") return;
      joins.push(envelope);
      conn.send({
        type: "ack",
        correlationId: envelope.correlationId,
        payload: { channel: envelope.channel, members: [], recovered: generation > 1 },
      });
      if (generation === 1 && envelope.channel === "seen") {
        conn.send({ type: "news", channel: "seen", seq: 41 });
        conn.send({ type: "news", channel: "seen", seq: 42 });
        setTimeout(() => conn.destroy(), 50);
      }
    };
  });
  const client = makeClient(server.url);
  const rejoined = record(client, "rejoined");
  await client.connect();
  await client.join("quiet");
  await client.join("seen");
  await until(() => rejoined.length === 2, 5000, "both rejoins");
  const rejoins = joins.slice(2);
  assert.deepEqual(rejoins.map((j) => [j.channel, j.payload]).sort(), [
    ["quiet", undefined],
    ["seen", { since: 42 }],
  ]);
  assert.deepEqual(rejoined.map((r) => [r.channel, r.recovered]).sort(), [
    ["quiet", true],
    ["seen", true],
  ]);
});

test("backoffDelay is full jitter below min(cap, base * 2^attempt)", () => {
  const policy = { baseMs: 100, capMs: 1000 };
  assert.equal(
    backoffDelay(0, policy, () => 0),
    0,
  );
  assert.equal(
    backoffDelay(0, policy, () => 0.999),
    99,
  );
  assert.equal(
    backoffDelay(2, policy, () => 0.5),
    200,
  );
  assert.equal(
    backoffDelay(3, policy, () => 0.999),
    799,
  );
  assert.equal(
    backoffDelay(4, policy, () => 0.999),
    999,
    "capped",
  );
  assert.equal(
    backoffDelay(1000, policy, () => 0.5),
    500,
    "no overflow for large attempts",
  );
});

test("close-code policy: which closes reconnect", () => {
  const reconnects = [1001, 1005, 1006, 1009, 1011, 1012, 1013, 1014];
  const final = [1000, 1002, 1003, 1007, 3000, 4000, 4999];
  for (const code of reconnects) assert.equal(shouldReconnectAfterClose(code, ""), true, `${code}`);
  for (const code of final) assert.equal(shouldReconnectAfterClose(code, ""), false, `${code}`);
  assert.equal(shouldReconnectAfterClose(1008, "rate limit exceeded"), true);
  assert.equal(shouldReconnectAfterClose(1008, "invalid envelope: missing type"), false);
  assert.equal(shouldReconnectAfterClose(1008, "tenant removed"), false);
});
