//! Settlements that put a message back for later: `defer` parks a held message until it is
//! due, `republish_and_ack` puts a retry in place of its original. Both in one script, and
//! with the layout of delayed messages of `crate::delay`.

use std::sync::atomic::Ordering;

use fred::types::Value;
use queue_core::broker::{BrokerError, Delivery, DeliveryTag, Publish};
use queue_core::protocol::time;
use tracing::{debug, warn};

use super::{Shared, lock};
use crate::delay::{self, Parked};
use crate::scripts;
use crate::wire;

impl Shared {
    /// Parks a held message until `due_ms`: its `unacked` entry stays, its index score
    /// becomes its due time minus the visibility timeout, and the delayed set of its queue
    /// indexes it.
    pub(super) async fn park(&self, delivery: &Delivery, due_ms: i64) -> Result<(), BrokerError> {
        if let DeliveryTag::Text(tag) = &delivery.tag {
            if lock(&self.held).get(tag).is_some_and(|held| !held.recorded) {
                // Bytes that are not a JSON object cannot be an `unacked` entry that kombu's
                // restore reads; such a message is dead-lettered, never deferred.
                return Err(BrokerError::Refused(
                    "a message that is not a kombu envelope cannot be deferred".into(),
                ));
            }
        }
        let (tag, held) = self.release(delivery)?;
        let queue = &held.queue;
        let lane = held.lane + 1;
        let index_score = delay::index_score(due_ms, self.broker.options.visibility_timeout);
        let member = delay::member(lane, &index_score, held.raw.len(), &tag);
        // Wake this consumer's own wait when it is due (and this process's promoter).
        self.next_due.fetch_min(due_ms, Ordering::AcqRel);
        self.broker.promoter.add(queue, due_ms);
        self.move_out(vec![[
            Value::from("P"),
            Value::from(tag),
            Value::from(self.broker.keys.delayed(queue)),
            Value::from(member),
            Value::from(due_ms.to_string()),
            Value::from(index_score),
        ]])
        .await
    }

    /// `republish_and_ack`: the original leaves `unacked` and the replacement goes to its
    /// list, or is parked until its eta, in one script. An original no longer unacked (a
    /// restore gave it back meanwhile, so it runs again) is not doubled by its retry.
    pub(super) async fn replace(
        &self,
        delivery: &Delivery,
        replacement: Publish,
    ) -> Result<(), BrokerError> {
        let (tag, held) = self.release(delivery)?;
        let broker = &self.broker;
        let queue = replacement.queue.as_str();
        let message = &replacement.message;
        if let Err(error) = broker.declare(queue).await {
            lock(&self.held).insert(tag, held);
            return Err(error);
        }
        let encoded = wire::encode(message, queue);
        let original = if held.recorded { tag.as_str() } else { "" };
        let due = message
            .headers
            .eta
            .filter(|eta| *eta > time::now())
            .map(|eta| eta.timestamp_millis());
        let args: Vec<Value> = match due {
            Some(due_ms) => {
                let lane = broker.lane_of_wire(encoded.wire_priority);
                let parked = Parked::new(
                    &encoded.raw,
                    encoded.tag.clone(),
                    queue,
                    lane,
                    due_ms,
                    broker.options.visibility_timeout,
                );
                vec![
                    Value::from(original),
                    Value::from("P"),
                    Value::from(broker.keys.delayed(queue)),
                    Value::from(parked.member),
                    Value::from(parked.due_ms.to_string()),
                    Value::from(parked.tag),
                    Value::Bytes(parked.value.into()),
                    Value::from(parked.index_score),
                ]
            }
            None => vec![
                Value::from(original),
                Value::from("L"),
                Value::from(broker.keys.list_for_wire(queue, encoded.wire_priority)),
                Value::Bytes(encoded.raw.into()),
                Value::from(""),
                Value::from(""),
                Value::from(""),
                Value::from(""),
            ],
        };
        let keys = vec![
            broker.keys.unacked.clone(),
            broker.keys.unacked_index.clone(),
        ];
        match scripts::run(&broker.client, &broker.scripts.replace, keys, args).await {
            Ok(reply) => {
                if reply.as_u64() == Some(0) {
                    warn!(
                        task_id = message.id(),
                        task_name = message.task_name(),
                        queue,
                        "the original was given back meanwhile (visibility timeout): it runs again instead of its retry"
                    );
                } else {
                    debug!(
                        task_id = message.id(),
                        task_name = message.task_name(),
                        queue,
                        "retry in place of the original"
                    );
                }
                if let Some(due_ms) = due {
                    broker.promoter.add(queue, due_ms);
                    if self.lanes().queues.iter().any(|ours| ours == queue) {
                        self.next_due.fetch_min(due_ms, Ordering::AcqRel);
                    }
                }
                Ok(())
            }
            Err(error) => {
                // Still held: whether or not the script ran, every settlement checks that
                // the original is unacked, so the caller may still ack, reject or retry.
                lock(&self.held).insert(tag, held);
                Err(error.into())
            }
        }
    }
}
