//! The in-memory broker's [`Broadcast`]: subscribers of one process, routed as RabbitMQ
//! routes (fanout to all, topic by pattern, direct by exact key).

use std::sync::Mutex;

use async_trait::async_trait;

use super::MemoryBroker;
use crate::broadcast::{
    Binding, Broadcast, BroadcastMessage, ExchangeKind, Subscription, SubscriptionSender,
    subscription, topic_matches,
};
use crate::broker::BrokerError;

/// The live subscriptions of one memory broker (and its clones).
#[derive(Debug, Default)]
pub(super) struct Subscribers {
    live: Mutex<Vec<(Binding, SubscriptionSender)>>,
}

impl Subscribers {
    fn route(&self, exchange: &str, kind: ExchangeKind, message: &BroadcastMessage) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Subscriptions whose receiver was dropped go on the next send.
        live.retain(|(binding, sender)| {
            if binding.exchange != exchange {
                return !sender.is_closed();
            }
            let routed = match kind {
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&binding.routing_key, &message.routing_key),
                ExchangeKind::Direct => binding.routing_key == message.routing_key,
            };
            if routed {
                sender.deliver(message.clone())
            } else {
                !sender.is_closed()
            }
        });
    }
}

#[async_trait]
impl Broadcast for MemoryBroker {
    async fn send(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        message: BroadcastMessage,
    ) -> Result<(), BrokerError> {
        self.subscribers().route(exchange, kind, &message);
        Ok(())
    }

    async fn subscribe(&self, binding: Binding) -> Result<Subscription, BrokerError> {
        let (sender, subscription) = subscription();
        self.subscribers()
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((binding, sender));
        Ok(subscription)
    }
}
