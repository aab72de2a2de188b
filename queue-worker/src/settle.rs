//! How one delivery ends: acked, given back, dead-lettered, deferred, replaced by its retry,
//! or (when its code may still run) left with the broker. Exactly one of these happens per
//! delivery; [`Settlement::is_settled`] lets the last line of defence (a panic while
//! handling) know whether it still has to.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, FixedOffset};
use queue_core::broker::Publish;
use queue_core::events::TaskEvent;
use queue_core::{BrokerError, Delivery};
use tracing::{debug, warn};

use crate::runtime::Runtime;

pub(crate) struct Settlement<'a> {
    runtime: &'a Runtime,
    delivery: &'a Delivery,
    settled: AtomicBool,
}

impl<'a> Settlement<'a> {
    pub(crate) fn new(runtime: &'a Runtime, delivery: &'a Delivery) -> Self {
        Self {
            runtime,
            delivery,
            settled: AtomicBool::new(false),
        }
    }

    /// Whether the delivery was settled (or deliberately left with the broker).
    pub(crate) fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// The message is done. A failed ack leaves it with the broker, which delivers it again.
    pub(crate) async fn ack(&self) {
        self.mark();
        self.runtime.ack(self.delivery).await;
    }

    /// Gives the message back to its queue unacked: it runs again (its outcome was not
    /// stored, or its follow-ups not sent).
    pub(crate) async fn give_back(&self) {
        self.mark();
        self.runtime.stats.given_back.increment();
        self.runtime.reject(self.delivery, true).await;
    }

    /// Requeues a message that was not started (cold shutdown of an async task).
    pub(crate) async fn requeue(&self) {
        self.mark();
        self.runtime.reject(self.delivery, true).await;
    }

    pub(crate) async fn dead_letter(&self, reason: &str) {
        self.mark();
        self.runtime.dead_letter(self.delivery, reason).await;
        if let Ok(message) = &self.delivery.content {
            self.runtime.events.task(|| TaskEvent::Rejected {
                uuid: message.headers.id.clone(),
                requeue: false,
            });
        }
    }

    /// Hands the message back to the broker until `until`.
    pub(crate) async fn defer(&self, until: DateTime<FixedOffset>) {
        self.mark();
        debug!(%until, "handing the message back to the broker until it is due");
        if let Err(error) = self.runtime.consumer.defer(self.delivery, until).await {
            warn!(%error, "could not defer; the message will be redelivered");
        }
    }

    /// Publishes `replacement` in place of this delivery and acks it, as one step where the
    /// broker can. On `Err` nothing was acked: the caller gives the message back.
    pub(crate) async fn replace(&self, replacement: Publish) -> Result<(), BrokerError> {
        let consumer = &self.runtime.consumer;
        match consumer
            .republish_and_ack(self.delivery, replacement.clone())
            .await
        {
            Ok(()) => {
                self.mark();
                Ok(())
            }
            Err(BrokerError::Unsupported(_)) => {
                // Two steps: a crash between them delivers the original again (one rerun).
                self.runtime.app.broker().publish(vec![replacement]).await?;
                self.ack().await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Leaves the delivery unsettled because its code may still be running: neither acked
    /// nor given back, and the consumer is not closed, so that the broker redelivers it only
    /// once this process has gone (AMQP: connection closed; Redis: visibility timeout).
    pub(crate) fn abandon(&self) {
        self.mark();
        self.runtime
            .abandoned
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.runtime.untrack(&self.delivery.tag);
    }
}
