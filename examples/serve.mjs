// The examples' development server (Node 20, no dependencies).
//
//   node examples/serve.mjs --dir examples/chat --port 8000 --ws ws://127.0.0.1:8080/ws --secret S
//   node examples/serve.mjs --dir examples/chat --config examples/chat/switchboard.toml
//
// Options (environment fallbacks in brackets):
//   --dir DIR        the example folder served at `/` (required)
//   --port N         port on 127.0.0.1; 0 picks a free one (default 8000)
//   --ws URL         the Switchboard WebSocket URL the page connects to [SWITCHBOARD_WS]
//                    (default ws://127.0.0.1:8080/ws)
//   --secret S       the tenant's HS256 secret, for /token [JWT_SECRET]
//   --config FILE    read the secret from this Switchboard config instead of --secret
//   --tenant NAME    the tenant, reported in /config.json and used with --config (default `default`)
//
// Routes: the example folder at `/`, the repository's `clients/js/` at `/clients/js/`,
// `GET /config.json` -> {"wsUrl", "tenant"}, `GET /token?sub=NAME` -> {"token"}.
// It listens on 127.0.0.1 only and prints `serving on http://127.0.0.1:PORT` once bound.
//
// /token stands in for your application's own backend: a real app mints the token after its
// own login, and never hands the signing secret, or a token for any name asked for, to a browser.

import { createHmac } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer } from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const contentTypes = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".wasm": "application/wasm",
};

const TOKEN_TTL_SECONDS = 3600;
const MAX_SUB_LENGTH = 64;

/** The HS secret of `tenant` in a Switchboard TOML config (`secret = "..."` or `{ env = "VAR" }`). */
export function readSecret(configPath, tenant = "default") {
  const text = readFileSync(configPath, "utf8");
  let section = "";
  let current = null;
  const secrets = new Map();
  for (const rawLine of text.split("\n")) {
    const line = rawLine.replace(/^\s+|\s+$/g, "");
    if (line.startsWith("#") || line === "") continue;
    const header = /^\[\[?\s*([^\]\s]+)\s*\]\]?/.exec(line);
    if (header) {
      section = header[1];
      if (line.startsWith("[[") && section === "tenants") current = { name: undefined };
      continue;
    }
    const pair = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
    if (!pair || !current) continue;
    const [, key, value] = pair;
    if (section === "tenants" && key === "name") {
      current.name = unquote(value);
    } else if (section === "tenants.jwt" && key === "secret") {
      const fromEnv = /^\{\s*env\s*=\s*"([^"]+)"\s*\}/.exec(value);
      const secret = fromEnv ? process.env[fromEnv[1]] : unquote(value);
      if (current.name !== undefined && secret !== undefined) secrets.set(current.name, secret);
    }
  }
  const secret = secrets.get(tenant);
  if (secret === undefined) {
    throw new Error(`${configPath}: no HS secret for tenant \`${tenant}\``);
  }
  return secret;
}

function unquote(value) {
  const quoted = /^"((?:[^"\\]|\\.)*)"|^'([^']*)'/.exec(value);
  if (!quoted) return undefined;
  return quoted[2] ?? JSON.parse(`"${quoted[1]}"`);
}

