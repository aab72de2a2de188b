//! [`Beat`]: the builder of a periodic scheduler, and [`BeatHandle`] of a running one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use queue_core::App;
use queue_core::Signature;
use queue_core::lease::{Lease, MemoryLease};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::entry::Entry;
use crate::error::BeatError;
use crate::leader::Runner;
use crate::schedule::Schedule;
use crate::status::{BeatStatus, SentTick};

/// The default name of a schedule, and of its lease: Celery's beat.
pub const DEFAULT_NAME: &str = "celery.beat";
/// The default lease: a leader killed is replaced within two of these.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// A periodic scheduler. Run one on every node: the instance holding the lease sends each
/// tick, once; the others wait to take over.
///
/// ```
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use queue_beat::Beat;
/// use queue_core::{App, Signature};
/// let app = App::builder().broker("memory://").build().await?;
/// let beat = Beat::new(app)
///     .every("ping", Duration::from_secs(30), Signature::new("tasks.ping"))
///     .cron("nightly", "0 3 * * *", chrono_tz::Europe::Berlin, Signature::new("reports.nightly"));
/// let handle = beat.start().await?;
/// assert_eq!(handle.status().entries.len(), 2);
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Beat {
    app: App,
    pub(crate) name: String,
    pub(crate) entries: Vec<Entry>,
    pub(crate) lease: Option<Arc<dyn Lease>>,
    pub(crate) lease_ttl: Duration,
    pub(crate) late_window: Option<Duration>,
    pub(crate) send_events: bool,
    pub(crate) holder: Option<String>,
    error: Option<BeatError>,
}

impl Beat {
    /// A scheduler sending through `app`, with no entries yet.
    pub fn new(app: App) -> Self {
        Self {
            app,
            name: DEFAULT_NAME.to_owned(),
            entries: Vec::new(),
            lease: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            late_window: None,
            send_events: false,
            holder: None,
            error: None,
        }
    }

    /// The schedule's name: beats of one name share one lease and one state. Default
    /// [`DEFAULT_NAME`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds an entry.
    pub fn entry(mut self, entry: Entry) -> Self {
        if self
            .entries
            .iter()
            .any(|known| known.name() == entry.name())
        {
            self.error
                .get_or_insert(BeatError::DuplicateEntry(entry.name().to_owned()));
        }
        self.entries.push(entry);
        self
    }

    /// Adds an entry sending `signature` every `interval` (on multiples of it since the Unix
    /// epoch).
    pub fn every(
        self,
        name: impl Into<String>,
        interval: Duration,
        signature: impl Into<Signature>,
    ) -> Self {
        let name = name.into();
        match Schedule::every(interval) {
            Ok(schedule) => self.entry(Entry::new(name, schedule, signature)),
            Err(error) => self.fail(name, error),
        }
    }

    /// Adds an entry sending `signature` at the times of a cron expression read in `zone`
    /// (see [`Schedule::cron`]). An invalid expression is reported by
    /// [`start`](Self::start).
    pub fn cron(
        self,
        name: impl Into<String>,
        expression: &str,
        zone: Tz,
        signature: impl Into<Signature>,
    ) -> Self {
        let name = name.into();
        match Schedule::cron(expression, zone) {
            Ok(schedule) => self.entry(Entry::new(name, schedule, signature)),
            Err(error) => self.fail(name, error),
        }
    }

    /// Adds an entry sending `signature` once, at `when`.
    pub fn once<Z: TimeZone>(
        self,
        name: impl Into<String>,
        when: DateTime<Z>,
        signature: impl Into<Signature>,
    ) -> Self {
        self.entry(Entry::new(name, Schedule::once(when), signature))
    }

    fn fail(mut self, entry: String, error: crate::schedule::ScheduleError) -> Self {
        self.error.get_or_insert(BeatError::Schedule {
            entry,
            source: error,
        });
        self
    }

    /// The store of the lease and the entries' last ticks. Default: the app's result backend
    /// when it is Redis, PostgreSQL or SQLite, else its broker when it is Redis; with both in
    /// memory, a lease in this process only.
    pub fn lease(mut self, lease: Arc<dyn Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How long a holding of the lease lasts unless renewed (every third of it). Default
    /// [`DEFAULT_LEASE_TTL`]. A leader that dies is replaced within twice this.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(300));
        self
    }

