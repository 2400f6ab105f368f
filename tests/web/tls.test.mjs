// TLS at the edge, from JavaScript: the cluster example (Redis, three nodes, nginx terminating
// TLS with a private CA the run makes). The chat page works over wss:// in headless Chromium
// with the run's certificate trusted, and not without it; the JS client in Node connects,
// reconnects and recovers through the TLS front door with the CA trusted, and is refused
// without it.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { SwitchboardClient } from "../../clients/js/switchboard.js";
import { mintToken } from "../../clients/js/testing/support.mjs";
import {
  exampleDir,
  launchBrowser,
  openPage,
  readSecret,
  repoRoot,
  startClusterExample,
  startDevServer,
  waitUntil,
  withTimeout,
} from "./harness.mjs";

const UI_TIMEOUT_MS = 15_000;
const SCENARIO_TIMEOUT_MS = 60_000;

/**
 * base64(sha256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's
 * --ignore-certificate-errors-spki-list wants it: a chain holding a certificate with that key is
 * trusted, the way an imported authority would be (without an NSS database to import it into).
 */
function spkiHash(pem) {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

/** Runs tls-client-scenario.mjs in a child Node with `env`; resolves to {code, stdout, stderr}. */
function runScenario(env) {
  const child = spawn(
    process.execPath,
    ["--experimental-websocket", path.join(repoRoot, "tests", "web", "tls-client-scenario.mjs")],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve({ code, stdout, stderr })));
  return withTimeout(exited, SCENARIO_TIMEOUT_MS, "the TLS client scenario").catch((error) => {
    child.kill("SIGKILL");
    throw error;
  });
}

describe("the cluster example's TLS front door", () => {
  let cluster;
  let site;
  const browsers = [];

  before(async () => {
    cluster = await startClusterExample();
    site = await startDevServer({
      dir: exampleDir("chat"),
      wsUrl: `wss://localhost:${cluster.tlsPort}/ws/chat`,
      secret: readSecret(path.join(repoRoot, "examples", "cluster", "switchboard.toml"), "chat"),
      tenant: "chat",
    });
  });

  after(async () => {
    for (const browser of browsers) await browser.close();
    await site?.stop();
    await cluster?.stop();
  });

  async function signIn(browser, name, state = "open") {
    const page = await openPage(browser, site.url, { timeoutMs: UI_TIMEOUT_MS });
    await page.fill("#name", name);
    await page.click("#login-button");
    if (state) await page.waitForSelector(`#state[data-state="${state}"]`);
    return page;
  }

  test("the chat page chats over wss:// in Chromium with the run's certificate trusted", async () => {
    // The run's CA, not its server certificate: the page works because the CA is trusted.
    const trust = spkiHash(readFileSync(cluster.caPath));
    const browser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${trust}`] });
    browsers.push(browser);
    const alice = await signIn(browser, "alice");
    const bob = await signIn(browser, "bob");
    try {
      await alice.waitForSelector('#members .member[data-user="bob"]');
      await bob.fill("#text", "hello over TLS");
      await bob.press("#text", "Enter");
      await alice
        .locator('#messages .message[data-user="bob"] .text', { hasText: "hello over TLS" })
        .waitFor();
    } catch (error) {
      error.message += `\n-- page logs --\n${[...(alice.logs ?? []), ...(bob.logs ?? [])].join("\n")}`;
      throw error;
    }
  });

  test("without the certificate trusted, Chromium never opens the connection", async () => {
    const browser = await launchBrowser();
    browsers.push(browser);
    const page = await signIn(browser, "mallory", null);
    // The page cannot tell why (browsers hide it from scripts) and keeps retrying; Chromium
    // says why in the console.
    await waitUntil(() => page.logs.some((line) => line.includes("ERR_CERT_AUTHORITY_INVALID")), {
      timeoutMs: UI_TIMEOUT_MS,
      what: `the certificate error in the console (logs: ${page.logs.join(" | ")})`,
    });
    assert.notEqual(await page.getAttribute("#state", "data-state"), "open");
  });

  test("the JS client in Node connects, reconnects and recovers through TLS", async () => {
    const { code, stdout, stderr } = await runScenario({
      NODE_EXTRA_CA_CERTS: cluster.caPath,
      WSS_URL: `wss://localhost:${cluster.tlsPort}/ws`,
      NODES: JSON.stringify(cluster.nodes),
    });
    assert.equal(code, 0, `the scenario failed:\n${stderr}\n${cluster.stderr()}`);
    const seen = JSON.parse(stdout.trim().split("\n").at(-1));
    assert.notEqual(seen.connection, seen.firstConnection, "a new connection after the node died");
    assert.deepEqual(seen.rejoin, { recovered: true, sameRoom: true });
    assert.deepEqual(seen.received, seen.expected, "missed messages in seq order, no duplicate");
    assert.deepEqual(seen.payloads, [0, 1, 2, 3]);
  });

  test("the JS client in Node without the CA trusted is refused", async () => {
    // This process was started without NODE_EXTRA_CA_CERTS: the private CA is unknown to it.
    const client = new SwitchboardClient({
      url: `wss://localhost:${cluster.tlsPort}/ws`,
      token: mintToken("dave", { secret: "dev-secret-change-me" }),
      reconnect: false,
    });
    await assert.rejects(withTimeout(client.connect(), 10_000, "the refused connect"));
    assert.equal(client.state, "closed");
    client.close();
  });
});
