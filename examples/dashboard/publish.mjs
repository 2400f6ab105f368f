// The dashboard example's publisher: connects as a publisher (a token with the claim
// role=publisher) and reports metrics with `dashboard:report`. By default it simulates a
// service (CPU, memory, requests per second, p99 latency) and reports every 200 ms; with
// `--set` it reports the given values once and exits.
//
//   node --experimental-websocket examples/dashboard/publish.mjs
//   node --experimental-websocket examples/dashboard/publish.mjs --set cpu_percent=42 --set queue_depth=7
//
// Options (environment fallbacks in brackets):
//   --url URL        the Switchboard WebSocket URL [SWITCHBOARD_WS] (default ws://127.0.0.1:8080/ws)
//   --config FILE    mint the publisher token with this config's HS secret
//                    (default: examples/dashboard/switchboard.toml)
//   --token JWT      use this token instead; it must carry role=publisher [SWITCHBOARD_TOKEN]
//   --interval MS    how often to report (default 200)
//   --set NAME=VALUE report once and exit (repeatable)
//
// Prints `publishing to URL every N ms` once connected, then one line every 5 s.

import { createHmac } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { SwitchboardClient } from "../../clients/js/switchboard.js";
import { readSecret } from "../serve.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const TOKEN_TTL_SECONDS = 24 * 3600;

/** An HS256 JWT for the publisher: `sub` "publisher" and the claim `role: "publisher"`. */
export function publisherToken(secret, ttlSeconds = TOKEN_TTL_SECONDS) {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub: "publisher", role: "publisher", iat: now, exp: now + ttlSeconds };
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** A simulated service: values that wander like real ones, each step from the last. */
export function simulation(random = Math.random) {
  const wobble = (size) => (random() - 0.5) * 2 * size;
  const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
  let cpu = 35;
  let memory = 640;
  const startedAt = Date.now();
  return () => {
    const seconds = (Date.now() - startedAt) / 1000;
    const requests = Math.max(0, 900 + 350 * Math.sin(seconds / 9) + wobble(60));
    cpu = clamp(cpu * 0.8 + (requests / 1400) * 60 * 0.2 + wobble(4), 1, 99);
    memory = clamp(memory + wobble(6) + (requests > 1100 ? 1.5 : -1), 400, 1800);
    const latency = Math.max(5, 28 + requests / 45 + wobble(6) + (random() < 0.03 ? 60 : 0));
    const round = (value, digits) => Number(value.toFixed(digits));
    return {
      cpu_percent: round(cpu, 1),
      memory_mb: round(memory, 0),
      requests_per_s: round(requests, 0),
      latency_p99_ms: round(latency, 1),
    };
  };
}

function parseArgs(argv) {
  const options = { set: {} };
  for (let index = 0; index < argv.length; index += 2) {
    const flag = argv[index];
    const value = argv[index + 1];
    if (!["--url", "--config", "--token", "--interval", "--set"].includes(flag)) throw new Error(`unknown option ${flag}`);
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--set") {
      const match = /^([^=]+)=(.+)$/.exec(value);
      const number = Number(match?.[2]);
      if (!match || !Number.isFinite(number)) throw new Error(`--set takes NAME=NUMBER, not ${value}`);
      options.set[match[1]] = number;
    } else {
      options[flag.slice(2)] = value;
    }
  }
  return options;
}

async function main() {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`publish.mjs: ${error.message}`);
    console.error("usage: node --experimental-websocket examples/dashboard/publish.mjs [--url URL] [--config FILE | --token JWT] [--interval MS] [--set NAME=VALUE ...]");
    process.exit(2);
  }
  const url = options.url ?? process.env.SWITCHBOARD_WS ?? "ws://127.0.0.1:8080/ws";
  const token =
    options.token ?? process.env.SWITCHBOARD_TOKEN ?? publisherToken(readSecret(options.config ?? path.join(here, "switchboard.toml")));
  const intervalMs = Number(options.interval ?? 200);
  if (!(intervalMs >= 10)) throw new Error("--interval must be at least 10 ms");

  const client = new SwitchboardClient({ url, token });
  client.on("state", ({ state, attempt }) => {
    if (state === "reconnecting" && attempt === 1) console.log("connection lost; reconnecting");
  });
  await client.connect();

  const report = (metrics) => client.request("dashboard:report", { payload: { metrics } });
  if (Object.keys(options.set).length > 0) {
    const ack = await report(options.set);
    console.log(`reported ${JSON.stringify(options.set)} as version ${ack.version}`);
    client.close();
    return;
  }

  const next = simulation();
  let reports = 0;
  let lastVersion = 0;
  let lastError = "";
  let timer = null;
  const stop = () => {
    clearInterval(timer);
    client.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  console.log(`publishing to ${url} every ${intervalMs} ms`);
  timer = setInterval(() => {
    if (client.state !== "open") return; // reconnecting: skip, the next value will do
    report(next())
      .then((ack) => {
        reports += 1;
        lastVersion = ack.version;
        if (reports % Math.max(1, Math.round(5000 / intervalMs)) === 0) {
          console.log(`${reports} reports, version ${lastVersion}`);
        }
      })
      .catch((error) => {
        if (error.code === "forbidden") {
          console.error(`publish.mjs: the server refused the report: ${error.message}`);
          process.exit(1);
        }
        const text = `${error.code}: ${error.message}`;
        if (text !== lastError) console.error(`publish.mjs: report failed (${text})`);
        lastError = text;
      });
  }, intervalMs);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(`publish.mjs: ${error.message}`);
    process.exit(1);
  });
}
