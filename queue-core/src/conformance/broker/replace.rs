//! The check of [`Consumer::republish_and_ack`](crate::Consumer::republish_and_ack): a retry
//! takes the place of its original in one step, or the broker says it cannot.

use std::sync::Arc;

use super::super::later;
use super::{
    DELAY, IDLE, WAIT, ack, assert_nothing, close, consume, declare, delivery_id, fetch_one,
    message, publish,
};
use crate::broker::{Broker, BrokerError, Publish, QueueOrder};

/// `republish_and_ack` either answers `Unsupported` (the worker then publishes and acks in
/// two steps) or replaces the delivery: the replacement is delivered (an eta in the future
/// holds it until due) and the original is never delivered again, not even after its
/// consumer is closed.
pub async fn republish_and_ack_replaces_the_original(broker: Arc<dyn Broker>, prefix: &str) {
    let queue = format!("{prefix}.q");
    declare(&broker, &[&queue]).await;
    let id = format!("{prefix}-retried");
    publish(&broker, &queue, vec![message(id.clone(), 0)]).await;

    let consumer = consume(&broker, &[&queue], QueueOrder::Strict).await;
    let original = fetch_one(&consumer, WAIT, "republish_and_ack: original").await;
    let mut retry = original.content.clone().expect("decoded");
    retry.headers.retries = 1;
    match consumer
        .republish_and_ack(&original, Publish::new(queue.clone(), retry.clone()))
        .await
    {
        Err(BrokerError::Unsupported(_)) => {
            ack(&consumer, &original, "republish_and_ack unsupported").await;
            return close(&consumer, "republish_and_ack unsupported").await;
        }
        Err(error) => panic!("republish_and_ack failed: {error}"),
        Ok(()) => {}
    }
    let replacement = fetch_one(&consumer, WAIT, "republish_and_ack: replacement").await;
    assert_eq!(delivery_id(&replacement), id);
    let headers = &replacement.content.as_ref().expect("decoded").headers;
    assert_eq!(headers.retries, 1, "the replacement, not the original");

    // Delayed: not delivered before its eta.
    let mut delayed = retry;
    delayed.headers.retries = 2;
    delayed.headers.eta = Some(later(DELAY));
    consumer
        .republish_and_ack(&replacement, Publish::new(queue.clone(), delayed))
        .await
        .unwrap_or_else(|error| panic!("republish_and_ack with an eta failed: {error}"));
    assert_nothing(&consumer, IDLE, "republish_and_ack: before the eta").await;
    let due = fetch_one(&consumer, WAIT + DELAY, "republish_and_ack: after the eta").await;
    assert_eq!(
        due.content.as_ref().expect("decoded").headers.retries,
        2,
        "the delayed replacement"
    );
    ack(&consumer, &due, "republish_and_ack: delayed replacement").await;
    close(&consumer, "republish_and_ack").await;

    let fresh = consume(&broker, &[&queue], QueueOrder::Strict).await;
    assert_nothing(
        &fresh,
        IDLE,
        "republish_and_ack: the originals never come back",
    )
    .await;
    close(&fresh, "republish_and_ack").await;
}
