// The chat page: signs in with a name (token from the dev server's /token), joins rooms with
// the Switchboard JavaScript client, shows each room's messages and members, relays typing
// indicators, and shows the connection state, including reconnects and what they recovered.
// The chat plugin (plugins/chat) turns `chat:send` into `chat:message` for the whole room and
// relays `typing:start` / `typing:stop` to the other members.

import { SwitchboardClient } from "/clients/js/switchboard.js";

/** Rooms always listed; others are created by joining them by name. */
const FIXED_ROOMS = ["lobby", "random", "help"];
/** After this long without a keystroke the page sends `typing:stop`. */
const TYPING_IDLE_MS = 3000;
/** While typing goes on, `typing:start` is repeated this often so others keep showing it. */
const TYPING_REPEAT_MS = 4000;
/** A typist heard nothing from for this long is no longer shown (a lost `typing:stop`). */
const TYPING_SHOW_MS = 6000;
/** Messages kept per room in the page. */
const MAX_MESSAGES = 500;

const element = (id) => document.getElementById(id);

const chat = {
  client: null,
  /** The room shown. */
  active: null,
  /** name -> {joined, joining, messages, unread, lastSeq, typists: Map<userId, timer>} */
  rooms: new Map(),
  /** The room we told that we type in, when and the idle timer. */
  typing: { room: null, sentAt: 0, idleTimer: null },
};

function room(name) {
  let entry = chat.rooms.get(name);
  if (!entry) {
    entry = { joined: false, joining: false, messages: [], unread: 0, lastSeq: undefined, typists: new Map() };
    chat.rooms.set(name, entry);
  }
  return entry;
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message ?? `${url}: HTTP ${response.status}`);
  return body;
}

// ---- signing in --------------------------------------------------------------------------

element("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = element("name").value.trim();
  if (name === "") return;
  element("login-button").disabled = true;
  element("login-error").textContent = "";
  try {
    await start(name);
  } catch (error) {
    element("login-error").textContent = `Cannot connect: ${error.message}`;
    element("login-button").disabled = false;
  }
});

async function start(name) {
  const config = await fetchJson("/config.json");
  // The token function runs before every (re)connect, so a reconnect gets a fresh token.
  const token = async () => (await fetchJson(`/token?sub=${encodeURIComponent(name)}`)).token;
  const client = new SwitchboardClient({ url: config.wsUrl, token });
  chat.client = client;
  client.on("state", showState);
  client.on("message", onMessage);
  client.on("presence", onPresence);
  client.on("rejoined", onRejoined);
  client.on("error", (error) => toast(`${error.code}: ${error.message}`));
  try {
    await client.connect();
  } catch (error) {
    chat.client = null;
    throw error;
  }
  element("me").textContent = client.userId;
  element("me").hidden = false;
  element("login").hidden = true;
  element("app").hidden = false;
  await enterRoom(FIXED_ROOMS[0]);
  element("text").focus();
}

// ---- connection state --------------------------------------------------------------------

function showState({ state, attempt, delayMs, code, reason }) {
  const badge = element("state");
  badge.dataset.state = state;
  badge.dataset.attempt = attempt ?? "";
  if (state === "connecting") {
    badge.textContent = "connecting…";
  } else if (state === "open") {
    badge.textContent = "connected";
  } else if (state === "reconnecting") {
    badge.textContent = `reconnecting (attempt ${attempt}, next try in ${(delayMs / 1000).toFixed(1)} s)`;
    // Whoever was typing may be gone; their indicators come back with their next keystroke.
    for (const entry of chat.rooms.values()) clearTypists(entry);
    renderTyping();
  } else if (state === "closed") {
    badge.textContent = `disconnected (${code}${reason ? `: ${reason}` : ""}), reload to reconnect`;
    for (const entry of chat.rooms.values()) entry.joined = false;
    renderRoom();
  }
  element("send").disabled = state !== "open";
}

// ---- rooms -------------------------------------------------------------------------------

async function enterRoom(name) {
  stopTyping();
  chat.active = name;
  const entry = room(name);
  entry.unread = 0;
  renderRoom();
  if (!entry.joined) await joinRoom(name);
}

