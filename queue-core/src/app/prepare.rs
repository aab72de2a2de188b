//! [`App::prepare`]: a [`Signature`] becomes the protocol v2 message Celery would send
//! (routing, the task's declared defaults, eta from countdown, absolute expiry, headers).

use std::time::Duration;

use super::App;
use crate::broker::Publish;
use crate::error::Error;
use crate::protocol::{Embed, Headers, Message, Properties, TaskBody, TimeLimit, repr, time};
use crate::signature::Signature;

/// The largest per-message TTL (`expiration` property) RabbitMQ accepts: ten years, in
/// milliseconds (measured: one more is `PRECONDITION_FAILED - value_too_large`).
pub const MAX_MESSAGE_TTL_MS: i64 = 315_360_000_000;

/// Protocol v2 header names that a custom header may not take.
const RESERVED_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

impl App {
    /// Builds the message for `signature` and where it goes, without sending it: routing,
    /// the task's declared defaults, eta from countdown, absolute expiry, full Celery headers.
    pub fn prepare(&self, signature: Signature) -> Result<Publish, Error> {
        self.prepare_step(signature, Vec::new())
    }

    /// As [`App::prepare`], for a chain step: `chain` (next task last) rides in the
    /// message's `chain` field.
    pub fn prepare_step(
        &self,
        signature: Signature,
        chain: Vec<Signature>,
    ) -> Result<Publish, Error> {
        let Signature {
            name,
            args,
            kwargs,
            options,
            ..
        } = signature;
        let declared = self
            .inner
            .registry
            .get(&name)
            .map(|task| task.options.clone());
        let declared_queue = declared
            .as_ref()
            .and_then(|options| options.queue.as_deref());
        let queue = self
            .inner
            .router
            .route(&name, options.queue.as_deref(), declared_queue)
            .to_owned();
        let id = options
            .task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = time::now();
        // Deadlines past what Python's `datetime` holds are saturated at its maximum, so that
        // every worker can still read them; a countdown of zero or less runs at once.
        let eta = match (options.eta, options.countdown) {
            (Some(eta), _) => Some(time::clamp(eta)),
            (None, Some(seconds)) if seconds.is_nan() || seconds.is_infinite() => {
                return Err(Error::Config(format!(
                    "`countdown` must be a finite number of seconds, not {seconds}"
                )));
            }
            (None, Some(seconds)) if seconds > 0.0 => {
                time::seconds_duration(seconds).map(|delay| time::add(now, delay))
            }
            (None, _) => None,
        };
        let expires = options
            .expires
            .map(|expires| time::clamp(expires.resolve(now)));
        // Unset stays unset: on Redis, "no priority" is kombu's default list, where Python's
        // own tasks go, not our lowest priority.
        let priority = options
            .priority
            .or_else(|| declared.as_ref().and_then(|options| options.priority))
            .map(|priority| priority.min(crate::MAX_PRIORITY));
        let hard_limit = limit("time_limit", options.time_limit)?
            .or_else(|| declared.as_ref().and_then(|options| options.time_limit));
        let soft_limit = limit("soft_time_limit", options.soft_time_limit)?.or_else(|| {
            declared
                .as_ref()
                .and_then(|options| options.soft_time_limit)
        });
        let ignore_result = options.ignore_result.unwrap_or(false)
            || self.inner.ignore_result
            || declared
                .as_ref()
                .is_some_and(|options| options.ignore_result);

        let mut headers = Headers::new(name, id.clone());
        headers.eta = eta;
        headers.expires = expires;
        headers.retries = options.retries.unwrap_or(0);
        headers.timelimit = TimeLimit::new(hard_limit, soft_limit);
        headers.root_id = Some(options.root_id.clone().unwrap_or_else(|| id.clone()));
        headers.parent_id = options.parent_id.clone();
        headers.group = options.group_id.clone();
        headers.group_index = options.group_index;
        headers.shadow = options.shadow.clone();
        headers.argsrepr = Some(repr::args_repr(&args));
        headers.kwargsrepr = Some(repr::kwargs_repr(&kwargs));
        headers.origin = Some(self.inner.origin.clone());
        headers.ignore_result = Some(ignore_result);
        if let Some(reserved) = options
            .headers
            .keys()
            .find(|name| RESERVED_HEADERS.contains(&name.as_str()))
        {
            return Err(Error::Config(format!(
                "custom header {reserved:?} would overwrite a protocol header; set it through \
                 the signature's options instead"
            )));
        }
        headers.extra = options.headers.clone();

        // Past RabbitMQ's largest per-message TTL the publish would be refused (the channel
        // closed); the `expires` header alone then bounds the task, as the worker checks it.
        let expiration = expires
            .map(|at| (at - now).num_milliseconds().max(0))
            .filter(|milliseconds| *milliseconds <= MAX_MESSAGE_TTL_MS)
            .map(|milliseconds| milliseconds.to_string());
        let properties = Properties {
            correlation_id: Some(id),
            reply_to: Some(self.inner.reply_to.clone()),
            delivery_mode: Some(2),
            priority,
            expiration,
            extra: Default::default(),
        };
        let non_empty = |list: Vec<Signature>| (!list.is_empty()).then_some(list);
        let body = TaskBody {
            args,
            kwargs,
            embed: Some(Embed {
                callbacks: non_empty(options.link),
                errbacks: non_empty(options.link_error),
                chain: (!chain.is_empty()).then_some(chain),
                chord: options.chord.map(|body| *body),
            }),
        };
        Ok(Publish {
            queue,
            exchange: options.exchange,
            routing_key: options.routing_key,
            message: Message::new(headers, properties, &body),
        })
    }
}

