//! The chord join on Redis, exactly as Celery 5.7's Redis backend does it (wire spec §5.3),
//! so that Python workers and ours finish one chord together:
//!
//! - `celery-taskset-meta-<gid>.s`: the header's size (plain integer string), set by
//!   [`chord_start`](queue_core::ResultBackend::chord_start) after deleting `.c`, as `set_chord_size`;
//! - `.j`: a sorted set of parts, score = group index (`+inf` without one), member
//!   `[1, "<task_id>", "<STATE>", <result>]` in Python's JSON spelling;
//! - `.t`: an optional count added to the size (Celery's `add_to_chord`);
//! - `.d`: the dedupe set (`<task_id>:<index or +inf>`), so that a redelivered header task
//!   counts once;
//! - `.c`: the dispatch claim (`SET NX EX` with a random token), and after the cleanup the
//!   done marker `"done"` for 300 s, so that late copies of a part do nothing.
//!
//! Recording a part, taking the claim and the cleanup are Celery's own Lua scripts
//! (`crate::scripts`), called with the same keys and arguments.

use std::time::Duration;

use fred::prelude::{Client, KeysInterface, SortedSetsInterface};
use fred::types::Value;
use queue_core::TaskState;
use queue_core::backend::BackendError;
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use serde::Serialize;
use tracing::{debug, warn};

use crate::error::{RedisError, backend_error};
use crate::scripts::{self, Scripts};

/// How long a fresh claim lasts: Celery's `max(5, int(result_chord_join_timeout * 2))`
/// with the default join timeout of 3 s. A finisher that dies holding it leaves the chord
/// to the next copy of a part once it expired.
const CLAIM_EXPIRES: u64 = 6;
/// The claim's lease for sending the body, renewed just before the join is handed over:
/// Celery's estimate of its publish retries with the default retry policy (3 retries,
/// 4 s connection timeout: `ceil(4 * 4 + 0.6 + 4)`).
const PUBLISH_CLAIM_EXPIRES: u64 = 21;
/// How long the done marker keeps late copies of parts away: Celery's
/// `max(claim_expires * 2, 300)`.
const DONE_EXPIRES: u64 = 300;

/// The chord side of [`RedisBackend`](crate::RedisBackend): its keys, expiries and scripts.
pub(crate) struct RedisChords {
    client: Client,
    /// `<global prefix>celery-taskset-meta-`.
    group_prefix: String,
    /// Celery's `chord_expires` (the result expiry) in whole seconds, 0 for none.
    expires: u64,
    scripts: Scripts,
}

/// The keys of one chord, in the order the scripts name them.
struct Keys {
    group: String,
    j: String,
    t: String,
    s: String,
    d: String,
    c: String,
}

impl RedisChords {
    pub(crate) fn new(
        client: Client,
        group_prefix: String,
        expires: Option<Duration>,
        scripts: Scripts,
    ) -> Self {
        // Celery's expiries are whole seconds; a sub-second one still expires.
        let expires = expires.map_or(0, |expires| {
            expires.as_secs() + u64::from(expires.subsec_nanos() > 0)
        });
        Self {
            client,
            group_prefix,
            expires,
            scripts,
        }
    }

    fn keys(&self, group_id: &str) -> Keys {
        let group = format!("{}{group_id}", self.group_prefix);
        Keys {
            j: format!("{group}.j"),
            t: format!("{group}.t"),
            s: format!("{group}.s"),
            d: format!("{group}.d"),
            c: format!("{group}.c"),
            group,
        }
    }

