// One shared document over a Switchboard connection: joins the document's channel, loads the
// snapshot, sends local edits as `collab:op` through a CollabClient (ot.js) and feeds it every
// committed `collab:op` of the channel. Shared by the collab page and the Node tests.
//
// Ordering: join first, then snapshot; operations broadcast in between arrive before the
// snapshot's answer and are dropped by revision (the snapshot includes them). Recovery: a
// refused send (`conflict`: other edits kept winning the race for the next revision;
// `overloaded`; a timeout; a lost link) is resent with the same opId, which the plugin answers without applying twice; a missing
// revision, or a reconnect whose rejoin could not replay what was missed, is fetched with
// `collab:ops`; a client too far behind (`resync`) reloads the snapshot and drops its
// unconfirmed edits (the `resync` event says so).

import { CollabClient, TextOperation, diff } from "./ot.js";

/**
 * Codes after which sending the same operation again may succeed: the host's, and the plugin's
 * refused host calls (`unavailable`, `rate_limited`; `host_error` from plugins built before).
 */
const RETRYABLE = new Set([
  "conflict",
  "overloaded",
  "timeout",
  "handler_timeout",
  "handler_failed",
  "unavailable",
  "rate_limited",
  "host_error",
]);
/** Codes that mean "not connected now"; the rejoin after the reconnect resends. */
const OFFLINE = new Set(["disconnected", "not_connected"]);
/** A revision missing this long while later ones arrived is fetched with `collab:ops`. */
const GAP_WAIT_MS = 500;
const RETRY_BASE_MS = 20;
const RETRY_CAP_MS = 1000;

/** A random id for one editor session (a page, a test client). */
export function randomClientId() {
  return `c-${Math.random().toString(36).slice(2, 10)}${Date.now().toString(36).slice(-4)}`;
}

export class CollabSession {
  /**
   * @param {{client: object, channel: string, clientId?: string}} options `client` is a connected
   *   SwitchboardClient (or anything with its `on`, `join`, `leave` and `request`).
   */
  constructor({ client, channel, clientId = randomClientId() }) {
    this.client = client;
    this.channel = channel;
    this.clientId = clientId;
    /** The CollabClient once opened. */
    this.doc = null;
    this._listeners = new Map();
    this._unsubscribe = [];
    /** Operations received while a snapshot is loading, fed to the document it makes. */
    this._early = [];
    this._loading = false;
    /** The highest revision an ack told us about. */
    this._expectedRev = 0;
    this._retryTimer = null;
    this._retries = 0;
    this._gapTimer = null;
    this._catchingUp = false;
    this._closed = false;
  }

