// `node burst.mjs PORT SECRET TYPE N`: N connections each send one TYPE request at once, twice;
// exits 1 if any is not answered with an ack within 30 s.
import { mintToken } from "../../examples/serve.mjs";

const [port, secret, type, count] = process.argv.slice(2);
const sockets = await Promise.all(
  Array.from({ length: Number(count) }, (_, index) => new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${mintToken(secret, `burst-${index}`)}`);
    socket.onmessage = () => resolve(socket); // the welcome
    socket.onerror = () => reject(new Error("connect failed"));
  })),
);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30_000);
for (let round = 0; round < 2; round += 1) {
  await Promise.all(sockets.map((socket) => new Promise((resolve, reject) => {
    socket.onmessage = (event) => {
      const envelope = JSON.parse(event.data);
      if (envelope.type === "ack") resolve();
      else reject(new Error(event.data));
    };
    socket.send(JSON.stringify({ type, payload: "x", correlationId: "b" }));
  })));
}
clearTimeout(timer);
for (const socket of sockets) socket.close();
