//! The LISTEN side of PostgreSQL waits: one connection per backend, subscribed to the
//! `celery_taskmeta` channel (the schema's trigger notifies it with the task id of every
//! write), fanning notifications out to the waiters of that id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::options::SqlOptions;
use crate::waiters::Waiters;

/// The channel the schema's trigger notifies.
pub const CHANNEL: &str = "celery_taskmeta";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenState {
    /// No attempt finished yet.
    Starting,
    /// Subscribed: every write from now on is notified.
    Listening,
    /// Not subscribed (server down, connection lost): waits poll until it comes back.
    Lost,
}

/// Started by the first wait, stopped with the backend.
#[derive(Debug)]
pub(crate) struct Listener {
    pool: PgPool,
    state: watch::Sender<ListenState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    /// A listener that will connect with `pool` (a pool of its own: its connection is held
    /// for as long as the backend lives).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            state: watch::Sender::new(ListenState::Starting),
            task: Mutex::new(None),
        }
    }

    pub fn is_listening(&self) -> bool {
        *self.state.borrow() == ListenState::Listening
    }

    /// Starts listening if nobody did yet, and waits (at most until `deadline`) for the first
    /// attempt to subscribe, so that a wait reads the row only once writes are notified.
    pub async fn ready(&self, waiters: &Arc<Waiters>, deadline: Instant) {
        let mut state = self.state.subscribe();
        {
            let mut task = self
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Not started yet, or ended with the runtime that ran it (a backend kept across
            // runtimes, as in tests): (re)start it.
            if task.as_ref().is_none_or(JoinHandle::is_finished) {
                self.state.send_replace(ListenState::Starting);
                *task = Some(tokio::spawn(listen(
                    self.pool.clone(),
                    waiters.clone(),
                    self.state.clone(),
                )));
            }
        }
        let started = state.wait_for(|state| *state != ListenState::Starting);
        let _ = tokio::time::timeout_at(deadline, started).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Subscribes, forwards notifications, and resubscribes after losing the connection; every
/// change of subscription wakes all waiters, which re-read what they may have missed.
async fn listen(pool: PgPool, waiters: Arc<Waiters>, state: watch::Sender<ListenState>) {
    let mut failures: u32 = 0;
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                if failures > 0 {
                    info!(channel = CHANNEL, "result notifications resumed");
                } else {
                    debug!(channel = CHANNEL, "listening for result notifications");
                }
                failures = 0;
                state.send_replace(ListenState::Listening);
                waiters.notify_all();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => waiters.notify(notification.payload()),
                        // Lost and already resubscribed by sqlx: what was written in between
                        // was not notified.
                        Ok(None) => {
                            info!(
                                channel = CHANNEL,
                                "LISTEN connection lost and re-established"
                            );
                            waiters.notify_all();
                        }
                        Err(error) => {
                            warn!(%error, channel = CHANNEL, "LISTEN connection lost; waits poll until it is back");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                if failures == 0 {
                    warn!(%error, channel = CHANNEL, "cannot LISTEN for results; waits poll until it can");
                }
            }
        }
        state.send_replace(ListenState::Lost);
        waiters.notify_all();
        failures = failures.saturating_add(1);
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

fn reconnect_delay(failures: u32) -> Duration {
    SqlOptions::retry_delay(failures).max(Duration::from_millis(100))
}
