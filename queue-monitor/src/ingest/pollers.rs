//! What the monitor asks on an interval: the workers (inspect, as Flower's `Inspector`, and
//! `enable_events`, as Flower's events timer), the broker (queue backlog), and the history
//! (pruning).

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::queues::{self, Reading};
use super::worker::INSPECT_METHODS;
use crate::metrics::QueueGauges;
use crate::state::{MonitorState, now};
use crate::store::Write;

/// Dead letters counted per queue when the broker has no backlog stats.
const DEAD_LETTERS_COUNTED: usize = 1000;

/// Runs `tick` every `period` until `stop`.
pub(crate) async fn every<F, Fut>(
    period: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period.max(std::time::Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

/// Asks the workers (all, or `destination`) every inspect method and records the answers.
/// Fails only when the broker cannot broadcast.
pub async fn inspect(
    state: &MonitorState,
    destination: Option<&str>,
) -> Result<(), queue_core::control::ControlError> {
    let mut control = state
        .app()
        .control()
        .timeout(state.settings().inspect_timeout);
    if let Some(destination) = destination {
        control = control.destination([destination]);
    }
    if state.settings().enable_events && destination.is_none() {
        // As Flower: workers started without -E send task events from now on.
        control.cast("enable_events", Map::new()).await?;
    }
    let calls = INSPECT_METHODS.iter().map(|method| {
        let control = control.clone();
        async move {
            let mut arguments = Map::new();
            if *method == "active" {
                arguments.insert("safe".into(), Value::from(true));
            }
            (*method, control.call(method, arguments).await)
        }
    });
    let answers = join_all(calls).await;
    let now = now();
    let mut changed = BTreeSet::new();
    for (method, answer) in answers {
        let replies = match answer {
            Ok(replies) => replies,
            Err(error) => {
                tracing::debug!(method, error = %crate::redact::text(&error.to_string()), "inspect failed");
                continue;
            }
        };
        let mut cluster = state.cluster();
        for (node, reply) in replies.0 {
            // A node that does not know the method answers {"error": …}: nothing to keep.
            if reply
                .as_object()
                .is_some_and(|object| object.len() == 1 && object.contains_key("error"))
            {
                continue;
            }
            cluster.inspected(&node, method, reply, now);
            changed.insert(node);
        }
    }
    let cluster = state.cluster();
    for node in changed {
        if let Some(worker) = cluster.workers().get(&node) {
            state.store().write(Write::Worker(Box::new(worker.clone())));
        }
    }
    Ok(())
}

/// The queues to read: given ones, the app's default, those the workers consume, those the
/// broker names, and those seen before.
async fn queue_names(state: &MonitorState) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = state.extra_queues().iter().cloned().collect();
    names.insert(state.app().router().default_queue().to_owned());
    names.extend(state.queues().names());
    for worker in state.cluster().workers().values() {
        names.extend(worker.queues());
    }
    if let Ok(known) = state.app().broker().known_queues().await {
        names.extend(known.names);
    }
    names.into_iter().take(queues::QUEUES_KEPT).collect()
}

/// Reads every known queue once: records, flags, gauges, history, live update.
pub async fn read_queues(state: &MonitorState) {
    let names = queue_names(state).await;
    let broker = state.app().broker().clone();
    let now_time = chrono::Utc::now().fixed_offset();
    let readings = join_all(names.iter().map(|name| {
        let broker = broker.clone();
        async move {
            (
                name,
                queues::read(broker.as_ref(), name, now_time, DEAD_LETTERS_COUNTED).await,
            )
        }
    }))
    .await;
    let now = now();
    let settings = state.settings();
    let backlog = settings.backlog_threshold;
    let age = settings.oldest_age_threshold.as_secs_f64();
    let consumers = consumers(state);
    let mut live = Vec::new();
    {
        let mut board = state.queues();
        for (name, outcome) in readings {
            let outcome: Result<Reading, _> = outcome.as_ref().map(Clone::clone);
            let Some(view) = board.record(name, now, outcome, backlog, age) else {
                continue;
            };
            if view.updated == Some(now) {
                state
                    .store()
                    .write(Write::QueueSample(queues::sample(name, now, &view.reading)));
                state.metrics().queue(&QueueGauges {
                    queue: name,
                    by_priority: view
                        .reading
                        .by_priority
                        .iter()
                        .map(|(p, c)| (*p, *c))
                        .collect(),
                    messages: view.reading.messages,
                    oldest_age: view.reading.oldest_age,
                    delayed: view.reading.delayed,
                    dead_letters: view.reading.dead_letters,
                    flagged: !view.flags.is_empty(),
                });
            }
            let empty = Vec::new();
            live.push(view.json(consumers.get(name).unwrap_or(&empty), false));
        }
    }
    state
        .metrics()
        .sync_dropped(state.events_dropped(), state.store().dropped());
    state.publish_live("queues", &json!({ "now": now, "queues": live }));
}

/// The workers consuming each queue (from their `active_queues`).
pub fn consumers(state: &MonitorState) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut consumers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let now = now();
    for worker in state.cluster().workers().values() {
        if !worker.online(now) {
            continue;
        }
        for queue in worker.queues() {
            consumers
                .entry(queue)
                .or_default()
                .push(worker.hostname.clone());
        }
    }
    consumers
}

/// Prunes the history to its bounds.
pub async fn prune(state: &MonitorState) {
    let settings = state.settings();
    let bounds = crate::store::Bounds {
        max_tasks: settings.history_max_tasks,
        max_events: settings.history_max_events,
        max_age: settings.history_max_age,
    };
    match state.store().prune(bounds, now()).await {
        Ok((tasks, events)) if tasks + events > 0 => {
            tracing::debug!(tasks, events, "history pruned");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "history: pruning failed"),
    }
}
