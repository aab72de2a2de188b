//! The task behind a consumer: opens its channel, consumes, buffers deliveries, adjusts the
//! prefetch to the worker's demand, opens and closes the consumers of lower queues (strict
//! order), and starts over on a new channel when the old one breaks.
//!
//! How prefetch and the queue order interact (strict order, the default):
//!
//! - **One channel, one prefetch** (`basic.qos`, `global = true`) shared by the consumers
//!   of all queues, set to what the worker holds plus what its pending fetches ask for
//!   (`handed + demand`, at least 1, at most the prefetch hint). With acks late, a worker
//!   whose slots are all busy asks for nothing, so RabbitMQ pushes it nothing: no message
//!   waits in a busy worker while another could run it. Raising is immediate; lowering
//!   waits [`LOWER_AFTER`], since a worker asks again as soon as a slot frees.
//! - **Lower queues are consumed only while the higher ones are dry.** Only the first queue
//!   is consumed at first. When a fetch waits, RabbitMQ has credit to push and no consumed
//!   queue delivered anything for [`DRY_AFTER`], the next queue is consumed as well.
//!   When credit is short (the worker is saturated) and a higher queue has messages again,
//!   the consumers below it are cancelled, so every freed slot goes to it: at once when
//!   the higher queue wins a credit (a delivery that fills the prefetch), and otherwise
//!   within [`BACKLOG_POLL`] (`queue.declare` passive counts its ready messages). Fetches
//!   take buffered messages in queue order.
//!
//! Measured (`tests/queue_order.rs`, 4 slots): with both queues backlogged, no low task
//! starts before the last high one; with a low backlog running and high messages arriving,
//! at most a slot's worth of low tasks starts after the first high one.
//!
//! Weighted order needs messages of every queue at hand to draw among them: all queues are
//! consumed, each with its own prefetch (`global = false`) of the hint (64 without one), and
//! a fetch that draws a queue whose buffer is momentarily empty while RabbitMQ is still
//! refilling it waits for that refill instead of serving another queue. The cost is the
//! lookahead: a busy worker may hold up to the prefetch per queue (strict order holds none).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, SelectAll, StreamExt};
use lapin::Channel;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use queue_core::broker::QueueOrder;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::Shared;
use super::state::{Buffered, Outstanding};
use crate::error::AmqpError;
use crate::link;
use crate::wire;

/// How long consumed queues must stay silent, with credit to spare and a fetch waiting,
/// before the next queue is consumed.
pub const DRY_AFTER: Duration = Duration::from_millis(50);
/// How often a saturated consumer checks whether a higher queue has messages waiting.
pub const BACKLOG_POLL: Duration = Duration::from_millis(100);
/// How long the prefetch stays above the demand before it is lowered.
pub const LOWER_AFTER: Duration = Duration::from_millis(200);
/// Prefetch of each queue in weighted order when the worker gives no hint.
const WEIGHTED_DEFAULT_PREFETCH: u16 = 64;

/// Deliveries of one `basic.consume`: (queue, consumer number, delivery), then
/// (queue, consumer number, `None`) when the consumer ended.
type Deliveries = BoxStream<'static, (usize, u64, Option<lapin::Result<lapin::message::Delivery>>)>;

/// The prefetch of each queue's consumer when the order is weighted (several queues).
pub(crate) fn weighted_prefetch(
    order: &QueueOrder,
    queues: usize,
    cap: Option<u16>,
) -> Option<usize> {
    (matches!(order, QueueOrder::Weighted(_)) && queues > 1)
        .then(|| usize::from(cap.unwrap_or(WEIGHTED_DEFAULT_PREFETCH)))
}

