// Rooms and presence between two clients, and channel messages with seq, against the real server.

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

async function connected(user) {
  const client = new SwitchboardClient({ url: server.url, token: mintToken(user), reconnect: false });
  clients.push(client);
  await client.connect();
  return client;
}

const users = (members) => members.map((m) => m.userId).sort();

test("presence follows joins, leaves and disconnects of another client", async () => {
  const room = channelName();
  const alice = await connected("alice");
  const bob = await connected("bob");

  const aliceJoin = await alice.join(room);
  assert.deepEqual(users(aliceJoin.members), ["alice"]);
  assert.equal(aliceJoin.recovered, false);
  assert.deepEqual(alice.rooms(), [room]);

  const seenByAlice = nextEvent(alice, "presence", (p) => p.event === "join");
  const bobJoin = await bob.join(room);
  assert.deepEqual(users(bobJoin.members), ["alice", "bob"]);
  const joined = await seenByAlice;
  assert.equal(joined.channel, room);
  assert.deepEqual(joined.member, { userId: "bob", connectionId: bob.connectionId });
  assert.deepEqual(users(joined.members), ["alice", "bob"]);
  assert.deepEqual(users(alice.presence(room)), ["alice", "bob"]);

  const left = nextEvent(alice, "presence", (p) => p.event === "leave");
  await bob.leave(room);
  assert.deepEqual(bob.rooms(), []);
  assert.deepEqual(bob.presence(room), []);
  assert.equal((await left).member.connectionId, bob.connectionId);
  assert.deepEqual(users(alice.presence(room)), ["alice"]);

  const rejoined = nextEvent(alice, "presence", (p) => p.event === "join");
  await bob.join(room);
  await rejoined;
  const gone = nextEvent(alice, "presence", (p) => p.event === "leave");
  const bobConnection = bob.connectionId;
  bob.close();
  assert.equal((await gone).member.connectionId, bobConnection, "a disconnect is a leave");
  assert.deepEqual(users(alice.presence(room)), ["alice"]);
  alice.close();
});

test("presence events are also delivered as messages, and the join emits a sync", async () => {
  const room = channelName();
  const alice = await connected("alice");
  const presence = record(alice, "presence");
  await alice.join(room);
  assert.deepEqual(presence, [
    { channel: room, event: "sync", members: [{ userId: "alice", connectionId: alice.connectionId }] },
  ]);
  const bob = await connected("bob");
  const message = nextEvent(alice, "message", (m) => m.type === "presence:join");
  await bob.join(room);
  assert.equal((await message).payload.userId, "bob");
  alice.close();
  bob.close();
});

test("channel messages carry seq, reach every member in order, and lastSeq follows them", async () => {
  const room = channelName();
  const alice = await connected("alice");
  const bob = await connected("bob");
  await alice.join(room);
  await bob.join(room);
  const atBob = record(bob, "message");
  const ack = await alice.request("broadcast", { channel: room, payload: { n: 1 } });
  assert.equal(typeof ack.seq, "number");
  const published = await server.publish(room, "news", { n: 2 });
  assert.equal(published, ack.seq + 1);
  await until(() => atBob.some((m) => m.seq === published), 5000, "the published message");
  const channelMessages = atBob.filter((m) => m.channel === room && typeof m.seq === "number");
  assert.deepEqual(
    channelMessages.map((m) => [m.type, m.payload, m.seq]),
    [
      ["broadcast", { n: 1 }, ack.seq],
      ["news", { n: 2 }, published],
    ],
  );
  assert.equal(bob.lastSeq(room), published);
  alice.close();
  bob.close();
});

test("leaving a room that was never joined rejects with not_member", async () => {
  const alice = await connected("alice");
  await assert.rejects(alice.leave(channelName()), { code: "not_member" });
  alice.close();
});

test("join with since replays the messages after it", async () => {
  const room = channelName();
  const seqs = [];
  for (let n = 1; n <= 3; n++) seqs.push(await server.publish(room, "news", { n }));
  const alice = await connected("alice");
  const messages = record(alice, "message");
  const result = await alice.join(room, { since: seqs[0] });
  assert.equal(result.recovered, true);
  await until(() => messages.some((m) => m.seq === seqs[2]), 5000, "the replay");
  assert.deepEqual(
    messages.filter((m) => m.channel === room).map((m) => m.seq),
    [seqs[1], seqs[2]],
  );
  alice.close();
});
