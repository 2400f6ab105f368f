// The reference testee for scripts/autobahn --target ws: Node's `ws` as a plain echo server on
// loopback (default options, so no permessage-deflate, like Switchboard). Usage:
//   node ws-echo.cjs <folder holding node_modules/ws>
// Prints `listening on 127.0.0.1:PORT` once it accepts connections; exits on SIGTERM/SIGINT.
"use strict";

const path = require("node:path");

const wsModule = process.argv[2];
if (!wsModule) {
    console.error("usage: node ws-echo.cjs <folder holding node_modules/ws>");
    process.exit(2);
}
const wsDir = path.join(path.resolve(wsModule), "node_modules", "ws");
const { WebSocketServer } = require(wsDir);
const { version } = require(path.join(wsDir, "package.json"));

// ws's defaults, as in its own Autobahn server (test/autobahn-server.js).
const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
server.on("connection", (socket) => {
    socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }));
    socket.on("error", () => {});
});
server.on("listening", () => {
    const { address, port } = server.address();
    console.log(`listening on ${address}:${port} (ws ${version})`);
});
const stop = () => {
    for (const client of server.clients) client.terminate();
    server.close(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
