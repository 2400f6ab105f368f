// The chat example in headless Chromium: two pages (alice and bob) chat through the real server
// and the chat plugin; typing indicators, presence, and reconnection across a server restart.
// Also the examples' dev server (examples/serve.mjs): routes, content types, tokens, and that no
// path leaves the served folders.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  exampleConfig,
  exampleDir,
  launchBrowser,
  openPage,
  saveScreenshot,
  startDevServer,
  startSwitchboard,
  withTimeout,
} from "./harness.mjs";

/** How long the pages may take to show something (a reconnect backs off up to a few seconds). */
const UI_TIMEOUT_MS = 15_000;

describe("chat example in Chromium", () => {
  let switchboard;
  let site;
  let browser;
  const pages = [];

  before(async () => {
    switchboard = await startSwitchboard({ config: exampleConfig("chat") });
    site = await startDevServer({ dir: exampleDir("chat"), wsUrl: switchboard.wsUrl, secret: switchboard.secret });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
    await switchboard?.stop();
  });

  async function signIn(name) {
    const page = await openPage(browser, site.url, { timeoutMs: UI_TIMEOUT_MS });
    pages.push(page);
    await page.fill("#name", name);
    await page.click("#login-button");
    await page.waitForSelector('#state[data-state="open"]');
    await page.waitForSelector(`#members .member[data-user="${name}"]`);
    return page;
  }

  async function joinByName(page, room) {
    await page.fill("#room-name", room);
    await page.press("#room-name", "Enter");
    await page.waitForSelector(`#rooms .room.active.joined[data-room="${room}"]`);
  }

  async function send(page, text) {
    await page.fill("#text", text);
    await page.press("#text", "Enter");
  }

  function messageText(page, user, text) {
    return page.locator(`#messages .message[data-user="${user}"] .text`, { hasText: text });
  }

  /** Adds the pages' console output to a failure, so a broken page explains itself. */
  async function explained(step) {
    try {
      await step();
    } catch (error) {
      const logs = pages.flatMap((page) => page.logs ?? []).join("\n");
      error.message += `\n-- page logs --\n${logs}\n-- switchboard stderr (tail) --\n${switchboard?.stderr?.().slice(-2000)}`;
      throw error;
    }
  }

  test("two users chat, see each other type and come and go, and survive a server restart", async (t) => {
    let alice;
    let bob;

    await t.test("both sign in, join a room by name and see each other as members", () =>
      explained(async () => {
        alice = await signIn("alice");
        bob = await signIn("bob");
        // Both start in the lobby.
        await alice.waitForSelector('#members .member[data-user="bob"]');
        await joinByName(alice, "team");
        await joinByName(bob, "team");
        await alice.waitForSelector('#members .member[data-user="bob"]');
        await bob.waitForSelector('#members .member[data-user="alice"]');
        await alice.waitForSelector('#messages .notice[data-kind="join"]', { state: "attached" });
        assert.equal(await alice.locator("#members .member").count(), 2);
        assert.equal(await alice.textContent("#room-title"), "# team");
      }),
    );

    await t.test("alice types and bob sees the typing indicator; the message clears it", () =>
      explained(async () => {
        await alice.locator("#text").pressSequentially("hello b");
        await bob.waitForSelector('#typing[data-users="alice"]');
        assert.match(await bob.textContent("#typing"), /alice is typing/);
        // alice does not see herself typing.
        assert.equal(await alice.getAttribute("#typing", "data-users"), "");
        await alice.locator("#text").pressSequentially("ob");
        await alice.press("#text", "Enter");
        await messageText(bob, "alice", "hello bob").waitFor();
        await bob.waitForSelector('#typing[data-users=""]', { state: "attached" });
        await messageText(alice, "alice", "hello bob").waitFor();
      }),
    );

    await t.test("bob answers and alice sees it; messages elsewhere count as unread", () =>
      explained(async () => {
        await send(bob, "hi alice");
        await messageText(alice, "bob", "hi alice").waitFor();
        // The lobby is joined but not shown: a message there is an unread count on its entry.
        await bob.click('#rooms .room[data-room="lobby"]');
        await send(bob, "anyone in the lobby?");
        await alice.waitForSelector('#rooms .room[data-room="lobby"] .unread');
        assert.equal(await alice.textContent('#rooms .room[data-room="lobby"] .unread'), "1");
        await bob.click('#rooms .room[data-room="team"]');
        // Switching rooms shows that room's messages again.
        await messageText(bob, "alice", "hello bob").waitFor();
      }),
    );

    await t.test("the server restarts: both pages reconnect, rejoin and chat again", () =>
      explained(async () => {
        const port = switchboard.port;
        const stopped = await switchboard.stop();
        switchboard = undefined;
        assert.deepEqual(stopped, { code: 0, signal: null });
        for (const page of [alice, bob]) {
          await page.waitForSelector('#state[data-state="reconnecting"]');
          assert.match(await page.textContent("#state"), /reconnecting \(attempt \d+/);
        }
        switchboard = await startSwitchboard({ config: exampleConfig("chat"), port });
        for (const page of [alice, bob]) {
          await page.waitForSelector('#state[data-state="open"]');
          // A fresh server has no history: the page says the gap could not be recovered.
          await page.waitForSelector('#messages .notice[data-kind="rejoined"][data-recovered="false"]', {
            state: "attached",
          });
        }
        await alice.waitForSelector('#members .member[data-user="bob"]');
        await bob.waitForSelector('#members .member[data-user="alice"]');
        await send(alice, "back again");
        await messageText(bob, "alice", "back again").waitFor();
        await send(bob, "welcome back");
        await messageText(alice, "bob", "welcome back").waitFor();
        // The picture for the README: messages, both members, the reconnect notice, bob typing.
        await bob.locator("#text").pressSequentially("see you");
        await alice.waitForSelector('#typing[data-users="bob"]');
        await saveScreenshot(alice, "chat");
        await bob.fill("#text", "");
      }),
    );

    await t.test("bob's page closes and alice's member list drops him", () =>
      explained(async () => {
        await bob.context().close();
        await alice.waitForSelector('#members .member[data-user="bob"]', { state: "detached" });
        await alice.waitForSelector('#messages .notice[data-kind="leave"]', { state: "attached" });
        assert.deepEqual(await alice.locator("#members .member").evaluateAll((items) => items.map((item) => item.dataset.user)), [
          "alice",
        ]);
      }),
    );
  });
});

/** One raw HTTP/1.0 request (no client-side path normalisation); resolves to {status, headers, body}. */
function rawGet(port, target, method = "GET") {
  const exchange = new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`${method} ${target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
    socket.on("data", (chunk) => {
      data += chunk;
    });
    socket.on("error", reject);
    socket.on("end", () => {
      const [head, ...rest] = data.split("\r\n\r\n");
      const [statusLine, ...headerLines] = head.split("\r\n");
      const headers = Object.fromEntries(
        headerLines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
      );
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body: rest.join("\r\n\r\n") });
    });
  });
  return withTimeout(exchange, 5000, `GET ${target}`);
}

describe("examples/serve.mjs", () => {
  let site;
  const secret = "serve-test-secret";

  before(async () => {
    site = await startDevServer({ dir: exampleDir("chat"), wsUrl: "ws://127.0.0.1:9/ws", secret, tenant: "acme" });
  });

  after(async () => {
    await site?.stop();
  });

  test("listens on 127.0.0.1 and serves the example and the client with their content types", async () => {
    assert.match(site.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const cases = [
      ["/", "text/html; charset=utf-8", "<title>Switchboard chat</title>"],
      ["/app.js", "text/javascript; charset=utf-8", "SwitchboardClient"],
      ["/style.css", "text/css; charset=utf-8", ".messages"],
      ["/clients/js/switchboard.js", "text/javascript; charset=utf-8", "export class SwitchboardClient"],
    ];
    for (const [target, type, content] of cases) {
      const response = await rawGet(site.port, target);
      assert.equal(response.status, 200, target);
      assert.equal(response.headers["content-type"], type, target);
      assert.ok(response.body.includes(content), `${target} holds ${content}`);
    }
    const head = await rawGet(site.port, "/app.js", "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
    assert.equal((await rawGet(site.port, "/", "POST")).status, 405);
    assert.equal((await rawGet(site.port, "/missing.js")).status, 404);
  });

  test("answers the page's config and mints HS256 tokens for a name", async () => {
    const config = await rawGet(site.port, "/config.json");
    assert.equal(config.headers["content-type"], "application/json; charset=utf-8");
    assert.deepEqual(JSON.parse(config.body), { wsUrl: "ws://127.0.0.1:9/ws", tenant: "acme" });

    const minted = await rawGet(site.port, "/token?sub=al%20ice");
    assert.equal(minted.status, 200);
    const [header, claims, signature] = JSON.parse(minted.body).token.split(".");
    assert.deepEqual(JSON.parse(Buffer.from(header, "base64url")), { alg: "HS256", typ: "JWT" });
    const { sub, iat, exp } = JSON.parse(Buffer.from(claims, "base64url"));
    assert.equal(sub, "al ice");
    assert.ok(Math.abs(iat - Date.now() / 1000) < 60, "iat is now");
    assert.equal(exp - iat, 3600);
    const expected = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
    assert.equal(signature, expected);

    assert.equal((await rawGet(site.port, "/token")).status, 400);
    assert.equal((await rawGet(site.port, `/token?sub=${"x".repeat(65)}`)).status, 400);
  });

  test("no path leaves the example folder or clients/js", async () => {
    const attempts = [
      "/../README.md",
      "/../../README.md",
      "/%2e%2e/%2e%2e/README.md",
      "/..%2f..%2fREADME.md",
      "/%2E%2E%2F%2E%2E%2FCargo.toml",
      "/clients/js/../../README.md",
      "/clients/js/%2e%2e/%2e%2e/README.md",
      "/clients/js/..%2f..%2fCargo.toml",
      "/..%5c..%5cREADME.md",
      "/%00/etc/passwd",
      "//etc/passwd",
      "/%2fetc%2fpasswd",
      "/clients/js/%2fetc%2fpasswd",
      "/%ff",
    ];
    for (const target of attempts) {
      const response = await rawGet(site.port, target);
      assert.equal(response.status, 404, `${target} answered ${response.status}: ${response.body.slice(0, 80)}`);
    }
  });
});
