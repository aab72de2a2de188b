//! The worker's fetch loop: consume with backoff while the broker is down, fetch only for
//! free slots (plus `prefetch`), start each delivery in a slot, and at shutdown give back
//! what was fetched but not started, then wait for what runs.

use std::collections::VecDeque;
use std::sync::Arc;

use queue_core::{ConsumeOptions, Consumer, Delivery};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::runtime::Runtime;
use crate::{Worker, execute, reconnect_backoff};

impl Worker {
    /// Starts consuming, retrying with backoff while the broker is unavailable.
    pub(crate) async fn connect(&self, warm: &CancellationToken) -> Option<Arc<dyn Consumer>> {
        let options = ConsumeOptions::new(self.queues.clone())
            .order(self.order.clone())
            .prefetch(self.concurrency.saturating_add(self.prefetch));
        let backoff = reconnect_backoff();
        let mut attempt = 0;
        loop {
            for queue in &self.queues {
                if let Err(error) = self.app.broker().declare_queue(queue).await {
                    debug!(%error, queue, "declare failed");
                }
            }
            match self.app.broker().consume(options.clone()).await {
                Ok(consumer) => return Some(consumer),
                Err(error) => {
                    let delay = backoff.delay_for(attempt);
                    attempt += 1;
                    error!(%error, ?delay, attempt, "cannot consume; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = warm.cancelled() => return None,
                    }
                }
            }
        }
    }

    pub(crate) fn spawn_background(
        &self,
        runtime: &Arc<Runtime>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let renew = {
            let runtime = runtime.clone();
            let interval = self.renew_interval;
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let tags = runtime.in_flight_tags();
                    if !tags.is_empty() {
                        if let Err(error) = runtime.consumer.renew(&tags).await {
                            warn!(%error, count = tags.len(), "renewing visibility failed");
                        }
                    }
                }
            })
        };
        let mut tasks = vec![renew];
        if let Some(backend) = self.app.backend().cloned() {
            let interval = self.cleanup_interval;
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                loop {
                    ticker.tick().await;
                    match backend.cleanup_expired().await {
                        Ok(0) => {}
                        Ok(removed) => info!(removed, "expired results removed"),
                        Err(error) => warn!(%error, "result cleanup failed"),
                    }
                }
            }));
        }
        tasks
    }

    /// Fetches only for free slots (plus `prefetch`), starts each delivery in a slot, and on
    /// shutdown gives back what was fetched but not started, then waits for running tasks.
    pub(crate) async fn consume_loop(&self, runtime: &Arc<Runtime>, warm: &CancellationToken) {
        let slots = runtime.slots.semaphore().clone();
        let mut buffer: VecDeque<Delivery> = VecDeque::new();
        let mut running = JoinSet::new();
        let backoff = reconnect_backoff();
        let mut failures = 0;
        loop {
            let permit = tokio::select! {
                biased;
                () = warm.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            };
            while running.try_join_next().is_some() {}
            if buffer.is_empty() {
                let want = (slots.available_permits() + 1).saturating_add(self.prefetch);
                // `fetch` is cancel-safe (see `Consumer::fetch`): shutdown need not wait for it.
                let fetched = tokio::select! {
                    biased;
                    () = warm.cancelled() => break,
                    fetched = runtime.consumer.fetch(want, self.fetch_wait) => fetched,
                };
                match fetched {
                    Ok(deliveries) => {
                        failures = 0;
                        for delivery in &deliveries {
                            runtime.stats.received.increment();
                            runtime.track(delivery);
                        }
                        buffer.extend(deliveries);
                    }
                    Err(error) => {
                        let delay = backoff.delay_for(failures);
                        failures += 1;
                        error!(%error, ?delay, "fetch failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = warm.cancelled() => break,
                        }
                    }
                }
            }
            if warm.is_cancelled() {
                break;
            }
            let Some(delivery) = buffer.pop_front() else {
                continue;
            };
            let runtime = runtime.clone();
            running.spawn(async move {
                let tag = delivery.tag.clone();
                execute::handle(runtime.clone(), delivery).await;
                runtime.untrack(&tag);
                drop(permit);
            });
        }
        info!(
            running = running.len(),
            buffered = buffer.len(),
            "warm shutdown: no new tasks"
        );
        for delivery in buffer {
            runtime.reject(&delivery, true).await;
            runtime.untrack(&delivery.tag);
        }
        let finished = tokio::time::timeout(self.shutdown_timeout, async {
            while running.join_next().await.is_some() {}
        });
        tokio::select! {
            result = finished => {
                if result.is_err() {
                    warn!(timeout = ?self.shutdown_timeout, "shutdown timeout: going cold");
                }
            }
            () = runtime.cold.cancelled() => {}
        }
        if !running.is_empty() {
            runtime.cold.cancel();
            info!(
                running = running.len(),
                "cold shutdown: requeueing unfinished tasks"
            );
            while running.join_next().await.is_some() {}
        }
    }
}
