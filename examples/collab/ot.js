// Operational transformation for plain text, shared by the collab page and the Node tests.
// No dependencies; browsers and Node.
//
// Every length and position counts Unicode code points, never UTF-16 units: "🙂" is one
// character here, as it is one `char` in the plugin (plugins/collab/src/ot.rs). Convert with
// `codePointIndex` / `utf16Index` where the DOM speaks UTF-16 (textarea selections).
//
// An operation walks the whole document: retain n, insert "text", delete n. On the wire it is
// `[{"retain": 5}, {"insert": "hi"}, {"delete": 2}]`. `TextOperation.transform` and `compose`
// follow ot.js; `CollabClient` is the ot.js client state machine (synchronized, awaiting
// confirm, awaiting with buffer): one operation in flight, later edits composed into a buffer,
// incoming operations transformed against both.

/** The number of code points in `text`. */
export function codePointLength(text) {
  let count = 0;
  for (let index = 0; index < text.length; index += 1) {
    const unit = text.charCodeAt(index);
    // A high surrogate followed by a low one is one code point.
    if (unit >= 0xd800 && unit <= 0xdbff && index + 1 < text.length) {
      const next = text.charCodeAt(index + 1);
      if (next >= 0xdc00 && next <= 0xdfff) index += 1;
    }
    count += 1;
  }
  return count;
}

/** The UTF-16 offset of code point `index` in `text` (clamped to the end). */
export function utf16Index(text, index) {
  let units = 0;
  for (let seen = 0; seen < index && units < text.length; seen += 1) {
    units += text.codePointAt(units) > 0xffff ? 2 : 1;
  }
  return Math.min(units, text.length);
}

/** The code point index of UTF-16 offset `offset` in `text`. */
export function codePointIndex(text, offset) {
  return codePointLength(text.slice(0, offset));
}

/** `text` from code point `start` to `end` (exclusive; default: the end). */
function sliceCodePoints(text, start, end) {
  const from = utf16Index(text, start);
  return end === undefined ? text.slice(from) : text.slice(from, utf16Index(text, end));
}

const isRetain = (component) => typeof component === "number" && component > 0;
const isDelete = (component) => typeof component === "number" && component < 0;
const isInsert = (component) => typeof component === "string";

/**
 * A change to a whole document. Internally ot.js's compact form: a positive number retains,
 * a negative one deletes, a string inserts; built through retain/insert/delete, which keep it
 * canonical (no empty steps, neighbours merged, an insert before a delete at one place).
 */
export class TextOperation {
  constructor() {
    this.ops = [];
    /** Code points the operation reads. */
    this.baseLength = 0;
    /** Code points it leaves. */
    this.targetLength = 0;
  }

  /** Appends "keep `count` code points". */
  retain(count) {
    if (!Number.isSafeInteger(count) || count < 0) throw new TypeError(`retain needs a count, not ${count}`);
    if (count === 0) return this;
    this.baseLength += count;
    this.targetLength += count;
    const last = this.ops.length - 1;
    if (isRetain(this.ops[last])) this.ops[last] += count;
    else this.ops.push(count);
    return this;
  }

  /** Appends "insert `text`". */
  insert(text) {
    if (typeof text !== "string") throw new TypeError("insert needs a string");
    if (text === "") return this;
    this.targetLength += codePointLength(text);
    const ops = this.ops;
    const last = ops.length - 1;
    if (isInsert(ops[last])) {
      ops[last] += text;
    } else if (isDelete(ops[last])) {
      if (isInsert(ops[last - 1])) ops[last - 1] += text;
      else ops.splice(last, 0, text);
    } else {
      ops.push(text);
    }
    return this;
  }

  /** Appends "delete `count` code points". */
  delete(count) {
    if (!Number.isSafeInteger(count) || count < 0) throw new TypeError(`delete needs a count, not ${count}`);
    if (count === 0) return this;
    this.baseLength += count;
    const last = this.ops.length - 1;
    if (isDelete(this.ops[last])) this.ops[last] -= count;
    else this.ops.push(-count);
    return this;
  }

