// Switchboard JavaScript client: one ES module, no dependencies, no build step.
// Works in browsers and in Node 20 (`node --experimental-websocket`, or pass `WebSocket`).
// Wire protocol: docs/protocol.md (subprotocol `switchboard.v1`). Usage: README.md beside this file.

/** The subprotocol of the v1 wire protocol. */
export const PROTOCOL = "switchboard.v1";

const DEFAULT_RECONNECT = { baseMs: 250, capMs: 10000, maxAttempts: Infinity };
const DEFAULT_REQUEST_TIMEOUT_MS = 10000;
const DEFAULT_LIVENESS_MS = 20000;
const DEFAULT_PONG_TIMEOUT_MS = 5000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10000;
const REPLY_TYPES = new Set(["ack", "error", "pong"]);

/** An error reply of the server (`code` from docs/protocol.md, "Replies and errors") or a client-side failure. */
export class SwitchboardError extends Error {
  /**
   * @param {string} code machine-readable code, e.g. `unknown_type`, `timeout`, `disconnected`
   * @param {string} message human-readable text
   * @param {object} [details] extra fields (e.g. `closeCode`, `closeReason`, `channel`)
   */
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = "SwitchboardError";
    this.code = code;
    Object.assign(this, details);
  }
}

/**
 * The reconnect delay for a 0-based attempt: "full jitter", a uniform random
 * number in [0, min(capMs, baseMs * 2^attempt)).
 */
export function backoffDelay(attempt, { baseMs, capMs }, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * ceiling);
}

/**
 * Whether the client reconnects after the server closed an established session with this code.
 * No: 1000 (normal), 1002 / 1003 / 1007 (the client broke the protocol), 1008 for an invalid
 * envelope (a client bug; 1008 for the rate limit does reconnect) or a removed tenant (it is
 * gone: a reconnect gets 404), and 3000-4999 (application
 * codes, e.g. a plugin closing the connection on purpose). Yes: everything else (1001 drain,
 * 1005, 1006 dropped, 1009, 1011, 1012, 1013 slow consumer, 1014, ...).
 */
export function shouldReconnectAfterClose(code, reason = "") {
  if (code === 1000 || code === 1002 || code === 1003 || code === 1007) return false;
  if (code === 1008) {
    const text = String(reason);
    return !text.startsWith("invalid envelope") && text !== "tenant removed";
  }
  if (code >= 3000 && code <= 4999) return false;
  return true;
}