/** An HS256 JWT for `sub`, valid for `ttlSeconds`. */
export function mintToken(secret, sub, ttlSeconds = TOKEN_TTL_SECONDS) {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, iat: now, exp: now + ttlSeconds })}`;
  const signature = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/**
 * The file under `root` that the URL path names, or null when it would leave `root`
 * (`..` segments, encoded or not, NUL bytes, symlinks pointing outside).
 */
export async function resolveInside(root, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return null;
  if (decoded.split("/").some((segment) => segment === "..")) return null;
  const candidate = path.resolve(root, `.${path.posix.normalize(`/${decoded}`)}`);
  if (!isInside(root, candidate)) return null;
  let real;
  try {
    real = await realpath(candidate);
    let info = await stat(real);
    if (info.isDirectory()) {
      real = path.join(real, "index.html");
      info = await stat(real);
    }
    if (!info.isFile()) return null;
  } catch {
    return null;
  }
  const realRoot = await realpath(root);
  return isInside(realRoot, real) ? real : null;
}

function isInside(root, candidate) {
  return candidate === root || candidate.startsWith(root + path.sep);
}

function sendJson(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  response.end(text);
}

function sendFile(request, response, file) {
  const type = contentTypes[path.extname(file).toLowerCase()] ?? "application/octet-stream";
  response.writeHead(200, {
    "content-type": type,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  if (request.method === "HEAD") {
    response.end();
    return;
  }
  createReadStream(file)
    .on("error", () => response.destroy())
    .pipe(response);
}

/** Starts the server; resolves to the bound `http.Server` once it listens. */
export function serve({ dir, port = 8000, wsUrl, secret, tenant = "default" }) {
  const exampleRoot = path.resolve(dir);
  const clientRoot = path.join(repoRoot, "clients", "js");
  const server = createServer(async (request, response) => {
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        response.setHeader("allow", "GET, HEAD");
        sendJson(response, 405, { error: "method_not_allowed" });
        return;
      }
      const url = new URL(request.url ?? "/", "http://127.0.0.1");
      if (url.pathname === "/config.json") {
        sendJson(response, 200, { wsUrl, tenant });
        return;
      }
      if (url.pathname === "/token") {
        const sub = url.searchParams.get("sub") ?? "";
        if (!secret) {
          sendJson(response, 500, { error: "no_secret", message: "start serve.mjs with --secret, --config or JWT_SECRET" });
        } else if (sub.trim() === "" || sub.length > MAX_SUB_LENGTH) {
          sendJson(response, 400, { error: "bad_request", message: `sub must be 1..${MAX_SUB_LENGTH} characters` });
        } else {
          sendJson(response, 200, { token: mintToken(secret, sub) });
        }
        return;
      }
      // Resolve against the raw path so an encoded `..` cannot hide from the check.
      const rawPath = (request.url ?? "/").split("?")[0];
      let file = null;
      if (rawPath.startsWith("/clients/js/")) {
        file = await resolveInside(clientRoot, rawPath.slice("/clients/js/".length));
      } else {
        file = await resolveInside(exampleRoot, rawPath.slice(1));
      }
      if (file === null) {
        sendJson(response, 404, { error: "not_found" });
        return;
      }
      sendFile(request, response, file);
    } catch (error) {
      if (!response.headersSent) sendJson(response, 500, { error: "internal", message: String(error) });
      else response.destroy();
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function parseArgs(argv) {
  const options = {};
  for (let index = 0; index < argv.length; index += 1) {
    const flag = argv[index];
    const known = ["--dir", "--port", "--ws", "--secret", "--config", "--tenant"];
    if (!known.includes(flag)) throw new Error(`unknown option ${flag}`);
    const value = argv[index + 1];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    options[flag.slice(2)] = value;
    index += 1;
  }
  return options;
}

async function main() {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
    if (!options.dir) throw new Error("--dir is required");
    if (!statSync(options.dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`--dir ${options.dir} is not a folder`);
    const port = Number(options.port ?? 8000);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${options.port} is not a port`);
    options.port = port;
  } catch (error) {
    console.error(`serve.mjs: ${error.message}`);
    console.error("usage: node examples/serve.mjs --dir DIR [--port 8000] [--ws URL] [--secret S | --config FILE] [--tenant NAME]");
    process.exit(2);
  }
  const tenant = options.tenant ?? "default";
  let secret = options.secret ?? process.env.JWT_SECRET;
  if (options.config) secret = readSecret(options.config, tenant);
  const server = await serve({
    dir: options.dir,
    port: options.port,
    wsUrl: options.ws ?? process.env.SWITCHBOARD_WS ?? "ws://127.0.0.1:8080/ws",
    secret,
    tenant,
  });
  console.log(`serving on http://127.0.0.1:${server.address().port}`);
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((error) => {
    console.error(`serve.mjs: ${error.message}`);
    process.exit(1);
  });
}
