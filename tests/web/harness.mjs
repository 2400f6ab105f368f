// Browser-test harness: starts the real Switchboard binary and the examples' dev server as
// processes on 127.0.0.1 free ports, launches headless Chromium through playwright-core, and
// saves screenshots into the example folders. Every wait has a timeout; every process it starts
// is killed when the test process exits, even after a failure.
//
//   import { startSwitchboard, startDevServer, launchBrowser } from "./harness.mjs";
//   const switchboard = await startSwitchboard({ config: exampleConfig("chat") });
//   const site = await startDevServer({ dir: exampleDir("chat"), wsUrl: switchboard.wsUrl, secret: switchboard.secret });
//   const browser = await launchBrowser();
//   ... after(() => Promise.all([browser.close(), site.stop(), switchboard.stop()]));

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { readSecret as readConfigSecret } from "../../examples/serve.mjs";

/** The repository's root folder. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** How long a process may take to print its address (a debug build compiles plugins at start). */
const START_TIMEOUT_MS = 60_000;
/** How long a stopped process may take to exit before it is killed (the server drains first). */
const STOP_TIMEOUT_MS = 15_000;
/** How long building the plugins or the binary may take. */
const BUILD_TIMEOUT_MS = 15 * 60_000;

/** The folder of example `name`. */
export function exampleDir(name) {
  return path.join(repoRoot, "examples", name);
}

/** The Switchboard config of example `name`. */
export function exampleConfig(name) {
  return path.join(exampleDir(name), "switchboard.toml");
}

/** The HS secret of `tenant` in a Switchboard TOML config. */
export function readSecret(configPath, tenant = "default") {
  return readConfigSecret(configPath, tenant);
}

/** Rejects with an error naming `what` unless `promise` settles within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` (sync or async) until it returns a truthy value, at most `timeoutMs`. */
export async function waitUntil(check, { timeoutMs = 10_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---- processes ---------------------------------------------------------------------------

const liveChildren = new Set();
function killChildren() {
  for (const child of liveChildren) child.kill("SIGKILL");
}
process.on("exit", killChildren);
// A signal skips the `exit` event: kill the children first, then die as the signal asked.
for (const [signal, number] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]]) {
  process.once(signal, () => {
    killChildren();
    process.exit(128 + number);
  });
}

/**
 * Spawns a process and resolves once a stdout line matches `ready`, with the match, a `stop()`
 * and the tail of its stderr for error messages.
 */
function spawnUntilReady(command, args, { ready, env, what, onLine = () => {}, startTimeoutMs = START_TIMEOUT_MS }) {
  const child = spawn(command, args, {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  liveChildren.add(child);
  let stderrTail = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderrTail = (stderrTail + chunk).slice(-8000);
  });
  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return exited;
    child.kill("SIGTERM");
    try {
      return await withTimeout(exited, STOP_TIMEOUT_MS, `${what} to exit after SIGTERM`);
    } catch {
      child.kill("SIGKILL");
      return exited;
    }
  };
  const started = new Promise((resolve, reject) => {
    let buffer = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        onLine(line);
        const match = ready.exec(line);
        if (match) resolve(match);
      }
    });
    child.once("error", (error) => reject(new Error(`cannot start ${what} (${command}): ${error.message}`)));
    exited.then(({ code, signal }) =>
      reject(new Error(`${what} exited (code ${code}, signal ${signal}) before it was ready:\n${stderrTail}`)),
    );
  });
  return withTimeout(started, startTimeoutMs, `${what} to start`)
    .then((match) => ({ match, stop, child, stderr: () => stderrTail }))
    .catch(async (error) => {
      await stop();
      throw error;
    });
}

function cargo(args, what) {
  const result = spawnSync("cargo", args, { cwd: repoRoot, stdio: "inherit", timeout: BUILD_TIMEOUT_MS });
  if (result.status !== 0) {
    throw new Error(`${what} failed (cargo ${args.join(" ")}): ${result.error?.message ?? `status ${result.status}`}`);
  }
}

