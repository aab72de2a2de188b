//! The client side of remote control: what `app.control` and `celery inspect` do.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{PIDBOX_EXCHANGE, REPLY_EXCHANGE, ReplyTo, Request, reply_queue};
use crate::app::App;
use crate::broadcast::{Binding, BroadcastMessage, ExchangeKind};
use crate::broker::BrokerError;

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The app's broker has no broadcast side (see [`Broker::broadcast`](crate::Broker::broadcast)).
    #[error("this broker cannot broadcast control commands")]
    Unsupported,
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The replies to one request: `(node, reply)` in arrival order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replies(pub Vec<(String, Value)>);

impl Replies {
    /// The nodes that replied.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(node, _)| node.as_str())
    }

    /// The reply of `node`.
    pub fn get(&self, node: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| name == node)
            .map(|(_, reply)| reply)
    }

    /// How many nodes replied.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nobody replied.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Remote control of the workers on an app's broker, Python and Rust alike.
///
/// ```no_run
/// # async fn example(app: queue_core::App) -> Result<(), queue_core::control::ControlError> {
/// let control = app.control();
/// for node in control.ping().await?.nodes() {
///     println!("{node} is up");
/// }
/// let stats = control.inspect().stats().await?;
/// control.revoke("a-task-id", false).await?;
/// # let _ = stats; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Control {
    app: App,
    timeout: Duration,
    destination: Option<Vec<String>>,
}

impl Control {
    pub(crate) fn new(app: App) -> Self {
        Self {
            app,
            timeout: Duration::from_secs(1),
            destination: None,
        }
    }

    /// How long to wait for the next reply before concluding that all came (default 1 s,
    /// as Celery).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Addresses only these nodes (and stops waiting once each replied).
    pub fn destination<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.destination = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// The inspect commands (`celery inspect …`).
    pub fn inspect(&self) -> Inspect {
        Inspect {
            control: self.clone(),
        }
    }

    /// `ping`: every node that answers.
    pub async fn ping(&self) -> Result<Replies, ControlError> {
        self.call("ping", Map::new()).await
    }

    /// `revoke`: the workers discard `task_id` when it arrives, and with `terminate` stop
    /// it if it runs. Sent without waiting for replies, as Celery does.
    pub async fn revoke(&self, task_id: &str, terminate: bool) -> Result<(), ControlError> {
        let mut arguments = Map::new();
        arguments.insert("task_id".into(), Value::from(task_id));
        arguments.insert("terminate".into(), Value::from(terminate));
        arguments.insert("signal".into(), Value::from("SIGTERM"));
        self.cast("revoke", arguments).await
    }

    /// `revoke` of many tasks in one broadcast (Celery's `revoke([id, …])`): a group's
    /// members, say.
    pub async fn revoke_many(
        &self,
        task_ids: &[String],
        terminate: bool,
    ) -> Result<(), ControlError> {
        let mut arguments = Map::new();
        arguments.insert("task_id".into(), Value::from(task_ids.to_vec()));
        arguments.insert("terminate".into(), Value::from(terminate));
        arguments.insert("signal".into(), Value::from("SIGTERM"));
        self.cast("revoke", arguments).await
    }

    /// `rate_limit`: a new rate limit (`"10/m"`) for `task_name` on the workers.
    pub async fn rate_limit(&self, task_name: &str, rate: &str) -> Result<Replies, ControlError> {
        let mut arguments = Map::new();
        arguments.insert("task_name".into(), Value::from(task_name));
        arguments.insert("rate_limit".into(), Value::from(rate));
        self.call("rate_limit", arguments).await
    }

