// Two clients of the `relay` tenant of examples/raw/switchboard.toml speak raw-relay's binary
// protocol (plugins/raw-relay/src/lib.rs): both join `lobby`, Alice publishes, Bob receives;
// then Bob sends to Alice's connection directly. Needs Node 20+ (run with
// --experimental-websocket on Node 20) and the server running:
//   node --experimental-websocket examples/raw/client.mjs [ws://127.0.0.1:8080]
import { execFileSync } from "node:child_process";

const base = process.argv[2] ?? "ws://127.0.0.1:8080";
const config = new URL("./switchboard.toml", import.meta.url).pathname;
const token = (sub) =>
  execFileSync("cargo", ["run", "-q", "-p", "switchboard", "--", "token", "--config", config, "--tenant", "relay", "--sub", sub])
    .toString()
    .trim();

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const frame = (op, name, payload = new Uint8Array()) => {
  const bytes = encoder.encode(name);
  return name === undefined ? new Uint8Array([op]) : new Uint8Array([op, ...(op >= 3 ? [bytes.length] : []), ...bytes, ...payload]);
};

async function connect(sub) {
  const socket = new WebSocket(`${base}/ws/relay?token=${token(sub)}`);
  socket.binaryType = "arraybuffer";
  const inbox = [];
  let wake = () => {};
  socket.onmessage = (event) => {
    inbox.push(new Uint8Array(event.data));
    wake();
  };
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  const next = async () => {
    const deadline = Date.now() + 5000;
    while (inbox.length === 0) {
      if (Date.now() > deadline) throw new Error(`${sub}: nothing arrived`);
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 100); });
    }
    return inbox.shift();
  };
  return { socket, next };
}

const alice = await connect("alice");
const bob = await connect("bob");
for (const client of [alice, bob]) {
  client.socket.send(frame(0x01, "lobby"));
  console.log("joined:", decoder.decode((await client.next()).slice(1)));
}
alice.socket.send(frame(0x03, "lobby", encoder.encode("hello, lobby")));
const published = await bob.next();
console.log("bob got from", decoder.decode(published.slice(2, 2 + published[1])), ":", decoder.decode(published.slice(2 + published[1])));

alice.socket.send(frame(0x05));
const aliceId = decoder.decode((await alice.next()).slice(1));
bob.socket.send(frame(0x04, aliceId, encoder.encode("just for you")));
const direct = await alice.next();
console.log("alice got from", decoder.decode(direct.slice(2, 2 + direct[1])), ":", decoder.decode(direct.slice(2 + direct[1])));
alice.socket.close();
bob.socket.close();