  /** Subscribe: "remote" (operation, committed), "change" (text), "status" ({state, rev}), "resync" ({lost}), "error" (error). */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  _emit(event, ...values) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) fn(...values);
  }

  /** Joins the channel and loads the document; resolves with the text. */
  async open() {
    this._unsubscribe.push(
      this.client.on("message", (envelope) => {
        if (envelope.type === "collab:op" && envelope.channel === this.channel) this._received(envelope.payload);
      }),
      this.client.on("rejoined", ({ channel, recovered }) => {
        if (channel === this.channel) this._rejoined(recovered);
      }),
    );
    this._loading = true;
    await this.client.join(this.channel);
    const snapshot = await this._requestWithRetry("collab:snapshot", undefined);
    this._load(snapshot);
    return this.doc.text;
  }

  /** The text as this client sees it. */
  get text() {
    return this.doc?.text ?? "";
  }

  /** The last server revision applied. */
  get rev() {
    return this.doc?.rev ?? 0;
  }

  /** True when every local edit is confirmed and nothing received waits for its turn. */
  get settled() {
    return this.doc !== null && this.doc.settled;
  }

  /** Applies a local edit made against `text`. */
  edit(operation) {
    this.doc.applyLocal(operation);
    this._status();
  }

  /** Makes the text `next` (e.g. a textarea's value); `cursor` is the caret in code points. */
  replace(next, cursor = undefined) {
    const operation = diff(this.text, next, cursor);
    if (!operation.isNoop()) this.edit(operation);
    return operation;
  }

  /** Leaves the channel; the session is done. */
  async close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._gapTimer);
    for (const unsubscribe of this._unsubscribe) unsubscribe();
    this._unsubscribe = [];
    await this.client.leave(this.channel).catch(() => {});
  }

  _load(snapshot) {
    const previous = this.doc;
    this.doc = new CollabClient({
      text: snapshot.text,
      rev: snapshot.rev,
      clientId: this.clientId,
      // Never reuse an opId: the plugin recognises resends by (clientId, opId).
      firstOpId: previous?.nextOpId ?? 1,
      send: (message) => this._transmit(message),
      onRemote: (operation, committed) => this._emit("remote", operation, committed),
    });
    const early = this._early;
    this._early = [];
    this._loading = false;
    for (const committed of early) this.doc.receive(committed);
    if (previous) {
      this._emit("resync", { lost: previous.outstanding !== null });
    }
    this._emit("change", this.doc.text);
    this._status();
  }

  _received(committed) {
    if (this._closed) return;
    if (this.doc === null || this._loading) {
      this._early.push(committed);
      return;
    }
    const before = this.doc.text;
    this.doc.receive(committed);
    if (this.doc.text !== before) this._emit("change", this.doc.text);
    this._watchGap();
    this._status();
  }

  _status() {
    this._emit("status", { state: this.doc.state, rev: this.doc.rev, settled: this.doc.settled });
  }

  /** Sends the operation in flight; retries it while the answer says "try again". */
  _transmit(message) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this.client
      .request("collab:op", { channel: this.channel, payload: message })
      .then((ack) => {
        this._retries = 0;
        // Our operation was committed as `ack.rev`; its broadcast normally arrives first.
        this._expectedRev = Math.max(this._expectedRev, ack.rev);
        this._watchGap();
      })
      .catch((error) => this._sendFailed(message, error));
  }

  _sendFailed(message, error) {
    if (this._closed) return;
    const stillPending = this.doc.outstanding?.opId === message.opId && message.clientId === this.clientId;
    if (!stillPending) return;
    if (OFFLINE.has(error.code)) return; // the rejoin resends
    if (error.code === "resync") {
      this._resync();
      return;
    }
    if (RETRYABLE.has(error.code)) {
      const ceiling = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(this._retries, 10));
      this._retries += 1;
      this._retryTimer = setTimeout(() => {
        this._retryTimer = null;
        // Built afresh: remote operations may have moved the revision meanwhile.
        if (!this._closed && this.doc.outstanding?.opId === message.opId) this.doc.resend();
      }, Math.random() * ceiling);
      return;
    }
    // The server refused the operation itself (`bad_request`, `forbidden`...): start over.
    this._emit("error", error);
    this._resync();
  }

  /** True while a revision is known to exist that has not been applied. */
  _behind() {
    return this.doc.missingRevision() !== null || this.doc.rev < this._expectedRev;
  }

  /** Fetches missing revisions when some are overdue. */
  _watchGap() {
    if (this._gapTimer !== null || this._closed || !this._behind()) return;
    this._gapTimer = setTimeout(() => {
      this._gapTimer = null;
      if (this._behind()) this._catchUp();
    }, GAP_WAIT_MS);
  }

  async _catchUp() {
    if (this._catchingUp || this._closed) return;
    this._catchingUp = true;
    try {
      const answer = await this._requestWithRetry("collab:ops", { since: this.doc.rev });
      for (const committed of answer.ops) this._received(committed);
    } catch (error) {
      // `resync`: too far behind; `bad_request`: the server's document is behind ours (a
      // restarted server with an in-memory store). Either way only the snapshot is certain.
      if (error.code === "resync" || error.code === "bad_request") await this._resync();
      else if (!OFFLINE.has(error.code)) this._emit("error", error);
    } finally {
      this._catchingUp = false;
    }
  }

  async _rejoined(recovered) {
    if (this.doc === null || this._closed) return;
    // Anything missed was replayed after the ack (recovered) or must be fetched.
    if (!recovered) await this._catchUp();
    // The operation in flight may have been lost with the link; the plugin ignores a repeat.
    this.doc.resend();
  }

  async _resync() {
    if (this._closed) return;
    clearTimeout(this._retryTimer);
    try {
      this._early = [];
      this._loading = true;
      this._expectedRev = 0;
      const snapshot = await this._requestWithRetry("collab:snapshot", undefined);
      this._load(snapshot);
    } catch (error) {
      this._loading = false;
      this._emit("error", error);
    }
  }

  /** A request that is repeated (a few times, with backoff) while the plugin is busy. */
  async _requestWithRetry(type, payload) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.client.request(type, { channel: this.channel, payload });
      } catch (error) {
        if (!RETRYABLE.has(error.code) || attempt >= 20) throw error;
        const ceiling = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(attempt, 10));
        await new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
      }
    }
  }
}

export { TextOperation };
