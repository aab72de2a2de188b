//! [`RedisLease`]: the leader lease and fenced tick state of periodic schedulers
//! ([`queue_core::lease`]) on Redis. Every operation is one Lua script (or one command), so
//! it is atomic on the server, and expiry is the server's clock (`PEXPIRE`, `PTTL`).
//!
//! Keys (with `global_keyprefix` in front, as the broker's):
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `queue.lease.<name>` | hash | `holder`, `token` of the current holding; `PEXPIRE` ttl, so it exists only while held |
//! | `queue.lease_token.<name>` | string | the last token given out (`INCR`); never expires, so tokens only grow |
//! | `queue.beat.<name>.ticks` | hash | entry → its last claimed tick, milliseconds since the Unix epoch |

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::{Client, ClientLike, HashesInterface};
use fred::types::Value;
use fred::types::scripts::Script;
use queue_core::lease::{
    Lease, LeaseError, LeaseGrant, LeaseHolder, TickClaim, tick_from_millis, tick_millis,
};
use tracing::{debug, warn};

use crate::config::RedisOptions;
use crate::connection;
use crate::error::RedisError;
use crate::scripts;

/// Takes the lease when free (its holding key absent: never held, released or expired) with
/// the next token, or renews it for the same holder; `PEXPIRE` either way.
/// KEYS: holding, token counter. ARGV: holder, ttl (ms).
/// Returns `{'granted', token}`, `{'renewed', token}` or `{'held'}` (another holder has it).
const ACQUIRE: &str = r#"
local current = redis.call('HGET', KEYS[1], 'holder')
if not current then
  redis.call('INCR', KEYS[2])
  local token = redis.call('GET', KEYS[2])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'granted', token}
end
if current == ARGV[1] then
  local token = redis.call('HGET', KEYS[1], 'token')
  if token then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {'renewed', token}
  end
end
return {'held'}
"#;

/// Records a tick if the grant still holds the lease (its holding key exists, so it has not
/// expired, with the grant's holder and token) and the entry's last tick is older.
/// KEYS: holding, ticks. ARGV: holder, token, entry, tick (ms).
/// Returns 2 claimed, 1 already claimed, 0 lease lost, -1 the stored tick is not a number.
const CLAIM_TICK: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'holder', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[3])
if last then
  local last_ms = tonumber(last)
  if not last_ms then return -1 end
  if last_ms >= tonumber(ARGV[4]) then return 1 end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 2
"#;

/// Deletes the holding if it is still the grant's. KEYS: holding. ARGV: holder, token.
/// Returns 1 when released, 0 when the grant no longer held it.
const RELEASE: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'holder', 'token')
if held[1] == ARGV[1] and held[2] == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The current holding: `{holder, token, pttl}`, or `{}` when free. KEYS: holding.
const HOLDER: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'holder', 'token')
if not held[1] or not held[2] then return {} end
return {held[1], held[2], redis.call('PTTL', KEYS[1])}
"#;

struct LeaseScripts {
    acquire: Script,
    claim_tick: Script,
    release: Script,
    holder: Script,
}

static SCRIPTS: LazyLock<LeaseScripts> = LazyLock::new(|| LeaseScripts {
    acquire: Script::from_lua(ACQUIRE),
    claim_tick: Script::from_lua(CLAIM_TICK),
    release: Script::from_lua(RELEASE),
    holder: Script::from_lua(HOLDER),
});

/// Leader leases with fencing tokens, and the last tick of every periodic entry, on Redis
/// (layout in the module docs). Clones share the connection.
///
/// ```no_run
/// # async fn example() -> Result<(), queue_redis::RedisError> {
/// let lease = queue_redis::RedisLease::connect("redis://127.0.0.1:6379/0").await?;
/// # let _ = lease; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLease {
    inner: Arc<Inner>,
}

struct Inner {
    options: RedisOptions,
    client: Client,
    prefix: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // fred keeps a connection open until told otherwise.
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisLease")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RedisLease {
    /// Connects to the server of a `redis://` or `rediss://` URL (options: see
    /// [`RedisOptions`]; `global_keyprefix` prefixes the lease keys too).
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Self::with_options(RedisOptions::from_url(url)?).await
    }

    /// Connects with parsed options.
    pub async fn with_options(options: RedisOptions) -> Result<Self, RedisError> {
        let client = connection::connect(&options, "lease").await?;
        debug!(url = %options, "Redis lease store connected");
        Ok(Self {
            inner: Arc::new(Inner {
                prefix: options.global_keyprefix.clone(),
                options,
                client,
            }),
        })
    }

    fn holding_key(&self, name: &str) -> String {
        format!("{}queue.lease.{name}", self.inner.prefix)
    }

    fn token_key(&self, name: &str) -> String {
        format!("{}queue.lease_token.{name}", self.inner.prefix)
    }

    fn ticks_key(&self, name: &str) -> String {
        format!("{}queue.beat.{name}.ticks", self.inner.prefix)
    }

    async fn run(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, LeaseError> {
        Ok(scripts::run(&self.inner.client, script, keys, args).await?)
    }
}

/// Milliseconds for `PEXPIRE`: at least 1 (0 would delete the key at once).
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn reply_error(what: &str, reply: &Value) -> LeaseError {
    LeaseError::Encoding(format!(
        "unexpected reply to the lease {what} script: {reply:?}"
    ))
}

