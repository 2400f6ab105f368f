// The collab example's operational transformation, without a browser:
// - ot.js on its own: TP1 and compose over seeded random operations (unicode included), the
//   cursor and diff helpers, and code point arithmetic;
// - three Node clients (the Switchboard JS client + examples/collab/session.js) against the real
//   server and the collab plugin: many seeded rounds of random concurrent inserts and deletes,
//   with random delays before edits and random delivery delays (which reorder the broadcast
//   operations), after which every client's text must equal the server's (`collab:snapshot`).
// - three clients on the three nodes of examples/cluster (Redis, nginx round robin), the plugin
//   running concurrently on every node: edits committed on different nodes race for the same
//   revision, and the compare-and-set in Redis lets exactly one win.
// The seed comes from COLLAB_SEED when set; every failure names it.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { SwitchboardClient } from "../../clients/js/switchboard.js";
import { Proxy } from "../../clients/js/testing/support.mjs";
import {
  CollabClient,
  TextOperation,
  codePointIndex,
  codePointLength,
  diff,
  transformIndex,
  utf16Index,
} from "../../examples/collab/ot.js";
import { CollabSession } from "../../examples/collab/session.js";
import { mintToken, readSecret } from "../../examples/serve.mjs";
import { exampleConfig, repoRoot, startClusterExample, startSwitchboard, waitUntil, withTimeout } from "./harness.mjs";