    /// Sends `method` with `arguments` and collects the replies.
    pub async fn call(
        &self,
        method: &str,
        arguments: Map<String, Value>,
    ) -> Result<Replies, ControlError> {
        let broadcast = self.broadcast()?;
        let client_id = uuid::Uuid::new_v4().to_string();
        let ticket = uuid::Uuid::new_v4().to_string();
        // Subscribed before the request goes out, so that no reply can come before.
        let mut replies = broadcast
            .subscribe(Binding {
                exchange: REPLY_EXCHANGE.to_owned(),
                kind: ExchangeKind::Direct,
                routing_key: client_id.clone(),
                queue: reply_queue(&client_id),
            })
            .await?;
        let mut request = self.request(method, arguments);
        request.ticket = Some(ticket.clone());
        request.reply_to = Some(ReplyTo {
            exchange: REPLY_EXCHANGE.to_owned(),
            routing_key: client_id,
        });
        broadcast
            .send(
                PIDBOX_EXCHANGE,
                ExchangeKind::Fanout,
                self.message(&request),
            )
            .await?;
        let limit = self.destination.as_ref().map(Vec::len);
        let mut collected = Replies::default();
        while limit.is_none_or(|limit| collected.len() < limit) {
            let Ok(Some(message)) = tokio::time::timeout(self.timeout, replies.next()).await else {
                break;
            };
            if let Some(clock) = message.headers.get("clock").and_then(Value::as_u64) {
                self.app.clock().adjust(clock);
            }
            if message.headers.get("ticket").and_then(Value::as_str) != Some(ticket.as_str()) {
                continue;
            }
            // A reply is `{node: value}`; anything else is not one and is skipped.
            if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&message.body) {
                collected.0.extend(body);
            }
        }
        Ok(collected)
    }

    /// Sends `method` with `arguments` without waiting for replies.
    pub async fn cast(
        &self,
        method: &str,
        arguments: Map<String, Value>,
    ) -> Result<(), ControlError> {
        let broadcast = self.broadcast()?;
        let request = self.request(method, arguments);
        broadcast
            .send(
                PIDBOX_EXCHANGE,
                ExchangeKind::Fanout,
                self.message(&request),
            )
            .await?;
        Ok(())
    }

    fn broadcast(&self) -> Result<std::sync::Arc<dyn crate::broadcast::Broadcast>, ControlError> {
        self.app
            .broker()
            .clone()
            .broadcast()
            .ok_or(ControlError::Unsupported)
    }

    fn request(&self, method: &str, arguments: Map<String, Value>) -> Request {
        let mut request = Request::new(method);
        request.arguments = arguments;
        request.destination = self.destination.clone();
        request
    }

    fn message(&self, request: &Request) -> BroadcastMessage {
        let expires = crate::events::unix_now() + self.timeout.as_secs_f64();
        BroadcastMessage::new("", request.encode())
            .header("clock", self.app.clock().forward())
            .header("expires", expires)
    }
}

/// The inspect commands: each returns every replying node's answer.
#[derive(Clone, Debug)]
pub struct Inspect {
    control: Control,
}

impl Inspect {
    async fn ask(&self, method: &str) -> Result<Replies, ControlError> {
        self.control.call(method, Map::new()).await
    }

    /// `stats`: counts per task, pid, uptime, pool, broker, prefetch.
    pub async fn stats(&self) -> Result<Replies, ControlError> {
        self.ask("stats").await
    }

    /// `active`: the tasks running now (`safe`: arguments as reprs).
    pub async fn active(&self, safe: bool) -> Result<Replies, ControlError> {
        let mut arguments = Map::new();
        arguments.insert("safe".into(), Value::from(safe));
        self.control.call("active", arguments).await
    }

    /// `reserved`: tasks received and not yet started.
    pub async fn reserved(&self) -> Result<Replies, ControlError> {
        self.ask("reserved").await
    }

    /// `scheduled`: tasks waiting for their eta.
    pub async fn scheduled(&self) -> Result<Replies, ControlError> {
        self.ask("scheduled").await
    }

    /// `revoked`: the ids each node holds as revoked.
    pub async fn revoked(&self) -> Result<Replies, ControlError> {
        self.ask("revoked").await
    }

    /// `registered`: the task names each node knows.
    pub async fn registered(&self) -> Result<Replies, ControlError> {
        self.ask("registered").await
    }

    /// `active_queues`: the queues each node consumes.
    pub async fn active_queues(&self) -> Result<Replies, ControlError> {
        self.ask("active_queues").await
    }

    /// `query_task`: what each node knows of these task ids.
    pub async fn query_task(&self, ids: &[&str]) -> Result<Replies, ControlError> {
        let mut arguments = Map::new();
        arguments.insert("ids".into(), Value::from(ids.to_vec()));
        self.control.call("query_task", arguments).await
    }

    /// `conf`: each node's configuration.
    pub async fn conf(&self) -> Result<Replies, ControlError> {
        self.ask("conf").await
    }
}
