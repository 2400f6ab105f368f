// The JavaScript client (Node's WebSocket) through the cluster example's TLS front door: run by
// tls.test.mjs as a child process, because Node reads the private CA (NODE_EXTRA_CA_CERTS) only
// at start. It connects, joins, then kills the node behind its connection and checks that it
// reconnects through the front door and recovers what was published meanwhile. Prints one JSON
// line with what it saw; exits 1 with the error otherwise.
//
//   NODE_EXTRA_CA_CERTS=ca.pem WSS_URL=wss://localhost:PORT/ws NODES='[{"port":7001,"pid":1}]' \
//     node --experimental-websocket tests/web/tls-client-scenario.mjs

import { SwitchboardClient } from "../../clients/js/switchboard.js";
import { channelName, mintToken, nextEvent, record, until } from "../../clients/js/testing/support.mjs";

const SECRET = "dev-secret-change-me";
const API_KEY = "dev-api-key";

const nodes = JSON.parse(process.env.NODES);
const room = channelName("tls");

async function publish(port, n) {
  const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ tenant: "default", channel: room, type: "news", payload: { n } }),
    signal: AbortSignal.timeout(5000),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`publish through ${port} answered ${response.status} ${JSON.stringify(body)}`);
  return body.seq;
}

/** The node whose /metrics counts one connection of the `default` tenant. */
async function holder() {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    for (const node of nodes) {
      const metrics = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
      if (metrics.split("\n").includes('switchboard_connections{tenant="default"} 1')) return node;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("no node reports the connection");
}

const client = new SwitchboardClient({
  url: process.env.WSS_URL,
  token: mintToken("carol", { secret: SECRET }),
  reconnect: { baseMs: 50, capMs: 400 },
});
try {
  const first = await client.connect();
  await client.join(room);
  const messages = record(client, "message");
  const seen = (seq) => messages.some((m) => m.channel === room && m.seq === seq);
  const before = await publish(nodes[0].port, 0);
  await until(() => seen(before), 5000, "the first message");

  const dead = await holder();
  const rejoined = nextEvent(client, "rejoined");
  process.kill(dead.pid, "SIGKILL");
  const survivor = nodes.find((node) => node.port !== dead.port);
  const missed = [];
  for (let n = 1; n <= 3; n++) missed.push(await publish(survivor.port, n));
  const rejoin = await rejoined;
  await until(() => missed.every(seen), 10_000, "the missed messages");
  const received = messages.filter((m) => m.channel === room && typeof m.seq === "number");
  console.log(
    JSON.stringify({
      firstConnection: first.connectionId,
      connection: client.connectionId,
      rejoin: { recovered: rejoin.recovered, sameRoom: rejoin.channel === room },
      expected: [before, ...missed],
      received: received.map((m) => m.seq),
      payloads: received.map((m) => m.payload.n),
    }),
  );
  client.close();
  process.exit(0);
} catch (error) {
  console.error(error?.stack ?? String(error));
  client.close();
  process.exit(1);
}