async function joinRoom(name) {
  const entry = room(name);
  if (entry.joined || entry.joining) return;
  entry.joining = true;
  try {
    // `since` replays what the server's bounded history holds after the last message we
    // showed (all of it, for a room we never saw): the room's recent messages.
    await chat.client.join(name, { since: entry.lastSeq ?? 0 });
    entry.joined = true;
  } catch (error) {
    toast(`Cannot join ${name}: ${error.code === "forbidden" ? "not allowed" : error.message}`);
  } finally {
    entry.joining = false;
  }
  renderRoom();
}

async function leaveRoom(name) {
  const entry = room(name);
  stopTyping();
  entry.joined = false;
  clearTypists(entry);
  try {
    await chat.client.leave(name);
  } catch (error) {
    toast(`Cannot leave ${name}: ${error.message}`);
  }
  addNotice(name, "left", `You left ${name}.`);
  renderRoom();
}

element("join-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = element("room-name").value.trim();
  if (name === "") return;
  element("room-name").value = "";
  enterRoom(name);
});

element("leave").addEventListener("click", () => {
  const entry = room(chat.active);
  if (entry.joined) leaveRoom(chat.active);
  else joinRoom(chat.active);
});

// ---- what arrives --------------------------------------------------------------------------

function onMessage(envelope) {
  const name = envelope.channel;
  if (typeof name !== "string" || !chat.rooms.has(name)) return;
  const entry = room(name);
  const payload = envelope.payload ?? {};
  if (envelope.type === "chat:message") {
    if (typeof envelope.seq === "number") entry.lastSeq = envelope.seq;
    stopShowingTypist(entry, payload.userId);
    addEntry(name, { kind: "message", userId: String(payload.userId), text: String(payload.text), ts: payload.ts, seq: envelope.seq });
    if (name !== chat.active) {
      entry.unread += 1;
      renderRooms();
    }
  } else if (envelope.type === "typing:start" && typeof payload.userId === "string") {
    clearTimeout(entry.typists.get(payload.userId));
    entry.typists.set(payload.userId, setTimeout(() => stopShowingTypist(entry, payload.userId), TYPING_SHOW_MS));
    renderTyping();
  } else if (envelope.type === "typing:stop" && typeof payload.userId === "string") {
    stopShowingTypist(entry, payload.userId);
  }
}

function onPresence({ channel, event, member, members }) {
  if (!chat.rooms.has(channel)) return;
  // A user counts as here while any of their connections is; announce only the first and last.
  const connections = member ? members.filter((other) => other.userId === member.userId).length : 0;
  if (event === "join" && connections === 1) {
    addNotice(channel, "join", `${member.userId} joined`);
  } else if (event === "leave" && connections === 0) {
    stopShowingTypist(room(channel), member.userId);
    addNotice(channel, "leave", `${member.userId} left`);
  }
  if (channel === chat.active) renderMembers();
}

function onRejoined({ channel, recovered }) {
  const entry = room(channel);
  entry.joined = true;
  if (recovered) {
    addNotice(channel, "rejoined", "Reconnected: nothing was missed.", { recovered: "true" });
  } else {
    // The server could not replay the gap (it restarted, or its history moved on).
    entry.lastSeq = undefined;
    addNotice(channel, "rejoined", "Reconnected: messages sent while you were away may be missing.", { recovered: "false" });
  }
  if (channel === chat.active) renderRoom();
}

function addNotice(name, kind, text, data = {}) {
  addEntry(name, { kind: "notice", noticeKind: kind, text, data });
}

