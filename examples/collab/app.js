// The collab page: a textarea bound to one shared document. Every keystroke becomes an
// operation (ot.js `diff` against the text we know, positions in code points) that
// CollabSession sends as `collab:op`; operations of others arrive as `collab:op` broadcasts,
// are transformed against our unconfirmed edits and applied to the textarea with the caret
// and selection moved along. `?name=ann` picks the name, `?doc=notes` the document.

import { SwitchboardClient } from "/clients/js/switchboard.js";
import { codePointIndex, codePointLength, diff, TextOperation, transformIndex, utf16Index } from "./ot.js";
import { CollabSession } from "./session.js";

const DOC_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const COLORS = ["#2f6fec", "#d64545", "#1f9d55", "#b45fd6", "#d98a00", "#0f9bb0", "#7a6b58"];

const element = (id) => document.getElementById(id);
const editor = element("editor");

const params = new URLSearchParams(location.search);
const name = (params.get("name") ?? "").trim() || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
const docName = DOC_NAME_PATTERN.test(params.get("doc") ?? "") ? params.get("doc") : "welcome";
const channel = `doc-${docName}`;

const page = {
  client: null,
  session: null,
  /** While an IME composes text the textarea is left alone; remote edits wait here, composed. */
  composing: null,
};

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message ?? `${url}: HTTP ${response.status}`);
  return body;
}

async function start() {
  element("doc-name").textContent = docName;
  const config = await fetchJson("/config.json");
  const token = async () => (await fetchJson(`/token?sub=${encodeURIComponent(name)}`)).token;
  const client = new SwitchboardClient({ url: config.wsUrl, token });
  page.client = client;
  client.on("state", showState);
  client.on("presence", (event) => {
    if (event.channel === channel) renderPeople(event.members);
  });
  client.on("error", (error) => toast(`${error.code}: ${error.message}`));
  await client.connect();
  element("me").textContent = client.userId;
  element("me").hidden = false;

  const session = new CollabSession({ client, channel });
  page.session = session;
  session.on("remote", applyRemote);
  session.on("status", showStatus);
  session.on("resync", ({ lost }) => {
    showText(session.text);
    toast(lost ? "The document was reloaded; your last unsent edits were lost." : "The document was reloaded.");
  });
  session.on("error", (error) => toast(`${error.code}: ${error.message}`));
  await session.open();
  showText(session.text);
  renderPeople(client.presence(channel));
  editor.disabled = false;
  editor.placeholder = "Type here: everyone on this page sees it.";
  editor.focus();
  // For the browser console and the tests: `collab.session.text`, `collab.client.request(...)`.
  window.collab = { client, session, channel };
}

// ---- local edits ---------------------------------------------------------------------------

function caret() {
  return codePointIndex(editor.value, editor.selectionEnd);
}

editor.addEventListener("input", (event) => {
  if (page.composing || event.isComposing || !page.session) return;
  page.session.replace(editor.value, caret());
  showCount();
});

editor.addEventListener("compositionstart", () => {
  page.composing = { base: page.session?.text ?? editor.value, remote: null };
});

editor.addEventListener("compositionend", () => {
  const composing = page.composing;
  page.composing = null;
  if (!composing || !page.session) return;
  // The composed text is an edit of `base`; others may have edited meanwhile (`remote`).
  let local = diff(composing.base, editor.value, caret());
  let cursor = caret();
  if (composing.remote) {
    const [localPrime, remotePrime] = TextOperation.transform(local, composing.remote);
    local = localPrime;
    cursor = transformIndex(cursor, remotePrime);
  }
  page.session.edit(local);
  showText(page.session.text, cursor, cursor);
});

// ---- remote edits --------------------------------------------------------------------------

/** Shows an operation of someone else: the new text, with our selection moved along. */
function applyRemote(operation) {
  if (page.composing) {
    const waiting = page.composing.remote;
    page.composing.remote = waiting ? waiting.compose(operation) : operation;
    return;
  }
  const before = editor.value;
  const start = transformIndex(codePointIndex(before, editor.selectionStart), operation);
  const end = transformIndex(codePointIndex(before, editor.selectionEnd), operation);
  showText(page.session.text, start, end);
}

/** Puts `text` in the editor, with the selection (code points) when given. */
function showText(text, start = undefined, end = undefined) {
  const focused = document.activeElement === editor;
  const direction = editor.selectionDirection;
  const scroll = editor.scrollTop;
  editor.value = text;
  if (start !== undefined) {
    editor.setSelectionRange(utf16Index(text, start), utf16Index(text, end ?? start), direction);
  }
  editor.scrollTop = scroll;
  if (focused && document.activeElement !== editor) editor.focus();
  showCount();
}

function showCount() {
  element("chars").textContent = String(codePointLength(editor.value));
}

function showStatus({ rev, settled }) {
  element("rev").textContent = String(rev);
  const sync = element("sync");
  sync.dataset.synced = String(settled);
  sync.textContent = settled ? "saved" : "syncing…";
}

// ---- connection and people -----------------------------------------------------------------

function showState({ state, attempt, delayMs, code, reason }) {
  const badge = element("state");
  badge.dataset.state = state;
  if (state === "connecting") badge.textContent = "connecting…";
  else if (state === "open") badge.textContent = "connected";
  else if (state === "reconnecting") {
    // Typing goes on offline: edits wait in the buffer and go out after the rejoin.
    badge.textContent = `reconnecting (attempt ${attempt}, next try in ${(delayMs / 1000).toFixed(1)} s)`;
  } else if (state === "closed") {
    badge.textContent = `disconnected (${code}${reason ? `: ${reason}` : ""}), reload to reconnect`;
    editor.disabled = true;
  }
}

/** A color per user (FNV-1a of the name), the same in every window. */
function colorOf(userId) {
  let hash = 2166136261;
  for (const char of userId) hash = Math.imul(hash ^ char.codePointAt(0), 16777619) >>> 0;
  return COLORS[hash % COLORS.length];
}

function renderPeople(members) {
  const tabs = new Map();
  for (const member of members) tabs.set(member.userId, (tabs.get(member.userId) ?? 0) + 1);
  const list = element("people");
  list.replaceChildren(
    ...[...tabs.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([userId, count]) => {
        const item = document.createElement("li");
        item.className = userId === page.client?.userId ? "person self" : "person";
        item.dataset.user = userId;
        const dot = document.createElement("span");
        dot.className = "dot";
        dot.style.background = colorOf(userId);
        const label = document.createElement("span");
        label.className = "name";
        label.textContent = userId;
        item.append(dot, label);
        if (count > 1) {
          const tag = document.createElement("span");
          tag.className = "tag";
          tag.textContent = `${count} tabs`;
          item.append(tag);
        }
        return item;
      }),
  );
  element("people-count").textContent = `(${tabs.size})`;
}

let toastTimer = null;
function toast(text) {
  const box = element("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

start().catch((error) => {
  element("state").dataset.state = "closed";
  element("state").textContent = `cannot connect: ${error.message}`;
  editor.placeholder = `Cannot load the document: ${error.message}`;
});