    /// Celery's `set_chord_size`: a new run of the group drops an old claim or done marker,
    /// then the size is set with the chord expiry.
    pub(crate) async fn start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        let keys = self.keys(group_id);
        let _: i64 = self.client.del(&keys.c).await.map_err(backend_error)?;
        let expiry = (self.expires > 0)
            .then(|| fred::types::Expiration::EX(i64::try_from(self.expires).unwrap_or(i64::MAX)));
        let _: Value = self
            .client
            .set(&keys.s, size.to_string(), expiry, None, false)
            .await
            .map_err(backend_error)?;
        debug!(group_id, size, "chord started");
        Ok(())
    }

    /// Celery's `on_chord_part_return` up to the dispatch: records the part, and when this
    /// call completed the chord and took the claim, reads every part and renews the claim
    /// for the time the body's publish may take.
    pub(crate) async fn part(
        &self,
        group_id: &str,
        part: ChordPart,
    ) -> Result<ChordJoin, BackendError> {
        let keys = self.keys(group_id);
        let member = encode_member(&part)?;
        let score = part
            .group_index
            .map_or_else(|| "+inf".to_owned(), |index| index.to_string());
        let token = uuid::Uuid::new_v4().simple().to_string();
        let reply = scripts::run(
            &self.client,
            &self.scripts.chord_part_return,
            vec![
                keys.j.clone(),
                keys.t.clone(),
                keys.s.clone(),
                keys.d.clone(),
                keys.group.clone(),
                keys.c.clone(),
            ],
            vec![
                Value::from(part.task_id.as_str()),
                Value::Bytes(member.into()),
                Value::from("1"),
                Value::from(score),
                Value::from(self.expires.to_string()),
                // Celery's `_chord_result_expires`: max(chord expiry, result expiry), both
                // the result expiry here.
                Value::from(self.expires.to_string()),
                Value::from(CLAIM_EXPIRES.to_string()),
                Value::from(token.as_str()),
            ],
        )
        .await?;
        let reply = PartReply::parse(reply)?;
        if reply.ready == -1 {
            debug!(group_id, task_id = %part.task_id, "chord part after dispatch: ignored");
            return Ok(ChordJoin::Done);
        }
        let ready = u64::try_from(reply.ready)
            .map_err(|_| encoding(format!("ready count {} is negative", reply.ready)))?;
        let size = reply
            .size
            .map(|size| size.saturating_add_signed(reply.diff));
        let pending = ChordJoin::Pending { ready, size };
        if !reply.claimed {
            return Ok(pending);
        }
        let parts = self.read_parts(&keys.j).await?;
        let extended = scripts::run(
            &self.client,
            &self.scripts.chord_claim_extend,
            vec![keys.c.clone(), keys.s.clone()],
            vec![
                Value::from(token.as_str()),
                Value::from(PUBLISH_CLAIM_EXPIRES.to_string()),
            ],
        )
        .await?;
        if integer(&extended, "claim extension")? != Some(1) {
            warn!(
                group_id,
                "chord complete, but its dispatch claim is no longer ours: not dispatching"
            );
            return Ok(pending);
        }
        debug!(group_id, ready, "chord complete and claimed");
        Ok(ChordJoin::Complete {
            parts,
            claim: ChordClaim {
                group_id: group_id.to_owned(),
                token,
            },
        })
    }

    /// Celery's cleanup after the dispatch: drops the join's keys and leaves the done
    /// marker, if the claim is still this one.
    pub(crate) async fn dispatched(&self, claim: &ChordClaim) -> Result<(), BackendError> {
        let keys = self.keys(&claim.group_id);
        let cleaned = scripts::run(
            &self.client,
            &self.scripts.chord_cleanup,
            vec![keys.c, keys.j, keys.t, keys.s, keys.d],
            vec![
                Value::from(claim.token.as_str()),
                Value::from(DONE_EXPIRES.to_string()),
            ],
        )
        .await?;
        if integer(&cleaned, "chord cleanup")? != Some(1) {
            // As Celery: the data is left for its expiry; another finisher may own it now.
            warn!(
                group_id = %claim.group_id,
                "chord claim lost before cleanup; chord data left for expiry"
            );
        }
        Ok(())
    }

    /// Every part of `.j`, in score order (group index, `+inf` last).
    async fn read_parts(&self, key: &str) -> Result<Vec<ChordPart>, BackendError> {
        let reply: Value = self
            .client
            .zrange(key, 0, -1, None, false, None, true)
            .await
            .map_err(backend_error)?;
        let Value::Array(items) = reply else {
            return Err(encoding(format!("ZRANGE of {key} answered {reply:?}")));
        };
        // RESP3 answers [[member, score], ...], RESP2 [member, score, ...].
        let mut pairs = Vec::with_capacity(items.len());
        let mut flat = Vec::new();
        for item in items {
            match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    pairs.extend(pair.next().zip(pair.next()));
                }
                other => flat.push(other),
            }
        }
        if flat.len() % 2 != 0 {
            return Err(encoding(format!("ZRANGE of {key}: odd reply")));
        }
        let mut flat = flat.into_iter();
        while let (Some(member), Some(score)) = (flat.next(), flat.next()) {
            pairs.push((member, score));
        }
        pairs
            .into_iter()
            .map(|(member, score)| decode_member(&member, &score))
            .collect()
    }
}

/// The chord script's `{readycount, totaldiff, size, claimed}`.
#[derive(Debug, PartialEq)]
struct PartReply {
    ready: i64,
    diff: i64,
    size: Option<u64>,
    claimed: bool,
}

impl PartReply {
    fn parse(reply: Value) -> Result<Self, BackendError> {
        let Value::Array(items) = reply else {
            return Err(encoding(format!("chord script answered {reply:?}")));
        };
        let [ready, diff, size, claimed] = <[Value; 4]>::try_from(items)
            .map_err(|items| encoding(format!("chord script answered {items:?}")))?;
        let size = integer(&size, "chord size")?
            .map(|size| {
                u64::try_from(size).map_err(|_| encoding(format!("chord size {size} is negative")))
            })
            .transpose()?;
        Ok(Self {
            ready: integer(&ready, "ready count")?
                .ok_or_else(|| encoding("ready count missing".into()))?,
            diff: integer(&diff, "chord size diff")?.unwrap_or(0),
            size,
            claimed: integer(&claimed, "claim flag")? == Some(1),
        })
    }
}

fn encoding(text: String) -> BackendError {
    RedisError::Reply(text).into()
}

/// An integer reply or an integer string (`GET` of `.s` / `.t`); `None` for nil.
fn integer(value: &Value, what: &str) -> Result<Option<i64>, BackendError> {
    match value {
        Value::Null => Ok(None),
        Value::Integer(number) => Ok(Some(*number)),
        Value::Boolean(flag) => Ok(Some(i64::from(*flag))),
        other => other
            .as_str()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| encoding(format!("{what}: {other:?} is not an integer"))),
    }
}

