//! Browsing the delay levels (see [`crate::topology`]): every delayed message of every
//! queue waits in one of the 32 level queues, so listing a queue's delayed messages reads
//! them all.
//!
//! A browse takes the messages with `basic.get` on a channel of its own and holds them
//! unacked, then closes the channel, which gives each back in its place (RabbitMQ keeps the
//! position of a requeued message): nothing is lost, and a message held for the few
//! milliseconds of a browse moves on that much later. At most [`MAX_BROWSED`] messages are
//! read; past that, listings and counts are partial (logged). Browses of one process take
//! turns, so that one never hides messages from another; a browse by another process at
//! the same moment does (a monitor polls again).
//!
//! When a message is due: its eta, while that is ahead (a message published with an eta or
//! countdown, or deferred until its eta); otherwise it is worked out from where it is: the
//! routing key spells its delay, the level its remaining part, and it entered the level
//! when it left the one above (RabbitMQ's latest `x-death` time) or, in its first level,
//! when it was published (the AMQP `timestamp` our brokers set). RabbitMQ's times are whole
//! seconds; a message deferred without an eta (a rate limit) and still in its first level
//! counts from its first publication, so it may be listed earlier than it is due.

use chrono::{DateTime, FixedOffset};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use queue_core::protocol::time;
use tokio::sync::Mutex;
use tracing::warn;

use crate::broker::BrokerInner;
use crate::error::AmqpError;
use crate::topology::{DELAY_LEVELS, level_name};

/// Most messages one browse reads from the delay levels.
pub const MAX_BROWSED: usize = 10_000;

/// Browses of this process take turns (see the module's doc).
static BROWSING: Mutex<()> = Mutex::const_new(());

/// A message taken from a delay level, held unacked on the browse's channel.
pub(crate) struct Held {
    /// The queue it is for.
    pub(crate) queue: String,
    /// When it is due.
    pub(crate) due: DateTime<FixedOffset>,
    pub(crate) delivery: Delivery,
}

/// The queue and the delay (ms) a delay routing key spells: 32 bits, then the queue.
fn parse_routing_key(routing_key: &str) -> Option<(u64, &str)> {
    let mut words = routing_key.splitn(DELAY_LEVELS as usize + 1, '.');
    let mut delay = 0u64;
    for _ in 0..DELAY_LEVELS {
        delay = delay << 1
            | match words.next()? {
                "0" => 0,
                "1" => 1,
                _ => return None,
            };
    }
    words.next().map(|queue| (delay, queue))
}

/// The time of the latest death of the message in one of our delay levels, if its latest
/// death was there.
pub(crate) fn left_delay_at(
    headers: Option<&FieldTable>,
    delay_prefix: &str,
) -> Option<DateTime<FixedOffset>> {
    let Some(AMQPValue::FieldArray(deaths)) = headers?.inner().get("x-death") else {
        return None;
    };
    // RabbitMQ lists the latest death first.
    let Some(AMQPValue::FieldTable(latest)) = deaths.as_slice().first() else {
        return None;
    };
    let queue = match latest.inner().get("queue") {
        Some(AMQPValue::LongString(queue)) => {
            String::from_utf8_lossy(queue.as_bytes()).into_owned()
        }
        Some(AMQPValue::ShortString(queue)) => queue.as_str().to_owned(),
        _ => return None,
    };
    if !queue.starts_with(delay_prefix) {
        return None;
    }
    match latest.inner().get("time") {
        Some(AMQPValue::Timestamp(seconds)) => seconds_to_time(*seconds),
        _ => None,
    }
}

pub(crate) fn seconds_to_time(seconds: u64) -> Option<DateTime<FixedOffset>> {
    let seconds = i64::try_from(seconds).ok()?;
    DateTime::from_timestamp(seconds, 0).map(|utc| utc.fixed_offset())
}

