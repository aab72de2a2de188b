//! Acks and rejects, sent by one task per consumer so that the acks of concurrently
//! finishing tasks leave as one `basic.ack(multiple)` frame where they can: per-message
//! acks cost RabbitMQ and lapin about as much as the delivery itself.

use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use queue_core::broker::{BrokerError, DeliveryTag};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::state::decode_tag;
use crate::error::AmqpError;

/// How a delivery is settled.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Ack,
    Reject { requeue: bool },
}

pub(crate) enum Settle {
    Op {
        tag: DeliveryTag,
        kind: Kind,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// Most operations coalesced into one round of frames.
pub(crate) const BATCH: usize = 4096;

pub(crate) async fn run(shared: Arc<Shared>, mut operations: mpsc::Receiver<Settle>) {
    loop {
        let first = tokio::select! {
            biased;
            operation = operations.recv() => operation,
            () = shared.shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match operations.try_recv() {
                Ok(operation) => batch.push(operation),
                Err(_) => break,
            }
        }
        process(&shared, batch).await;
    }
    // Closed: what arrives now refers to deliveries RabbitMQ takes back with the channel.
    operations.close();
    while let Ok(operation) = operations.try_recv() {
        match operation {
            Settle::Op { done, .. } => {
                let _ = done.send(Err(BrokerError::Closed));
            }
            Settle::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

async fn process(shared: &Shared, batch: Vec<Settle>) {
    let mut flushes = Vec::new();
    let mut waiting = Vec::new();
    let (channel, frames) = {
        let mut state = shared.lock();
        let generation = state.generation;
        let channel = state.channel.clone();
        let (mut acks, mut rejects) = (Vec::new(), Vec::new());
        for operation in batch {
            let (tag, kind, done) = match operation {
                Settle::Flush(done) => {
                    flushes.push(done);
                    continue;
                }
                Settle::Op { tag, kind, done } => (tag, kind, done),
            };
            let Some((of, amqp_tag)) = decode_tag(&tag) else {
                let _ = done.send(Err(BrokerError::Refused(format!(
                    "unknown delivery tag {tag}"
                ))));
                continue;
            };
            if of != generation || channel.is_none() {
                let _ = done.send(Err(AmqpError::StaleDelivery(amqp_tag).into()));
                continue;
            }
            if !state.settle(amqp_tag) {
                let _ = done.send(Err(BrokerError::Refused(format!(
                    "delivery {tag} is not unacked here (settled twice?)"
                ))));
                continue;
            }
            match kind {
                Kind::Ack => acks.push(amqp_tag),
                Kind::Reject { requeue } => rejects.push((amqp_tag, requeue)),
            }
            waiting.push(done);
        }
        (channel, state.frames(acks, rejects))
    };
    let result = match channel {
        Some(channel) if !waiting.is_empty() => send(&channel, frames).await,
        _ => Ok(()),
    };
    for done in waiting {
        let _ = done.send(result.clone().map_err(BrokerError::Unavailable));
    }
    // Settled deliveries free prefetch credit: let the driver look again.
    shared.demand_changed.notify_one();
    for done in flushes {
        let _ = done.send(());
    }
}

async fn send(channel: &lapin::Channel, frames: super::state::Frames) -> Result<(), String> {
    let failed = |error: lapin::Error| {
        // The channel is gone with its deliveries: RabbitMQ delivers them again.
        format!("settling deliveries failed (RabbitMQ delivers them again): {error}")
    };
    for (tag, requeue) in frames.rejects {
        channel
            .basic_reject(tag, BasicRejectOptions { requeue })
            .await
            .map_err(failed)?;
    }
    if let Some(upto) = frames.ack_upto {
        channel
            .basic_ack(upto, BasicAckOptions { multiple: true })
            .await
            .map_err(failed)?;
    }
    let singles = frames
        .acks
        .into_iter()
        .map(|tag| channel.basic_ack(tag, BasicAckOptions::default()));
    for result in futures::future::join_all(singles).await {
        result.map_err(failed)?;
    }
    Ok(())
}
