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

/// What every key-value script starts with. A namespace is four structures sharing one hash
/// tag: the entries (strings, named `index:key`, expiring by `PX`), the index (a sorted set of
/// entry names by expiry in ms, `+inf` for none), the meta hash (`seq`: the last version given,
/// `bytes`: what the namespace holds, and per key `s:key` its size and `v:key` its version) and
/// the key list (a sorted set of keys, all at score 0, for listing by prefix).
///
/// KEYS of every script: the entry (or any name, for `list`), the index, the meta hash, the key
/// list. `sweep` forgets the entries whose time has passed; `forget` one entry's bookkeeping.
const KV_PRELUDE: &str = r"
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local function forget(key)
  local size = tonumber(redis.call('HGET', KEYS[3], 's:' .. key) or '0')
  if size > 0 then
    redis.call('HINCRBY', KEYS[3], 'bytes', -size)
  end
  redis.call('HDEL', KEYS[3], 's:' .. key, 'v:' .. key)
  redis.call('ZREM', KEYS[2], KEYS[2] .. ':' .. key)
  redis.call('ZREM', KEYS[4], key)
end
local function sweep(ms)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ms)
  for _, entry in ipairs(expired) do
    forget(string.sub(entry, #KEYS[2] + 2))
    redis.call('DEL', entry)
  end
end
local function record(key, size, old, version)
  redis.call('ZADD', KEYS[4], 0, key)
  redis.call('HSET', KEYS[3], 's:' .. key, size, 'v:' .. key, version)
  redis.call('HINCRBY', KEYS[3], 'bytes', size - old)
end
";

fn kv_script(body: &str) -> Script {
    Script::new(&format!("{KV_PRELUDE}{body}"))
}

/// Writes a plugin's key-value entry when it is as expected and the namespace has room.
///
/// ARGV: value, TTL ms (0 = none), max entries, max bytes, expected (`any`, `absent` or a
/// version), the cost of an entry beside its key and value, the key. Returns the new version,
/// -1 when the entry was not as expected, -2 when the namespace is full.
pub static KV_WRITE: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r"
local ms = now_ms()
sweep(ms)
local key = ARGV[7]
local exists = redis.call('EXISTS', KEYS[1]) == 1
local expected = ARGV[5]
if expected == 'absent' then
  if exists then return -1 end
elseif expected ~= 'any' then
  if not exists or redis.call('HGET', KEYS[3], 'v:' .. key) ~= expected then return -1 end
end
local old = 0
if exists then
  old = tonumber(redis.call('HGET', KEYS[3], 's:' .. key) or '0')
else
  forget(key)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -2 end
end
local size = #key + #ARGV[1] + tonumber(ARGV[6])
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
if bytes - old + size > tonumber(ARGV[4]) then return -2 end
local version = redis.call('HINCRBY', KEYS[3], 'seq', 1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[2], ms + ttl, KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
record(key, size, old, version)
return version
",
    )
});

/// Adds to an integer entry (created at 0), keeping its expiry.
///
/// ARGV: delta, max entries, max bytes, the cost of an entry, the key. Returns `{1, value}`,
/// `{0, 'full'}` or `{0, 'nan'}`.
pub static KV_INCR: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r"
sweep(now_ms())
local key = ARGV[5]
local current = redis.call('GET', KEYS[1])
local exists = current ~= false
local old = 0
if exists then
  old = tonumber(redis.call('HGET', KEYS[3], 's:' .. key) or '0')
else
  forget(key)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
    return {0, 'full'}
  end
  current = '0'
end
if not string.match(current, '^-?%d+$') then
  return {0, 'nan'}
end
local ok, value = pcall(redis.call, 'INCRBY', KEYS[1], ARGV[1])
if not ok then
  return {0, 'nan'}
end
local size = #key + #tostring(value) + tonumber(ARGV[4])
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
if bytes - old + size > tonumber(ARGV[3]) then
  if exists then
    redis.call('SET', KEYS[1], current, 'KEEPTTL')
  else
    redis.call('DEL', KEYS[1])
  end
  return {0, 'full'}
end
if not exists then
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
record(key, size, old, redis.call('HINCRBY', KEYS[3], 'seq', 1))
return {1, value}
",
    )
});

/// A plugin's live entry and its version. ARGV: the key. Returns `{value, version}` or nil.
pub static KV_GET: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r"
local value = redis.call('GET', KEYS[1])
if value == false then return false end
return {value, tonumber(redis.call('HGET', KEYS[3], 'v:' .. ARGV[1]) or '0')}
",
    )
});

/// Deletes a plugin's entry, only at a version when one is given. ARGV: the expected version
/// (or ''), the key. Returns 1 when a live entry was deleted.
pub static KV_DELETE: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r"
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[1] ~= '' and redis.call('HGET', KEYS[3], 'v:' .. ARGV[2]) ~= ARGV[1] then
  return 0
end
forget(ARGV[2])
redis.call('DEL', KEYS[1])
if exists then return 1 end
return 0
",
    )
});

/// A page of a namespace's live keys. ARGV: the lowest and highest key (`ZRANGEBYLEX` form),
/// how many. Returns the keys, one more than asked when more match.
pub static KV_LIST: LazyLock<Script> = LazyLock::new(|| {
    kv_script(
        r"
sweep(now_ms())
return redis.call('ZRANGEBYLEX', KEYS[4], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]) + 1)
",
    )
});

/// Removes a desired-state record if it is still at the revision the writer read, and counts
/// the change. KEYS and ARGV as `STATE_WRITE` without the JSON. Returns 1 when removed.
pub static STATE_FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
local stored = 0
if ok and type(record) == 'table' then stored = tonumber(record.revision) or 0 end
if stored ~= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
",
    )
});

/// Writes a record of the desired state (a plugin's or a tenant's: a JSON object with a
/// `revision`) if the stored one is at the revision the writer read, and counts the change.
/// KEYS: the records' hash, revision counter. ARGV: field,
/// the revision read (0: none), the record's JSON. Returns 1 when written, 0 when another
/// write came first.
pub static STATE_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
local stored = 0
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' then stored = tonumber(record.revision) or 0 end
end
if stored ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
",
    )
});
