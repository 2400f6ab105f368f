// Baseline for the benchmark suite: the Switchboard v1 protocol subset (docs/protocol.md) on Node's
// `ws`, written the idiomatic way (one process, one event loop, a broadcast serialised once).
//
//   node server.mjs --listen 127.0.0.1:0 --secret SECRET [--presence-off PREFIX]
//
// Speaks: upgrade on /ws with an HS256 JWT (`Authorization: Bearer`, `?token=`, or the
// `bearer.<jwt>` subprotocol next to `switchboard.v1`, which is selected), 401 otherwise;
// `welcome`; `room:join` / `room:leave` (ack with members, unless the channel starts with the
// presence-off prefix); `ping`; `echo` (ack with the payload); `broadcast` (every member gets
// `{"type":"broadcast","channel","payload","seq"}`, the sender an ack `{"seq"}`).
// Prints `listening on ADDR` once bound. SIGTERM closes every connection (1001) and exits 0.

import crypto from 'node:crypto';
import http from 'node:http';
import { WebSocketServer } from 'ws';

const LEEWAY_SEC = 5;
const HEARTBEAT_SEC = 30;
const HEARTBEAT_TIMEOUT_SEC = 10;
const MAX_MESSAGE_BYTES = 1024 * 1024;

function parseArgs(argv) {
  const options = { listen: '127.0.0.1:8080', secret: process.env.BENCH_JWT_SECRET, presenceOff: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--listen') options.listen = value;
    else if (flag === '--secret') options.secret = value;
    else if (flag === '--presence-off') options.presenceOff = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!options.secret) throw new Error('--secret (or BENCH_JWT_SECRET) is required');
  const colon = options.listen.lastIndexOf(':');
  options.host = options.listen.slice(0, colon);
  options.port = Number(options.listen.slice(colon + 1));
  return options;
}

const options = parseArgs(process.argv.slice(2));
const secret = Buffer.from(options.secret);

// ---- JWT (HS256 only), with node:crypto ----

function base64urlJson(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** The token's `sub`, or null when the token is not a valid, unexpired HS256 JWT. */
function verify(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const header = base64urlJson(parts[0]);
    if (header.alg !== 'HS256') return null;
    const expected = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2], 'base64url');
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
    const claims = base64urlJson(parts[1]);
    const now = Date.now() / 1000;
    if (typeof claims.sub !== 'string' || claims.sub.length === 0) return null;
    if (typeof claims.exp !== 'number' || now > claims.exp + LEEWAY_SEC) return null;
    if (typeof claims.nbf === 'number' && now + LEEWAY_SEC < claims.nbf) return null;
    return claims.sub;
  } catch {
    return null;
  }
}

/** The first present token source decides: Authorization: Bearer, ?token=, bearer.<jwt>. */
function tokenOf(request, url) {
  const authorization = request.headers.authorization;
  if (authorization) {
    const space = authorization.indexOf(' ');
    if (space > 0 && authorization.slice(0, space).toLowerCase() === 'bearer') {
      const token = authorization.slice(space + 1).trim();
      if (token) return token;
    }
  }
  const query = url.searchParams.get('token');
  if (query) return query;
  for (const entry of (request.headers['sec-websocket-protocol'] ?? '').split(',')) {
    const trimmed = entry.trim();
    if (trimmed.startsWith('bearer.') && trimmed.length > 7) return trimmed.slice(7);
  }
  return null;
}

function reject(socket, status, reason, error, message) {
  const body = JSON.stringify({ error, message });
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

// ---- rooms ----

/** channel -> { seq, members: Set<WebSocket> } */
const rooms = new Map();
let nextConnection = 0;

function presenceOn(channel) {
  return options.presenceOff === null || !channel.startsWith(options.presenceOff);
}

function leaveAll(ws) {
  for (const channel of ws.rooms) {
    const room = rooms.get(channel);
    if (!room) continue;
    room.members.delete(ws);
    if (room.members.size === 0) rooms.delete(channel);
  }
  ws.rooms.clear();
}

// ---- replies ----

function ack(ws, correlationId, payload) {
  if (correlationId === undefined) return;
  ws.send(JSON.stringify({ type: 'ack', correlationId, payload }));
}

function error(ws, correlationId, code, message) {
  ws.send(JSON.stringify({ type: 'error', correlationId, payload: { code, message } }));
}

function validEnvelope(msg) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return false;
  const inRange = (value, max) => typeof value === 'string' && value.length >= 1 && Buffer.byteLength(value) <= max;
  if (!inRange(msg.type, 128)) return false;
  if (msg.channel != null && !inRange(msg.channel, 256)) return false;
  if (msg.correlationId != null && !inRange(msg.correlationId, 128)) return false;
  return true;
}

