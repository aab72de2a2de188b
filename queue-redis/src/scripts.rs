//! The Lua scripts. Each moves messages between kombu's structures in one atomic step, so
//! that a message is always in exactly one place: a list, the `unacked` hash (taken, or
//! delayed: see `promote_lua`) or a dead-letter list — never only in a client's memory.

use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::{MultipleKeys, MultipleValues, Value};

use crate::error::RedisError;

/// Moves due delayed messages back to the head of their lists.
///
/// A delayed message is an `unacked` entry (`[envelope, "", queue]`) whose `unacked_index`
/// score is its due time minus the visibility timeout, so that kombu's restore (and ours)
/// brings it back when due; the delayed set indexes it for an exact promotion, scored by due
/// time (ms), member `<list number>|<index score>|<envelope length>|<tag>`. A member is
/// promoted only while the entry is still the parked one (its index score unchanged): one
/// that a restore brought back, and that a consumer may hold again under the same tag, is
/// left alone and its member dropped. Members `<list number>|<envelope>` (the layout before
/// delayed messages were parked in `unacked`) are pushed as they are. The list number is the
/// position of the list among its queue's lists (1-based), clamped in case the priority
/// steps changed meanwhile. Returns the earliest remaining score (ms) or false.
macro_rules! promote_lua {
    () => {
        r#"
local function promote(unacked, index, delayed, first_list_key, per, now_ms)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, 1000)
  -- Latest first, each to the head: the earliest due ends up served first.
  for k = #due, 1, -1 do
    local member = due[k]
    local bar = string.find(member, '|', 1, true)
    if bar then
      local lane = tonumber(string.sub(member, 1, bar - 1)) or 1
      if lane < 1 then lane = 1 end
      if lane > per then lane = per end
      local list = KEYS[first_list_key + lane - 1]
      local rest = string.sub(member, bar + 1)
      if string.sub(rest, 1, 1) == '{' then
        redis.call('RPUSH', list, rest)
      else
        local score, len, tag = string.match(rest, '^([^|]+)|(%d+)|(.+)$')
        len = tonumber(len)
        if tag then
          local value = redis.call('HGET', unacked, tag)
          local current = redis.call('ZSCORE', index, tag)
          if value and current and tonumber(current) == tonumber(score)
              and string.sub(value, 1, 1) == '['
              and string.sub(value, len + 2, len + 2) == ',' then
            redis.call('HDEL', unacked, tag)
            redis.call('ZREM', index, tag)
            redis.call('RPUSH', list, string.sub(value, 2, len + 1))
          end
        end
      end
    end
    redis.call('ZREM', delayed, member)
  end
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return false
end
"#
    };
}

/// The Lua function `promote(unacked, index, delayed, first_list_key, per, now_ms)` of
/// `promote_lua!`, for scripts defined elsewhere (the backlog's).
pub(crate) const PROMOTE_FUNCTION: &str = promote_lua!();