const SEED = Number(process.env.COLLAB_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ROUNDS = Number(process.env.COLLAB_ROUNDS ?? 30);
const EDITS_PER_CLIENT = 12;
const MAX_EDIT_DELAY_MS = 12;
const MAX_DELIVERY_DELAY_MS = 8;
/** Characters of one and two UTF-16 units, a combining mark, a newline and a space. */
const ALPHABET = ["a", "b", "z", " ", "\n", "é", "ß", "中", "🙂", "👍", "\u0301", "𝄞"];

/** A seeded generator (mulberry32): `next()` in [0, 1). */
function generator(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
  return { next, below: (bound) => Math.floor(next() * bound) };
}

function randomText(rng, max) {
  let text = "";
  for (let count = rng.below(max + 1); count > 0; count -= 1) text += ALPHABET[rng.below(ALPHABET.length)];
  return text;
}

/** A random operation over `text`: any mix of retains, inserts and deletes. */
function randomOperation(rng, text) {
  const operation = new TextOperation();
  let left = codePointLength(text);
  while (left > 0) {
    const kind = rng.below(4);
    if (kind === 0) {
      operation.insert(randomText(rng, 3));
    } else if (kind === 1) {
      const count = 1 + rng.below(Math.min(left, 3));
      operation.delete(count);
      left -= count;
    } else {
      const count = 1 + rng.below(Math.min(left, 6));
      operation.retain(count);
      left -= count;
    }
  }
  if (rng.below(2) === 0) operation.insert(randomText(rng, 3));
  return operation;
}

/** One small edit, the kind a person makes: type a few characters, or delete a few. */
function randomEdit(rng, text) {
  const length = codePointLength(text);
  const operation = new TextOperation();
  if (length > 0 && rng.below(3) === 0) {
    const at = rng.below(length);
    const count = 1 + rng.below(Math.min(3, length - at));
    return operation.retain(at).delete(count).retain(length - at - count);
  }
  const at = rng.below(length + 1);
  return operation
    .retain(at)
    .insert(randomText(rng, 3) || "x")
    .retain(length - at);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Node 20 has a WebSocket global only with --experimental-websocket (scripts/test passes it).
if (typeof globalThis.WebSocket !== "function") {
  throw new Error("run with `node --experimental-websocket --test tests/web/` (Node 20)");
}

describe("ot.js", () => {
  test("code points, not UTF-16 units", () => {
    assert.equal(codePointLength("a🙂é"), 3);
    assert.equal(utf16Index("a🙂é", 2), 3);
    assert.equal(codePointIndex("a🙂é", 3), 2);
    const operation = TextOperation.fromJSON([{ retain: 1 }, { insert: "x" }, { delete: 1 }, { retain: 1 }]);
    assert.equal(operation.apply("🙂🙂é"), "🙂xé");
    assert.throws(() => operation.apply("ab"), /spans 3 characters but the document has 2/);
  });

  test("the wire form round-trips and refuses anything else", () => {
    const wire = [{ retain: 2 }, { insert: "中" }, { delete: 1 }];
    assert.deepEqual(TextOperation.fromJSON(wire).toJSON(), wire);
    for (const bad of [{ retain: 1 }, [{ skip: 1 }], [{ retain: -1 }], [{ retain: 1, insert: "a" }], [{ insert: 3 }]]) {
      assert.throws(() => TextOperation.fromJSON(bad), TypeError, JSON.stringify(bad));
    }
  });

  test("inserts at one place put the first argument first", () => {
    const a = TextOperation.fromJSON([{ retain: 1 }, { insert: "A" }, { retain: 1 }]);
    const b = TextOperation.fromJSON([{ retain: 1 }, { insert: "B" }, { retain: 1 }]);
    const [aPrime, bPrime] = TextOperation.transform(a, b);
    assert.equal(bPrime.apply(a.apply("xy")), "xABy");
    assert.equal(aPrime.apply(b.apply("xy")), "xABy");
  });

  test(`transform satisfies TP1 and compose equals applying in turn (seed ${SEED})`, () => {
    const rng = generator(SEED);
    for (let run = 0; run < 2000; run += 1) {
      const text = randomText(rng, 12);
      const a = randomOperation(rng, text);
      const b = randomOperation(rng, text);
      const [aPrime, bPrime] = TextOperation.transform(a, b);
      assert.equal(bPrime.apply(a.apply(text)), aPrime.apply(b.apply(text)), `seed ${SEED} run ${run}`);
      const next = randomOperation(rng, a.apply(text));
      assert.equal(a.compose(next).apply(text), next.apply(a.apply(text)), `seed ${SEED} run ${run}`);
    }
  });

  test(`diff with a caret, and cursors moved by operations (seed ${SEED})`, () => {
    // Typing "a" at 1 in "aa" is an insert at 1, not at the end.
    assert.deepEqual(diff("aa", "aaa", 2).toJSON(), [{ retain: 1 }, { insert: "a" }, { retain: 1 }]);
    assert.deepEqual(diff("a🙂b", "ab").toJSON(), [{ retain: 1 }, { delete: 1 }, { retain: 1 }]);
    const insertBefore = TextOperation.fromJSON([{ retain: 1 }, { insert: "🙂🙂" }, { retain: 3 }]);
    assert.equal(transformIndex(2, insertBefore), 4);
    assert.equal(transformIndex(1, insertBefore), 3, "an insert at the caret pushes it");
    assert.equal(transformIndex(0, insertBefore), 0);
    const deleteAround = TextOperation.fromJSON([{ retain: 1 }, { delete: 2 }, { retain: 1 }]);
    assert.equal(transformIndex(2, deleteAround), 1);
    assert.equal(transformIndex(4, deleteAround), 2);
    const rng = generator(SEED + 1);
    for (let run = 0; run < 500; run += 1) {
      const before = randomText(rng, 10);
      const after = randomOperation(rng, before).apply(before);
      const cursor = rng.below(codePointLength(after) + 1);
      assert.equal(diff(before, after, cursor).apply(before), after, `seed ${SEED} run ${run}`);
    }
  });

  test("a client applies committed operations in revision order, whatever the arrival order", () => {
    const sent = [];
    const client = new CollabClient({ text: "ab", rev: 3, clientId: "me", send: (message) => sent.push(message) });
    client.applyLocal(TextOperation.fromJSON([{ retain: 2 }, { insert: "!" }]));
    client.applyLocal(TextOperation.fromJSON([{ insert: ">" }, { retain: 3 }]));
    assert.equal(client.state, "awaitingWithBuffer");
    assert.deepEqual(sent, [{ rev: 3, op: [{ retain: 2 }, { insert: "!" }], clientId: "me", opId: 1 }]);
    // Revision 5 (our own operation) arrives before revision 4 (someone else's).
    client.receive({ rev: 5, op: [{ retain: 3 }, { insert: "!" }], clientId: "me", opId: 1 });
    assert.equal(client.rev, 3);
    client.receive({ rev: 4, op: [{ insert: "x" }, { retain: 2 }], clientId: "other", opId: 9 });
    assert.equal(client.rev, 5);
    assert.equal(client.text, ">xab!");
    assert.deepEqual(sent[1], { rev: 5, op: [{ insert: ">" }, { retain: 4 }], clientId: "me", opId: 2 });
    // A repeat of an applied revision changes nothing.
    assert.equal(client.receive({ rev: 4, op: [{ insert: "x" }, { retain: 2 }], clientId: "other", opId: 9 }), 0);
    assert.equal(client.text, ">xab!");
  });
});

/** The client as a session sees it, with every broadcast delivered after a random delay. */
function withDeliveryDelays(client, rng) {
  return {
    on(event, fn) {
      if (event !== "message") return client.on(event, fn);
      return client.on(event, (envelope) => setTimeout(() => fn(envelope), rng.below(MAX_DELIVERY_DELAY_MS + 1)));
    },
    join: (...args) => client.join(...args),
    leave: (...args) => client.leave(...args),
    request: (...args) => client.request(...args),
  };
}

/**
 * One round: every client opens `channel`, makes random edits with random pauses (while
 * `disturb` runs alongside), then all must settle on the server's text and revision.
 */
/**
 * A request that a cut connection may reject with `disconnected` (the last cut can land just as
 * it is sent): asked again once the client is back, at most 5 times.
 */
async function requestThroughCuts(client, type, payload) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await client.request(type, payload);
    } catch (error) {
      if (error?.code !== "disconnected" || attempt === 5) throw error;
      await sleep(100);
    }
  }
}

