//! The scheduler's loop: hold (or wait for) the lease, send the due ticks while holding it,
//! report, sleep until the next tick or renewal.
//!
//! A tick is sent only after the store recorded it under our fencing token
//! ([`Lease::claim_tick`]), so a tick is never sent twice: not by two leaders, not by a
//! leader that lost its lease without knowing. A leader stops sending as soon as its renewal
//! fails, its local deadline passes (the store unreachable), or a claim finds the lease gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use queue_core::App;
use queue_core::lease::{Lease, LeaseGrant, TickClaim};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::beat::Beat;
use crate::due::due;
use crate::entry::Entry;
use crate::report::Reporter;
use crate::status::{BeatStatus, SentTick};
use crate::tick::tick_id;

/// The pause before trying a due tick again after the store failed to record it.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A held lease and until when we may act on it: the holding's ttl counted from before the
/// request that granted it, less a margin, so we stop before the store lets it go.
struct Holding {
    grant: LeaseGrant,
    valid_until: Instant,
}

struct EntryState {
    entry: Entry,
    /// The last tick sent (or passed over); `None` only for a one-off never sent.
    cursor: Option<DateTime<Utc>>,
    last_tick: Option<DateTime<Utc>>,
}

pub(crate) struct Runner {
    app: App,
    lease: Arc<dyn Lease>,
    name: String,
    holder: String,
    ttl: Duration,
    late_window: Duration,
    entries: Vec<EntryState>,
    holding: Option<Holding>,
    status: watch::Sender<BeatStatus>,
    sent: broadcast::Sender<SentTick>,
    reporter: Option<Reporter>,
    /// After a store error on a due tick: no new attempt before this (not a hot loop on a
    /// store that is down).
    retry_after: Option<Instant>,
}