function addEntry(name, item) {
  const entry = room(name);
  entry.messages.push(item);
  if (entry.messages.length > MAX_MESSAGES) entry.messages.splice(0, entry.messages.length - MAX_MESSAGES);
  if (name === chat.active) {
    const list = element("messages");
    list.append(renderEntry(item));
    while (list.childElementCount > MAX_MESSAGES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }
}

// ---- typing ------------------------------------------------------------------------------

element("text").addEventListener("input", () => {
  const entry = chat.active && room(chat.active);
  if (!entry?.joined || chat.client?.state !== "open") return;
  if (element("text").value.trim() === "") {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (chat.typing.room !== chat.active || now - chat.typing.sentAt > TYPING_REPEAT_MS) {
    chat.client.send("typing:start", { channel: chat.active });
    chat.typing.room = chat.active;
    chat.typing.sentAt = now;
  }
  clearTimeout(chat.typing.idleTimer);
  chat.typing.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(chat.typing.idleTimer);
  if (chat.typing.room !== null) {
    if (room(chat.typing.room).joined) chat.client?.send("typing:stop", { channel: chat.typing.room });
    chat.typing.room = null;
  }
}

function stopShowingTypist(entry, userId) {
  if (!entry.typists.has(userId)) return;
  clearTimeout(entry.typists.get(userId));
  entry.typists.delete(userId);
  renderTyping();
}

function clearTypists(entry) {
  for (const timer of entry.typists.values()) clearTimeout(timer);
  entry.typists.clear();
}

// ---- sending -----------------------------------------------------------------------------

element("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = element("text");
  const text = input.value.trim();
  if (text === "" || !room(chat.active).joined) return;
  stopTyping();
  input.value = "";
  try {
    await chat.client.request("chat:send", { channel: chat.active, payload: { text } });
  } catch (error) {
    input.value = text;
    toast(`Not sent: ${error.message}`);
  }
});

// ---- rendering ---------------------------------------------------------------------------

function renderRoom() {
  if (chat.active === null) return;
  const entry = room(chat.active);
  element("room-title").textContent = `# ${chat.active}`;
  const toggle = element("leave");
  toggle.textContent = entry.joined ? "Leave" : "Join";
  toggle.disabled = entry.joining;
  element("text").disabled = !entry.joined;
  element("messages").replaceChildren(...entry.messages.map(renderEntry));
  element("messages").scrollTop = element("messages").scrollHeight;
  renderRooms();
  renderMembers();
  renderTyping();
}

function renderRooms() {
  const names = [...new Set([...FIXED_ROOMS, ...chat.rooms.keys()])];
  element("rooms").replaceChildren(
    ...names.map((name) => {
      const entry = chat.rooms.get(name);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "room";
      button.dataset.room = name;
      button.classList.toggle("active", name === chat.active);
      button.classList.toggle("joined", Boolean(entry?.joined));
      button.textContent = `# ${name}`;
      if (entry?.unread) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(entry.unread);
        button.append(badge);
      }
      button.addEventListener("click", () => enterRoom(name));
      const item = document.createElement("li");
      item.append(button);
      return item;
    }),
  );
}

function renderMembers() {
  const members = chat.active && room(chat.active).joined ? chat.client.presence(chat.active) : [];
  const connections = new Map();
  for (const member of members) connections.set(member.userId, (connections.get(member.userId) ?? 0) + 1);
  const users = [...connections.keys()].sort();
  element("member-count").textContent = users.length ? `(${users.length})` : "";
  element("members").replaceChildren(
    ...users.map((userId) => {
      const item = document.createElement("li");
      item.className = "member";
      item.dataset.user = userId;
      item.textContent = userId;
      if (userId === chat.client.userId) item.append(tag("you"));
      const count = connections.get(userId);
      if (count > 1) item.append(tag(`${count} tabs`));
      return item;
    }),
  );
}

function renderTyping() {
  const typists = chat.active ? [...room(chat.active).typists.keys()].sort() : [];
  const line = element("typing");
  line.dataset.users = typists.join(",");
  if (typists.length === 0) line.textContent = "";
  else if (typists.length === 1) line.textContent = `${typists[0]} is typing…`;
  else if (typists.length <= 3) line.textContent = `${typists.join(", ")} are typing…`;
  else line.textContent = "several people are typing…";
}

function renderEntry(item) {
  const row = document.createElement("li");
  if (item.kind === "notice") {
    row.className = "notice";
    row.dataset.kind = item.noticeKind;
    Object.assign(row.dataset, item.data);
    row.textContent = item.text;
    return row;
  }
  row.className = "message";
  row.classList.toggle("mine", item.userId === chat.client?.userId);
  row.dataset.user = item.userId;
  if (item.seq !== undefined) row.dataset.seq = String(item.seq);
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = item.userId;
  const time = document.createElement("time");
  if (typeof item.ts === "number") {
    time.dateTime = new Date(item.ts).toISOString();
    time.textContent = new Date(item.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = item.text;
  row.append(author, time, text);
  return row;
}

function tag(text) {
  const span = document.createElement("span");
  span.className = "tag";
  span.textContent = text;
  return span;
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

// `?name=alice` signs in right away.
const presetName = new URLSearchParams(location.search).get("name");
if (presetName) {
  element("name").value = presetName;
  element("login").requestSubmit();
}