/// Runs until the consumer is closed, reconnecting with backoff.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    let mut generation = 0u64;
    loop {
        generation += 1;
        let mut session = Session::new(shared.clone(), generation);
        let outcome = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            outcome = session.run(&mut attempt) => outcome,
        };
        let Err(error) = outcome else { return };
        {
            let mut state = shared.lock();
            let stale = state.generation;
            state.reset(stale, None);
        }
        shared.arrived.notify_waiters();
        let delay = link::backoff(attempt);
        attempt = attempt.saturating_add(1);
        warn!(queues = ?shared.lineup().consumed(), %error, ?delay, attempt, "consumer lost its channel; reconnecting");
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    generation: u64,
    channel: Option<Channel>,
    streams: SelectAll<Deliveries>,
    /// Consumer tag and number of each queue currently consumed.
    tags: Vec<Option<(String, u64)>>,
    /// Queues consumed (strict order: a prefix of the list).
    active: usize,
    limit: u16,
    lower_since: Option<Instant>,
    /// Since when the consumed queues could have delivered to a waiting fetch and did not.
    dry_since: Option<Instant>,
    last_poll: Instant,
    /// Queues to keep consumed when a higher queue showed a backlog.
    pause_below: Option<usize>,
    consumers_started: u64,
    weighted: bool,
}

impl Session {
    fn new(shared: Arc<Shared>, generation: u64) -> Self {
        let lineup = shared.lineup();
        let queues = lineup.len();
        let weighted = matches!(lineup.order, QueueOrder::Weighted(_)) && queues > 1;
        Self {
            shared,
            generation,
            channel: None,
            streams: SelectAll::new(),
            tags: vec![None; queues],
            active: 0,
            limit: 1,
            lower_since: None,
            dry_since: None,
            last_poll: Instant::now(),
            pause_below: None,
            consumers_started: 0,
            weighted,
        }
    }

