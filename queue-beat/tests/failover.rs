//! Several beats in one process on the memory broker and a shared memory lease: each tick
//! is sent once while leaders are killed, and a leader cut off from its store stops sending
//! before another takes over. (The same with processes killed by `kill -9` on Redis is in
//! queue-cli's tests.)

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_beat::{Beat, BeatHandle, SentTick};
use queue_core::lease::{Lease, LeaseError, LeaseGrant, LeaseHolder, MemoryLease, TickClaim};
use queue_core::{App, Signature};
use tokio::sync::mpsc;

const INTERVAL: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(600);

async fn app() -> App {
    App::builder().broker("memory://").build().await.unwrap()
}

async fn beat(
    app: &App,
    lease: Arc<dyn Lease>,
    holder: &str,
    sent: &mpsc::UnboundedSender<(String, SentTick)>,
) -> BeatHandle {
    let handle = Beat::new(app.clone())
        .lease(lease)
        .lease_ttl(TTL)
        .holder(holder)
        .every("tick", INTERVAL, Signature::new("tasks.tick"))
        .start()
        .await
        .unwrap();
    let mut ticks = handle.sent();
    let (sent, holder) = (sent.clone(), holder.to_owned());
    tokio::spawn(async move {
        while let Ok(tick) = ticks.recv().await {
            let _ = sent.send((holder.clone(), tick));
        }
    });
    handle
}

/// Waits for one of `beats` to lead and returns its index.
async fn leader_of(beats: &[Option<BeatHandle>]) -> usize {
    let waits = beats.iter().enumerate().filter_map(|(index, beat)| {
        let mut status = beat.as_ref()?.status_watch();
        Some(Box::pin(async move {
            if status.wait_for(|status| status.leading).await.is_err() {
                // That beat ended: it will not lead.
                std::future::pending::<()>().await;
            }
            index
        }))
    });
    tokio::time::timeout(Duration::from_secs(5), futures::future::select_all(waits))
        .await
        .expect("a beat leads in time")
        .0
}

/// Waits until `count` ticks were sent, and returns them.
async fn ticks(
    receiver: &mut mpsc::UnboundedReceiver<(String, SentTick)>,
    count: usize,
) -> Vec<(String, SentTick)> {
    let mut ticks = Vec::new();
    while ticks.len() < count {
        let tick = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("ticks keep coming")
            .expect("open");
        ticks.push(tick);
    }
    ticks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beats_send_each_tick_once_while_leaders_are_killed() {
    let app = app().await;
    let lease: Arc<dyn Lease> = Arc::new(MemoryLease::new());
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut beats = vec![
        Some(beat(&app, lease.clone(), "a", &sender).await),
        Some(beat(&app, lease.clone(), "b", &sender).await),
        Some(beat(&app, lease.clone(), "c", &sender).await),
    ];
    let mut sent = Vec::new();
    let mut killed = Vec::new();
    for _ in 0..2 {
        let leader = leader_of(&beats).await;
        sent.extend(ticks(&mut receiver, 5).await);
        let name = ["a", "b", "c"][leader];
        beats[leader].take().unwrap().abort();
        killed.push(name);
    }
    let leader = leader_of(&beats).await;
    sent.extend(ticks(&mut receiver, 5).await);
    for beat in beats.into_iter().flatten() {
        beat.shutdown().await;
    }
    while let Ok(tick) = receiver.try_recv() {
        sent.push(tick);
    }

    let ids: HashSet<&str> = sent.iter().map(|(_, tick)| tick.tick_id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "no tick is sent twice: {sent:#?}");
    let senders: HashSet<&str> = sent.iter().map(|(holder, _)| holder.as_str()).collect();
    assert_eq!(
        senders.len(),
        3,
        "three leaders in turn ({killed:?} killed, then {leader})"
    );
    // Every tick from the first to the last was sent: a failover (under the late window)
    // loses none, bar one claimed in the instant its leader was killed.
    let mut scheduled: Vec<DateTime<Utc>> = sent.iter().map(|(_, tick)| tick.scheduled).collect();
    scheduled.sort();
    let span = (*scheduled.last().unwrap() - scheduled[0])
        .to_std()
        .unwrap();
    let expected = (span.as_millis() / INTERVAL.as_millis()) as usize + 1;
    assert!(
        scheduled.len() + killed.len() >= expected && scheduled.len() <= expected,
        "{} ticks sent of {expected} in {span:?}",
        scheduled.len()
    );
    assert_eq!(
        app.broker().queue_length("celery").await.unwrap().total,
        sent.len() as u64,
        "one message per tick"
    );
}

/// A lease store that can be cut off for one beat.
struct Unreachable {
    inner: MemoryLease,
    down: Arc<AtomicBool>,
}

impl Unreachable {
    fn check(&self) -> Result<(), LeaseError> {
        if self.down.load(Ordering::SeqCst) {
            Err(LeaseError::Unavailable("cut off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Lease for Unreachable {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseGrant>, LeaseError> {
        self.check()?;
        self.inner.acquire(name, holder, ttl).await
    }
    async fn release(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.check()?;
        self.inner.release(grant).await
    }
    async fn holder(&self, name: &str) -> Result<Option<LeaseHolder>, LeaseError> {
        self.check()?;
        self.inner.holder(name).await
    }
    async fn claim_tick(
        &self,
        grant: &LeaseGrant,
        entry: &str,
        tick: DateTime<Utc>,
    ) -> Result<TickClaim, LeaseError> {
        self.check()?;
        self.inner.claim_tick(grant, entry, tick).await
    }
    async fn last_ticks(
        &self,
        name: &str,
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, LeaseError> {
        self.check()?;
        self.inner.last_ticks(name).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_store_stops_before_another_takes_over() {
    let app = app().await;
    let shared = MemoryLease::new();
    let down = Arc::new(AtomicBool::new(false));
    let cut_off: Arc<dyn Lease> = Arc::new(Unreachable {
        inner: shared.clone(),
        down: down.clone(),
    });
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut first = beat(&app, cut_off, "first", &sender).await;
    first.wait_for(|status| status.leading).await;
    let mut second = beat(&app, Arc::new(shared), "second", &sender).await;
    ticks(&mut receiver, 3).await;

    down.store(true, Ordering::SeqCst);
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        second.wait_for(|status| status.leading),
    )
    .await
    .expect("the second beat takes over");
    assert!(status.token.is_some());
    assert!(
        !first.status().leading,
        "the cut-off leader stopped leading"
    );
    let mut sent = ticks(&mut receiver, 3).await;
    first.abort();
    second.shutdown().await;
    while let Ok(tick) = receiver.try_recv() {
        sent.push(tick);
    }
    let first_of_second = sent
        .iter()
        .position(|(holder, _)| holder == "second")
        .expect("the second sent");
    assert!(
        sent[first_of_second..]
            .iter()
            .all(|(holder, _)| holder == "second"),
        "nothing from the cut-off leader once the other one sends: {sent:#?}"
    );
    let ids: HashSet<&str> = sent.iter().map(|(_, tick)| tick.tick_id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "no tick sent twice");
}
