// A server restart in the middle: SIGTERM (the client sees 1001), a new process on the same
// port, and the client reconnects by itself, rejoins without recovery and works again.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { SwitchboardClient } from "../switchboard.js";
import { Server, channelName, mintToken, nextEvent, record, until } from "../testing/support.mjs";

let server;
const clients = [];

before(async () => {
  server = await new Server().start();
});

after(async () => {
  for (const client of clients) client.close();
  await server?.dispose();
});

test("the client survives a server restart: reconnects, rejoins (recovered false), requests work", async () => {
  const room = channelName();
  const client = new SwitchboardClient({
    url: server.url,
    token: () => mintToken("alice"),
    reconnect: { baseMs: 50, capMs: 300 },
  });
  clients.push(client);
  const first = await client.connect();
  await client.join(room);
  const messages = record(client, "message");
  const seen = (payload) => messages.some((m) => m.channel === room && m.payload?.n === payload);
  const seqBefore = await server.publish(room, "news", { n: 1 });
  const seqBefore2 = await server.publish(room, "news", { n: 2 });
  await until(() => seen(2), 5000, "messages before the restart");
  assert.equal(client.lastSeq(room), seqBefore2);
  assert.ok(seqBefore2 > seqBefore);

  const states = record(client, "state");
  const rejoined = nextEvent(client, "rejoined", () => true, 30000);
  const exitCode = await server.restart();
  assert.equal(exitCode, 0, "SIGTERM drains and exits 0");

  const afterRestart = await rejoined;
  assert.deepEqual(afterRestart, { channel: room, recovered: false }, "memory history is gone with the old process");
  const drained = states.find((s) => s.state === "reconnecting");
  assert.equal(drained.code, 1001, "the drain closes with 1001");
  assert.equal(drained.reason, "server shutting down");
  assert.equal(client.state, "open");
  assert.notEqual(client.connectionId, first.connectionId);

  assert.deepEqual(await client.request("echo", { payload: { again: true } }), { again: true });
  assert.deepEqual(client.rooms(), [room]);
  // The new process starts seq afresh; the client must not drop those as duplicates.
  const seqAfter = await server.publish(room, "news", { n: 3 });
  assert.ok(seqAfter <= seqBefore2, `seq restarted (${seqAfter})`);
  await until(() => seen(3), 5000, "a message after the restart");
  assert.equal(client.lastSeq(room), seqAfter);
  client.close();
});
