//! Lease checks (the contract of [`crate::lease`]), run by
//! [`lease_conformance_tests!`](crate::lease_conformance_tests). Each takes the store under
//! test and a unique prefix, used as the lease's name.
//!
//! What they hold a store to:
//!
//! - one holder at a time; the holder renews with the same token;
//! - an expired or released lease goes to the next holder with a larger token, and the old
//!   grant can then neither claim a tick nor release the new holding;
//! - a tick is claimed once per entry, never older than the last, even when many claim it at
//!   the same time; the last ticks survive a change of holder.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::lease::{Lease, TickClaim};

const TTL: Duration = Duration::from_secs(30);

fn tick(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, second)
        .single()
        .expect("a valid time")
}

/// One holder at a time; renewing keeps the token.
pub async fn one_holder_at_a_time(store: Arc<dyn Lease>, prefix: &str) {
    let first = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!(first.holder, "a");
    assert!(first.token > 0, "tokens start above 0");
    assert!(
        store
            .acquire(prefix, "b", TTL)
            .await
            .expect("acquire")
            .is_none(),
        "a held lease is not granted to another holder"
    );
    let renewed = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(renewed.token, first.token, "renewing keeps the token");
    let holder = store.holder(prefix).await.expect("holder").expect("held");
    assert_eq!((holder.holder.as_str(), holder.token), ("a", first.token));
    assert!(holder.expires_in <= TTL && holder.expires_in > TTL / 2);
}

/// An expired lease goes to the next holder with a larger token; the old grant is fenced off.
pub async fn expired_lease_is_taken_over(store: Arc<dyn Lease>, prefix: &str) {
    let short = Duration::from_millis(300);
    let old = store
        .acquire(prefix, "a", short)
        .await
        .expect("acquire")
        .expect("granted");
    assert_eq!(
        store
            .claim_tick(&old, "entry", tick(1))
            .await
            .expect("claim"),
        TickClaim::Claimed
    );
    // Expiry is the store's clock: wait past it, with room for clock granularity.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    assert!(
        store.holder(prefix).await.expect("holder").is_none(),
        "an expired lease has no holder"
    );
    let new = store
        .acquire(prefix, "b", TTL)
        .await
        .expect("acquire")
        .expect("an expired lease is granted");
    assert!(new.token > old.token, "a new holding has a larger token");
    assert_eq!(
        store
            .claim_tick(&old, "entry", tick(2))
            .await
            .expect("claim"),
        TickClaim::LeaseLost,
        "the old grant cannot claim"
    );
    assert!(
        store
            .acquire(prefix, "a", TTL)
            .await
            .expect("acquire")
            .is_none(),
        "the old holder cannot take it back"
    );
    store.release(&old).await.expect("release");
    let holder = store.holder(prefix).await.expect("holder").expect("held");
    assert_eq!(holder.holder, "b", "a stale release leaves the new holding");
    assert_eq!(
        store
            .claim_tick(&new, "entry", tick(2))
            .await
            .expect("claim"),
        TickClaim::Claimed
    );
}

/// A released lease is free at once, and its next holding has a larger token.
pub async fn released_lease_is_free_at_once(store: Arc<dyn Lease>, prefix: &str) {
    let old = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("acquire")
        .expect("granted");
    store.release(&old).await.expect("release");
    assert!(store.holder(prefix).await.expect("holder").is_none());
    let new = store
        .acquire(prefix, "b", TTL)
        .await
        .expect("acquire")
        .expect("a released lease is granted");
    assert!(new.token > old.token);
    let again = store.acquire(prefix, "a", TTL).await.expect("acquire");
    assert!(again.is_none());
}

/// Ticks are claimed once per entry and only forwards; entries and leases are independent.
pub async fn ticks_claimed_once_and_forwards(store: Arc<dyn Lease>, prefix: &str) {
    let grant = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("acquire")
        .expect("granted");
    let claim = |entry: &'static str, at: DateTime<Utc>| {
        let store = store.clone();
        let grant = grant.clone();
        async move { store.claim_tick(&grant, entry, at).await.expect("claim") }
    };
    assert_eq!(claim("first", tick(10)).await, TickClaim::Claimed);
    assert_eq!(claim("first", tick(10)).await, TickClaim::AlreadyClaimed);
    assert_eq!(claim("first", tick(9)).await, TickClaim::AlreadyClaimed);
    assert_eq!(claim("second", tick(9)).await, TickClaim::Claimed);
    let later = tick(11) + chrono::Duration::milliseconds(250);
    assert_eq!(claim("first", later).await, TickClaim::Claimed);

    let ticks = store.last_ticks(prefix).await.expect("last ticks");
    assert_eq!(ticks.len(), 2, "{ticks:?}");
    assert_eq!(ticks["first"], later, "kept to the millisecond");
    assert_eq!(ticks["second"], tick(9));

    let other = format!("{prefix}-other");
    assert!(
        store
            .last_ticks(&other)
            .await
            .expect("last ticks")
            .is_empty(),
        "another schedule has its own ticks"
    );
    let other_grant = store
        .acquire(&other, "b", TTL)
        .await
        .expect("acquire")
        .expect("another lease is free");
    assert_eq!(
        store
            .claim_tick(&other_grant, "first", tick(10))
            .await
            .expect("claim"),
        TickClaim::Claimed
    );
}

/// Of many claims of one tick at the same time, exactly one wins.
pub async fn concurrent_claims_one_wins(store: Arc<dyn Lease>, prefix: &str) {
    let grant = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("acquire")
        .expect("granted");
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let claims: Vec<_> = (0..16)
        .map(|_| {
            let (store, grant, barrier) = (store.clone(), grant.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .claim_tick(&grant, "entry", tick(30))
                    .await
                    .expect("claim")
            })
        })
        .collect();
    let mut claimed = 0;
    for claim in claims {
        if claim.await.expect("claim task") == TickClaim::Claimed {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1, "one claim of a tick wins");
}

/// The last ticks stay when the holder changes; the new holder does not claim them again.
pub async fn ticks_survive_a_new_holder(store: Arc<dyn Lease>, prefix: &str) {
    let old = store
        .acquire(prefix, "a", TTL)
        .await
        .expect("acquire")
        .expect("granted");
    assert_eq!(
        store
            .claim_tick(&old, "entry", tick(40))
            .await
            .expect("claim"),
        TickClaim::Claimed
    );
    store.release(&old).await.expect("release");
    let new = store
        .acquire(prefix, "b", TTL)
        .await
        .expect("acquire")
        .expect("granted");
    assert_eq!(
        store.last_ticks(prefix).await.expect("last ticks")["entry"],
        tick(40)
    );
    assert_eq!(
        store
            .claim_tick(&new, "entry", tick(40))
            .await
            .expect("claim"),
        TickClaim::AlreadyClaimed
    );
    assert_eq!(
        store
            .claim_tick(&new, "entry", tick(41))
            .await
            .expect("claim"),
        TickClaim::Claimed
    );
}