  /** True when it changes nothing. */
  isNoop() {
    return this.ops.every(isRetain);
  }

  /** The operation applied to `text`; throws when the lengths disagree. */
  apply(text) {
    const length = codePointLength(text);
    if (length !== this.baseLength) {
      throw new Error(`the operation spans ${this.baseLength} characters but the document has ${length}`);
    }
    const parts = [];
    let offset = 0; // UTF-16 offset into `text`
    for (const component of this.ops) {
      if (isInsert(component)) {
        parts.push(component);
        continue;
      }
      const count = Math.abs(component);
      const end = offset + utf16Index(text.slice(offset), count);
      if (isRetain(component)) parts.push(text.slice(offset, end));
      offset = end;
    }
    return parts.join("");
  }

  /** The wire form: `[{"retain": n} | {"insert": "text"} | {"delete": n}, ...]`. */
  toJSON() {
    return this.ops.map((component) => {
      if (isInsert(component)) return { insert: component };
      return component > 0 ? { retain: component } : { delete: -component };
    });
  }

  /** Parses the wire form; throws a TypeError on anything else. */
  static fromJSON(components) {
    if (!Array.isArray(components)) throw new TypeError("an operation is an array");
    const operation = new TextOperation();
    for (const component of components) {
      const keys = component && typeof component === "object" ? Object.keys(component) : [];
      if (keys.length !== 1) throw new TypeError(`not an operation step: ${JSON.stringify(component)}`);
      const [key] = keys;
      if (key === "retain") operation.retain(component.retain);
      else if (key === "insert") operation.insert(component.insert);
      else if (key === "delete") operation.delete(component.delete);
      else throw new TypeError(`not an operation step: ${JSON.stringify(component)}`);
    }
    return operation;
  }

  /** True when both make the same change. */
  equals(other) {
    return (
      this.baseLength === other.baseLength &&
      this.targetLength === other.targetLength &&
      this.ops.length === other.ops.length &&
      this.ops.every((component, index) => component === other.ops[index])
    );
  }

  /** One operation with the effect of this one followed by `next`. */
  compose(next) {
    if (this.targetLength !== next.baseLength) {
      throw new Error(`cannot compose: the first leaves ${this.targetLength} characters, the second reads ${next.baseLength}`);
    }
    const composed = new TextOperation();
    const ops1 = this.ops;
    const ops2 = next.ops;
    let index1 = 0;
    let index2 = 0;
    let op1 = ops1[index1++];
    let op2 = ops2[index2++];
    for (;;) {
      if (op1 === undefined && op2 === undefined) break;
      if (isDelete(op1)) {
        composed.delete(-op1);
        op1 = ops1[index1++];
        continue;
      }
      if (isInsert(op2)) {
        composed.insert(op2);
        op2 = ops2[index2++];
        continue;
      }
      if (op1 === undefined || op2 === undefined) throw new Error("cannot compose: lengths disagree");
      if (isRetain(op1) && isRetain(op2)) {
        const both = Math.min(op1, op2);
        composed.retain(both);
        op1 = op1 > both ? op1 - both : ops1[index1++];
        op2 = op2 > both ? op2 - both : ops2[index2++];
      } else if (isInsert(op1) && isDelete(op2)) {
        // The second deletes what the first inserted: neither survives.
        const length = codePointLength(op1);
        const both = Math.min(length, -op2);
        op1 = length > both ? sliceCodePoints(op1, both) : ops1[index1++];
        op2 = -op2 > both ? op2 + both : ops2[index2++];
      } else if (isInsert(op1) && isRetain(op2)) {
        const length = codePointLength(op1);
        const both = Math.min(length, op2);
        composed.insert(sliceCodePoints(op1, 0, both));
        op1 = length > both ? sliceCodePoints(op1, both) : ops1[index1++];
        op2 = op2 > both ? op2 - both : ops2[index2++];
      } else if (isRetain(op1) && isDelete(op2)) {
        const both = Math.min(op1, -op2);
        composed.delete(both);
        op1 = op1 > both ? op1 - both : ops1[index1++];
        op2 = -op2 > both ? op2 + both : ops2[index2++];
      } else {
        throw new Error("cannot compose: unexpected steps");
      }
    }
    return composed;
  }

