//! Live updates: `/api/live` streams Server-Sent Events; a ticker coalesces what changed
//! (tasks, workers, beat instances) and the rates into one message of each kind per
//! `live_interval`, so a burst of events costs the browsers one message, not thousands.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::ingest::pollers::every;
use crate::state::{LiveMessage, MonitorState, now};

pub(crate) fn router() -> Router<MonitorState> {
    Router::new().route("/api/live", get(live))
}

async fn live(
    State(state): State<MonitorState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.subscribe_live();
    let hello = json!({ "now": now(), "broker": state.broker_url() }).to_string();
    let first =
        futures::stream::once(async move { Ok(SseEvent::default().event("hello").data(hello)) });
    let updates = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(LiveMessage { event, data }) => SseEvent::default().event(event).data(&*data),
            Err(RecvError::Lagged(missed)) => SseEvent::default()
                .event("lagged")
                .data(json!({ "missed": missed }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    use futures::StreamExt;
    // Ends when the monitor stops, so that a graceful shutdown does not wait on browsers.
    let mut stopping = state.stopping();
    let stopped = async move { crate::stopped(&mut stopping).await };
    Sse::new(first.chain(updates).take_until(Box::pin(stopped))).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}

/// Sends the coalesced updates every `live_interval` until `stop`.
pub(crate) async fn ticker(state: MonitorState, stop: watch::Receiver<bool>) {
    let mut last_tick = now();
    let mut last_events = state.events_received();
    let mut last_totals = (0u64, 0u64);
    every(state.settings().live_interval, stop, || {
        let state = state.clone();
        let tick_start = last_tick;
        let now = now();
        last_tick = now;
        let elapsed = (now - tick_start).max(1e-3);
        let events = state.events_received();
        let events_per_second = (events - last_events.min(events)) as f64 / elapsed;
        last_events = events;
        let (tasks, missed, workers, online, totals) = {
            let mut cluster = state.cluster();
            let (tasks, missed) = cluster.take_dirty_tasks();
            let workers = cluster.take_dirty_workers(tick_start, now);
            let online = cluster
                .workers()
                .values()
                .filter(|worker| worker.online(now))
                .count();
            let totals = cluster.overview().totals();
            (tasks, missed, workers, online, totals)
        };
        let beat = {
            let mut board = state.beat();
            board.take_changed(tick_start, now).then(|| board.json(now))
        };
        let finished = totals.succeeded + totals.failed;
        let tasks_per_second = (finished - last_totals.0.min(finished)) as f64 / elapsed;
        let failures_per_second =
            (totals.failed - last_totals.1.min(totals.failed)) as f64 / elapsed;
        last_totals = (finished, totals.failed);
        async move {
            for worker in &workers {
                if !worker.alive(now) {
                    state.metrics().worker_expired(&worker.hostname);
                }
            }
            if !tasks.is_empty() {
                let summaries: Vec<Value> = tasks.iter().map(|task| task.summary_json()).collect();
                state.publish_live("tasks", &json!({ "tasks": summaries, "more": missed }));
            }
            if !workers.is_empty() {
                let summaries: Vec<Value> = workers
                    .iter()
                    .map(|worker| worker.summary_json(now))
                    .collect();
                state.publish_live("workers", &json!({ "workers": summaries }));
            }
            if let Some(beat) = beat {
                state.publish_live("beat", &beat);
            }
            state.publish_live(
                "stats",
                &json!({
                    "now": now,
                    "workers_online": online,
                    "events_per_second": events_per_second,
                    "tasks_per_second": tasks_per_second,
                    "failures_per_second": failures_per_second,
                    "events_dropped": state.events_dropped(),
                    "store_dropped": state.store().dropped(),
                }),
            );
        }
    })
    .await;
}