/// The eta header of a message, from its raw headers.
pub(crate) fn eta_header(headers: Option<&FieldTable>) -> Option<DateTime<FixedOffset>> {
    match headers?.inner().get("eta") {
        Some(AMQPValue::LongString(text)) => {
            time::parse_timestamp(&String::from_utf8_lossy(text.as_bytes()))
        }
        Some(AMQPValue::ShortString(text)) => time::parse_timestamp(text.as_str()),
        _ => None,
    }
}

/// When a message taken from delay level `level` is due (see the module's doc).
fn due_of(
    delivery: &Delivery,
    level: u32,
    delay_ms: u64,
    delay_prefix: &str,
    now: DateTime<FixedOffset>,
) -> DateTime<FixedOffset> {
    let headers = delivery.properties.headers().as_ref();
    if let Some(eta) = eta_header(headers).filter(|eta| *eta > now) {
        return eta;
    }
    let entered = left_delay_at(headers, delay_prefix)
        .or_else(|| delivery.properties.timestamp().and_then(seconds_to_time))
        .unwrap_or(now);
    // Bit `level` is waited for here, the bits below in the levels after.
    let mask = if level + 1 >= 64 {
        u64::MAX
    } else {
        (1u64 << (level + 1)) - 1
    };
    time::add(entered, std::time::Duration::from_millis(delay_ms & mask))
}

impl BrokerInner {
    /// Takes every message of the delay levels that is for `queue` (or for any queue, with
    /// `None`), up to [`MAX_BROWSED`] read, and hands them with the channel holding them to
    /// `then`; the channel is closed afterwards, which gives back every message `then` did
    /// not ack.
    pub(crate) async fn browse_delays<T, F, Fut>(
        &self,
        queue: Option<&str>,
        then: F,
    ) -> Result<T, AmqpError>
    where
        F: FnOnce(Channel, Vec<Held>) -> Fut,
        Fut: Future<Output = Result<T, AmqpError>>,
    {
        let _turn = BROWSING.lock().await;
        let prefix = &self.config.delay_prefix;
        let mut levels = Vec::new();
        for level in 0..DELAY_LEVELS {
            let name = level_name(prefix, level);
            if self
                .topology
                .queue_message_count(&name)
                .await?
                .is_some_and(|count| count > 0)
            {
                levels.push((level, name));
            }
        }
        let (channel, _) = self.publish_link.channel().await?;
        let mut held = Vec::new();
        let mut read = 0usize;
        let now = time::now();
        let mut failure = None;
        'levels: for (level, name) in &levels {
            loop {
                if read >= MAX_BROWSED {
                    warn!(
                        read,
                        "more delayed messages than one browse reads; the listing is partial"
                    );
                    break 'levels;
                }
                match channel
                    .basic_get(name, BasicGetOptions { no_ack: false })
                    .await
                {
                    Ok(Some(got)) => {
                        read += 1;
                        let delivery = got.delivery;
                        let Some((delay_ms, target)) =
                            parse_routing_key(delivery.routing_key.as_str())
                        else {
                            continue;
                        };
                        if queue.is_some_and(|wanted| wanted != target) {
                            continue;
                        }
                        held.push(Held {
                            queue: target.to_owned(),
                            due: due_of(&delivery, *level, delay_ms, prefix, now),
                            delivery,
                        });
                    }
                    Ok(None) => break,
                    Err(error) => {
                        failure = Some(AmqpError::operation(format!("basic.get {name}"), error));
                        break 'levels;
                    }
                }
            }
        }
        let result = match failure {
            Some(error) => Err(error),
            None => then(channel.clone(), held).await,
        };
        let _ = channel.close(200, "delayed messages browsed").await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::delay_routing_key;

    #[test]
    fn routing_keys_read_back_as_delay_and_queue() {
        for (delay, queue) in [(5u64, "celery"), (3_600_000, "a.b.c"), (1, "q")] {
            assert_eq!(
                parse_routing_key(&delay_routing_key(delay, queue)),
                Some((delay, queue))
            );
        }
        assert_eq!(parse_routing_key("celery"), None);
        assert_eq!(parse_routing_key("2.0.q"), None);
    }
}