    /// How old a tick may be and still be sent as itself (late): a tick older than this was
    /// missed and follows its entry's [`Missed`](crate::Missed) policy. Default: twice the
    /// lease, so that a failover loses no tick.
    pub fn late_window(mut self, window: Duration) -> Self {
        self.late_window = Some(window);
        self
    }

    /// Sends `beat-heartbeat` events (who leads, the schedule and its next runs) on the
    /// broker's event exchange, for `queue monitor` and `queue events`. Off by default.
    pub fn send_events(mut self, enabled: bool) -> Self {
        self.send_events = enabled;
        self
    }

    /// This instance's id in the lease. Default: `beat-<pid>-<random>@<host name>`.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The schedule and its next `count` fire times after `after`, without sending anything
    /// or touching a store (`queue beat --dry-run`).
    pub fn upcoming(
        &self,
        after: DateTime<Utc>,
        count: usize,
    ) -> Vec<(&Entry, Vec<DateTime<Utc>>)> {
        self.entries
            .iter()
            .map(|entry| (entry, entry.schedule().upcoming(after, count)))
            .collect()
    }

    /// Checks the entries, resolves the store and starts the scheduler on the runtime.
    pub async fn start(mut self) -> Result<BeatHandle, BeatError> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let lease = match self.lease.take() {
            Some(lease) => lease,
            None => default_lease(&self.app).await?,
        };
        let holder = self.holder.take().unwrap_or_else(default_holder);
        let (status_sender, status) = watch::channel(BeatStatus::new(&self, &holder));
        let (sent, _) = broadcast::channel(1024);
        let shutdown = CancellationToken::new();
        let runner = Runner::new(
            self.app.clone(),
            lease,
            &self,
            holder,
            status_sender,
            sent.clone(),
        );
        let task = tokio::spawn(runner.run(shutdown.clone()));
        Ok(BeatHandle {
            status,
            sent,
            shutdown,
            task,
        })
    }

    /// Runs until Ctrl-C or SIGTERM, then gives the lease up so another beat takes over at
    /// once.
    pub async fn run(self) -> Result<(), BeatError> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `stop` completes, then gives the lease up.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), BeatError> {
        let handle = self.start().await?;
        stop.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A running scheduler.
pub struct BeatHandle {
    status: watch::Receiver<BeatStatus>,
    sent: broadcast::Sender<SentTick>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BeatHandle {
    /// Who leads, and every entry's last and next tick, as of now.
    pub fn status(&self) -> BeatStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `condition` (e.g. this instance leads).
    pub async fn wait_for(&mut self, condition: impl FnMut(&BeatStatus) -> bool) -> BeatStatus {
        if let Ok(status) = self.status.wait_for(condition).await {
            return status.clone();
        }
        self.status.borrow().clone()
    }

    /// A receiver of every change of [`status`](Self::status), to await one among several
    /// beats (`watch::Receiver::wait_for`).
    pub fn status_watch(&self) -> watch::Receiver<BeatStatus> {
        self.status.clone()
    }

    /// The ticks this instance sends from now on.
    pub fn sent(&self) -> broadcast::Receiver<SentTick> {
        self.sent.subscribe()
    }

    /// Stops at once without giving the lease up, as a crash would: another beat takes
    /// over when the lease expires (for tests of failover, and for abandoning a beat whose
    /// store is gone).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops sending, gives the lease up and waits for the scheduler to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

async fn default_lease(app: &App) -> Result<Arc<dyn Lease>, BeatError> {
    for url in [app.backend_url(), app.broker_url()].into_iter().flatten() {
        if url.scheme() == "memory" {
            continue;
        }
        match queue_core::connect::connect_lease(url, &[]).await {
            Ok(lease) => return Ok(lease),
            Err(error) => tracing::debug!(url = %url, %error, "no lease store here"),
        }
    }
    let remote = [app.backend_url(), app.broker_url()]
        .into_iter()
        .flatten()
        .any(|url| url.scheme() != "memory");
    if remote {
        return Err(BeatError::NoLeaseStore);
    }
    tracing::warn!("beat lease in memory: only beats in this process share it");
    Ok(Arc::new(MemoryLease::new()))
}

fn default_holder() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "beat-{}-{}@{}",
        std::process::id(),
        &random[..6],
        queue_core::app::hostname()
    )
}

async fn shutdown_signal() {
    match queue_core::signal::SignalListener::install() {
        Ok(mut signals) => signals.next().await,
        Err(error) => {
            tracing::warn!(%error, "beat: cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
