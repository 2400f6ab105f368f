// The collab example in headless Chromium: two pages (ann and bob) type into the same document
// through the keyboard at the same time, at different places and at the same place, and end with
// identical text in both editors and on the server (`collab:snapshot`). Saves the README's
// screenshot.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  exampleConfig,
  exampleDir,
  launchBrowser,
  openPage,
  saveScreenshot,
  startDevServer,
  startSwitchboard,
  waitUntil,
} from "./harness.mjs";

const UI_TIMEOUT_MS = 15_000;
/** Milliseconds between keystrokes: slow enough that both pages' edits interleave on the wire. */
const KEY_DELAY_MS = 25;

describe("collab example in Chromium", () => {
  let switchboard;
  let site;
  let browser;
  const pages = [];

  before(async () => {
    switchboard = await startSwitchboard({ config: exampleConfig("collab") });
    site = await startDevServer({ dir: exampleDir("collab"), wsUrl: switchboard.wsUrl, secret: switchboard.secret });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
    await switchboard?.stop();
  });

  async function openEditor(name, doc) {
    const page = await openPage(browser, `${site.url}/?name=${name}&doc=${doc}`, { timeoutMs: UI_TIMEOUT_MS });
    pages.push(page);
    await page.waitForSelector('#state[data-state="open"]');
    await page.waitForSelector("#editor:not([disabled])");
    await page.waitForSelector('#sync[data-synced="true"]');
    return page;
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

  const editorText = (page) => page.inputValue("#editor");
  const serverText = (page) =>
    page.evaluate(async () => (await window.collab.client.request("collab:snapshot", { channel: window.collab.channel })).text);

  /** Waits until both pages are synced and show the same text; returns it. */
  async function converged(first, second, what) {
    let texts = [];
    await waitUntil(
      async () => {
        texts = [await editorText(first), await editorText(second)];
        const synced = await Promise.all(
          [first, second].map((page) => page.getAttribute("#sync", "data-synced").then((value) => value === "true")),
        );
        return synced.every(Boolean) && texts[0] === texts[1];
      },
      { timeoutMs: UI_TIMEOUT_MS, what: `${what} (editors: ${JSON.stringify(texts)})` },
    );
    assert.equal(await serverText(first), texts[0], `${what}: the server's text differs`);
    return texts[0];
  }

  /** Puts the caret of `page` at code point `index` of the editor's text. */
  async function placeCaret(page, index) {
    await page.click("#editor");
    await page.evaluate((at) => {
      const editor = document.getElementById("editor");
      const offset = Array.from(editor.value).slice(0, at).join("").length;
      editor.setSelectionRange(offset, offset);
    }, index);
  }

  test("two pages typing at once converge, in both editors and on the server", async (t) => {
    const doc = `notes-${process.pid}`;
    let ann;
    let bob;
    const base = "Shared notes\n";

    await t.test("both open the document and see each other", () =>
      explained(async () => {
        ann = await openEditor("ann", doc);
        bob = await openEditor("bob", doc);
        await ann.waitForSelector('#people .person[data-user="bob"]');
        await bob.waitForSelector('#people .person[data-user="ann"]');
        assert.equal(await editorText(ann), "");
        await ann.click("#editor");
        await ann.keyboard.type(base, { delay: 5 });
        assert.equal(await converged(ann, bob, "the first line"), base);
      }),
    );

    await t.test("ann types at the end while bob types at the start", () =>
      explained(async () => {
        const annTyped = "ann was here 🙂 ";
        const bobTyped = "bob: héllo 中文 ";
        await placeCaret(ann, Array.from(base).length);
        await placeCaret(bob, 0);
        await Promise.all([
          ann.keyboard.type(annTyped, { delay: KEY_DELAY_MS }),
          bob.keyboard.type(bobTyped, { delay: KEY_DELAY_MS + 7 }),
        ]);
        // Each caret moved along with the other's edits, so each phrase stayed in one piece.
        assert.equal(await converged(ann, bob, "typing at both ends"), bobTyped + base + annTyped);
      }),
    );

    await t.test("both type at the same place: every keystroke survives, each in its order", () =>
      explained(async () => {
        const before = await editorText(ann);
        const at = Array.from(before).indexOf("S") + "Shared".length;
        await placeCaret(ann, at);
        await placeCaret(bob, at);
        await Promise.all([
          ann.keyboard.type("QQQQQQ", { delay: KEY_DELAY_MS }),
          bob.keyboard.type("ZZZZZZ", { delay: KEY_DELAY_MS + 3 }),
        ]);
        const text = await converged(ann, bob, "typing at one place");
        assert.equal(Array.from(text).length, Array.from(before).length + 12);
        assert.equal(text.replaceAll("Z", ""), [...before].toSpliced(at, 0, "QQQQQQ").join(""));
        assert.equal(text.replaceAll("Q", ""), [...before].toSpliced(at, 0, "ZZZZZZ").join(""));
      }),
    );

    await t.test("ann deletes while bob types, then the screenshot", () =>
      explained(async () => {
        const before = await editorText(ann);
        // ann removes her "QQQQQQ" and bob's letters among them, one key at a time.
        const start = Array.from(before).indexOf("Q");
        const end = Array.from(before).lastIndexOf("Q") + 1;
        await placeCaret(ann, end);
        await placeCaret(bob, Array.from(before).length);
        await Promise.all([
          (async () => {
            for (let count = end - start; count > 0; count -= 1) await ann.keyboard.press("Backspace", { delay: 10 });
          })(),
          bob.keyboard.type("\nThe end.", { delay: KEY_DELAY_MS }),
        ]);
        const text = await converged(ann, bob, "deleting while typing");
        const expected = [...before];
        expected.splice(start, end - start);
        assert.equal(text, `${expected.join("")}\nThe end.`);
      }),
    );

    await t.test("a fresh document written by both at once, for the README's screenshot", () =>
      explained(async () => {
        // Text the test machine's fonts can draw (no emoji or CJK fonts in headless Debian).
        const fresh = `release-${process.pid}`;
        for (const page of [ann, bob]) {
          await page.goto(`${site.url}/?name=${page === ann ? "ann" : "bob"}&doc=${fresh}`);
          await page.waitForSelector('#sync[data-synced="true"]');
        }
        await ann.waitForSelector('#people .person[data-user="bob"]');
        const heading = "Release checklist\n\n";
        await ann.click("#editor");
        await ann.keyboard.type(heading, { delay: 5 });
        await converged(ann, bob, "the heading");
        const owner = "Owner: bob, due Friday. Café at 10 → demo at 11.\n";
        const items = "✓ plugins built for wasm32-wasip2\n✓ dashboard and collab examples\n- screenshots in the READMEs";
        // bob writes between the heading's two line breaks, ann after them.
        await placeCaret(bob, Array.from(heading).length - 1);
        await placeCaret(ann, Array.from(heading).length);
        await Promise.all([
          bob.keyboard.type(owner, { delay: KEY_DELAY_MS }),
          ann.keyboard.type(items, { delay: KEY_DELAY_MS - 10 }),
        ]);
        const text = await converged(ann, bob, "the checklist");
        assert.equal(text, `Release checklist\n${owner}\n${items}`);
        await saveScreenshot(ann, "collab");
      }),
    );
  });
});
