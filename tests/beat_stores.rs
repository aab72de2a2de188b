//! Three beats in this process on each real lease store (Redis, PostgreSQL, SQLite), the
//! leader killed twice: each tick is sent once, and the killed leader's successor carries on
//! from the ticks it recorded. The broker is the memory one: the store is what is tested.
#![cfg(all(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "beat"
))]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use queue::beat::{Beat, BeatHandle, SentTick};
use queue::{App, Signature};
use queue_core::lease::Lease;
use tokio::sync::mpsc;

const INTERVAL: Duration = Duration::from_millis(250);
const TTL: Duration = Duration::from_millis(900);

async fn start(
    app: &App,
    lease: Arc<dyn Lease>,
    name: &str,
    holder: &str,
    sent: &mpsc::UnboundedSender<SentTick>,
) -> BeatHandle {
    let handle = Beat::new(app.clone())
        .name(name)
        .lease(lease)
        .lease_ttl(TTL)
        .holder(holder)
        .every("tick", INTERVAL, Signature::new("tasks.tick"))
        .start()
        .await
        .expect("the beat starts");
    let mut ticks = handle.sent();
    let sent = sent.clone();
    tokio::spawn(async move {
        while let Ok(tick) = ticks.recv().await {
            let _ = sent.send(tick);
        }
    });
    handle
}

/// Waits for one of `beats` to lead (a change of its status) and returns its index.
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
    tokio::time::timeout(Duration::from_secs(10), futures::future::select_all(waits))
        .await
        .expect("a beat leads in time")
        .0
}

async fn three_beats_on(lease: Arc<dyn Lease>) {
    let app = App::builder().broker("memory://").build().await.unwrap();
    let name = queue_core::conformance::unique_prefix("beat");
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut beats = Vec::new();
    for holder in ["a", "b", "c"] {
        beats.push(Some(
            start(&app, lease.clone(), &name, holder, &sender).await,
        ));
    }
    let mut sent = Vec::new();
    for round in 0..3 {
        let leader = leader_of(&beats).await;
        for _ in 0..4 {
            let tick = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .expect("ticks keep coming")
                .unwrap();
            sent.push(tick);
        }
        if round < 2 {
            beats[leader].take().unwrap().abort();
        }
    }
    for beat in beats.into_iter().flatten() {
        beat.shutdown().await;
    }
    while let Ok(tick) = receiver.try_recv() {
        sent.push(tick);
    }
    let ids: HashSet<&str> = sent.iter().map(|tick| tick.tick_id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "no tick sent twice: {sent:#?}");
    let tokens: HashSet<u64> = sent.iter().map(|tick| tick.token).collect();
    assert_eq!(tokens.len(), 3, "three holdings, three tokens");
    let mut scheduled: Vec<_> = sent.iter().map(|tick| tick.scheduled).collect();
    scheduled.sort();
    let span = (*scheduled.last().unwrap() - scheduled[0])
        .to_std()
        .unwrap();
    let expected = (span.as_millis() / INTERVAL.as_millis()) as usize + 1;
    // A failover loses nothing (late ticks are sent), bar a tick claimed in the instant its
    // leader was killed.
    assert!(
        scheduled.len() <= expected && scheduled.len() + 2 >= expected,
        "{} ticks of {expected}",
        scheduled.len()
    );
    let stored = lease.last_ticks(&name).await.unwrap();
    assert_eq!(
        stored["tick"],
        *scheduled.last().unwrap(),
        "the store holds the last tick sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let Some(url) = queue_core::conformance::server_url("QUEUE_TEST_REDIS_URL") else {
        return;
    };
    three_beats_on(Arc::new(
        queue_redis::RedisLease::connect(&url).await.unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Some(url) = queue_core::conformance::server_url("QUEUE_TEST_POSTGRES_URL") else {
        return;
    };
    three_beats_on(Arc::new(
        queue_results::PostgresLease::connect(&url).await.unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let directory =
        std::env::temp_dir().join(queue_core::conformance::unique_prefix("beat-sqlite"));
    std::fs::create_dir_all(&directory).unwrap();
    let url = format!("sqlite://{}?mode=rwc", directory.join("beat.db").display());
    three_beats_on(Arc::new(
        queue_results::SqliteLease::connect(&url).await.unwrap(),
    ))
    .await;
    std::fs::remove_dir_all(&directory).ok();
}