/// Promotes due delayed messages, then takes up to `max` messages in serving order and
/// records each in `unacked` (`[envelope, "", queue]`, as kombu does) and `unacked_index`
/// (score: now) in the same step, so that a taken message is never only in a client's
/// memory. Elements without a delivery tag get one (`<nonce>:<n>`); elements that are not
/// JSON objects are returned with an empty tag and not recorded (they cannot be restored by
/// kombu and are dead-lettered by the worker).
///
/// KEYS: unacked, unacked_index, then the lists of each queue, queue by queue.
/// ARGV: max, index score (s), nonce, lists per queue, Q, now (ms), Q queue names, Q
/// delayed sets, S, S sequences of Q queue numbers (1-based; one sequence: take greedily;
/// several: one message per sequence).
/// Returns: (list number, tag, element) triples, then the next due time (ms) or "".
const FETCH: &str = concat!(
    promote_lua!(),
    r#"
local unacked, index = KEYS[1], KEYS[2]
local max, now, nonce = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local per, q = tonumber(ARGV[4]), tonumber(ARGV[5])
local now_ms = tonumber(ARGV[6])
local pos = 7
local names, delayed = {}, {}
for i = 1, q do names[i] = cjson.encode(ARGV[pos]); pos = pos + 1 end
for i = 1, q do delayed[i] = ARGV[pos]; pos = pos + 1 end
local s = tonumber(ARGV[pos]); pos = pos + 1
local seqs = {}
for j = 1, s do
  local seq = {}
  for i = 1, q do seq[i] = tonumber(ARGV[pos]); pos = pos + 1 end
  seqs[j] = seq
end

local next_due = false
for i = 1, q do
  local due = promote(unacked, index, delayed[i], 3 + (i - 1) * per, per, now_ms)
  if due and (not next_due or due < next_due) then next_due = due end
end

local out, hset, zadd = {}, {}, {}
local untagged = 0
local function claim(li, raw)
  local name = names[math.floor((li - 1) / per) + 1]
  local tag = nil
  if string.sub(raw, 1, 1) == '{' and string.sub(raw, -1) == '}' then
    -- A plain find (memchr speed), then an anchored match: an unanchored pattern would
    -- be tried at every position of the envelope, and the tag comes last.
    local at = string.find(raw, '"delivery_tag"', 1, true)
    if at then tag = string.match(raw, '^"delivery_tag"%s*:%s*"([^"\\]+)"', at) end
  end
  if not tag then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then
      untagged = untagged + 1
      tag = nonce .. ':' .. untagged
    end
  end
  if tag then
    hset[#hset + 1] = tag
    hset[#hset + 1] = '[' .. raw .. ', "", ' .. name .. ']'
    zadd[#zadd + 1] = now
    zadd[#zadd + 1] = tag
  else
    tag = ''
  end
  out[#out + 1] = li
  out[#out + 1] = tag
  out[#out + 1] = raw
end

local taken = 0
if s == 1 then
  for _, qi in ipairs(seqs[1]) do
    for l = 1, per do
      if taken >= max then break end
      local li = (qi - 1) * per + l
      local items = redis.call('RPOP', KEYS[2 + li], max - taken)
      if items then
        for _, raw in ipairs(items) do
          claim(li, raw)
          taken = taken + 1
        end
      end
    end
  end
else
  for j = 1, s do
    if taken >= max then break end
    local got = false
    for _, qi in ipairs(seqs[j]) do
      for l = 1, per do
        local li = (qi - 1) * per + l
        local raw = redis.call('RPOP', KEYS[2 + li])
        if raw then
          claim(li, raw)
          taken = taken + 1
          got = true
          break
        end
      end
      if got then break end
    end
    if not got then break end
  end
end
if #hset > 0 then
  redis.call('HSET', unacked, unpack(hset))
  redis.call('ZADD', index, unpack(zadd))
end
out[#out + 1] = next_due and tostring(next_due) or ''
return out
"#
);

/// Moves held messages out of `unacked` to a destination, each only if it is still unacked
/// (so that a message acked or restored meanwhile by another process is not duplicated).
/// KEYS: unacked, unacked_index. ARGV: groups of (op, tag, destination, payload, score,
/// index score); op `L` LPUSH, `R` RPUSH: the payload leaves `unacked`; op `P` parks the
/// message where it is until `score` (ms): its `unacked` entry stays, its index score
/// becomes the given one, and the payload (a delayed-set member) goes into the delayed set
/// `destination`. An empty tag (a message never recorded in `unacked`) moves
/// unconditionally (`L`, `R` only). Returns how many moved.
const MOVE: &str = r#"
local moved = 0
for k = 1, #ARGV, 6 do
  local op, tag, dest, payload = ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3]
  local score, index_score = ARGV[k + 4], ARGV[k + 5]
  if op == 'P' then
    if tag ~= '' and redis.call('HEXISTS', KEYS[1], tag) == 1 then
      redis.call('ZADD', KEYS[2], index_score, tag)
      redis.call('ZADD', dest, score, payload)
      moved = moved + 1
    end
  else
    local owned = tag == ''
    if not owned then
      owned = redis.call('HDEL', KEYS[1], tag) == 1
      redis.call('ZREM', KEYS[2], tag)
    end
    if owned then
      if op == 'L' then
        redis.call('LPUSH', dest, payload)
      elseif op == 'R' then
        redis.call('RPUSH', dest, payload)
      end
      moved = moved + 1
    end
  end
end
return moved
"#;

/// Records new delayed messages (see `promote_lua`): each in `unacked`, in `unacked_index`
/// at its due time minus the visibility timeout, and in its delayed set, in one step.
/// KEYS: unacked, unacked_index. ARGV: groups of (tag, unacked value, index score, delayed
/// set, due (ms), member).
const PARK: &str = r#"
for k = 1, #ARGV, 6 do
  local tag = ARGV[k]
  redis.call('HSET', KEYS[1], tag, ARGV[k + 1])
  redis.call('ZADD', KEYS[2], ARGV[k + 2], tag)
  redis.call('ZADD', ARGV[k + 3], ARGV[k + 4], ARGV[k + 5])
end
return #ARGV / 6
"#;

/// A retry in place of its original, in one step: the original leaves `unacked` and the
/// replacement goes to its list (`L`: LPUSH, as a publish) or is parked until due (`P`: as
/// `PARK`). Nothing happens unless the original is still unacked (or was never recorded:
/// empty tag), so that an original restored meanwhile is not doubled by its retry.
/// KEYS: unacked, unacked_index. ARGV: original tag, op, destination (list or delayed set),
/// payload (envelope or member), due (ms), new tag, unacked value, index score.
/// Returns 1 when replaced, 0 when the original was no longer unacked.
const REPLACE: &str = r#"
local tag, op, dest, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if tag ~= '' then
  if redis.call('HDEL', KEYS[1], tag) == 0 then
    redis.call('ZREM', KEYS[2], tag)
    return 0
  end
  redis.call('ZREM', KEYS[2], tag)
end
if op == 'P' then
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[6])
  redis.call('ZADD', dest, ARGV[5], payload)
else
  redis.call('LPUSH', dest, payload)
end
return 1
"#;

/// Restores overdue messages (the visibility-timeout sweep): each only if its `unacked`
/// entry is still the one read and its index score is still at or below the ceiling (so a
/// message renewed meanwhile stays with its worker).
/// KEYS: unacked, unacked_index. ARGV: ceiling (s), then groups of (tag, value read,
/// destination list, payload); an empty destination (a value naming no queue) drops the
/// entry. Returns how many were restored.
const RESTORE_OVERDUE: &str = r#"
local ceil = tonumber(ARGV[1])
local restored = 0
for k = 2, #ARGV, 4 do
  local tag, expected, dest, payload = ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3]
  local current = redis.call('HGET', KEYS[1], tag)
  local score = redis.call('ZSCORE', KEYS[2], tag)
  if not current then
    if score and tonumber(score) <= ceil then redis.call('ZREM', KEYS[2], tag) end
  elseif current == expected and (not score or tonumber(score) <= ceil) then
    redis.call('HDEL', KEYS[1], tag)
    redis.call('ZREM', KEYS[2], tag)
    if dest ~= '' then
      redis.call('RPUSH', dest, payload)
      restored = restored + 1
    end
  end
end
return restored
"#;

/// Releases kombu's `unacked_mutex` if we still hold it (redis-py's lock release).
/// KEYS: mutex. ARGV: token.
const RELEASE_MUTEX: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Ready messages per list of one queue, after promoting its due delayed messages.
/// KEYS: unacked, unacked_index, the queue's lists. ARGV: delayed set, now (ms). Returns
/// the lengths.
const LENGTH: &str = concat!(
    promote_lua!(),
    r#"
promote(KEYS[1], KEYS[2], ARGV[1], 3, #KEYS - 2, tonumber(ARGV[2]))
local lengths = {}
for i = 3, #KEYS do lengths[i - 2] = redis.call('LLEN', KEYS[i]) end
return lengths
"#
);

/// Promotes the due delayed messages of one queue; returns when the next is due (ms) or
/// false. KEYS: unacked, unacked_index, the queue's lists. ARGV: delayed set, now (ms).
const PROMOTE: &str = concat!(
    promote_lua!(),
    r#"
return promote(KEYS[1], KEYS[2], ARGV[1], 3, #KEYS - 2, tonumber(ARGV[2]))
"#
);

/// Deletes the ready messages of one queue (after promoting due ones); returns how many.
/// KEYS: unacked, unacked_index, the queue's lists. ARGV: delayed set, now (ms).
const PURGE: &str = concat!(
    promote_lua!(),
    r#"
promote(KEYS[1], KEYS[2], ARGV[1], 3, #KEYS - 2, tonumber(ARGV[2]))
local total = 0
for i = 3, #KEYS do
  total = total + redis.call('LLEN', KEYS[i])
  redis.call('DEL', KEYS[i])
end
return total
"#
);

/// Stores task states as Celery's Redis backend does (`SET` with expiry, then `PUBLISH` on
/// the key name), except over a stored SUCCESS, which is never overwritten. Celery writes
/// `status` first; other orders are decoded.
/// KEYS: meta keys. ARGV: expiry in ms (0: none), then one value per key. Returns how many
/// were stored.
const STORE: &str = r#"
local px = tonumber(ARGV[1])
local stored = 0
for i = 1, #KEYS do
  local key, value = KEYS[i], ARGV[i + 1]
  local current = redis.call('GET', key)
  local status = nil
  if current then
    status = string.match(current, '^{%s*"status"%s*:%s*"([^"]*)"')
    if not status then
      local ok, decoded = pcall(cjson.decode, current)
      if ok and type(decoded) == 'table' then status = decoded['status'] end
    end
  end
  if status ~= 'SUCCESS' then
    if px > 0 then
      redis.call('SET', key, value, 'PX', px)
    else
      redis.call('SET', key, value)
    end
    redis.call('PUBLISH', key, value)
    stored = stored + 1
  end
end
return stored
"#;

/// kombu 5.7's `REFRESH_BINDING`, byte for byte (so its SHA-1 is kombu's, `ef7a9e20…`): adds
/// member ARGV[1] to the binding table KEYS[1] and raises exchange ARGV[2]'s deadline in
/// `_kombu.binding_deadlines` (KEYS[2]) to ARGV[3] ms from now, by the server clock. The
/// sweep of Python consumers deletes a table whose deadline passed (unless a permanent set
/// exists), so a binding whose process died without removing it does not stay forever.
pub(crate) const REFRESH_BINDING: &str = "
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
";

/// Celery 5.7's `CHORD_PART_RETURN_LUA`, byte for byte (`celery/backends/redis.py`), so that
/// Python workers and ours join one chord: records a header task's part in the sorted set
/// `.j` unless `.d` already has `<task_id>:<index>`, refreshes the expiries, and takes the
/// dispatch claim `.c` (`SET NX EX`) when the count reaches `.s` + `.t`.
/// KEYS: `.j`, `.t`, `.s`, `.d`, the group key, `.c`. ARGV: task id, member, ordered (`1`),
/// score (index or `+inf`), chord expiry s (0: none), group expiry s (0: none), claim
/// expiry s, claim token. Returns `{readycount, totaldiff, size, claimed}`; `{-1, 0, 0, 0}`
/// when `.c` is the done marker.
pub(crate) const CHORD_PART_RETURN_LUA: &str = r#"
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]

-- Prevent late duplicates from recreating chord state after successful cleanup.
local done_marker = redis.call('GET', ckey)
if done_marker == 'done' then
    return {-1, 0, 0, 0}
end

-- Key the check on the task id and header index, so it doesn't merge two
-- header entries that share the task id of a reused frozen signature.
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    end
end

return {readycount, totaldiff, size, claimed}
"#;

/// Celery 5.7's `CHORD_CLEANUP_LUA`, byte for byte: if `.c` still holds the token, deletes
/// the join's keys and sets `.c` to the done marker `"done"` for ARGV[2] seconds.
/// KEYS: `.c`, `.j`, `.t`, `.s`, `.d`. ARGV: token, done expiry s. Returns 1, or 0 when the
/// claim was lost.
pub(crate) const CHORD_CLEANUP_LUA: &str = r#"
local ckey = KEYS[1]
local jkey = KEYS[2]
local tkey = KEYS[3]
local skey = KEYS[4]
local dkey = KEYS[5]
local token = ARGV[1]
local done_expires = tonumber(ARGV[2])

if redis.call('GET', ckey) == token then
    redis.call('DEL', jkey, tkey, skey, dkey)
    if done_expires and done_expires > 0 then
        redis.call('SET', ckey, 'done', 'EX', done_expires)
    end
    return 1
end
return 0
"#;

/// Celery 5.7's `CHORD_CLAIM_EXTEND_LUA`, byte for byte: extends the claim `.c` while it
/// holds the token (or takes it again if it expired while `.s` remains).
/// KEYS: `.c`, `.s`. ARGV: token, expiry s. Returns 1 when the claim is (still) ours.
pub(crate) const CHORD_CLAIM_EXTEND_LUA: &str = r#"
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
"#;

/// The scripts, with their SHA-1 computed once.
#[derive(Clone, Debug)]
pub(crate) struct Scripts {
    pub(crate) fetch: Script,
    pub(crate) moves: Script,
    pub(crate) park: Script,
    pub(crate) replace: Script,
    pub(crate) restore_overdue: Script,
    pub(crate) release_mutex: Script,
    pub(crate) length: Script,
    pub(crate) promote: Script,
    pub(crate) purge: Script,
    pub(crate) store: Script,
    pub(crate) refresh_binding: Script,
    pub(crate) chord_part_return: Script,
    pub(crate) chord_cleanup: Script,
    pub(crate) chord_claim_extend: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            fetch: Script::from_lua(FETCH),
            moves: Script::from_lua(MOVE),
            park: Script::from_lua(PARK),
            replace: Script::from_lua(REPLACE),
            restore_overdue: Script::from_lua(RESTORE_OVERDUE),
            release_mutex: Script::from_lua(RELEASE_MUTEX),
            length: Script::from_lua(LENGTH),
            promote: Script::from_lua(PROMOTE),
            purge: Script::from_lua(PURGE),
            store: Script::from_lua(STORE),
            refresh_binding: Script::from_lua(REFRESH_BINDING),
            chord_part_return: Script::from_lua(CHORD_PART_RETURN_LUA),
            chord_cleanup: Script::from_lua(CHORD_CLEANUP_LUA),
            chord_claim_extend: Script::from_lua(CHORD_CLAIM_EXTEND_LUA),
        }
    }
}

/// Runs a script, loading it first when the server does not know it (a new or restarted
/// server).
pub(crate) async fn run<K, V>(
    client: &Client,
    script: &Script,
    keys: K,
    args: V,
) -> Result<Value, RedisError>
where
    K: Into<MultipleKeys> + Send,
    V: TryInto<MultipleValues> + Send,
    V::Error: Into<fred::error::Error> + Send,
{
    Ok(script.evalsha_with_reload(client, keys, args).await?)
}
