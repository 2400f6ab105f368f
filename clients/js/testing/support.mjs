// Test support: the real server binary on a free port with a temp config, HS256 tokens minted
// with node:crypto, a TCP proxy that can cut or blackhole connections, a minimal fake
// WebSocket server for protocol corner cases, and bounded waits. No npm dependencies.

import { spawn, spawnSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const SECRET = "js-client-test-secret";
export const API_KEY = "js-client-test-api-key";

/** The server binary: $SWITCHBOARD_BINARY, else target/debug/switchboard (built if missing). */
export function serverBinary() {
  if (process.env.SWITCHBOARD_BINARY) return process.env.SWITCHBOARD_BINARY;
  const binary = path.join(REPO, "target/debug/switchboard");
  if (!existsSync(binary)) {
    const build = spawnSync("cargo", ["build", "-p", "switchboard", "--bin", "switchboard"], {
      cwd: REPO,
      stdio: "inherit",
    });
    if (build.status !== 0) throw new Error("cargo build of the switchboard binary failed");
  }
  return binary;
}

/** The folder with the echo and broadcast plugin components. */
export function pluginDir() {
  const candidates = [
    process.env.PLUGIN_DIR,
    path.join(REPO, "target/plugins/wasm32-wasip2/release"),
    path.join(REPO, "plugins/target/wasm32-wasip2/release"),
  ].filter(Boolean);
  const found = candidates.find((dir) => existsSync(path.join(dir, "switchboard_plugin_echo.wasm")));
  if (!found) {
    throw new Error(
      `no switchboard_plugin_echo.wasm in ${candidates.join(", ")}; build the plugins: ` +
        "cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir target/plugins",
    );
  }
  return found;
}

function configText() {
  const plugins = pluginDir();
  const plugin = (name) =>
    `[[tenants.plugins]]\npath = ${JSON.stringify(path.join(plugins, `switchboard_plugin_${name}.wasm`))}\n`;
  return `listen = "127.0.0.1:0"

[log]
level = "warn"

[shutdown]
drain_timeout = "2s"

[[tenants]]
name = "default"
api_key = ${JSON.stringify(API_KEY)}

[tenants.jwt]
secret = ${JSON.stringify(SECRET)}

${plugin("echo")}
${plugin("broadcast")}
[[tenants]]
name = "limited"
api_key = ${JSON.stringify(API_KEY + "-limited")}

[tenants.jwt]
secret = ${JSON.stringify(SECRET)}

[tenants.limits]
messages_per_second = 1
burst = 3
`;
}

/**
 * A running server process. `start()` binds a free port (or `port`), `stop()` sends SIGTERM and
 * waits for exit, `restart()` stops and starts again on the same port.
 */
export class Server {
  constructor() {
    this.dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-js-"));
    this.configPath = path.join(this.dir, "switchboard.toml");
    writeFileSync(this.configPath, configText());
    this.process = null;
    this.port = 0;
    this.stderr = "";
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Start and resolve once `listening on ADDR` was printed (bounded by timeoutMs). */
  async start({ port = 0, timeoutMs = 20000 } = {}) {
    const child = spawn(serverBinary(), ["serve", "--config", this.configPath, "--listen", `127.0.0.1:${port}`], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.process = child;
    child.stderr.on("data", (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-8000);
    });
    const address = await withTimeout(
      new Promise((resolve, reject) => {
        let stdout = "";
        child.stdout.on("data", (chunk) => {
          stdout += chunk;
          const match = /listening on (\S+)/.exec(stdout);
          if (match) resolve(match[1]);
        });
        child.once("exit", (code) => reject(new Error(`server exited (${code}) before listening: ${this.stderr}`)));
        child.once("error", reject);
      }),
      timeoutMs,
      "server start",
    );
    this.port = Number(address.split(":").pop());
    return this;
  }

  /** SIGTERM (drain: clients get 1001) and wait for the exit code. */
  async stop({ timeoutMs = 15000 } = {}) {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    try {
      return await withTimeout(exited, timeoutMs, "server exit after SIGTERM");
    } catch (error) {
      child.kill("SIGKILL");
      throw error;
    }
  }

  /** Stop, then start again on the same port (retrying while it is not yet free); the old exit code. */
  async restart() {
    const port = this.port;
    const exitCode = await this.stop();
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        await this.start({ port });
        return exitCode;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(200);
      }
    }
  }

  /** Stop (SIGKILL if it does not exit) and remove the temp folder. */
  async dispose() {
    try {
      await this.stop();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** POST /api/publish; resolves with the seq. */
  async publish(channel, type, payload, tenant = "default") {
    const response = await fetch(`${this.httpUrl}/api/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${tenant === "default" ? API_KEY : `${API_KEY}-${tenant}`}` },
      body: JSON.stringify({ tenant, channel, type, payload }),
      signal: AbortSignal.timeout(5000),
    });
    const body = await response.json();
    if (response.status !== 200) throw new Error(`publish failed: ${response.status} ${JSON.stringify(body)}`);
    return body.seq;
  }
}

