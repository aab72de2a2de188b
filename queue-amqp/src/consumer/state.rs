//! What a consumer holds between RabbitMQ and the worker: deliveries pushed but not yet
//! fetched (a buffer per queue), deliveries not yet settled, and the worker's demand.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use lapin::{BasicProperties, Channel};
use queue_core::broker::{Delivery, DeliveryTag, QueueOrder, Undecodable};
use queue_core::protocol::Message;
use tokio::time::Instant;

/// How long after its last delivery a queue still counts as being refilled.
const FLOWING: std::time::Duration = std::time::Duration::from_millis(50);

/// Bits of our delivery tag that hold RabbitMQ's (per channel, counting from 1).
const AMQP_TAG_BITS: u32 = 40;
const AMQP_TAG_MASK: u64 = (1 << AMQP_TAG_BITS) - 1;

/// Our delivery tag: the channel's generation above RabbitMQ's tag, so that an ack for a
/// delivery of a closed channel is never mistaken for one of the channel that replaced it
/// (RabbitMQ numbers each channel's deliveries from 1 again).
pub(crate) fn encode_tag(generation: u64, amqp_tag: u64) -> DeliveryTag {
    DeliveryTag::Number(generation << AMQP_TAG_BITS | (amqp_tag & AMQP_TAG_MASK))
}

/// `(generation, amqp tag)` of one of our tags.
pub(crate) fn decode_tag(tag: &DeliveryTag) -> Option<(u64, u64)> {
    match tag {
        DeliveryTag::Number(number) => Some((number >> AMQP_TAG_BITS, number & AMQP_TAG_MASK)),
        DeliveryTag::Text(_) => None,
    }
}

/// A delivery pushed by RabbitMQ that no fetch took yet.
pub(crate) struct Buffered {
    pub(crate) tag: u64,
    pub(crate) redelivered: bool,
    pub(crate) content: Result<Message, Undecodable>,
}

/// A delivery not settled yet (buffered or handed out): what re-publishing it needs.
pub(crate) struct Outstanding {
    pub(crate) queue: usize,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Arc<Vec<u8>>,
}

/// Acks and rejects to send, computed under the lock, sent outside it.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Frames {
    pub(crate) rejects: Vec<(u64, bool)>,
    /// `basic.ack(tag, multiple = true)`: every delivery up to `tag` is settled.
    pub(crate) ack_upto: Option<u64>,
    pub(crate) acks: Vec<u64>,
}

pub(crate) struct State {
    /// Generation of the current channel; deliveries of other generations are stale.
    pub(crate) generation: u64,
    pub(crate) channel: Option<Channel>,
    pub(crate) buffers: Vec<VecDeque<Buffered>>,
    pub(crate) outstanding: BTreeMap<u64, Outstanding>,
    pub(crate) buffered: usize,
    /// Messages pending fetches asked for, summed.
    pub(crate) demand: usize,
    /// Every tag up to this one has been delivered and registered.
    contiguous: u64,
    /// Tags registered beyond `contiguous` (consumers of several queues may register out
    /// of order).
    ahead: BTreeSet<u64>,
    pub(crate) closed: bool,
    /// Per queue: deliveries not settled, and when the last one arrived (weighted order).
    per_queue: Vec<(usize, Instant)>,
    /// Prefetch of each queue's consumer in weighted order.
    weighted_prefetch: Option<usize>,
}

impl State {
    pub(crate) fn new(queues: usize, weighted_prefetch: Option<usize>) -> Self {
        Self {
            generation: 0,
            channel: None,
            buffers: (0..queues).map(|_| VecDeque::new()).collect(),
            outstanding: BTreeMap::new(),
            buffered: 0,
            demand: 0,
            contiguous: 0,
            ahead: BTreeSet::new(),
            closed: false,
            per_queue: vec![(0, Instant::now()); queues],
            weighted_prefetch,
        }
    }

    /// Starts over on a new channel: what the old one delivered is RabbitMQ's again.
    pub(crate) fn reset(&mut self, generation: u64, channel: Option<Channel>) {
        self.generation = generation;
        self.channel = channel;
        self.buffers.iter_mut().for_each(VecDeque::clear);
        self.outstanding.clear();
        self.buffered = 0;
        self.contiguous = 0;
        self.ahead.clear();
        self.per_queue
            .iter_mut()
            .for_each(|(unsettled, _)| *unsettled = 0);
    }

    /// Makes room for queues added to the consumer (up to `queues` in all).
    pub(crate) fn grow(&mut self, queues: usize) {
        if self.buffers.len() < queues {
            self.buffers.resize_with(queues, VecDeque::new);
            self.per_queue.resize(queues, (0, Instant::now()));
        }
    }

    /// Deliveries handed to the worker and not settled.
    pub(crate) fn handed(&self) -> usize {
        self.outstanding.len() - self.buffered
    }