/// A time limit option as a duration: a limit that is not a non-negative number of seconds
/// is refused (it would otherwise reach a panicking conversion); a huge one saturates.
fn limit(option: &str, seconds: Option<f64>) -> Result<Option<Duration>, Error> {
    seconds
        .map(|seconds| {
            time::seconds_duration(seconds).ok_or_else(|| {
                Error::Config(format!(
                    "`{option}` must be a non-negative number of seconds, not {seconds}"
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prepare_fills_celery_headers_and_properties() {
        let app = App::builder().build().await.unwrap();
        let publish = app
            .prepare(
                Signature::new("tasks.add")
                    .arg(2)
                    .kwarg("z", 1)
                    .priority(5)
                    .countdown(Duration::from_secs(10))
                    .expires_in(Duration::from_secs(60))
                    .time_limit(Duration::from_secs(30))
                    .soft_time_limit(Duration::from_secs(20)),
            )
            .unwrap();
        let message = &publish.message;
        assert_eq!(publish.queue, "celery");
        let headers = &message.headers;
        assert_eq!(headers.root_id.as_deref(), Some(headers.id.as_str()));
        assert_eq!(headers.argsrepr.as_deref(), Some("(2,)"));
        assert_eq!(headers.kwargsrepr.as_deref(), Some("{'z': 1}"));
        assert_eq!(headers.timelimit.hard(), Some(Duration::from_secs(30)));
        assert_eq!(headers.timelimit.soft(), Some(Duration::from_secs(20)));
        let eta = headers.eta.unwrap();
        let expires = headers.expires.unwrap();
        assert_eq!((expires - eta).num_seconds(), 50);
        assert_eq!(message.properties.priority, Some(5));
        assert_eq!(
            message.properties.correlation_id.as_deref(),
            Some(headers.id.as_str())
        );
        assert_eq!(message.properties.delivery_mode, Some(2));
        let expiration: i64 = message
            .properties
            .expiration
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59_000..=60_000).contains(&expiration), "{expiration}");
    }

    #[tokio::test]
    async fn custom_headers_cannot_overwrite_protocol_headers() {
        let app = App::builder().build().await.unwrap();
        let error = app
            .prepare(Signature::new("tasks.add").header("retries", 5))
            .unwrap_err();
        assert!(error.to_string().contains("\"retries\""), "{error}");
        let publish = app
            .prepare(Signature::new("tasks.add").header("traceparent", "00-abc"))
            .unwrap();
        assert_eq!(publish.message.headers.extra["traceparent"], "00-abc");
    }
}
