// `poll-js`: polls written in JavaScript with the JavaScript SDK (sdk/js), the example that CI
// builds into a component and runs through the real server.
//
// - `poll:create` {question, options: [text, ...]} -> {id}: 2 to 8 options.
// - `poll:vote` {poll, choice} -> {poll, tally}: one vote per user, a new vote replaces the
//   user's last one. The tally changes by compare-and-set (`kv.updateJson`), so votes from
//   many connections and nodes at once are neither lost nor doubled. Every vote broadcasts the
//   tally on the channel `poll:{id}` as `poll:tally`.
// - `poll:results` {poll} -> {id, question, options, tally}.
// - `poll:delete` {poll} -> {deleted: ballots}: only its creator; removes the poll, its tally
//   and every ballot (listed by prefix, a page at a time).
// - `poll:watch` {poll} -> {watchers}: joins the caller to `poll:{id}` and sends it the current
//   tally; `poll:unwatch` {poll} leaves it (`not_found` when not watching).
// - Every vote also tells the poll's creator, on each of their connections (`poll:voted`).
// - A `room:join` of `poll:{id}` is refused (`forbidden`) unless the poll exists.
//
// State: `poll:{id}` {question, options, creator}, `tally:{id}` [count per option],
// `ballot:{id}:{user}` the user's choice; ids come from `kv.incr("next-id")`.

import { HandlerError, Router, env, kv, log, realtime } from "../../../sdk/js/src/index.js";

const MAX_OPTIONS = 8;
const MAX_TEXT = 200;

function text(value, what) {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_TEXT) {
    throw HandlerError.badRequest(`\`${what}\` must be text of 1 to ${MAX_TEXT} characters`);
  }
  return value;
}

function pollOf(id) {
  if (typeof id !== "string" || !/^[0-9]{1,12}$/.test(id)) throw HandlerError.badRequest("`poll` must be a poll id");
  const poll = kv.getJson(`poll:${id}`);
  if (!poll) throw HandlerError.notFound(`no poll \`${id}\``);
  return poll;
}

function create({ payload, conn }) {
  const question = text(payload?.question, "question");
  const options = payload?.options;
  if (!Array.isArray(options) || options.length < 2 || options.length > MAX_OPTIONS) {
    throw HandlerError.badRequest(`\`options\` must list 2 to ${MAX_OPTIONS} choices`);
  }
  const id = String(kv.incr("next-id", 1n));
  const texts = options.map((option, index) => text(option, `options[${index}]`));
  kv.setJson(`poll:${id}`, { question, options: texts, creator: conn.userId, createdAtMs: env.nowMs() });
  kv.setJson(`tally:${id}`, options.map(() => 0));
  return { id };
}

function vote({ payload, conn }) {
  const id = payload?.poll;
  const poll = pollOf(id);
  const choice = payload?.choice;
  if (!Number.isInteger(choice) || choice < 0 || choice >= poll.options.length) {
    throw HandlerError.badRequest(`\`choice\` must be 0 to ${poll.options.length - 1}`);
  }
  const ballot = `ballot:${id}:${conn.userId}`;
  const previous = kv.getJson(ballot);
  if (previous === choice) return { poll: id, tally: kv.getJson(`tally:${id}`) };
  const { value: tally } = kv.updateJson(`tally:${id}`, (current) => {
    const next = [...(current ?? poll.options.map(() => 0))];
    if (Number.isInteger(previous) && next[previous] > 0) next[previous] -= 1;
    next[choice] += 1;
    return next;
  });
  kv.setJson(ballot, choice);
  log.info("vote counted", { poll: id, choice, user: conn.userId });
  realtime.broadcast(`poll:${id}`, "poll:tally", { poll: id, tally });
  if (poll.creator !== conn.userId) realtime.sendToUser(poll.creator, "poll:voted", { poll: id, user: conn.userId });
  return { poll: id, tally };
}

function results({ payload }) {
  const { question, options, createdAtMs } = pollOf(payload?.poll);
  return { id: payload.poll, question, options, createdAtMs, tally: kv.getJson(`tally:${payload.poll}`) };
}

/** Ballots deleted per call at most: each is one key-value operation of the call's quota. */
const MAX_BALLOTS_DELETED = 500;

function remove({ payload, conn }) {
  const id = payload?.poll;
  const poll = pollOf(id);
  if (poll.creator !== conn.userId) throw HandlerError.forbidden("only the poll's creator may delete it");
  let deleted = 0;
  for (;;) {
    const page = kv.list(`ballot:${id}:`, { limit: 100 });
    for (const key of page.keys) kv.delete(key);
    deleted += page.keys.length;
    if (!page.more) break;
    if (deleted >= MAX_BALLOTS_DELETED) throw HandlerError.unavailable("many ballots left: send `poll:delete` again");
  }
  kv.delete(`tally:${id}`);
  kv.delete(`poll:${id}`);
  return { deleted };
}

function watch({ payload, conn }) {
  const id = payload?.poll;
  pollOf(id);
  const channel = `poll:${id}`;
  realtime.join(conn.id, channel);
  realtime.send(conn.id, "poll:tally", { poll: id, tally: kv.getJson(`tally:${id}`) }, channel);
  return { watchers: realtime.members(channel).length };
}

function unwatch({ payload, conn }) {
  const id = payload?.poll;
  pollOf(id);
  // Not a member: the host refuses with `not-found`, which answers `not_found`.
  realtime.leave(conn.id, `poll:${id}`);
  return {};
}

/** Clients may join `poll:{id}` themselves, but only for a poll that exists. */
function authorizeJoin(_conn, channel) {
  const id = /^poll:([0-9]{1,12})$/.exec(channel)?.[1];
  return id === undefined ? !channel.startsWith("poll:") : kv.getJson(`poll:${id}`) !== undefined;
}

export const router = new Router("poll-js", "0.1.0")
  .on("poll:create", create)
  .on("poll:vote", vote)
  .on("poll:results", results)
  .on("poll:delete", remove)
  .on("poll:watch", watch)
  .on("poll:unwatch", unwatch)
  .withHooks({ authorizeJoin });

export const handler = router.export();