let binary;
/** The server binary: env SWITCHBOARD_BINARY (scripts/test sets it), else target/debug/switchboard, built when missing. */
export function switchboardBinary() {
  if (binary) return binary;
  if (process.env.SWITCHBOARD_BINARY) {
    binary = process.env.SWITCHBOARD_BINARY;
    return binary;
  }
  const candidate = path.join(repoRoot, "target", "debug", "switchboard");
  if (!existsSync(candidate)) cargo(["build", "-p", "switchboard", "--bin", "switchboard"], "building the switchboard binary");
  binary = candidate;
  return binary;
}

let pluginsBuilt = process.env.SWITCHBOARD_PLUGINS_BUILT === "1";
/**
 * Builds the example plugins into plugins/target/, where the example configs point, once per
 * test process; scripts/test builds them first and sets SWITCHBOARD_PLUGINS_BUILT=1.
 */
export function ensurePlugins() {
  if (pluginsBuilt) return;
  cargo(
    [
      "build",
      "--release",
      "--target",
      "wasm32-wasip2",
      "--manifest-path",
      "plugins/Cargo.toml",
      "--target-dir",
      "plugins/target",
    ],
    "building the example plugins",
  );
  pluginsBuilt = true;
}

/** Where `ensureJsPlugins` puts the JavaScript example plugin. */
export const pollJsWasm = path.join(repoRoot, "plugins", "target", "js", "poll_js.wasm");

let jsPluginsBuilt = process.env.SWITCHBOARD_PLUGINS_BUILT === "1" && existsSync(pollJsWasm);
/**
 * Builds plugins/poll-js with the JavaScript SDK (sdk/js/build.mjs, componentize-js) unless
 * scripts/test already did.
 */
export function ensureJsPlugins() {
  if (jsPluginsBuilt) return;
  const build = path.join(repoRoot, "sdk", "js", "build.mjs");
  const entry = path.join(repoRoot, "plugins", "poll-js", "src", "index.js");
  const result = spawnSync(process.execPath, [build, entry, pollJsWasm], {
    cwd: repoRoot,
    stdio: "inherit",
    timeout: BUILD_TIMEOUT_MS,
  });
  if (result.status !== 0) {
    throw new Error(`building plugins/poll-js failed (did scripts/setup install sdk/js's packages?): status ${result.status}`);
  }
  jsPluginsBuilt = true;
}

/** The plugin files a config lists, resolved against the config's folder. */
function pluginPaths(configPath) {
  const text = readFileSync(configPath, "utf8");
  return [...text.matchAll(/^\s*path\s*=\s*"([^"]+\.wasm)"/gm)].map((match) =>
    path.resolve(path.dirname(configPath), match[1]),
  );
}

/**
 * Starts `switchboard serve --config CONFIG --listen 127.0.0.1:PORT` (PORT 0: a free one) and
 * resolves once it listens, to {wsUrl, wsUrlFor(tenant), httpUrl, port, secret, stop(), stderr()}.
 * `wsUrl` is the default tenant's upgrade URL; `secret` is `tenant`'s HS secret (undefined when it has none); `stop()` sends SIGTERM (the
 * server drains, clients see 1001) and resolves to {code, signal}.
 */
export async function startSwitchboard({ config, port = 0, tenant = "default", env = {}, startTimeoutMs = START_TIMEOUT_MS }) {
  const configPath = path.resolve(config);
  if (pluginPaths(configPath).length > 0) ensurePlugins();
  for (const plugin of pluginPaths(configPath)) {
    if (!existsSync(plugin)) throw new Error(`${configPath} lists ${plugin}, which the plugin build did not produce`);
  }
  let secret;
  try {
    secret = readSecret(configPath, tenant);
  } catch {
    secret = undefined;
  }
  const server = await spawnUntilReady(
    switchboardBinary(),
    ["serve", "--config", configPath, "--listen", `127.0.0.1:${port}`],
    { ready: /^listening on (\S+):(\d+)\s*$/, env, what: "switchboard", startTimeoutMs },
  );
  const boundPort = Number(server.match[2]);
  return {
    port: boundPort,
    httpUrl: `http://127.0.0.1:${boundPort}`,
    wsUrl: `ws://127.0.0.1:${boundPort}/ws`,
    /** The upgrade URL of a named tenant (`/ws/{tenant}`). */
    wsUrlFor: (name) => `ws://127.0.0.1:${boundPort}/ws/${encodeURIComponent(name)}`,
    secret,
    stop: server.stop,
    stderr: server.stderr,
  };
}

