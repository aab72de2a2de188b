//! The Beat page in headless Chromium: `beat-heartbeat` events sent on the memory broker
//! after the page loaded show without a reload — the leader with its fencing token, the
//! other instance, the schedule's entries with their next runs ("in … s") — and a leader
//! that stops loses its flag. Screenshot: `target/test-artifacts/monitor/beat-beat.png`.

mod browser {
    pub mod driver;
    pub mod support;
}
#[path = "common/beat.rs"]
mod beat;

use std::sync::Arc;

use beat::{entry, heartbeat};
use browser::driver::{Browser, tools};
use browser::support::{monitor, quoted, unique};
use chrono::{Duration as Span, Utc};
use queue::{App, MemoryBroker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_beat_page_shows_the_schedule_in_chromium() {
    let Some(tools) = tools() else { return };
    let app = App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .build()
        .await
        .unwrap();
    let history = tempfile::tempdir().unwrap();
    let monitor = monitor(app.clone(), history.path(), &[]).await;
    let browser = Browser::start(&tools, &format!("http://{}", monitor.address()), "beat").await;

    browser.open("/beat").await;
    browser
        .wait_text("#beat-schedules", "No beat seen yet")
        .await;
    assert_eq!(
        browser
            .run("return document.querySelector('a[data-nav=beat].active') !== null;")
            .await,
        json!(true),
        "the nav bar marks the page"
    );
    browser.run("window.loadedOnce = 'yes'; return null;").await;

    let id = unique();
    let name = format!("nightly-{id}");
    let leader = format!("beat-1-{id}@host-a");
    let follower = format!("beat-2-{id}@host-b");
    let now = Utc::now();
    let entries = [
        entry(
            "cleanup",
            "tasks.cleanup",
            "every 30s",
            Some(now - Span::seconds(10)),
            Some(now + Span::seconds(20)),
        ),
        entry(
            "report",
            "tasks.report",
            "cron \"0 3 * * *\" Europe/Berlin",
            None,
            Some(now + Span::minutes(310)),
        ),
    ];
    heartbeat(&app, &leader, &name, true, Some(42), &entries).await;
    heartbeat(&app, &follower, &name, false, None, &entries).await;

    let section = format!(".beat-schedule[data-schedule={}]", quoted(&name));
    browser
        .wait_text(&format!("{section} .beat-leader"), &leader)
        .await;
    assert_eq!(
        browser
            .text(&format!("{section} .beat-token"))
            .await
            .as_deref(),
        Some("42")
    );
    let cleanup = format!("{section} tr[data-entry=\"cleanup\"]");
    let next = browser
        .wait_text(&format!("{cleanup} td.next-run"), "in ")
        .await;
    assert!(next.contains(" s)"), "{next}");
    let schedule = browser
        .text(&format!("{section} tr[data-entry=\"report\"] td.schedule"))
        .await
        .unwrap();
    assert_eq!(schedule, "cron \"0 3 * * *\" Europe/Berlin");
    browser
        .wait_text(
            &format!("{section} tr[data-entry=\"report\"] td.next-run"),
            "in 5 h",
        )
        .await;
    let other = format!("{section} tr[data-holder={}]", quoted(&follower));
    browser
        .wait_text(&format!("{other} td.role"), "follower")
        .await;
    browser
        .wait_text(&format!("{other} td.status"), "online")
        .await;
    browser
        .wait_text("[data-card=\"Instances online\"] .value", "2")
        .await;
    assert_eq!(
        browser.run("return window.loadedOnce || null;").await,
        json!("yes"),
        "the page reloaded instead of updating live"
    );
    browser.screenshot("beat").await;

    // The leader stops: no leader until another takes the lease.
    heartbeat(&app, &leader, &name, false, None, &entries).await;
    browser
        .wait_text(
            &format!("{section} .beat-leader"),
            "no online instance holds the lease",
        )
        .await;
    let stopped = format!("{section} tr[data-holder={}]", quoted(&leader));
    browser
        .wait_text(&format!("{stopped} td.role"), "follower")
        .await;

    browser.close().await;
    monitor.shutdown().await.unwrap();
}
