// The dashboard page: joins the `dashboard` channel, then loads `dashboard:snapshot` (every
// metric's value, version and recent history) and from then on applies the plugin's
// `dashboard:delta` broadcasts (one a second, only the metrics that changed). Each metric is a
// card with its value and a line chart drawn on a canvas; no chart library.
//
// Ordering, so nothing is missed and nothing goes backwards: join first, snapshot second. A
// delta that arrives before the snapshot's answer waits and is applied after it. A metric from
// a delta is taken only when its `version` is newer than the one shown (the snapshot may
// already be newer than a delta sent before it); a chart point is added when the delta's time
// is after the chart's last point.

import { SwitchboardClient } from "/clients/js/switchboard.js";

const CHANNEL = "dashboard";
/** The charts show the last two minutes. */
const WINDOW_MS = 120_000;
const MAX_POINTS = 240;
/** How known metrics are shown; others appear under their own name. */
const KNOWN = {
  cpu_percent: { label: "CPU", unit: "%", digits: 1, min: 0, max: 100, color: "#2f6fec" },
  memory_mb: { label: "Memory", unit: "MB", digits: 0, color: "#b45fd6" },
  requests_per_s: { label: "Requests", unit: "/s", digits: 0, color: "#1f9d55" },
  latency_p99_ms: { label: "Latency p99", unit: "ms", digits: 1, color: "#d98a00" },
};
const FALLBACK_COLORS = ["#0f9bb0", "#d64545", "#7a6b58", "#5b6ee1"];

const element = (id) => document.getElementById(id);

const board = {
  client: null,
  /** name -> {value, version, points: [[ms, value]], card, draws} */
  metrics: new Map(),
  /** Deltas that arrived while a snapshot was loading. */
  early: [],
  loading: true,
  lastTs: 0,
  version: 0,
};

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message ?? `${url}: HTTP ${response.status}`);
  return body;
}

async function start() {
  const config = await fetchJson("/config.json");
  const viewer = `viewer-${Math.floor(Math.random() * 1e6)}`;
  const token = async () => (await fetchJson(`/token?sub=${viewer}`)).token;
  const client = new SwitchboardClient({ url: config.wsUrl, token });
  board.client = client;
  client.on("state", showState);
  client.on("message", (envelope) => {
    if (envelope.type !== "dashboard:delta" || envelope.channel !== CHANNEL) return;
    if (board.loading) board.early.push(envelope.payload);
    else applyDelta(envelope.payload);
  });
  // After a reconnect the server may be a new one (versions restart): load everything again.
  client.on("rejoined", ({ channel }) => {
    if (channel === CHANNEL) loadSnapshot().catch((error) => toast(`Cannot reload: ${error.message}`));
  });
  client.on("error", (error) => toast(`${error.code}: ${error.message}`));
  await client.connect();
  await client.join(CHANNEL);
  await loadSnapshot();
  // For the browser console and the tests.
  window.dashboard = { client, metrics: board.metrics };
}

async function loadSnapshot() {
  board.loading = true;
  let snapshot;
  try {
    snapshot = await board.client.request("dashboard:snapshot");
  } catch (error) {
    board.loading = false;
    throw error;
  }
  for (const metric of board.metrics.values()) metric.card.remove();
  board.metrics.clear();
  board.version = snapshot.version;
  board.lastTs = 0;
  for (const [name, metric] of Object.entries(snapshot.metrics)) {
    const entry = metricEntry(name);
    entry.value = metric.value;
    entry.version = metric.version;
    entry.points = metric.history.slice(-MAX_POINTS);
    board.lastTs = Math.max(board.lastTs, entry.points.at(-1)?.[0] ?? 0);
  }
  const early = board.early;
  board.early = [];
  board.loading = false;
  for (const delta of early) applyDelta(delta);
  renderAll();
}

function applyDelta(delta) {
  for (const [name, { value, version }] of Object.entries(delta.metrics)) {
    const entry = metricEntry(name);
    if (version > entry.version) {
      entry.value = value;
      entry.version = version;
    }
    const last = entry.points.at(-1);
    if (!last || delta.ts > last[0]) entry.points.push([delta.ts, entry.value]);
    const cutoff = delta.ts - WINDOW_MS;
    while (entry.points.length > MAX_POINTS || (entry.points.length > 1 && entry.points[0][0] < cutoff)) {
      entry.points.shift();
    }
  }
  board.version = Math.max(board.version, delta.version);
  board.lastTs = Math.max(board.lastTs, delta.ts);
  renderAll();
}

// ---- rendering -----------------------------------------------------------------------------