impl Runner {
    pub(crate) fn new(
        app: App,
        lease: Arc<dyn Lease>,
        beat: &Beat,
        holder: String,
        status: watch::Sender<BeatStatus>,
        sent: broadcast::Sender<SentTick>,
    ) -> Self {
        let reporter = beat
            .send_events
            .then(|| Reporter::new(&app, &holder))
            .flatten();
        Self {
            lease,
            name: beat.name.clone(),
            ttl: beat.lease_ttl,
            late_window: beat.late_window.unwrap_or(beat.lease_ttl * 2),
            entries: beat
                .entries
                .iter()
                .map(|entry| EntryState {
                    entry: entry.clone(),
                    cursor: None,
                    last_tick: None,
                })
                .collect(),
            holding: None,
            holder,
            status,
            sent,
            reporter,
            retry_after: None,
            app,
        }
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            schedule = %self.name,
            holder = %self.holder,
            entries = self.entries.len(),
            lease_ttl = ?self.ttl,
            "beat started"
        );
        let renew_every = self.ttl / 3;
        let mut renew_at = Instant::now();
        loop {
            if Instant::now() >= renew_at {
                renew_at = Instant::now() + renew_every;
                self.renew().await;
                self.publish_status();
                self.report().await;
            }
            // Past the local deadline without a renewal: not leading any more, before the
            // store can give the lease to another instance.
            if self.holding.is_some() {
                self.drop_expired();
                self.publish_status();
            }
            if self.holding.is_some() {
                self.send_due(&shutdown).await;
                self.publish_status();
            }
            let mut wake = self.next_wake().map_or(renew_at, |tick| tick.min(renew_at));
            if let Some(retry_after) = self.retry_after.take() {
                wake = wake.max(retry_after.min(renew_at));
            }
            if let Some(holding) = &self.holding {
                wake = wake.min(holding.valid_until);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = shutdown.cancelled() => break,
            }
        }
        if let Some(holding) = self.holding.take() {
            match self.lease.release(&holding.grant).await {
                Ok(()) => {
                    tracing::info!(schedule = %self.name, holder = %self.holder, "beat stopped; lease given up")
                }
                Err(error) => {
                    tracing::warn!(schedule = %self.name, %error, "beat stopped; the lease could not be given up and expires by itself")
                }
            }
        } else {
            tracing::info!(schedule = %self.name, holder = %self.holder, "beat stopped");
        }
        self.publish_status();
        self.report().await;
    }

    async fn report(&self) {
        if let Some(reporter) = &self.reporter {
            let status = self.status.borrow().clone();
            reporter.heartbeat(&status).await;
        }
    }

    /// Takes or renews the lease; on a new holding, loads the entries' last ticks.
    async fn renew(&mut self) {
        let started = Instant::now();
        match self.lease.acquire(&self.name, &self.holder, self.ttl).await {
            Ok(Some(grant)) => {
                let valid_until = started + self.ttl - self.ttl / 10;
                let new = self
                    .holding
                    .as_ref()
                    .is_none_or(|holding| holding.grant.token != grant.token);
                if new {
                    if let Err(error) = self.load_ticks().await {
                        tracing::warn!(schedule = %self.name, %error, "beat: cannot read the last ticks; not leading yet");
                        let _ = self.lease.release(&grant).await;
                        self.holding = None;
                        return;
                    }
                    tracing::info!(
                        schedule = %self.name,
                        holder = %self.holder,
                        token = grant.token,
                        "beat leads: this instance sends the schedule"
                    );
                }
                self.holding = Some(Holding { grant, valid_until });
            }
            Ok(None) => {
                if let Some(holding) = self.holding.take() {
                    tracing::warn!(schedule = %self.name, holder = %self.holder, token = holding.grant.token, "beat lost its lease; stopped sending");
                }
                if tracing::enabled!(tracing::Level::DEBUG) {
                    self.log_leader().await;
                }
            }
            Err(error) => {
                tracing::warn!(schedule = %self.name, %error, "beat: lease store unavailable");
                self.drop_expired();
            }
        }
    }

    async fn log_leader(&self) {
        if let Ok(Some(leader)) = self.lease.holder(&self.name).await {
            tracing::debug!(schedule = %self.name, leader = %leader.holder, token = leader.token, "beat follows");
        }
    }

    fn drop_expired(&mut self) {
        if self
            .holding
            .as_ref()
            .is_some_and(|holding| Instant::now() >= holding.valid_until)
        {
            self.holding = None;
            tracing::warn!(schedule = %self.name, holder = %self.holder, "beat could not renew its lease in time; stopped sending");
        }
    }

    async fn load_ticks(&mut self) -> Result<(), queue_core::lease::LeaseError> {
        let stored: HashMap<String, DateTime<Utc>> = self.lease.last_ticks(&self.name).await?;
        let now = Utc::now();
        for state in &mut self.entries {
            state.last_tick = stored.get(state.entry.name()).copied();
            // An entry never sent starts from now (it does not run for the past), except a
            // one-off, whose one time may be due.
            state.cursor = match state.last_tick {
                Some(tick) => Some(tick),
                None if state.entry.schedule().is_once() => None,
                None => state.cursor.or(Some(now)),
            };
        }
        Ok(())
    }

    fn next_wake(&self) -> Option<Instant> {
        self.holding.as_ref()?;
        let now = Utc::now();
        let next = self
            .entries
            .iter()
            .filter_map(|state| match state.cursor {
                Some(cursor) => state.entry.schedule().next_after(cursor),
                None => state
                    .entry
                    .schedule()
                    .latest_at_or_before(now)
                    .or_else(|| state.entry.schedule().next_after(now)),
            })
            .min()?;
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        Some(Instant::now() + wait)
    }

    async fn send_due(&mut self, shutdown: &CancellationToken) {
        let now = Utc::now();
        for index in 0..self.entries.len() {
            let state = &self.entries[index];
            let due = due(
                state.entry.schedule(),
                state.cursor,
                now,
                self.late_window,
                state.entry.missed_policy(),
            );
            if let Some(through) = due.skipped_through {
                tracing::warn!(
                    schedule = %self.name,
                    entry = state.entry.name(),
                    through = %through,
                    "beat: missed ticks passed over (older than the late window)"
                );
                self.entries[index].cursor = Some(through);
            }
            for tick in due.send {
                if shutdown.is_cancelled() || !self.may_send().await {
                    return;
                }
                if !self.send_tick(index, tick).await {
                    return;
                }
            }
        }
    }

    /// Whether the holding is still ours by the local deadline (renewing first when close).
    async fn may_send(&mut self) -> bool {
        let Some(holding) = &self.holding else {
            return false;
        };
        if Instant::now() + self.ttl / 3 >= holding.valid_until {
            self.renew().await;
        }
        self.drop_expired();
        self.holding.is_some()
    }

    /// Claims and sends one tick; `false` when this instance must stop sending for now.
    async fn send_tick(&mut self, index: usize, tick: DateTime<Utc>) -> bool {
        let Some(holding) = &self.holding else {
            return false;
        };
        let grant = holding.grant.clone();
        let valid_until = holding.valid_until;
        let entry = self.entries[index].entry.clone();
        match self.lease.claim_tick(&grant, entry.name(), tick).await {
            Ok(TickClaim::Claimed) => {}
            Ok(TickClaim::AlreadyClaimed) => {
                tracing::debug!(schedule = %self.name, entry = entry.name(), %tick, "beat: tick already sent");
                self.advance(index, tick);
                return true;
            }
            Ok(TickClaim::LeaseLost) => {
                tracing::warn!(schedule = %self.name, holder = %self.holder, token = grant.token, "beat lost its lease; stopped sending");
                self.holding = None;
                return false;
            }
            Err(error) => {
                tracing::warn!(schedule = %self.name, entry = entry.name(), %error, "beat: cannot record the tick; retrying");
                self.retry_after = Some(Instant::now() + RETRY_PAUSE);
                return false;
            }
        }
        self.advance(index, tick);
        let id = tick_id(&self.name, entry.name(), tick);
        let signature = entry.signature().clone().task_id(id.clone());
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.app.send(signature.clone()).await {
                Ok(_) => break,
                // Same task id on every attempt: a retried publish is the same tick.
                Err(error) if Instant::now() + backoff < valid_until => {
                    tracing::warn!(schedule = %self.name, entry = entry.name(), task_id = %id, %error, "beat: sending the tick failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(schedule = %self.name, entry = entry.name(), task_id = %id, %tick, %error, "beat: tick recorded but not sent; it is lost");
                    return true;
                }
            }
        }
        tracing::info!(
            schedule = %self.name,
            entry = entry.name(),
            task = %entry.signature().name,
            task_id = %id,
            scheduled = %tick,
            "beat sent tick"
        );
        let _ = self.sent.send(SentTick {
            entry: entry.name().to_owned(),
            scheduled: tick,
            tick_id: id,
            token: grant.token,
        });
        true
    }

    fn advance(&mut self, index: usize, tick: DateTime<Utc>) {
        let state = &mut self.entries[index];
        state.cursor = Some(state.cursor.map_or(tick, |cursor| cursor.max(tick)));
        state.last_tick = Some(state.last_tick.map_or(tick, |last| last.max(tick)));
    }

    fn publish_status(&self) {
        let now = Utc::now();
        let holding = self.holding.as_ref();
        self.status.send_modify(|status| {
            status.leading = holding.is_some();
            status.token = holding.map(|holding| holding.grant.token);
            for (shown, state) in status.entries.iter_mut().zip(&self.entries) {
                shown.last_tick = state.last_tick;
                shown.next_tick = match state.cursor {
                    Some(cursor) => state.entry.schedule().next_after(cursor.max(
                        now - chrono::Duration::from_std(self.late_window).unwrap_or_default(),
                    )),
                    None => state.entry.schedule().next_after(now),
                };
            }
        });
    }
}