/// Celery's member, `self.encode([1, tid, state, result])`, spelled as Python's
/// `json.dumps` does (`, ` and `: ` separators, non-ASCII as `\uXXXX`).
fn encode_member(part: &ChordPart) -> Result<Vec<u8>, BackendError> {
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, PythonFormatter);
    (1, &part.task_id, part.state.as_str(), &part.result)
        .serialize(&mut serializer)
        .map_err(|error| BackendError::Encoding(format!("chord part: {error}")))?;
    Ok(bytes)
}

/// Reads a `.j` member (written by us or by Python) with its score.
fn decode_member(member: &Value, score: &Value) -> Result<ChordPart, BackendError> {
    let bytes = member
        .as_bytes()
        .ok_or_else(|| encoding(format!("chord part {member:?} is not a string")))?;
    let (_, task_id, state, result): (serde_json::Value, String, String, serde_json::Value) =
        serde_json::from_slice(bytes).map_err(|error| {
            BackendError::Encoding(format!(
                "chord part {:?} is not [1, task_id, state, result]: {error}",
                String::from_utf8_lossy(bytes)
            ))
        })?;
    let score = match score {
        Value::Double(score) => *score,
        Value::Integer(score) => *score as f64,
        other => other
            .as_str()
            .and_then(|text| text.parse::<f64>().ok())
            .ok_or_else(|| encoding(format!("chord part score {other:?}")))?,
    };
    let group_index = if score.is_infinite() && score > 0.0 {
        None
    } else if score >= 0.0 && score.fract() == 0.0 && score < u64::MAX as f64 {
        Some(score as u64)
    } else {
        return Err(encoding(format!(
            "chord part score {score} is not an index"
        )));
    };
    Ok(ChordPart {
        task_id,
        group_index,
        state: state
            .parse::<TaskState>()
            .unwrap_or_else(|never| match never {}),
        result,
    })
}

/// Python's `json.dumps` defaults: `, ` and `: ` separators, `ensure_ascii`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for character in fragment.chars() {
            if character.is_ascii() {
                writer.write_all(&[character as u8])?;
            } else {
                for unit in character.encode_utf16(&mut [0; 2]) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_spelled_as_python_writes_them() {
        let part = ChordPart {
            task_id: "3bbb7bf2".into(),
            group_index: Some(0),
            state: TaskState::Success,
            result: json!(20),
        };
        assert_eq!(
            encode_member(&part).unwrap(),
            br#"[1, "3bbb7bf2", "SUCCESS", 20]"#
        );
        let failure = ChordPart {
            result: json!({"exc_type": "ValueError", "exc_message": ["é 😀"]}),
            state: TaskState::Failure,
            ..part
        };
        assert_eq!(
            String::from_utf8(encode_member(&failure).unwrap()).unwrap(),
            r#"[1, "3bbb7bf2", "FAILURE", {"exc_type": "ValueError", "exc_message": ["\u00e9 \ud83d\ude00"]}]"#
        );
    }

    #[test]
    fn members_decode_with_their_score() {
        let member = Value::from(r#"[1, "t", "REVOKED", {"exc_type": "TaskRevokedError"}]"#);
        let part = decode_member(&member, &Value::from("inf")).unwrap();
        assert_eq!((part.group_index, part.state), (None, TaskState::Revoked));
        let part = decode_member(&member, &Value::Double(3.0)).unwrap();
        assert_eq!(part.group_index, Some(3));
        assert!(decode_member(&Value::from("[1, 2]"), &Value::from("0")).is_err());
        assert!(decode_member(&member, &Value::from("-1")).is_err());
    }

    #[test]
    fn scripts_are_celerys_byte_for_byte() {
        // SHA-1s of celery 5.7.0's CHORD_PART_RETURN_LUA, CHORD_CLEANUP_LUA and
        // CHORD_CLAIM_EXTEND_LUA: EVALSHA of either side finds the other's script.
        let scripts = Scripts::new();
        for (script, sha1) in [
            (
                &scripts.chord_part_return,
                "b8fc152c83a7e634103ccebd49dcd3146a8f4366",
            ),
            (
                &scripts.chord_cleanup,
                "59d7aab41242d82196947ba8926cab712416da4f",
            ),
            (
                &scripts.chord_claim_extend,
                "dc87180d6bcb7f73c7275eb0fe7a70baf0a8b7c7",
            ),
        ] {
            assert_eq!(&**script.sha1(), sha1);
        }
    }

    #[test]
    fn script_replies_parse() {
        let reply = Value::Array(vec![
            Value::Integer(2),
            Value::Null,
            Value::from("2"),
            Value::Integer(1),
        ]);
        assert_eq!(
            PartReply::parse(reply).unwrap(),
            PartReply {
                ready: 2,
                diff: 0,
                size: Some(2),
                claimed: true
            }
        );
        assert!(PartReply::parse(Value::Array(vec![Value::Integer(1)])).is_err());
    }
}