  /**
   * Transforms concurrent `a` and `b` (same document) into `[a', b']` with
   * `b'` after `a` equal to `a'` after `b`. When both insert at one place, `a`'s text comes first.
   */
  static transform(a, b) {
    if (a.baseLength !== b.baseLength) {
      throw new Error(`cannot transform: the operations span ${a.baseLength} and ${b.baseLength} characters`);
    }
    const aPrime = new TextOperation();
    const bPrime = new TextOperation();
    const ops1 = a.ops;
    const ops2 = b.ops;
    let index1 = 0;
    let index2 = 0;
    let op1 = ops1[index1++];
    let op2 = ops2[index2++];
    for (;;) {
      if (op1 === undefined && op2 === undefined) break;
      if (isInsert(op1)) {
        aPrime.insert(op1);
        bPrime.retain(codePointLength(op1));
        op1 = ops1[index1++];
        continue;
      }
      if (isInsert(op2)) {
        aPrime.retain(codePointLength(op2));
        bPrime.insert(op2);
        op2 = ops2[index2++];
        continue;
      }
      if (op1 === undefined || op2 === undefined) throw new Error("cannot transform: lengths disagree");
      const length1 = Math.abs(op1);
      const length2 = Math.abs(op2);
      const both = Math.min(length1, length2);
      if (isRetain(op1) && isRetain(op2)) {
        aPrime.retain(both);
        bPrime.retain(both);
      } else if (isDelete(op1) && isRetain(op2)) {
        aPrime.delete(both);
      } else if (isRetain(op1) && isDelete(op2)) {
        bPrime.delete(both);
      }
      // Both deleting the same characters: nothing left to do on either side.
      op1 = length1 > both ? Math.sign(op1) * (length1 - both) : ops1[index1++];
      op2 = length2 > both ? Math.sign(op2) * (length2 - both) : ops2[index2++];
    }
    return [aPrime, bPrime];
  }
}

/**
 * Where a position (a code point index, e.g. a cursor) moves to when `operation` is applied:
 * text inserted at or before it pushes it right, text deleted before it pulls it left.
 */
export function transformIndex(index, operation) {
  let moved = index;
  let left = index;
  for (const component of operation.ops) {
    if (isRetain(component)) {
      left -= component;
    } else if (isInsert(component)) {
      moved += codePointLength(component);
    } else {
      moved -= Math.min(left, -component);
      left += component;
    }
    if (left < 0) break;
  }
  return moved;
}

/**
 * The operation turning `before` into `after`: one replaced stretch between their common
 * start and end. `cursor` (a code point index in `after`, e.g. where the caret is after
 * typing) settles ambiguous cases, so typing "a" in "aa" inserts where the caret is.
 */
export function diff(before, after, cursor = undefined) {
  const old = Array.from(before);
  const now = Array.from(after);
  let suffix = 0;
  const maxSuffix = Math.min(old.length, now.length, cursor === undefined ? Infinity : Math.max(0, now.length - cursor));
  while (suffix < maxSuffix && old[old.length - 1 - suffix] === now[now.length - 1 - suffix]) suffix += 1;
  let prefix = 0;
  const maxPrefix = Math.min(old.length, now.length) - suffix;
  while (prefix < maxPrefix && old[prefix] === now[prefix]) prefix += 1;
  const operation = new TextOperation();
  operation.retain(prefix);
  operation.insert(now.slice(prefix, now.length - suffix).join(""));
  operation.delete(old.length - suffix - prefix);
  operation.retain(suffix);
  return operation;
}