    /// Takes a delivery from RabbitMQ into the buffer of queue `queue`.
    pub(crate) fn push(&mut self, queue: usize, buffered: Buffered, outstanding: Outstanding) {
        let tag = buffered.tag;
        if tag == self.contiguous + 1 {
            self.contiguous = tag;
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else if tag > self.contiguous {
            self.ahead.insert(tag);
        }
        self.outstanding.insert(tag, outstanding);
        self.buffers[queue].push_back(buffered);
        self.buffered += 1;
        self.per_queue[queue] = (self.per_queue[queue].0 + 1, Instant::now());
    }

    /// Removes a delivery the worker settled; false if it was not outstanding.
    pub(crate) fn settle(&mut self, tag: u64) -> bool {
        match self.outstanding.remove(&tag) {
            Some(outstanding) => {
                let unsettled = &mut self.per_queue[outstanding.queue].0;
                *unsettled = unsettled.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    /// Whether RabbitMQ is still pushing queue `index` (weighted order): it delivered
    /// lately and has prefetch credit left, so an empty buffer is only a refill in flight.
    fn flowing(&self, index: usize, now: Instant) -> bool {
        let (unsettled, last) = self.per_queue[index];
        self.weighted_prefetch
            .is_some_and(|prefetch| unsettled < prefetch && now - last < FLOWING)
    }

    /// Up to `max` buffered deliveries, in the queue order.
    pub(crate) fn take(
        &mut self,
        max: usize,
        queues: &[String],
        order: &QueueOrder,
    ) -> Vec<Delivery> {
        let mut taken = Vec::new();
        while taken.len() < max && self.buffered > 0 {
            let index = match order {
                QueueOrder::Strict => self.buffers.iter().position(|buffer| !buffer.is_empty()),
                weighted => {
                    // The queue drawn first is waited for while RabbitMQ refills it, so
                    // that a slow refill does not hand its turn to the other queues.
                    let now = Instant::now();
                    weighted
                        .sequence(queues.len())
                        .into_iter()
                        .find(|index| !self.buffers[*index].is_empty() || self.flowing(*index, now))
                        .filter(|index| !self.buffers[*index].is_empty())
                }
            };
            let Some(index) = index else { break };
            let Some(buffered) = self.buffers[index].pop_front() else {
                break;
            };
            self.buffered -= 1;
            taken.push(Delivery {
                tag: encode_tag(self.generation, buffered.tag),
                queue: queues[index].clone(),
                redelivered: buffered.redelivered,
                content: buffered.content,
            });
        }
        taken
    }

    /// Settles deliveries (acks and rejects of this generation, already checked to be
    /// outstanding and removed from it) and says which frames carry that to RabbitMQ.
    ///
    /// Acks are coalesced: the acks below every delivery still outstanding (and below any
    /// tag not yet registered) become one `multiple` ack; the others go one by one, at
    /// once, because an ack held back would keep its prefetch credit from the worker.
    /// Rejects are sent first, so a `multiple` ack never covers one.
    pub(crate) fn frames(&self, mut acks: Vec<u64>, rejects: Vec<(u64, bool)>) -> Frames {
        let low = self
            .outstanding
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX)
            .min(self.contiguous + 1);
        acks.sort_unstable();
        let below = acks.partition_point(|tag| *tag < low);
        let ack_upto = below.checked_sub(1).map(|last| acks[last]);
        Frames {
            rejects,
            ack_upto,
            acks: acks.split_off(below),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(state: &mut State, tag: u64) {
        state.push(
            0,
            Buffered {
                tag,
                redelivered: false,
                content: Err(Undecodable {
                    raw: Vec::new(),
                    error: String::new(),
                }),
            },
            Outstanding {
                queue: 0,
                properties: BasicProperties::default(),
                body: Arc::new(Vec::new()),
            },
        );
    }

    #[test]
    fn tags_carry_the_generation() {
        let tag = encode_tag(7, 12345);
        assert_eq!(decode_tag(&tag), Some((7, 12345)));
        assert_eq!(decode_tag(&DeliveryTag::Text("x".into())), None);
    }

    #[test]
    fn multiple_acks_never_cover_unsettled_or_unregistered_tags() {
        let mut state = State::new(1, None);
        for tag in [1, 2, 3, 5, 6] {
            delivered(&mut state, tag); // 4 is still on its way
        }
        assert_eq!(state.contiguous, 3);
        for tag in [1, 2, 5, 6] {
            assert!(state.settle(tag));
        }
        // 3 is outstanding: only 1..=2 in one frame, 5 and 6 one by one.
        let frames = state.frames(vec![6, 1, 5, 2], vec![]);
        assert_eq!(frames.ack_upto, Some(2));
        assert_eq!(frames.acks, vec![5, 6]);
        // 3 settled, 4 not registered yet: 3 alone in the multiple frame.
        assert!(state.settle(3));
        assert!(!state.settle(3), "settled twice");
        let frames = state.frames(vec![3], vec![(9, true)]);
        assert_eq!(frames.ack_upto, Some(3));
        assert!(frames.acks.is_empty());
        assert_eq!(frames.rejects, vec![(9, true)]);
        delivered(&mut state, 4);
        assert_eq!(state.contiguous, 6);
    }

    #[test]
    fn take_follows_strict_order() {
        let mut state = State::new(2, None);
        let queues = vec!["high".to_owned(), "low".to_owned()];
        let mut put = |queue, tag| {
            state.push(
                queue,
                Buffered {
                    tag,
                    redelivered: false,
                    content: Err(Undecodable {
                        raw: vec![tag as u8],
                        error: String::new(),
                    }),
                },
                Outstanding {
                    queue,
                    properties: BasicProperties::default(),
                    body: Arc::new(Vec::new()),
                },
            );
        };
        put(1, 1);
        put(0, 2);
        put(1, 3);
        let taken = state.take(2, &queues, &QueueOrder::Strict);
        let names: Vec<&str> = taken.iter().map(|d| d.queue.as_str()).collect();
        assert_eq!(names, ["high", "low"]);
        assert_eq!(state.buffered, 1);
        assert_eq!(state.handed(), 2);
    }
}
