//! Publishing with publisher confirms on a few shared channels.
//!
//! A batch goes out on one channel, in order (so FIFO holds within it), its frames pushed
//! back to back and its confirms awaited together: one batch costs about one round trip,
//! whatever its size. Concurrent producers spread over `publish_channels` channels, which
//! RabbitMQ serves in parallel (one channel process each).
//!
//! Task messages are `mandatory`: one that no queue takes comes back as an error instead of
//! vanishing. Broadcasts (events, remote control) are not: nobody listening is normal. When the connection breaks, the unconfirmed part of the batch is published
//! again on a new connection (at-least-once: a message whose confirm was lost with the
//! connection may be stored twice), until `publish_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::task::noop_waker_ref;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::{BasicProperties, Channel};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::config::AmqpConfig;
use crate::error::AmqpError;
use crate::link::{self, Link};

/// One message ready for the wire.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Arc<Vec<u8>>,
    /// Whether RabbitMQ returns the message when no queue takes it (an error here).
    pub(crate) mandatory: bool,
}

struct PublishChannel {
    channel: Channel,
    /// Held while a batch's frames are pushed: lapin numbers confirms and queues frames
    /// under separate locks, so two producers interleaving there could swap tags.
    push: std::sync::Mutex<()>,
}

pub(crate) struct Publisher {
    config: Arc<AmqpConfig>,
    link: Arc<Link>,
    slots: Vec<Mutex<Option<Arc<PublishChannel>>>>,
    next: AtomicUsize,
}

type PublishFuture<'a> = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send + 'a>>;

impl Publisher {
    pub(crate) fn new(config: Arc<AmqpConfig>, link: Arc<Link>) -> Self {
        let slots = (0..config.publish_channels)
            .map(|_| Mutex::new(None))
            .collect();
        Self {
            config,
            link,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// Publishes `batch` and returns once RabbitMQ confirmed every message.
    pub(crate) async fn publish(&self, batch: &[Outgoing]) -> Result<(), AmqpError> {
        self.publish_since(batch, Instant::now()).await
    }

    /// As [`publish`](Self::publish), for an operation that began at `started` (its
    /// earlier steps count against the publish timeout too).
    pub(crate) async fn publish_since(
        &self,
        batch: &[Outgoing],
        started: Instant,
    ) -> Result<(), AmqpError> {
        if batch.is_empty() {
            return Ok(());
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut pending: Vec<&Outgoing> = batch.iter().collect();
        let mut attempt = 0;
        loop {
            let failure = match self.channel(slot).await {
                Ok(channel) => match publish_on(&channel, &pending).await {
                    Ok(()) => return Ok(()),
                    Err((confirmed, error)) => {
                        let mut index = 0;
                        pending.retain(|_| {
                            index += 1;
                            !confirmed[index - 1]
                        });
                        if !channel.channel.status().connected() {
                            self.forget(slot, &channel).await;
                        }
                        error
                    }
                },
                Err(error) => error,
            };
            if !failure.is_transient() {
                return Err(failure);
            }
            let elapsed = started.elapsed();
            if elapsed >= self.config.publish_timeout {
                return Err(AmqpError::PublishTimeout {
                    seconds: elapsed.as_secs_f64(),
                    last: failure.to_string(),
                });
            }
            let delay = link::backoff(attempt).min(self.config.publish_timeout - elapsed);
            attempt += 1;
            warn!(error = %failure, ?delay, attempt, unconfirmed = pending.len(), "publish failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn channel(&self, slot: usize) -> Result<Arc<PublishChannel>, AmqpError> {
        let mut current = self.slots[slot].lock().await;
        if let Some(open) = current.as_ref() {
            if open.channel.status().connected() {
                return Ok(open.clone());
            }
        }
        let (channel, _) = self.link.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| AmqpError::operation("confirm.select", error))?;
        debug!(slot, "publisher channel opened");
        let open = Arc::new(PublishChannel {
            channel,
            push: std::sync::Mutex::new(()),
        });
        *current = Some(open.clone());
        Ok(open)
    }

    async fn forget(&self, slot: usize, broken: &Arc<PublishChannel>) {
        let mut current = self.slots[slot].lock().await;
        if current
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(open, broken))
        {
            *current = None;
        }
    }
}

/// Publishes `batch` on `channel`. On failure, says which messages were confirmed.
async fn publish_on(
    channel: &PublishChannel,
    batch: &[&Outgoing],
) -> Result<(), (Vec<bool>, AmqpError)> {
    // Push every message's frames now, in order, without waiting for each write.
    let mut sends: Vec<(PublishFuture<'_>, Option<lapin::Result<PublisherConfirm>>)> =
        Vec::with_capacity(batch.len());
    {
        let _push = channel
            .push
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut context = Context::from_waker(noop_waker_ref());
        for outgoing in batch {
            let options = BasicPublishOptions {
                mandatory: outgoing.mandatory,
                ..BasicPublishOptions::default()
            };
            let mut send: PublishFuture<'_> = Box::pin(channel.channel.basic_publish(
                &outgoing.exchange,
                &outgoing.routing_key,
                options,
                &outgoing.body,
                outgoing.properties.clone(),
            ));
            let early = match send.as_mut().poll(&mut context) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            };
            sends.push((send, early));
        }
    }
    let mut confirmed = vec![false; batch.len()];
    let mut confirms = Vec::with_capacity(batch.len());
    let mut failure = None;
    for (send, early) in sends {
        let sent = match early {
            Some(result) => result,
            None => send.await,
        };
        match sent {
            Ok(confirm) => confirms.push(Some(confirm)),
            Err(error) => {
                failure.get_or_insert_with(|| AmqpError::operation("basic.publish", error));
                confirms.push(None);
            }
        }
    }
    for (index, confirm) in confirms.into_iter().enumerate() {
        let Some(confirm) = confirm else { continue };
        match confirm.await {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => confirmed[index] = true,
            Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                // Stored nowhere: not worth publishing again.
                confirmed[index] = true;
                failure.get_or_insert_with(|| AmqpError::Unroutable {
                    exchange: batch[index].exchange.clone(),
                    routing_key: batch[index].routing_key.clone(),
                    reply: returned.reply_text.as_str().to_owned(),
                });
            }
            Ok(Confirmation::Nack(None)) => {
                confirmed[index] = true;
                failure.get_or_insert(AmqpError::Nacked);
            }
            Err(error) => {
                failure.get_or_insert_with(|| AmqpError::operation("publisher confirm", error));
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(error) => Err((confirmed, error)),
    }
}