/// A token as stored: a decimal number above 0.
fn parse_token(value: &Value, reply: &Value, what: &str) -> Result<u64, LeaseError> {
    let token = match value {
        Value::Integer(number) => u64::try_from(*number).ok(),
        other => other.as_str().and_then(|text| text.parse::<u64>().ok()),
    };
    token
        .filter(|token| *token > 0)
        .ok_or_else(|| reply_error(what, reply))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(_) | Value::Bytes(_) => value.as_string(),
        _ => None,
    }
}

#[async_trait]
impl Lease for RedisLease {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        let reply = self
            .run(
                &SCRIPTS.acquire,
                vec![self.holding_key(name), self.token_key(name)],
                vec![Value::from(holder), Value::from(ttl_millis(ttl))],
            )
            .await?;
        let Value::Array(items) = &reply else {
            return Err(reply_error("acquire", &reply));
        };
        let outcome = items.first().and_then(text);
        match (outcome.as_deref(), items.get(1)) {
            (Some("held"), None) => Ok(None),
            (Some(outcome @ ("granted" | "renewed")), Some(token)) => {
                let token = parse_token(token, &reply, "acquire")?;
                if outcome == "granted" {
                    debug!(name, holder, token, "lease acquired");
                }
                Ok(Some(LeaseGrant {
                    name: name.to_owned(),
                    holder: holder.to_owned(),
                    token,
                    ttl,
                }))
            }
            _ => Err(reply_error("acquire", &reply)),
        }
    }

    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        let reply = self
            .run(
                &SCRIPTS.release,
                vec![self.holding_key(&grant.name)],
                vec![
                    Value::from(grant.holder.as_str()),
                    Value::from(grant.token.to_string()),
                ],
            )
            .await?;
        match reply {
            Value::Integer(1) => {
                debug!(name = %grant.name, holder = %grant.holder, token = grant.token, "lease released");
                Ok(())
            }
            Value::Integer(0) => {
                debug!(name = %grant.name, holder = %grant.holder, token = grant.token, "lease not released: no longer held by this grant");
                Ok(())
            }
            other => Err(reply_error("release", &other)),
        }
    }

    async fn holder(&self, name: &str) -> Result<Option<LeaseHolder>, LeaseError> {
        let reply = self
            .run(&SCRIPTS.holder, vec![self.holding_key(name)], vec![])
            .await?;
        let Value::Array(items) = &reply else {
            return Err(reply_error("holder", &reply));
        };
        let [holder, token, pttl] = items.as_slice() else {
            return if items.is_empty() {
                Ok(None)
            } else {
                Err(reply_error("holder", &reply))
            };
        };
        let holder = text(holder).ok_or_else(|| reply_error("holder", &reply))?;
        let token = parse_token(token, &reply, "holder")?;
        let expires_in = match pttl {
            Value::Integer(millis) if *millis >= 0 => Duration::from_millis(millis.unsigned_abs()),
            // -2: expired between the reads (not within one script); -1: no expiry, which
            // only a hand-made key has.
            _ => {
                return Err(LeaseError::Encoding(format!(
                    "lease key {} has no expiry (PTTL {pttl:?})",
                    self.holding_key(name)
                )));
            }
        };
        Ok(Some(LeaseHolder {
            holder,
            token,
            expires_in,
        }))
    }

    async fn claim_tick(
        &self,
        grant: &LeaseGrant,
        entry: &str,
        tick: DateTime<Utc>,
    ) -> Result<TickClaim, LeaseError> {
        let reply = self
            .run(
                &SCRIPTS.claim_tick,
                vec![self.holding_key(&grant.name), self.ticks_key(&grant.name)],
                vec![
                    Value::from(grant.holder.as_str()),
                    Value::from(grant.token.to_string()),
                    Value::from(entry),
                    Value::from(tick_millis(tick).to_string()),
                ],
            )
            .await?;
        match reply {
            Value::Integer(2) => Ok(TickClaim::Claimed),
            Value::Integer(1) => Ok(TickClaim::AlreadyClaimed),
            Value::Integer(0) => {
                warn!(name = %grant.name, holder = %grant.holder, token = grant.token, entry, "tick not claimed: the lease was lost");
                Ok(TickClaim::LeaseLost)
            }
            Value::Integer(-1) => Err(LeaseError::Encoding(format!(
                "the last tick of {entry:?} in {} is not a number",
                self.ticks_key(&grant.name)
            ))),
            other => Err(reply_error("claim_tick", &other)),
        }
    }

    async fn last_ticks(&self, name: &str) -> Result<HashMap<String, DateTime<Utc>>, LeaseError> {
        let key = self.ticks_key(name);
        let stored: HashMap<String, String> = self
            .inner
            .client
            .hgetall(&key)
            .await
            .map_err(RedisError::from)?;
        stored
            .into_iter()
            .map(|(entry, millis)| {
                let millis = millis.parse::<i64>().map_err(|_| {
                    LeaseError::Encoding(format!(
                        "the last tick of {entry:?} in {key} is not a number: {millis:?}"
                    ))
                })?;
                Ok((entry, tick_from_millis(millis)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_or_rejected() {
        let reply = Value::Array(vec![]);
        assert_eq!(parse_token(&Value::from("42"), &reply, "t").unwrap(), 42);
        assert_eq!(parse_token(&Value::Integer(7), &reply, "t").unwrap(), 7);
        for bad in [
            Value::from("0"),
            Value::from("-3"),
            Value::from("x"),
            Value::Integer(-1),
            Value::Null,
        ] {
            assert!(matches!(
                parse_token(&bad, &reply, "t"),
                Err(LeaseError::Encoding(_))
            ));
        }
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(5)), 5000);
        assert_eq!(ttl_millis(Duration::MAX), i64::MAX);
    }
}
