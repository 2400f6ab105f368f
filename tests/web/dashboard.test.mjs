// The dashboard example in headless Chromium: the page shows the plugin's snapshot of values a
// publisher reported before it opened, then its charts follow the deltas (one a second) while
// the simulated publisher (examples/dashboard/publish.mjs) reports; a viewer may not report.
// Saves the README's screenshot.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  exampleConfig,
  exampleDir,
  launchBrowser,
  openPage,
  repoRoot,
  saveScreenshot,
  startDevServer,
  startSwitchboard,
  waitUntil,
  withTimeout,
} from "./harness.mjs";

const UI_TIMEOUT_MS = 15_000;
const PUBLISH = path.join(exampleDir("dashboard"), "publish.mjs");

/** Runs publish.mjs with `args`; resolves once it prints `ready`, to {stop(), output()}. */
async function startPublisher(args, ready) {
  const child = spawn(process.execPath, ["--experimental-websocket", PUBLISH, ...args], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  const seen = new Promise((resolve, reject) => {
    const collect = (chunk) => {
      output += chunk;
      if (ready.test(output)) resolve();
    };
    child.stdout.setEncoding("utf8").on("data", collect);
    child.stderr.setEncoding("utf8").on("data", collect);
    exited.then((code) => reject(new Error(`publish.mjs exited with ${code} before it was ready:\n${output}`)));
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await withTimeout(exited, 5000, "publish.mjs to exit").catch(() => child.kill("SIGKILL"));
  };
  try {
    await withTimeout(seen, 15_000, `publish.mjs to print ${ready}`);
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop, exited, output: () => output };
}

describe("dashboard example in Chromium", () => {
  let switchboard;
  let site;
  let browser;
  let publisher;
  let page;

  before(async () => {
    switchboard = await startSwitchboard({ config: exampleConfig("dashboard") });
    site = await startDevServer({ dir: exampleDir("dashboard"), wsUrl: switchboard.wsUrl, secret: switchboard.secret });
    browser = await launchBrowser();
  });

  after(async () => {
    await publisher?.stop();
    await browser?.close();
    await site?.stop();
    await switchboard?.stop();
  });

  async function explained(step) {
    try {
      await step();
    } catch (error) {
      error.message +=
        `\n-- page logs --\n${(page?.logs ?? []).join("\n")}` +
        `\n-- publisher --\n${publisher?.output?.() ?? ""}` +
        `\n-- switchboard stderr (tail) --\n${switchboard?.stderr?.().slice(-2000)}`;
      throw error;
    }
  }

  const card = (name) => `.metric[data-metric="${name}"]`;
  const attribute = (name, key) => page.getAttribute(card(name), `data-${key}`);
  const canvasImage = (name) => page.$eval(`${card(name)} canvas`, (canvas) => canvas.toDataURL());

  test("the page shows the snapshot, then its charts follow the publisher", async (t) => {
    await t.test("values reported before the page opened come from the snapshot", () =>
      explained(async () => {
        const once = await startPublisher(
          ["--url", switchboard.wsUrl, "--config", exampleConfig("dashboard"), "--set", "queue_depth=7", "--set", "cpu_percent=12.5"],
          /reported .* as version 1/,
        );
        assert.equal(await withTimeout(once.exited, 5000, "the one-shot publisher to exit"), 0);
        // Past the next tick: the delta with these values went out before the page existed.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        page = await openPage(browser, site.url, { timeoutMs: UI_TIMEOUT_MS, viewport: { width: 1100, height: 780 } });
        await page.waitForSelector('#state[data-state="open"]');
        await page.waitForSelector(card("queue_depth"));
        assert.equal(await attribute("queue_depth", "value"), "7");
        assert.equal(await attribute("cpu_percent", "value"), "12.5");
        assert.equal(await attribute("cpu_percent", "version"), "1");
        assert.equal(await attribute("cpu_percent", "points"), "1", "the snapshot carries the history");
        assert.match(await page.textContent(`${card("cpu_percent")} .value`), /^12\.5\s*%$/);
        assert.equal(await page.textContent("#version"), "1");
      }),
    );

    await t.test("the simulated publisher's reports reach the charts every second", () =>
      explained(async () => {
        const pointsBefore = Number(await attribute("cpu_percent", "points"));
        const imageBefore = await canvasImage("cpu_percent");
        publisher = await startPublisher(
          ["--url", switchboard.wsUrl, "--config", exampleConfig("dashboard"), "--interval", "100"],
          /publishing to/,
        );
        await page.waitForSelector(card("latency_p99_ms"));
        await waitUntil(async () => Number(await attribute("cpu_percent", "points")) >= pointsBefore + 3, {
          timeoutMs: UI_TIMEOUT_MS,
          what: "three more points on the CPU chart",
        });
        assert.ok(Number(await attribute("cpu_percent", "version")) > 1, "the version moved on");
        assert.notEqual(await canvasImage("cpu_percent"), imageBefore, "the CPU chart was redrawn with the new points");
        // queue_depth is not reported any more: its value and chart stay as they were.
        assert.equal(await attribute("queue_depth", "value"), "7");
        assert.equal(await attribute("queue_depth", "points"), "1");
        assert.ok(Number(await page.textContent("#version")) > 1);
        // Let the charts fill a little for the screenshot; the delta count keeps rising.
        const versionNow = Number(await attribute("memory_mb", "version"));
        await waitUntil(async () => Number(await attribute("memory_mb", "points")) >= 8, {
          timeoutMs: UI_TIMEOUT_MS,
          what: "eight points on the memory chart",
        });
        assert.ok(Number(await attribute("memory_mb", "version")) > versionNow);
        await saveScreenshot(page, "dashboard");
      }),
    );

    await t.test("a viewer's token may not report", () =>
      explained(async () => {
        const refused = await page.evaluate(() =>
          window.dashboard.client
            .request("dashboard:report", { payload: { metrics: { cpu_percent: 1 } } })
            .then(() => "accepted", (error) => error.code),
        );
        assert.equal(refused, "forbidden");
      }),
    );
  });
});