/**
 * Starts examples/serve.mjs for `dir` on a free port, resolves to {url, port, stop()}.
 * The secret travels in the environment, not on the command line.
 */
export async function startDevServer({ dir, wsUrl, secret, tenant = "default" }) {
  const args = [path.join(repoRoot, "examples", "serve.mjs"), "--dir", path.resolve(dir), "--port", "0", "--tenant", tenant];
  if (wsUrl) args.push("--ws", wsUrl);
  const server = await spawnUntilReady(process.execPath, args, {
    ready: /^serving on (http:\/\/127\.0\.0\.1:(\d+))\s*$/,
    env: secret === undefined ? {} : { JWT_SECRET: secret },
    what: "examples/serve.mjs",
  });
  return { url: server.match[1], port: Number(server.match[2]), stop: server.stop, stderr: server.stderr };
}

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts examples/cluster/run (Redis, three nodes, nginx with TLS) on free ports, with its
 * private CA and certificate in a temp folder. Resolves once it is ready, to
 * {tlsPort, frontPort, nodes: [{port, pid}], caPath, stop(), stderr()}.
 */
export async function startClusterExample() {
  ensurePlugins();
  const [frontPort, tlsPort, redisPort, ...nodePorts] = await Promise.all(
    Array.from({ length: 6 }, () => freePort()),
  );
  const tlsDir = mkdtempSync(path.join(os.tmpdir(), "switchboard-web-tls-"));
  const nodes = [];
  const cluster = await spawnUntilReady(path.join(repoRoot, "examples", "cluster", "run"), [], {
    ready: /^cluster ready/,
    env: {
      SWITCHBOARD_BINARY: switchboardBinary(),
      FRONT_PORT: String(frontPort),
      FRONT_TLS_PORT: String(tlsPort),
      REDIS_PORT: String(redisPort),
      NODE_PORTS: nodePorts.join(" "),
      TLS_DIR: tlsDir,
    },
    what: "examples/cluster/run",
    onLine: (line) => {
      const node = /^node 127\.0\.0\.1:(\d+) pid (\d+)$/.exec(line);
      if (node) nodes.push({ port: Number(node[1]), pid: Number(node[2]) });
    },
  });
  return {
    frontPort,
    tlsPort,
    nodes,
    caPath: path.join(tlsDir, "ca.pem"),
    stop: async () => {
      const exit = await cluster.stop();
      rmSync(tlsDir, { recursive: true, force: true });
      return exit;
    },
    stderr: cluster.stderr,
  };
}

// ---- the browser ---------------------------------------------------------------------------

/** The Chromium the tests drive: env CHROMIUM_PATH, else Debian's /usr/bin/chromium. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

const chromiumFlags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Launches headless Chromium (a fresh temporary profile, removed on close) and resolves to a
 * playwright `Browser`. Close it in an `after` hook.
 */
export async function launchBrowser({ args = [] } = {}) {
  // `args`: extra Chromium flags for this launch.
  if (!existsSync(chromiumPath)) {
    throw new Error(`no Chromium at ${chromiumPath}: run scripts/setup (installs Debian's chromium) or set CHROMIUM_PATH`);
  }
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (error) {
    throw new Error(`playwright-core is missing: run scripts/setup (npm ci in tests/web): ${error.message}`);
  }
  // Playwright itself gives each launch a fresh user-data-dir and deletes it on close.
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [...chromiumFlags, ...args],
    timeout: 30_000,
  });
}

/**
 * A new page in its own browser context (own storage), with a default timeout for every
 * wait and its console and page errors kept in `page.logs` for failure messages.
 */
export async function openPage(browser, url, { timeoutMs = 10_000, viewport = { width: 1100, height: 700 } } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(timeoutMs);
  context.setDefaultNavigationTimeout(timeoutMs);
  const page = await context.newPage();
  page.logs = [];
  page.on("console", (message) => page.logs.push(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => page.logs.push(`pageerror: ${error.message}`));
  if (url) await page.goto(url);
  return page;
}

/** Saves a screenshot of `page` as examples/<example>/screenshot.png (the README shows it). */
export async function saveScreenshot(page, example) {
  const folder = exampleDir(example);
  mkdirSync(folder, { recursive: true });
  const file = path.join(folder, "screenshot.png");
  await page.screenshot({ path: file, timeout: 10_000 });
  return file;
}