async function convergeOnce(clients, channel, round, disturb = async () => {}) {
  const where = `seed ${SEED}, round ${round} (rerun: COLLAB_SEED=${SEED})`;
  const rngs = clients.map((_, index) => generator(SEED * 31 + round * 7 + index));
  const sessions = clients.map(
    (client, index) => new CollabSession({ client: withDeliveryDelays(client, rngs[index]), channel }),
  );
  // Every committed operation once: a resend the plugin applied again would show up twice.
  const committed = [];
  const unsubscribe = clients[0].on("message", (envelope) => {
    if (envelope.type === "collab:op" && envelope.channel === channel) committed.push(envelope.payload);
  });
  await withTimeout(Promise.all(sessions.map((session) => session.open())), 10_000, `${where}: open`);
  const errors = [];
  const resyncs = [];
  for (const session of sessions) {
    session.on("error", (error) => errors.push(error));
    session.on("resync", (info) => resyncs.push(info));
  }
  await withTimeout(
    Promise.all([
      ...sessions.map(async (session, index) => {
        const rng = rngs[index];
        for (let edit = 0; edit < EDITS_PER_CLIENT; edit += 1) {
          await sleep(rng.below(MAX_EDIT_DELAY_MS + 1));
          session.edit(randomEdit(rng, session.text));
        }
      }),
      disturb(),
    ]),
    20_000,
    `${where}: edits`,
  );
  await waitUntil(
    () => sessions.every((session) => session.settled) && sessions.every((session) => session.rev === sessions[0].rev),
    {
      timeoutMs: 15_000,
      what: `${where}: the clients to settle (revs ${sessions.map((s) => s.rev)}, states ${sessions.map((s) => s.doc.state)})`,
    },
  );
  const server = await requestThroughCuts(clients[0], "collab:snapshot", { channel });
  for (const [index, session] of sessions.entries()) {
    assert.equal(session.text, server.text, `${where}: client ${index}'s text differs from the server's`);
    assert.equal(session.rev, server.rev, `${where}: client ${index}'s revision differs from the server's`);
  }
  assert.ok(server.rev >= sessions.length, `${where}: too few operations were committed`);
  unsubscribe();
  const once = new Set(committed.map(({ clientId, opId }) => `${clientId}/${opId}`));
  assert.equal(once.size, committed.length, `${where}: an operation was committed twice`);
  assert.deepEqual(
    committed.map(({ rev }) => rev).sort((a, b) => a - b),
    Array.from({ length: server.rev }, (_, index) => index + 1),
    `${where}: the first client did not see every revision exactly once`,
  );
  assert.deepEqual(errors, [], `${where}: sessions reported errors`);
  assert.deepEqual(resyncs, [], `${where}: a session had to reload`);
  await Promise.all(sessions.map((session) => session.close()));
  return server;
}

