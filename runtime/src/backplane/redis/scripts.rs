//! The Lua scripts that make multi-key updates atomic on one Redis (or one Cluster slot).

use std::sync::LazyLock;

use redis::Script;

/// Sequences, records and publishes one channel message.
///
/// KEYS: meta hash, history list, pub/sub channel.
/// ARGV: the message's head (`protocol::channel_message_head`: opaque text here, the frame
/// without its `seq`), the `except` connection (or ""), history size, history TTL (ms), meta
/// TTL (ms), floor, a fresh epoch, the publish command, base.
///
/// The script never looks inside the head: it stores it in history as
/// `seq<TAB>millis<TAB>head` and publishes `m<TAB>epoch<TAB>seq<TAB>except<TAB>head` (see
/// `wire`), and the receiving node completes the frame with the `seq`
/// (`protocol::channel_message_from_head`). The frame format lives in Rust alone.
///
/// The floor is the highest `seq` the publishing node has delivered on this channel. A
/// counter below it means Redis lost the channel's state (a restart without persistence or a
/// failover to a lagging replica). The base is where counters start after Redis lost its
/// data (see `STATE`; 0 while it never did), above every `seq` issued before. In either case
/// the counter is raised past them, leaving a number unused (so a client that asks to recover
/// from the floor learns that it cannot), the epoch changes and the old history is dropped,
/// because it no longer describes what clients saw.
/// Returns `{seq, epoch}`.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local floor = tonumber(ARGV[6])
local base = tonumber(ARGV[9])
local start = -1
if seq < floor then
  start = floor + 1
end
if seq < base and start < base then
  start = base
end
if start >= 0 then
  seq = start
  redis.call('DEL', KEYS[2])
end
if start >= 0 or not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
seq = seq + 1
redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq), 'ttl', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local size = tonumber(ARGV[3])
if size > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('RPUSH', KEYS[2], string.format('%d', seq) .. '\t' .. string.format('%d', ms) .. '\t' .. ARGV[1])
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call(ARGV[8], KEYS[3], 'm\t' .. epoch .. '\t' .. string.format('%d', seq) .. '\t' .. ARGV[2] .. '\t' .. ARGV[1])
return {seq, epoch}
",
    )
});

/// Raises a channel's counter to at least the floor (ARGV[1]) and the base (ARGV[4], see
/// `PUBLISH`) with a new epoch (ARGV[2]), dropping the history, when the counter is below
/// either.
///
/// KEYS: meta hash, history list. ARGV[3] is the meta TTL (ms).
/// Returns `{counter, epoch, raised}`; `raised` is 0 when the counter had already reached
/// them (messages were published meanwhile, and are in the history).
pub static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local floor = math.max(tonumber(ARGV[1]), tonumber(ARGV[4]))
local raised = 0
if seq < floor then
  seq = floor
  epoch = ARGV[2]
  raised = 1
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq), 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {seq, epoch, raised}
",
    )
});

/// Tells whether Redis still holds the data this node has seen, and where counters start.
///
/// KEYS: the state hash (`id`: a random name of this dataset, `base`). ARGV: the id this node
/// saw last ("" for none yet), a fresh id.
///
/// A dataset that a node saw before and that is gone (a restart without persistence, a flush,
/// an eviction) took every channel's counter with it. Counters then start at the base: a
/// reading of Redis's clock in microseconds, above every `seq` issued before (no channel is
/// sequenced a million times a second), so no `seq` is ever issued twice and a `since` from
/// before the loss is never recovered as if nothing was missed. A node that has seen no
/// dataset yet cannot tell a new Redis from an emptied one: it records a base of 0, which the
/// first node that knew the old dataset lifts (under a new id, so every node rereads it).
/// Returns `{id, base}`.
pub static STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('HGET', KEYS[1], 'id')
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
local lost = ARGV[1] ~= '' and id ~= ARGV[1]
if (not id) or (lost and base == 0) then
  id = ARGV[2]
  base = 0
  if lost then
    local now = redis.call('TIME')
    base = tonumber(now[1]) * 1000000 + tonumber(now[2])
  end
  redis.call('HSET', KEYS[1], 'id', id, 'base', string.format('%d', base))
end
return {id, base}
",
    )
});

/// The channel's last `seq`, its epoch and its history entries younger than the history TTL.
///
/// KEYS: meta hash, history list. Returns `{last_seq, {entry...}, epoch}`, each entry
/// `seq<TAB>millis<TAB>head` as `PUBLISH` stored it (`entries::history_entry` reads it); the
/// epoch is "" for a channel never published to.
pub static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local meta = redis.call('HMGET', KEYS[1], 'seq', 'ttl', 'epoch')
local ttl = tonumber(meta[2] or '0')
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local out = {}
for _, entry in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local at = tonumber(string.match(entry, '^%d+\t(%d+)\t'))
  if ttl == 0 or (at and ms - at <= ttl) then
    table.insert(out, entry)
  end
end
return {meta[1] or '0', out, meta[3] or ''}
",
    )
});

/// Records a node heartbeat in Redis time. KEYS: the node set. ARGV: the node id.
/// Returns 1 when the node was not in the set (it is new, or was reaped as dead).
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZADD', KEYS[1], ms, ARGV[1])
",
    )
});

/// Nodes whose heartbeat is older than ARGV[1] ms, in Redis time. KEYS: the node set.
pub static DEAD_NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]), 'LIMIT', 0, 16)
",
    )
});

/// Removes a dead node's entries from a hash (presence or user): every field whose value is
/// the node id, or starts with it and a tab. KEYS: the hash. ARGV: the node id.
/// Returns the removed fields and values, flattened.
pub static FORGET_NODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local node = ARGV[1]
local removed = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local value = entries[i + 1]
  if value == node or string.sub(value, 1, #node + 1) == node .. '\t' then
    redis.call('HDEL', KEYS[1], entries[i])
    table.insert(removed, entries[i])
    table.insert(removed, value)
  end
end
return removed
",
    )
});

/// Sets a plugin's key-value entry, refusing a new key when the namespace is full.
///
/// KEYS: the entry, the namespace index. ARGV: value, TTL ms (0 = none), max entries.
/// Returns 1, or 0 when full.
pub static KV_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
if redis.call('ZSCORE', KEYS[2], KEYS[1]) == false and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 0
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[2], ms + ttl, KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
return 1
",
    )
});

/// Adds to an integer entry (created at 0), keeping its expiry. KEYS: the entry, the index.
/// ARGV: delta, max entries. Returns `{1, value}`, `{0, 'full'}` or `{0, 'nan'}`.
pub static KV_INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
local current = redis.call('GET', KEYS[1])
if current == false then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    return {0, 'full'}
  end
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
  current = '0'
end
if not string.match(current, '^-?%d+$') then
  return {0, 'nan'}
end
local ok, value = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1])
if not ok then
  return {0, 'nan'}
end
return {1, value}
",
    )
});

/// Deletes a plugin's entry. KEYS: the entry, the index. Returns 1 when it existed.
pub static KV_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
",
    )
});