/** A WebSocket client of a Switchboard server with reconnect, rooms, presence and requests. */
export class SwitchboardClient {
  /** @param {import("./switchboard").ClientOptions} options */
  constructor(options = {}) {
    if (typeof options.url !== "string" || options.url === "") {
      throw new TypeError("SwitchboardClient: `url` is required (e.g. ws://127.0.0.1:8080/ws)");
    }
    if (typeof options.token !== "string" && typeof options.token !== "function") {
      throw new TypeError("SwitchboardClient: `token` must be a string or a function returning one");
    }
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      throw new TypeError(
        "SwitchboardClient: no WebSocket implementation (pass `WebSocket`, or run Node 20 with --experimental-websocket)",
      );
    }
    this._url = options.url;
    this._token = options.token;
    this._WebSocket = WebSocketImpl;
    this._reconnect = options.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...(options.reconnect ?? {}) };
    this._requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this._livenessMs = options.livenessMs ?? DEFAULT_LIVENESS_MS;
    this._pongTimeoutMs = options.pongTimeoutMs ?? DEFAULT_PONG_TIMEOUT_MS;
    this._connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;

    /** @type {"idle"|"connecting"|"open"|"reconnecting"|"closed"} */
    this.state = "idle";
    /** The current connection's id (from the last welcome), or null. */
    this.connectionId = null;
    /** The user id the server took from the token (from the last welcome), or null. */
    this.userId = null;
    /** The last welcome payload, or null. */
    this.welcome = null;

    this._listeners = new Map();
    this._socket = null;
    this._socketOpen = false; // a welcome arrived on the current socket
    this._hadSession = false; // some connect ever got a welcome
    this._attempt = 0; // consecutive failed (re)connect attempts
    this._generation = 0; // bumps on every socket, so stale callbacks are ignored
    this._connectWaiter = null; // {resolve, reject} of the first connect()
    this._pending = new Map(); // correlationId -> {resolve, reject, timer, onAck}
    this._nextId = 1;
    this._idPrefix = Math.random().toString(36).slice(2, 8);
    this._rooms = new Map(); // channel -> {members: Map<connectionId, member>}
    this._lastSeq = new Map(); // channel -> last seq delivered to the app
    this._lastReceivedAt = 0;
    this._livenessTimer = null;
    this._pongTimer = null;
    this._reconnectTimer = null;
    this._connectTimer = null;
  }

  // ---- events ----------------------------------------------------------------------------

  /** Subscribe to an event; returns a function that unsubscribes. */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Unsubscribe a listener added with `on`. */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (error) {
        // A listener's bug must not break the client; surface it without unwinding us.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, ...extra });
  }

  // ---- connecting --------------------------------------------------------------------------

  /**
   * Open the connection. Resolves with the welcome payload on the first welcome; rejects when
   * that first attempt fails (bad token, refused, closed before the welcome), without retrying.
   */
  connect() {
    if (this.state === "open") return Promise.resolve(this.welcome);
    if (this._connectWaiter) return this._connectWaiter.promise;
    if (this.state === "connecting" || this.state === "reconnecting") {
      return new Promise((resolve, reject) => {
        const offWelcome = this.on("welcome", (welcome) => {
          offWelcome();
          offClosed();
          resolve(welcome);
        });
        const offClosed = this.on("closed", (info) => {
          offWelcome();
          offClosed();
          reject(
            new SwitchboardError("closed", `client closed (${info.code} ${info.reason})`, {
              closeCode: info.code,
              closeReason: info.reason,
            }),
          );
        });
      });
    }
    this._hadSession = false;
    this._attempt = 0;
    const waiter = {};
    waiter.promise = new Promise((resolve, reject) => {
      waiter.resolve = resolve;
      waiter.reject = reject;
    });
    this._connectWaiter = waiter;
    this._setState("connecting", { attempt: 0 });
    this._openSocket();
    return waiter.promise;
  }

  async _openSocket() {
    const generation = ++this._generation;
    let token;
    try {
      token = typeof this._token === "function" ? await this._token() : this._token;
    } catch (error) {
      if (generation !== this._generation) return;
      this._connectFailed(1006, `token function failed: ${error?.message ?? error}`);
      return;
    }
    if (generation !== this._generation) return;
    let socket;
    try {
      socket = new this._WebSocket(this._url, [PROTOCOL, `bearer.${token}`]);
    } catch (error) {
      this._connectFailed(1006, `cannot open WebSocket: ${error?.message ?? error}`);
      return;
    }
    this._socket = socket;
    this._socketOpen = false;
    this._connectTimer = setTimeout(() => {
      if (generation !== this._generation) return;
      this._discardSocket();
      this._connectFailed(1006, "no welcome within connectTimeoutMs");
    }, this._connectTimeoutMs);
    socket.onmessage = (event) => {
      if (generation === this._generation) this._onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (generation === this._generation) this._onSocketClose(event.code, event.reason ?? "");
    };
    socket.onerror = () => {
      if (generation !== this._generation || this._socketOpen) return; // the close event decides
      // Before the welcome an error is a failed attempt. Browsers follow it with a close event,
      // but some implementations (Node 20's undici) never do, so do not wait for one.
      this._discardSocket();
      this._connectFailed(1006, "connection failed before the welcome (refused, or HTTP error such as 401/503)");
    };
  }

  _onSocketClose(code, reason) {
    this._socket = null;
    this._clearSocketTimers();
    if (!this._socketOpen) {
      this._connectFailed(code, reason || "connection failed before the welcome");
      return;
    }
    this._socketOpen = false;
    this._sessionLost(code, reason);
  }

  /** An attempt failed before its welcome (refused, 401, 503, network error, timeout). */
  _connectFailed(code, reason) {
    this._clearSocketTimers();
    if (!this._hadSession) {
      // The first connect: browsers cannot tell a 401 from a refused port, so fail fast.
      const waiter = this._connectWaiter;
      this._connectWaiter = null;
      this._finish(code, reason);
      waiter?.reject(
        new SwitchboardError("connect_failed", `could not connect to ${this._url}: ${reason}`, {
          closeCode: code,
          closeReason: reason,
        }),
      );
      return;
    }
    this._attempt += 1;
    this._scheduleReconnect(code, reason);
  }

  /** An established session ended (the server closed it, or the network dropped it). */
  _sessionLost(code, reason, { force = false } = {}) {
    this._rejectPending("disconnected", `connection lost (${code}${reason ? ` ${reason}` : ""})`);
    if (!this._reconnect || (!force && !shouldReconnectFor(this._reconnect, code, reason))) {
      this._finish(code, reason);
      return;
    }
    this._attempt = 0;
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    if (!this._reconnect || this._attempt >= this._reconnect.maxAttempts) {
      this._finish(code, reason || "gave up reconnecting");
      return;
    }
    const delayMs = backoffDelay(this._attempt, this._reconnect);
    this._setState("reconnecting", { attempt: this._attempt + 1, delayMs, code, reason });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._openSocket();
    }, delayMs);
  }

  /** Give up for good: state `closed`, every timer cleared, `closed` emitted. */
  _finish(code, reason) {
    this._generation += 1;
    this._discardSocket();
    this._clearSocketTimers();
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._rejectPending("disconnected", `connection closed (${code}${reason ? ` ${reason}` : ""})`);
    this._rooms.clear();
    this._lastSeq.clear();
    this.connectionId = null;
    this._setState("closed", { code, reason });
    this._emit("closed", { code, reason });
  }

  /** Close with 1000 and never reconnect. Pending requests reject with `disconnected`. */
  close() {
    if (this.state === "closed" || this.state === "idle") return;
    const waiter = this._connectWaiter;
    this._connectWaiter = null;
    this._finish(1000, "client closed");
    waiter?.reject(new SwitchboardError("closed", "client closed before the welcome"));
  }

  _discardSocket() {
    const socket = this._socket;
    this._socket = null;
    this._socketOpen = false;
    if (!socket) return;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    socket.onopen = null;
    try {
      socket.close(1000, "client closed");
    } catch {
      // Already closing or never opened: nothing to do.
    }
  }

  _clearSocketTimers() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._livenessTimer);
    clearTimeout(this._pongTimer);
    this._connectTimer = null;
    this._livenessTimer = null;
    this._pongTimer = null;
  }

  _rejectPending(code, message) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(new SwitchboardError(code, message));
    }
  }

  // ---- incoming frames ---------------------------------------------------------------------

  _onFrame(data) {
    if (typeof data !== "string") return; // v1 is text only
    let envelope;
    try {
      envelope = JSON.parse(data);
    } catch {
      return;
    }
    if (envelope === null || typeof envelope !== "object" || typeof envelope.type !== "string") return;
    this._lastReceivedAt = Date.now();
    if (!this._socketOpen) {
      if (envelope.type === "welcome") this._onWelcome(envelope.payload ?? {});
      return;
    }
    const correlationId = envelope.correlationId;
    if (correlationId != null && REPLY_TYPES.has(envelope.type)) {
      const entry = this._pending.get(correlationId);
      if (entry) {
        this._pending.delete(correlationId);
        clearTimeout(entry.timer);
        if (envelope.type === "error") {
          const payload = envelope.payload ?? {};
          entry.reject(new SwitchboardError(payload.code ?? "error", payload.message ?? "", { payload }));
        } else {
          // Settled synchronously, before the next frame is handled (rejoin resets seq here).
          entry.onAck?.(envelope.payload);
          entry.resolve(envelope.payload);
        }
        return;
      }
      return; // a late reply to a request that timed out
    }
    if (envelope.type === "pong") return;
    if (envelope.type === "error") {
      this._emit("error", envelope.payload ?? {});
      return;
    }
    if (typeof envelope.channel === "string" && typeof envelope.seq === "number") {
      const last = this._lastSeq.get(envelope.channel);
      if (last !== undefined && envelope.seq <= last) return; // a duplicate (replay overlap)
      this._lastSeq.set(envelope.channel, envelope.seq);
    }
    if (envelope.type === "presence:join" || envelope.type === "presence:leave") {
      this._onPresence(envelope);
    }
    this._emit("message", envelope);
  }

  _onWelcome(welcome) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    const reconnected = this._hadSession;
    this._socketOpen = true;
    this._hadSession = true;
    this._attempt = 0;
    this.welcome = welcome;
    this.connectionId = welcome.connectionId ?? null;
    this.userId = welcome.userId ?? null;
    this._armLiveness();
    const generation = this._generation;
    const stillOpen = () => generation === this._generation && this._socketOpen;
    this._setState("open");
    if (stillOpen()) this._emit("welcome", welcome);
    if (!stillOpen()) return; // a listener closed the client
    const waiter = this._connectWaiter;
    this._connectWaiter = null;
    waiter?.resolve(welcome);
    if (reconnected) this._rejoinAll();
  }

  _rejoinAll() {
    for (const channel of [...this._rooms.keys()]) {
      const since = this._lastSeq.get(channel);
      const payload = since === undefined ? undefined : { since };
      this._joinRequest(channel, payload, undefined, true).catch((error) => {
        if (error.code === "disconnected" || error.code === "not_connected") return; // next time
        if (error.code === "timeout") return; // liveness decides whether the link is dead
        this._forgetRoom(channel);
        this._emit("error", { code: error.code, message: `rejoin of ${channel} failed: ${error.message}`, channel });
      });
    }
  }

  // ---- liveness ----------------------------------------------------------------------------

  _armLiveness() {
    clearTimeout(this._livenessTimer);
    this._lastReceivedAt = Date.now();
    if (!(this._livenessMs > 0)) return;
    const check = () => {
      this._livenessTimer = null;
      if (!this._socketOpen) return;
      const quietMs = Date.now() - this._lastReceivedAt;
      if (quietMs < this._livenessMs) {
        this._livenessTimer = setTimeout(check, this._livenessMs - quietMs);
        return;
      }
      this._probe();
    };
    this._livenessTimer = setTimeout(check, this._livenessMs);
  }

  /** The server has been quiet for `livenessMs`: ping; with nothing back in time, drop the link. */
  _probe() {
    const sentAt = Date.now();
    const correlationId = this._newId();
    this._rawSend({ type: "ping", correlationId });
    this._pongTimer = setTimeout(() => {
      this._pongTimer = null;
      if (!this._socketOpen) return;
      if (this._lastReceivedAt >= sentAt) {
        this._armLiveness();
        return;
      }
      this._discardSocket();
      this._clearSocketTimers();
      // Treated like a dropped link (1006): always reconnects, whatever the close-code policy.
      this._sessionLost(1006, "liveness timeout: no pong", { force: true });
    }, this._pongTimeoutMs);
    // Any frame (the pong included) re-arms the quiet timer.
    const pending = { resolve: () => this._armLivenessAfterPong(), reject: () => {}, timer: null };
    this._pending.set(correlationId, pending);
  }

  _armLivenessAfterPong() {
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
    if (this._socketOpen) this._armLiveness();
  }

  // ---- requests ----------------------------------------------------------------------------

  _newId() {
    return `${this._idPrefix}-${this._nextId++}`;
  }

  _rawSend(envelope) {
    const socket = this._socket;
    if (!socket || !this._socketOpen) return false;
    try {
      socket.send(JSON.stringify(envelope));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Send `type` with a correlationId and wait for its one reply: resolves with the `ack` payload
   * (or the `pong`), rejects with a SwitchboardError (`error` reply's code, `timeout`,
   * `disconnected` when the connection dropped first, `not_connected` when it is not open).
   */
  request(type, { channel, payload, timeoutMs } = {}) {
    return this._request(type, channel, payload, timeoutMs ?? this._requestTimeoutMs, undefined);
  }

  _request(type, channel, payload, timeoutMs, onAck) {
    if (!this._socketOpen) {
      return Promise.reject(new SwitchboardError("not_connected", `not connected (state ${this.state})`));
    }
    const correlationId = this._newId();
    const envelope = { type, correlationId };
    if (channel !== undefined) envelope.channel = channel;
    if (payload !== undefined) envelope.payload = payload;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(correlationId);
        reject(new SwitchboardError("timeout", `no reply to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(correlationId, { resolve, reject, timer, onAck });
      if (!this._rawSend(envelope)) {
        this._pending.delete(correlationId);
        clearTimeout(timer);
        reject(new SwitchboardError("not_connected", "the socket refused the message"));
      }
    });
  }

  /** Fire and forget (no correlationId). Returns false when not connected (nothing is queued). */
  send(type, { channel, payload } = {}) {
    const envelope = { type };
    if (channel !== undefined) envelope.channel = channel;
    if (payload !== undefined) envelope.payload = payload;
    return this._rawSend(envelope);
  }

  // ---- rooms and presence ------------------------------------------------------------------

  /**
   * Join a room and remember it (rejoined after every reconnect). Resolves with
   * `{members, recovered}`; `since` asks the server to replay messages after that seq.
   */
  async join(channel, { since, timeoutMs } = {}) {
    const payload = since === undefined ? undefined : { since };
    return this._joinRequest(channel, payload, timeoutMs);
  }

  _joinRequest(channel, payload, timeoutMs, rejoin = false) {
    // Runs synchronously on the ack, before the replayed messages that follow it are handled.
    const onAck = (ack) => {
      if (rejoin && !this._rooms.has(channel)) return; // left meanwhile (its leave follows the join)
      const recovered = ack?.recovered === true;
      const since = payload?.since;
      if (recovered && typeof since === "number" && !this._lastSeq.has(channel)) {
        this._lastSeq.set(channel, since);
      } else if (!recovered && (since !== undefined || !this._rooms.has(channel))) {
        // Without recovery the seq line may have restarted (e.g. a server restart): start afresh.
        this._lastSeq.delete(channel);
      }
      const members = Array.isArray(ack?.members) ? ack.members : [];
      const room = { members: new Map() };
      for (const member of members) room.members.set(member.connectionId, member);
      this._rooms.set(channel, room);
      this._emit("presence", { channel, event: "sync", members: [...room.members.values()] });
      if (rejoin) this._emit("rejoined", { channel, recovered });
    };
    return this._request("room:join", channel, payload, timeoutMs ?? this._requestTimeoutMs, onAck).then((ack) => ({
      members: this.presence(channel),
      recovered: ack?.recovered === true,
    }));
  }

  /**
   * Leave a room and forget it. When the connection is down the room is just forgotten
   * (it will not be rejoined), so this resolves then too.
   */
  async leave(channel, { timeoutMs } = {}) {
    const wasJoined = this._rooms.has(channel);
    this._forgetRoom(channel);
    if (!this._socketOpen) return undefined;
    try {
      return await this.request("room:leave", { channel, timeoutMs });
    } catch (error) {
      if (error.code === "disconnected") return undefined;
      if (error.code === "not_member" && wasJoined) return undefined;
      throw error;
    }
  }

  _forgetRoom(channel) {
    this._rooms.delete(channel);
    this._lastSeq.delete(channel);
  }

  _onPresence(envelope) {
    const room = this._rooms.get(envelope.channel);
    const member = envelope.payload;
    if (!room || !member || typeof member.connectionId !== "string") return;
    const event = envelope.type === "presence:join" ? "join" : "leave";
    if (event === "join") room.members.set(member.connectionId, member);
    else room.members.delete(member.connectionId);
    this._emit("presence", {
      channel: envelope.channel,
      event,
      member,
      members: [...room.members.values()],
    });
  }

  /** The current members of a joined room (`[{userId, connectionId}]`); empty if not joined. */
  presence(channel) {
    const room = this._rooms.get(channel);
    return room ? [...room.members.values()] : [];
  }

  /** The names of the rooms the client is in (and rejoins after a reconnect). */
  rooms() {
    return [...this._rooms.keys()];
  }

  /** The last `seq` seen on a channel, or undefined. */
  lastSeq(channel) {
    return this._lastSeq.get(channel);
  }
}

function shouldReconnectFor(policy, code, reason) {
  if (typeof policy.shouldReconnect === "function") return policy.shouldReconnect(code, reason);
  return shouldReconnectAfterClose(code, reason);
}