    async fn run(&mut self, attempt: &mut u32) -> Result<(), AmqpError> {
        self.open().await?;
        if *attempt > 0 {
            info!(queues = ?self.shared.lineup().consumed(), "consumer reconnected");
        }
        *attempt = 0;
        let mut tick = tokio::time::interval(DRY_AFTER / 2);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let gating = !self.weighted && self.tags.len() > 1;
            tokio::select! {
                item = self.streams.next() => match item {
                    Some((queue, _, Some(Ok(delivery)))) => {
                        self.accept(queue, delivery);
                        // A delivery changes neither the demand nor what is handed out: only
                        // the queue order needs a look.
                        if !gating {
                            continue;
                        }
                    }
                    Some((queue, _, Some(Err(error)))) => {
                        return Err(AmqpError::operation(
                            format!("consuming {}", self.shared.lineup().name(queue)),
                            error,
                        ));
                    }
                    Some((queue, number, None)) => self.ended(queue, number)?,
                    None => {} // no consumer right now
                },
                () = self.shared.demand_changed.notified() => {}
                _ = tick.tick() => {}
            }
            self.control().await?;
        }
    }

    /// Declares the queues, opens the channel and starts consuming.
    async fn open(&mut self) -> Result<(), AmqpError> {
        let broker = &self.shared.broker;
        let lineup = self.shared.lineup();
        for queue in lineup.consumed() {
            broker.topology.ensure_queue(queue).await?;
        }
        let (channel, _) = broker.consume_link.channel().await?;
        if self.weighted {
            let prefetch = self.shared.cap().unwrap_or(WEIGHTED_DEFAULT_PREFETCH);
            qos(&channel, prefetch, false).await?;
        } else {
            self.limit = self.target();
            qos(&channel, self.limit, true).await?;
        }
        self.shared
            .lock()
            .reset(self.generation, Some(channel.clone()));
        self.channel = Some(channel);
        if self.weighted {
            for queue in 0..lineup.len() {
                self.consume(queue).await?;
            }
        } else {
            // The first queue still wanted (removed ones before it are passed over).
            for queue in 0..lineup.len() {
                self.consume(queue).await?;
                if self.tags[queue].is_some() {
                    break;
                }
            }
        }
        // Whatever changed before this channel opened, it follows.
        self.follow_lineup().await
    }

    fn channel(&self) -> Result<&Channel, AmqpError> {
        self.channel
            .as_ref()
            .ok_or_else(|| AmqpError::Config("consumer channel not open".into()))
    }

    async fn consume(&mut self, queue: usize) -> Result<(), AmqpError> {
        let lineup = self.shared.lineup();
        if self.tags.len() < lineup.len() {
            self.tags.resize(lineup.len(), None);
        }
        if !lineup.wanted(queue) {
            // Removed (`cancel_consumer`): passed over, in its place in the order.
            self.active = self.active.max(queue + 1);
            self.dry_since = None;
            return Ok(());
        }
        self.consumers_started += 1;
        let tag = format!(
            "queue-amqp.{}.{}.{}.{}",
            std::process::id(),
            self.generation,
            queue,
            self.consumers_started
        );
        let name = lineup.name(queue);
        let consumer = self
            .channel()?
            .basic_consume(
                name,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| AmqpError::operation(format!("basic.consume {name}"), error))?;
        let number = self.consumers_started;
        let deliveries = consumer
            .map(move |item| (queue, number, Some(item)))
            .chain(stream::once(async move { (queue, number, None) }));
        self.streams.push(deliveries.boxed());
        self.tags[queue] = Some((tag, number));
        self.active = self.active.max(queue + 1);
        self.dry_since = None;
        debug!(queue = %name, "consuming");
        Ok(())
    }

    /// Cancels the consumers of the queues after `keep` (their messages already pushed stay
    /// buffered, and are fetched after the higher queues' ones).
    async fn cancel_below(&mut self, keep: usize) -> Result<(), AmqpError> {
        for queue in (keep..self.active).rev() {
            if self.cancel(queue).await? {
                debug!(queue = %self.shared.lineup().name(queue), "higher queue has messages: paused");
            }
        }
        self.active = keep;
        self.dry_since = None;
        Ok(())
    }

    /// Cancels the consumer of `queue`, if it has one; what it pushed stays buffered.
    async fn cancel(&mut self, queue: usize) -> Result<bool, AmqpError> {
        let Some((tag, _)) = self.tags.get_mut(queue).and_then(Option::take) else {
            return Ok(false);
        };
        self.channel()?
            .basic_cancel(&tag, BasicCancelOptions::default())
            .await
            .map_err(|error| AmqpError::operation("basic.cancel", error))?;
        Ok(true)
    }

    /// Follows `add_queue` / `remove_queue`: consumes a queue added back inside the
    /// consumed range (weighted order: any added queue) and cancels a removed one. A new
    /// queue in strict order comes last and is consumed when those before it are dry.
    async fn follow_lineup(&mut self) -> Result<(), AmqpError> {
        let lineup = self.shared.lineup();
        if self.tags.len() < lineup.len() {
            self.tags.resize(lineup.len(), None);
        }
        if self.weighted {
            self.active = lineup.len();
        }
        for queue in 0..self.active {
            let consumed = self.tags[queue].is_some();
            if lineup.wanted(queue) && !consumed {
                self.consume(queue).await?;
            } else if !lineup.wanted(queue) && consumed {
                self.cancel(queue).await?;
                debug!(queue = %lineup.name(queue), "no longer consumed");
            }
        }
        self.shared.applied.send_if_modified(|seen| {
            let newer = *seen < lineup.version;
            *seen = (*seen).max(lineup.version);
            newer
        });
        Ok(())
    }

    fn ended(&mut self, queue: usize, number: u64) -> Result<(), AmqpError> {
        if self.tags[queue]
            .as_ref()
            .is_some_and(|(_, current)| *current == number)
        {
            // Not cancelled by us: the queue was deleted, or the channel closed.
            return Err(AmqpError::Config(format!(
                "RabbitMQ stopped the consumer of {}",
                self.shared.lineup().name(queue)
            )));
        }
        Ok(())
    }

    fn accept(&mut self, queue: usize, delivery: lapin::message::Delivery) {
        let content = wire::decode(
            &delivery.properties,
            &delivery.data,
            &self.shared.broker.config.delay_prefix,
        );
        if let Err(undecodable) = &content {
            warn!(queue = %self.shared.lineup().name(queue), error = %undecodable.error, "undecodable message");
        }
        let saturated = {
            let mut state = self.shared.lock();
            if state.generation != self.generation {
                return;
            }
            state.push(
                queue,
                Buffered {
                    tag: delivery.delivery_tag,
                    redelivered: delivery.redelivered,
                    content,
                },
                Outstanding {
                    queue,
                    properties: delivery.properties,
                    body: Arc::new(delivery.data),
                },
            );
            state.outstanding.len() >= usize::from(self.limit)
        };
        self.shared.arrived.notify_waiters();
        self.dry_since = None;
        if saturated && !self.weighted && queue + 1 < self.active {
            // This higher queue won the last credit against the lower ones: it has a
            // backlog, so the lower ones pause at once (they come back once it is dry).
            self.pause_below = Some(
                self.pause_below
                    .map_or(queue + 1, |keep| keep.min(queue + 1)),
            );
        }
    }

    /// The prefetch the worker's demand calls for.
    fn target(&self) -> u16 {
        let state = self.shared.lock();
        let wanted = state.handed().saturating_add(state.demand).max(1);
        let capped = match self.shared.cap() {
            Some(cap) => wanted.min(usize::from(cap)),
            None => wanted,
        };
        u16::try_from(capped).unwrap_or(u16::MAX).max(1)
    }

    /// Adjusts the prefetch and the consumed queues after any event.
    async fn control(&mut self) -> Result<(), AmqpError> {
        self.follow_lineup().await?;
        if self.weighted {
            return Ok(());
        }
        let now = Instant::now();
        let target = self.target();
        if target > self.limit {
            qos(self.channel()?, target, true).await?;
            self.limit = target;
            self.lower_since = None;
            self.dry_since = None;
        } else if target < self.limit {
            let since = *self.lower_since.get_or_insert(now);
            if now - since >= LOWER_AFTER {
                qos(self.channel()?, target, true).await?;
                self.limit = target;
                self.lower_since = None;
            }
        } else {
            self.lower_since = None;
        }
        if let Some(keep) = self.pause_below.take() {
            if keep < self.active {
                self.cancel_below(keep).await?;
            }
        }
        let queues = self.tags.len();
        let (demand, outstanding, higher_empty) = {
            let state = self.shared.lock();
            let higher_empty = state.buffers[..self.active].iter().all(|b| b.is_empty());
            (state.demand, state.outstanding.len(), higher_empty)
        };
        let spare = outstanding < usize::from(self.limit);
        if self.active < queues && demand > 0 && spare && higher_empty {
            let since = *self.dry_since.get_or_insert(now);
            if now - since >= DRY_AFTER {
                self.consume(self.active).await?;
            }
        } else {
            self.dry_since = None;
        }
        if !spare && self.active > 1 && now - self.last_poll >= BACKLOG_POLL {
            self.last_poll = now;
            let lineup = self.shared.lineup();
            for queue in 0..self.active - 1 {
                if !lineup.wanted(queue) {
                    continue;
                }
                let name = lineup.name(queue);
                let ready = self
                    .shared
                    .broker
                    .topology
                    .queue_message_count(name)
                    .await?;
                if ready.unwrap_or(0) > 0 {
                    self.cancel_below(queue + 1).await?;
                    break;
                }
            }
        }
        Ok(())
    }
}

async fn qos(channel: &Channel, prefetch: u16, global: bool) -> Result<(), AmqpError> {
    channel
        .basic_qos(prefetch, BasicQosOptions { global })
        .await
        .map_err(|error| AmqpError::operation("basic.qos", error))
}