describe(`three clients against the collab plugin converge (seed ${SEED})`, () => {
  let switchboard;
  let proxy;
  const clients = [];
  const proxied = [];

  before(async () => {
    switchboard = await startSwitchboard({ config: exampleConfig("collab") });
    proxy = await new Proxy(switchboard.port).listen();
    for (const name of ["ann", "ben", "cat"]) {
      const token = mintToken(switchboard.secret, name);
      const client = new SwitchboardClient({ url: switchboard.wsUrl, token });
      await withTimeout(client.connect(), 10_000, `${name} to connect`);
      clients.push(client);
      const cut = new SwitchboardClient({ url: proxy.url(), token, reconnect: { baseMs: 20, capMs: 200 } });
      await withTimeout(cut.connect(), 10_000, `${name} to connect through the proxy`);
      proxied.push(cut);
    }
  });

  after(async () => {
    for (const client of [...clients, ...proxied]) client.close();
    await proxy?.close();
    await switchboard?.stop();
  });

  test(`${ROUNDS} rounds of random concurrent edits end in identical text everywhere`, async () => {
    for (let round = 0; round < ROUNDS; round += 1) {
      await convergeOnce(clients, `doc-${SEED}-${round}`, round);
    }
  });

  test("edits survive connections cut in the middle (resends are not applied twice)", async () => {
    let reconnects = 0;
    for (const client of proxied) client.on("rejoined", () => (reconnects += 1));
    const rounds = Math.max(1, Math.ceil(ROUNDS / 3));
    for (let round = 0; round < rounds; round += 1) {
      const rng = generator(SEED + 1000 + round);
      const cuts = async () => {
        for (let cut = 0; cut < 2; cut += 1) {
          await sleep(10 + rng.below(60));
          proxy.cut();
        }
      };
      await convergeOnce(proxied, `cut-${SEED}-${round}`, round, cuts);
    }
    assert.ok(reconnects >= rounds, `the cuts caused reconnects (${reconnects})`);
  });
});

describe(`three clients on three nodes (Redis, nginx round robin) converge (seed ${SEED})`, () => {
  let cluster;
  const clients = [];

  before(async () => {
    cluster = await startClusterExample();
    const secret = readSecret(path.join(repoRoot, "examples", "cluster", "switchboard.toml"), "collab");
    for (const name of ["ann", "ben", "cat"]) {
      const client = new SwitchboardClient({
        url: `ws://127.0.0.1:${cluster.frontPort}/ws/collab`,
        token: mintToken(secret, name),
      });
      await withTimeout(client.connect(), 10_000, `${name} to connect through nginx`);
      clients.push(client);
    }
  });

  after(async () => {
    for (const client of clients) client.close();
    await cluster?.stop();
  });

  test(`${ROUNDS} rounds of random concurrent edits, committed on different nodes`, async () => {
    // Connection ids start with their node's id: round robin put each client on its own node.
    const nodes = new Set(clients.map((client) => client.connectionId.replace(/-[0-9a-f]+$/, "")));
    assert.equal(nodes.size, 3, `the clients share nodes: ${clients.map((client) => client.connectionId)}`);
    for (let round = 0; round < ROUNDS; round += 1) {
      await convergeOnce(clients, `cluster-${SEED}-${round}`, round);
    }
  });
});
