// The JavaScript example plugin (plugins/poll-js, built with sdk/js and componentize-js) through
// the real server: its typed handlers answer and refuse with the documented codes, its
// broadcasts reach members, its log fields are fields of the server's log lines, and votes
// sent all at once by many clients are neither lost nor doubled (the tally moves by
// compare-and-set while the plugin runs many calls at a time).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { SwitchboardClient } from "../../clients/js/switchboard.js";
import { mintToken } from "../../examples/serve.mjs";
import { ensureJsPlugins, pollJsWasm, startSwitchboard, waitUntil, withTimeout } from "./harness.mjs";

const SECRET = "poll-js-test-secret";
const VOTERS = 20;

describe("the JavaScript poll plugin through the real server", () => {
  let server;
  let dir;
  const clients = [];

  async function connect(user) {
    const client = new SwitchboardClient({ url: server.wsUrl, token: mintToken(SECRET, user) });
    await withTimeout(client.connect(), 10_000, `${user} to connect`);
    clients.push(client);
    return client;
  }

  /** The error code a request was refused with. */
  async function refusal(client, type, payload) {
    try {
      await client.request(type, { payload });
    } catch (error) {
      return error.code;
    }
    return "answered";
  }

  before(async () => {
    ensureJsPlugins();
    dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-poll-js-"));
    const config = path.join(dir, "switchboard.toml");
    writeFileSync(
      config,
      [
        'listen = "127.0.0.1:0"',
        "[log]",
        'level = "info"',
        "[[tenants]]",
        'name = "default"',
        'api_key = "poll-js-api-key"',
        "[tenants.jwt]",
        `secret = "${SECRET}"`,
        // The default (60 s) fits an idle machine (about 15 s); a busy one takes several times that.
        "[tenants.plugin_limits]",
        'compile_timeout = "300s"',
        "[[tenants.plugins]]",
        `path = "${pollJsWasm}"`,
        "",
      ].join("\n"),
    );
    // A JavaScript plugin compiles for about 15 s on an idle 2-core machine, before the server
    // listens; much longer when the machine is busy.
    server = await startSwitchboard({ config, startTimeoutMs: 330_000 });
  });

  after(async () => {
    for (const client of clients) client.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("create, vote, change a vote, results, and the tally broadcast", async () => {
    const ada = await connect("ada");
    const bob = await connect("bob");
    const { id } = await ada.request("poll:create", { payload: { question: "Tea?", options: ["yes", "no", "later"] } });
    assert.match(id, /^\d+$/);
    const tallies = [];
    bob.on("message", (envelope) => {
      if (envelope.type === "poll:tally") tallies.push(envelope.payload.tally);
    });
    await bob.join(`poll:${id}`);
    assert.deepEqual((await ada.request("poll:vote", { payload: { poll: id, choice: 0 } })).tally, [1, 0, 0]);
    assert.deepEqual((await bob.request("poll:vote", { payload: { poll: id, choice: 2 } })).tally, [1, 0, 1]);
    assert.deepEqual((await ada.request("poll:vote", { payload: { poll: id, choice: 1 } })).tally, [0, 1, 1]);
    const results = await bob.request("poll:results", { payload: { poll: id } });
    const { createdAtMs, ...rest } = results;
    assert.deepEqual(rest, { id, question: "Tea?", options: ["yes", "no", "later"], tally: [0, 1, 1] });
    assert.ok(Math.abs(createdAtMs - Date.now()) < 60_000, `the host's clock: ${createdAtMs}`);
    assert.equal(await refusal(bob, "poll:delete", { poll: id }), "forbidden");
    assert.deepEqual(await ada.request("poll:delete", { payload: { poll: id } }), { deleted: 2 });
    assert.equal(await refusal(bob, "poll:results", { poll: id }), "not_found");
    await waitUntil(() => tallies.length === 3, { timeoutMs: 5000, what: "three tally broadcasts" });
    assert.deepEqual(tallies.at(-1), [0, 1, 1]);
    // The plugin's log fields are fields of the server's line.
    await waitUntil(() => /vote counted tenant=default plugin=poll-js .*user="ada"/.test(server.stderr()), {
      timeoutMs: 5000,
      what: "the plugin's log line",
    });
  });

  test("watching through the host API, the creator told of votes, joins of unknown polls refused", async () => {
    const cy = await connect("cy");
    const dee = await connect("dee");
    const { id } = await cy.request("poll:create", { payload: { question: "Q", options: ["a", "b"] } });
    const heard = [];
    for (const [name, client] of [["cy", cy], ["dee", dee]]) {
      client.on("message", (envelope) => heard.push([name, envelope.type, envelope.channel ?? null]));
    }
    // The plugin joins dee to the poll's channel and sends dee the tally, privately.
    assert.deepEqual(await dee.request("poll:watch", { payload: { poll: id } }), { watchers: 1 });
    await dee.request("poll:vote", { payload: { poll: id, choice: 1 } });
    await waitUntil(() => heard.some(([name, type]) => name === "cy" && type === "poll:voted"), {
      timeoutMs: 5000,
      what: "the creator to hear of the vote (send-to-user)",
    });
    await waitUntil(() => heard.filter(([name, type]) => name === "dee" && type === "poll:tally").length === 2, {
      timeoutMs: 5000,
      what: "dee's private tally and the vote's broadcast",
    });
    assert.deepEqual(await dee.request("poll:unwatch", { payload: { poll: id } }), {});
    assert.equal(await refusal(dee, "poll:unwatch", { poll: id }), "not_found");
    // The plugin's authorize-join hook: an existing poll's channel, yes; an unknown one, no.
    await cy.join(`poll:${id}`);
    await assert.rejects(cy.join("poll:999999"), (error) => error.code === "forbidden");
  });

  test("bad input is refused with the documented codes", async () => {
    const ada = await connect("ada-2");
    const { id } = await ada.request("poll:create", { payload: { question: "Q", options: ["a", "b"] } });
    assert.equal(await refusal(ada, "poll:create", { question: "Q", options: ["only one"] }), "bad_request");
    assert.equal(await refusal(ada, "poll:vote", { poll: id, choice: 5 }), "bad_request");
    assert.equal(await refusal(ada, "poll:vote", { poll: "999999", choice: 0 }), "not_found");
    assert.equal(await refusal(ada, "poll:results", null), "bad_request");
    assert.deepEqual((await ada.request("poll:results", { payload: { poll: id } })).tally, [0, 0]);
  });

  test(`${VOTERS} clients voting at once, twice each, leave an exact tally`, async () => {
    const voters = await Promise.all(Array.from({ length: VOTERS }, (_, index) => connect(`voter-${index}`)));
    const { id } = await voters[0].request("poll:create", { payload: { question: "Race?", options: ["a", "b", "c"] } });
    await Promise.all(voters.map((voter, index) => voter.request("poll:vote", { payload: { poll: id, choice: index % 3 } })));
    // Everyone moves to the next option at once: each vote leaves one option and joins another.
    await Promise.all(voters.map((voter, index) => voter.request("poll:vote", { payload: { poll: id, choice: (index + 1) % 3 } })));
    const expected = [0, 0, 0];
    for (let index = 0; index < VOTERS; index += 1) expected[(index + 1) % 3] += 1;
    assert.deepEqual((await voters[0].request("poll:results", { payload: { poll: id } })).tally, expected);
  });
});