/**
 * The client side of one shared document (ot.js's client): the text as this client sees it,
 * the last server revision it has applied, at most one operation in flight (`outstanding`) and
 * the edits made meanwhile (`buffer`). Transport-free: `send(message)` is called with
 * `{rev, op, clientId, opId}` whenever an operation should go to the server, and the owner
 * feeds every committed operation of the channel to `receive`, in any order; they are applied
 * in revision order. An operation of this client coming back is its acknowledgement.
 */
export class CollabClient {
  /**
   * @param {{text: string, rev: number, clientId: string, send: (message: object) => void,
   *          onRemote?: (operation: TextOperation, committed: object) => void, firstOpId?: number}} options
   */
  constructor({ text, rev, clientId, send, onRemote = () => {}, firstOpId = 1 }) {
    this.text = text;
    this.rev = rev;
    this.clientId = clientId;
    this._send = send;
    this._onRemote = onRemote;
    /** The operation in flight: {op: TextOperation, opId}, or null. */
    this.outstanding = null;
    /** Local edits made while one is in flight, composed into one operation, or null. */
    this.buffer = null;
    /** Committed operations that arrived ahead of their turn, by revision. */
    this.waiting = new Map();
    this._nextOpId = firstOpId;
  }

  /** The opId the next operation gets. */
  get nextOpId() {
    return this._nextOpId;
  }

  /** "synchronized", "awaitingConfirm" or "awaitingWithBuffer". */
  get state() {
    if (this.outstanding === null) return "synchronized";
    return this.buffer === null ? "awaitingConfirm" : "awaitingWithBuffer";
  }

  /** True when nothing local is unconfirmed and nothing received waits for its turn. */
  get settled() {
    return this.outstanding === null && this.waiting.size === 0;
  }

  /** Applies a local edit (made against `this.text`) and sends it when nothing is in flight. */
  applyLocal(operation) {
    this.text = operation.apply(this.text);
    if (operation.isNoop()) return;
    if (this.outstanding === null) {
      this.outstanding = { op: operation, opId: this._nextOpId++ };
      this.resend();
    } else if (this.buffer === null) {
      this.buffer = operation;
    } else {
      this.buffer = this.buffer.compose(operation);
    }
  }

  /** The message for the operation in flight against the current revision, or null. */
  pendingMessage() {
    if (this.outstanding === null) return null;
    return { rev: this.rev, op: this.outstanding.op.toJSON(), clientId: this.clientId, opId: this.outstanding.opId };
  }

  /** Sends the operation in flight (again): after a reconnect, or when the server was busy. */
  resend() {
    const message = this.pendingMessage();
    if (message) this._send(message);
  }

  /** Takes a committed operation `{rev, op, clientId, opId}`; returns how many were applied. */
  receive(committed) {
    if (!Number.isSafeInteger(committed?.rev) || committed.rev <= this.rev) return 0;
    this.waiting.set(committed.rev, committed);
    let applied = 0;
    while (this.waiting.has(this.rev + 1)) {
      const next = this.waiting.get(this.rev + 1);
      this.waiting.delete(this.rev + 1);
      this._apply(next);
      applied += 1;
    }
    return applied;
  }

  /** The lowest revision still missing while later ones wait, or null. */
  missingRevision() {
    return this.waiting.size === 0 ? null : this.rev + 1;
  }

  _apply(committed) {
    const outstanding = this.outstanding;
    if (outstanding !== null && committed.clientId === this.clientId && committed.opId === outstanding.opId) {
      // Our own operation, committed: the buffer goes out next.
      this.rev = committed.rev;
      this.outstanding = null;
      if (this.buffer !== null) {
        this.outstanding = { op: this.buffer, opId: this._nextOpId++ };
        this.buffer = null;
        this.resend();
      }
      return;
    }
    let remote = TextOperation.fromJSON(committed.op);
    if (outstanding !== null) [outstanding.op, remote] = TextOperation.transform(outstanding.op, remote);
    if (this.buffer !== null) [this.buffer, remote] = TextOperation.transform(this.buffer, remote);
    this.text = remote.apply(this.text);
    this.rev = committed.rev;
    this._onRemote(remote, committed);
  }
}