function metricEntry(name) {
  let entry = board.metrics.get(name);
  if (entry) return entry;
  const card = document.createElement("article");
  card.className = "metric";
  card.dataset.metric = name;
  const title = document.createElement("h2");
  title.textContent = styleOf(name).label;
  const value = document.createElement("div");
  value.className = "value";
  const range = document.createElement("div");
  range.className = "range";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${title.textContent} over the last two minutes`);
  card.append(title, value, range, canvas);
  entry = { value: 0, version: 0, points: [], card, draws: 0 };
  board.metrics.set(name, entry);
  const cards = element("metrics");
  const order = (key) => {
    const known = Object.keys(KNOWN).indexOf(key);
    return known < 0 ? Object.keys(KNOWN).length : known;
  };
  const after = [...cards.children].find(
    (other) => order(other.dataset.metric) > order(name) ||
      (order(other.dataset.metric) === order(name) && other.dataset.metric > name),
  );
  cards.insertBefore(card, after ?? null);
  return entry;
}

function styleOf(name) {
  if (KNOWN[name]) return KNOWN[name];
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return { label: name.replaceAll("_", " "), unit: "", digits: undefined, color: FALLBACK_COLORS[hash % FALLBACK_COLORS.length] };
}

/** `value` with `digits` decimals; without `digits`, as many as it has (at most 2). */
function format(value, digits) {
  if (digits === undefined) digits = Number.isInteger(value) ? 0 : 2;
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function renderAll() {
  element("empty").hidden = board.metrics.size > 0 || board.loading;
  element("version").textContent = String(board.version);
  element("updated").textContent = board.lastTs
    ? `last update ${new Date(board.lastTs).toLocaleTimeString("en-GB")}`
    : "waiting for data";
  for (const [name, entry] of board.metrics) renderMetric(name, entry);
}

function renderMetric(name, entry) {
  const style = styleOf(name);
  const { card } = entry;
  card.dataset.value = String(entry.value);
  card.dataset.version = String(entry.version);
  card.dataset.points = String(entry.points.length);
  const valueBox = card.querySelector(".value");
  valueBox.textContent = format(entry.value, style.digits);
  if (style.unit) {
    const unit = document.createElement("span");
    unit.className = "unit";
    unit.textContent = style.unit;
    valueBox.append(unit);
  }
  const values = entry.points.map(([, value]) => value);
  card.querySelector(".range").textContent = values.length
    ? `min ${format(Math.min(...values), style.digits)} · max ${format(Math.max(...values), style.digits)} · ${values.length} ${values.length === 1 ? "point" : "points"}`
    : "no points yet";
  drawChart(card.querySelector("canvas"), entry.points, style, board.lastTs);
  entry.draws += 1;
  card.dataset.draws = String(entry.draws);
}

/**
 * A line chart of `points` ([ms, value]) up to `now` (the newest delta of any metric), with a
 * filled area, a grid and its scale; a value that has not changed since is drawn on, dashed.
 */
function drawChart(canvas, points, style, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);

  const left = 44;
  const right = width - 8;
  const top = 8;
  const bottom = height - 20;
  const values = points.map(([, value]) => value);
  let low = style.min ?? Math.min(...values);
  let high = style.max ?? Math.max(...values);
  if (!Number.isFinite(low) || !Number.isFinite(high)) {
    low = 0;
    high = 1;
  }
  if (high - low < 1e-9) {
    low -= 1;
    high += 1;
  } else if (style.min === undefined) {
    const margin = (high - low) * 0.15;
    low -= margin;
    high += margin;
  }
  const newest = Math.max(now, points.at(-1)?.[0] ?? 0) || Date.now();
  const oldest = Math.max(points[0]?.[0] ?? newest, newest - WINDOW_MS);
  const span = Math.max(newest - oldest, 1000);
  const x = (ms) => right - ((newest - ms) / span) * (right - left);
  const y = (value) => bottom - ((value - low) / (high - low)) * (bottom - top);

  context.font = "11px system-ui, sans-serif";
  context.fillStyle = "#6b7385";
  context.strokeStyle = "#eceef2";
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let step = 0; step <= 3; step += 1) {
    const value = low + ((high - low) * step) / 3;
    const lineY = Math.round(y(value)) + 0.5;
    context.beginPath();
    context.moveTo(left, lineY);
    context.lineTo(right, lineY);
    context.stroke();
    context.fillText(format(value, value >= 100 ? 0 : 1), left - 6, lineY);
  }
  context.textAlign = "left";
  context.textBaseline = "alphabetic";
  context.fillText(`−${Math.round(span / 1000)} s`, left, height - 4);
  context.textAlign = "right";
  context.fillText("now", right, height - 4);
  if (points.length === 0) return;

  const visible = points.filter(([ms]) => ms >= oldest);
  context.beginPath();
  visible.forEach(([ms, value], index) => (index === 0 ? context.moveTo(x(ms), y(value)) : context.lineTo(x(ms), y(value))));
  context.strokeStyle = style.color;
  context.lineWidth = 2;
  context.lineJoin = "round";
  context.stroke();
  context.lineTo(x(visible.at(-1)[0]), bottom);
  context.lineTo(x(visible[0][0]), bottom);
  context.closePath();
  const fill = context.createLinearGradient(0, top, 0, bottom);
  fill.addColorStop(0, `${style.color}40`);
  fill.addColorStop(1, `${style.color}05`);
  context.fillStyle = fill;
  context.fill();
  const [lastMs, lastValue] = visible.at(-1);
  if (lastMs < newest) {
    context.beginPath();
    context.setLineDash([4, 4]);
    context.moveTo(x(lastMs), y(lastValue));
    context.lineTo(x(newest), y(lastValue));
    context.strokeStyle = style.color;
    context.lineWidth = 1.5;
    context.stroke();
    context.setLineDash([]);
  }
  context.beginPath();
  context.arc(x(lastMs), y(lastValue), 3.5, 0, Math.PI * 2);
  context.fillStyle = style.color;
  context.fill();
}

// ---- connection ----------------------------------------------------------------------------

function showState({ state, attempt, delayMs, code, reason }) {
  const badge = element("state");
  badge.dataset.state = state;
  if (state === "connecting") badge.textContent = "connecting…";
  else if (state === "open") badge.textContent = "live";
  else if (state === "reconnecting") badge.textContent = `reconnecting (attempt ${attempt}, next try in ${(delayMs / 1000).toFixed(1)} s)`;
  else if (state === "closed") badge.textContent = `disconnected (${code}${reason ? `: ${reason}` : ""}), reload to reconnect`;
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

window.addEventListener("resize", () => renderAll());

start().catch((error) => {
  element("state").dataset.state = "closed";
  element("state").textContent = `cannot connect: ${error.message}`;
});
