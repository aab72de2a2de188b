//! The backlog's Lua scripts. Each move is one step on the server: a message leaves one
//! place and enters the other in the same script, or stays where it was.

use std::sync::LazyLock;

use fred::types::scripts::Script;

use crate::scripts::PROMOTE_FUNCTION;

/// Promotes due delayed messages (as `queue_length` does), then reads, per list of the
/// queue, its length and the element served next (its tail, `''` when empty), then the
/// size of the delayed set and the length of the dead-letter list.
/// KEYS: unacked, unacked_index, the queue's lists, the dead-letter list. ARGV: delayed
/// set, now (ms).
const STATS: &str = r#"
local per = #KEYS - 3
promote(KEYS[1], KEYS[2], ARGV[1], 3, per, tonumber(ARGV[2]))
local out = {}
for i = 3, 2 + per do
  local length = redis.call('LLEN', KEYS[i])
  out[#out + 1] = length
  if length > 0 then
    out[#out + 1] = redis.call('LINDEX', KEYS[i], -1)
  else
    out[#out + 1] = ''
  end
end
out[#out + 1] = redis.call('ZCARD', ARGV[1])
out[#out + 1] = redis.call('LLEN', KEYS[#KEYS])
return out
"#;

/// Reads ranks `start` to `start + count - 1` of a delayed set, soonest first. Returns the
/// number of members read, then (due ms, member, envelope) for each member still parked
/// (the check of `promote`: its `unacked` entry is there with the index score of the
/// member); members of the older layout (`<list number>|<envelope>`) carry their envelope.
/// KEYS: unacked, unacked_index. ARGV: delayed set, start, count.
const DELAYED_PAGE: &str = r#"
local start = tonumber(ARGV[2])
local members = redis.call('ZRANGE', ARGV[1], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
local out = {#members / 2}
for k = 1, #members, 2 do
  local member, due = members[k], members[k + 1]
  local bar = string.find(member, '|', 1, true)
  if bar then
    local rest = string.sub(member, bar + 1)
    if string.sub(rest, 1, 1) == '{' then
      out[#out + 1] = due
      out[#out + 1] = member
      out[#out + 1] = rest
    else
      local score, len, tag = string.match(rest, '^([^|]+)|(%d+)|(.+)$')
      len = tonumber(len)
      if tag then
        local value = redis.call('HGET', KEYS[1], tag)
        local current = redis.call('ZSCORE', KEYS[2], tag)
        if value and current and tonumber(current) == tonumber(score)
            and string.sub(value, 1, 1) == '['
            and string.sub(value, len + 2, len + 2) == ',' then
          out[#out + 1] = due
          out[#out + 1] = member
          out[#out + 1] = string.sub(value, 2, len + 1)
        end
      end
    end
  end
end
return out
"#;

/// Moves one delayed message to the tail of its list (`LPUSH`, as a publish) as the given
/// envelope, if it is still parked as listed; returns 1 if moved, 0 if it was no longer
/// there (promoted, restored or run meanwhile).
/// KEYS: unacked, unacked_index, delayed set, list. ARGV: member, tag (`''` for a member
/// of the older layout), index score, envelope length, new envelope.
const RUN_NOW: &str = r#"
local member, tag = ARGV[1], ARGV[2]
if tag ~= '' then
  local value = redis.call('HGET', KEYS[1], tag)
  local current = redis.call('ZSCORE', KEYS[2], tag)
  local len = tonumber(ARGV[4])
  if not (value and current and tonumber(current) == tonumber(ARGV[3])
      and string.sub(value, 1, 1) == '['
      and string.sub(value, len + 2, len + 2) == ',') then
    return 0
  end
end
if redis.call('ZREM', KEYS[3], member) == 0 then return 0 end
if tag ~= '' then
  redis.call('HDEL', KEYS[1], tag)
  redis.call('ZREM', KEYS[2], tag)
end
redis.call('LPUSH', KEYS[4], ARGV[5])
return 1
"#;

/// Moves dead letters from the head of the line (the list's tail, the oldest) to their
/// queue's lists, each only while the oldest entry is the one expected: stops at the first
/// that another client took or changed. Returns how many moved.
/// KEYS: dead-letter list. ARGV: groups of (expected entry, destination list, envelope).
const REQUEUE_OLDEST: &str = r#"
local moved = 0
for k = 1, #ARGV, 3 do
  if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[k] then break end
  redis.call('RPOP', KEYS[1])
  redis.call('LPUSH', ARGV[k + 1], ARGV[k + 2])
  moved = moved + 1
end
return moved
"#;

/// Moves chosen dead letters to their queue's lists: each entry, if still there (the
/// oldest copy of it), leaves the dead-letter list and its envelope enters the destination
/// in the same step. Returns how many moved.
/// KEYS: dead-letter list. ARGV: groups of (entry, destination list, envelope).
const REQUEUE_CHOSEN: &str = r#"
local moved = 0
for k = 1, #ARGV, 3 do
  if redis.call('LREM', KEYS[1], -1, ARGV[k]) == 1 then
    redis.call('LPUSH', ARGV[k + 1], ARGV[k + 2])
    moved = moved + 1
  end
end
return moved
"#;

/// Deletes a dead-letter list; returns how many entries it had. KEYS: the list.
const PURGE_DEAD: &str = r#"
local length = redis.call('LLEN', KEYS[1])
if length > 0 then redis.call('DEL', KEYS[1]) end
return length
"#;

/// The backlog's scripts, with their SHA-1 computed once per process.
pub(crate) struct BacklogScripts {
    pub(crate) stats: Script,
    pub(crate) delayed_page: Script,
    pub(crate) run_now: Script,
    pub(crate) requeue_oldest: Script,
    pub(crate) requeue_chosen: Script,
    pub(crate) purge_dead: Script,
}

pub(crate) static SCRIPTS: LazyLock<BacklogScripts> = LazyLock::new(|| BacklogScripts {
    stats: Script::from_lua(format!("{PROMOTE_FUNCTION}{STATS}")),
    delayed_page: Script::from_lua(DELAYED_PAGE),
    run_now: Script::from_lua(RUN_NOW),
    requeue_oldest: Script::from_lua(REQUEUE_OLDEST),
    requeue_chosen: Script::from_lua(REQUEUE_CHOSEN),
    purge_dead: Script::from_lua(PURGE_DEAD),
});