function base64url(data) {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 JWT for `sub`, valid `ttlSec` seconds, signed with `secret`. */
export function mintToken(sub, { secret = SECRET, ttlSec = 3600, claims = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = base64url(JSON.stringify({ sub, iat: now, exp: now + ttlSec, ...claims }));
  const signature = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}

/**
 * A TCP proxy in front of `target` port. `down` refuses new connections (answers 503), `cut()` destroys every live pair, `blackhole()` stops forwarding on the live pairs
 * (new ones forward normally). `accepted` counts incoming connections.
 */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.down = false;
    this.accepted = 0;
    this.pairs = new Set();
    this.sockets = new Set();
    this.server = net.createServer((client) => this._onConnection(client));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this;
  }

  url(pathname = "/ws") {
    return `ws://127.0.0.1:${this.port}${pathname}`;
  }

  _onConnection(client) {
    this.accepted += 1;
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    if (this.down) {
      // Answer like a draining server, so the client sees a failed upgrade at once.
      client.on("error", () => {});
      client.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    const upstream = net.connect(this.targetPort, "127.0.0.1");
    const pair = { client, upstream, blackholed: false };
    this.pairs.add(pair);
    const forward = (from, to) => {
      from.on("data", (chunk) => {
        if (!pair.blackholed) to.write(chunk);
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
  }

  cut() {
    for (const pair of [...this.pairs]) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
  }

  blackhole() {
    for (const pair of this.pairs) pair.blackholed = true;
  }

  async close() {
    this.cut();
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * A minimal WebSocket server (upgrade + text frames) that speaks only what a test scripts:
 * `onConnection(conn)` gets {send(obj), received: [envelopes], onEnvelope, destroy()}.
 */
export class FakeServer {
  constructor(onConnection) {
    this.sockets = new Set();
    this.server = net.createServer((socket) => this._accept(socket, onConnection));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  _accept(socket, onConnection) {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    let buffer = Buffer.alloc(0);
    let upgraded = false;
    const conn = {
      received: [],
      onEnvelope: null,
      send: (value) => socket.write(encodeTextFrame(JSON.stringify(value))),
      destroy: () => socket.destroy(),
    };
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString();
        buffer = buffer.subarray(end + 4);
        const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "";
        const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: switchboard.v1\r\n\r\n`,
        );
        upgraded = true;
        onConnection(conn);
      }
      for (;;) {
        const frame = decodeClientFrame(buffer);
        if (!frame) return;
        buffer = buffer.subarray(frame.length);
        if (frame.opcode === 1) {
          const envelope = JSON.parse(frame.payload.toString());
          conn.received.push(envelope);
          conn.onEnvelope?.(envelope);
        } else if (frame.opcode === 8) {
          socket.end(Buffer.from([0x88, 0]));
        }
      }
    });
  }

  async close() {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function encodeTextFrame(text) {
  const payload = Buffer.from(text);
  let header;
  if (payload.length < 126) {
    header = Buffer.from([0x81, payload.length]);
  } else if (payload.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x81;
    header[1] = 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x81;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  return Buffer.concat([header, payload]);
}

function decodeClientFrame(buffer) {
  if (buffer.length < 2) return null;
  const opcode = buffer[0] & 0x0f;
  let length = buffer[1] & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return null;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return null;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (buffer[1] & 0x80) !== 0;
  const mask = masked ? buffer.subarray(offset, offset + 4) : null;
  if (masked) offset += 4;
  if (buffer.length < offset + length) return null;
  const payload = Buffer.from(buffer.subarray(offset, offset + length));
  if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
  return { opcode, payload, length: offset + length };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Race `promise` against a timer; the timer is cleared either way. */
export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolve with the first `event` value of `client` that passes `predicate` (bounded). */
export function nextEvent(client, event, predicate = () => true, ms = 10000) {
  let off;
  const found = new Promise((resolve) => {
    off = client.on(event, (value) => {
      if (predicate(value)) {
        off();
        resolve(value);
      }
    });
  });
  return withTimeout(found, ms, `event ${event}`).finally(() => off());
}

/** Poll `condition` every 20 ms until it is truthy (bounded). */
export async function until(condition, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Record every value of `event` in an array. */
export function record(client, event) {
  const values = [];
  client.on(event, (value) => values.push(value));
  return values;
}

/** A random channel name, so tests never share history. */
export function channelName(prefix = "room") {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}