function onMessage(ws, data, isBinary) {
  if (isBinary) {
    ws.close(1003, 'binary frames are not supported');
    return;
  }
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    ws.close(1008, 'invalid envelope: not JSON');
    return;
  }
  if (!validEnvelope(msg)) {
    ws.close(1008, 'invalid envelope');
    return;
  }
  const correlationId = msg.correlationId ?? undefined;
  const channel = msg.channel ?? undefined;
  switch (msg.type) {
    case 'echo':
      ack(ws, correlationId, msg.payload);
      return;
    case 'broadcast': {
      if (channel === undefined) {
        error(ws, correlationId, 'bad_request', '`broadcast` needs a `channel`');
        return;
      }
      let room = rooms.get(channel);
      if (!room) {
        room = { seq: 0, members: new Set() };
        rooms.set(channel, room);
      }
      room.seq += 1;
      // Serialised once; every member gets the same bytes as a text frame.
      const frame = Buffer.from(
        JSON.stringify({ type: 'broadcast', channel, payload: msg.payload ?? null, seq: room.seq }),
      );
      for (const member of room.members) member.send(frame, { binary: false });
      if (room.members.size === 0) rooms.delete(channel);
      ack(ws, correlationId, { seq: room.seq });
      return;
    }
    case 'room:join': {
      if (channel === undefined) {
        error(ws, correlationId, 'bad_request', '`room:join` needs a `channel`');
        return;
      }
      let room = rooms.get(channel);
      if (!room) {
        room = { seq: 0, members: new Set() };
        rooms.set(channel, room);
      }
      room.members.add(ws);
      ws.rooms.add(channel);
      if (presenceOn(channel)) {
        const members = [...room.members].map((member) => ({ userId: member.userId, connectionId: member.connectionId }));
        ack(ws, correlationId, { channel, members });
      } else {
        ack(ws, correlationId, { channel });
      }
      return;
    }
    case 'room:leave': {
      if (channel === undefined) {
        error(ws, correlationId, 'bad_request', '`room:leave` needs a `channel`');
        return;
      }
      const room = rooms.get(channel);
      if (!room || !room.members.has(ws)) {
        error(ws, correlationId, 'not_member', `not a member of \`${channel}\``);
        return;
      }
      room.members.delete(ws);
      ws.rooms.delete(channel);
      if (room.members.size === 0) rooms.delete(channel);
      ack(ws, correlationId, { channel });
      return;
    }
    case 'ping':
      ws.send(JSON.stringify({ type: 'pong', correlationId }));
      return;
    default:
      error(ws, correlationId, 'unknown_type', `no handler for \`${msg.type}\``);
  }
}

// ---- server ----

const wss = new WebSocketServer({
  noServer: true,
  maxPayload: MAX_MESSAGE_BYTES,
  handleProtocols: (protocols) => (protocols.has('switchboard.v1') ? 'switchboard.v1' : false),
});

wss.on('connection', (ws, request, userId) => {
  nextConnection += 1;
  ws.userId = userId;
  ws.connectionId = `node-${nextConnection}`;
  ws.rooms = new Set();
  ws.send(
    JSON.stringify({
      type: 'welcome',
      payload: {
        connectionId: ws.connectionId,
        userId,
        tenant: 'default',
        heartbeatSec: HEARTBEAT_SEC,
        heartbeatTimeoutSec: HEARTBEAT_TIMEOUT_SEC,
      },
    }),
  );
  ws.on('message', (data, isBinary) => onMessage(ws, data, isBinary));
  ws.on('close', () => leaveAll(ws));
  ws.on('error', () => {});
});

const server = http.createServer((request, response) => {
  const body = JSON.stringify({ error: 'upgrade_required', message: 'connect with a WebSocket upgrade' });
  response.writeHead(request.url.startsWith('/ws') ? 426 : 404, { 'content-type': 'application/json' });
  response.end(body);
});

server.on('upgrade', (request, socket, head) => {
  socket.on('error', () => {});
  const url = new URL(request.url, 'http://localhost');
  if (url.pathname !== '/ws') {
    reject(socket, 404, 'Not Found', 'not_found', 'no such path');
    return;
  }
  const token = tokenOf(request, url);
  const userId = token === null ? null : verify(token);
  if (userId === null) {
    reject(socket, 401, 'Unauthorized', 'unauthorized', token === null ? 'no token' : 'invalid token');
    return;
  }
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request, userId));
});

server.listen(options.port, options.host, () => {
  const address = server.address();
  process.stdout.write(`listening on ${address.address}:${address.port}\n`);
});

process.on('SIGTERM', () => {
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
  const check = setInterval(() => {
    if (wss.clients.size === 0) process.exit(0);
  }, 10);
  check.unref();
});
