//! The monitor and `queue beat`: `beat-heartbeat` events sent on the memory broker's event
//! exchange show in `/api/beat`, the Beat page, the live stream and `/metrics`; a beat that
//! stops loses its leader flag, and one that takes the lease over gains it.

mod common;

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use common::beat::{entry, heartbeat};
use common::{eventually, init_logs, quick_settings, start_monitor, unique};
use queue::{App, MemoryBroker};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The schedule `name` of an `/api/beat` answer.
fn schedule<'a>(answer: &'a Value, name: &str) -> Option<&'a Value> {
    answer["schedules"]
        .as_array()?
        .iter()
        .find(|schedule| schedule["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beat_heartbeats_show_the_leader_and_the_next_runs() {
    init_logs();
    let app = App::builder()
        .broker_instance(Arc::new(MemoryBroker::new()))
        .build()
        .await
        .unwrap();
    let (monitor, http) = start_monitor(app.clone(), None, &[], quick_settings()).await;
    let name = unique("nightly");
    let leader = format!("beat-1-{}@host-a", unique("a"));
    let follower = format!("beat-2-{}@host-b", unique("b"));

    // The live stream, subscribed before anything is sent.
    let mut stream = tokio::net::TcpStream::connect(monitor.address())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 8192];
    tokio::time::timeout(common::WAIT, async {
        while !seen.contains("event: hello") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .expect("the hello event");

    // Whole seconds: RFC 3339 with no fraction, compared exactly below.
    let now = Utc::now().timestamp();
    let next = chrono::DateTime::from_timestamp(now + 4, 0).unwrap();
    let last = next - Span::seconds(5);
    let nightly = chrono::DateTime::from_timestamp(now + 3600, 0).unwrap();
    let entries = [
        entry(
            "cleanup",
            "tasks.cleanup",
            "every 5s",
            Some(last),
            Some(next),
        ),
        entry(
            "report",
            "tasks.report",
            "cron \"0 3 * * *\" Europe/Berlin",
            None,
            Some(nightly),
        ),
    ];
    heartbeat(&app, &leader, &name, true, Some(7), &entries).await;
    heartbeat(&app, &follower, &name, false, None, &entries[..1]).await;

    let answer = eventually("both instances in /api/beat", || async {
        let answer = http.get("/api/beat").await;
        (schedule(&answer, &name)?["instances"].as_array()?.len() == 2).then_some(answer)
    })
    .await;
    let shown = schedule(&answer, &name).unwrap();
    assert_eq!(shown["leader"]["holder"], leader.as_str(), "{answer}");
    assert_eq!(shown["leader"]["token"], 7);
    assert_eq!(shown["online"], 2);
    assert_eq!(shown["entries_from"], leader.as_str());
    let instances = shown["instances"].as_array().unwrap();
    assert_eq!(
        (&instances[0]["holder"], &instances[0]["leader"]),
        (&Value::from(leader.as_str()), &Value::Bool(true))
    );
    assert_eq!(instances[1]["holder"], follower.as_str());
    assert_eq!(instances[1]["status"], "online");
    assert_eq!(instances[1]["leader"], false);
    let cleanup = &shown["entries"][0];
    assert_eq!(cleanup["name"], "cleanup");
    assert_eq!(cleanup["task"], "tasks.cleanup");
    assert_eq!(cleanup["schedule"], "every 5s");
    assert_eq!(cleanup["next_run"].as_f64(), Some((now + 4) as f64));
    assert_eq!(cleanup["last_run"].as_f64(), Some((now - 1) as f64));
    let report = &shown["entries"][1];
    assert_eq!(report["schedule"], "cron \"0 3 * * *\" Europe/Berlin");
    assert_eq!(report["last_run"], Value::Null);
    assert_eq!(report["next_run"].as_f64(), Some((now + 3600) as f64));

    // The live stream sent it too.
    tokio::time::timeout(common::WAIT, async {
        while !(seen.contains("event: beat") && seen.contains(&leader)) {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no live beat message in:\n{seen}"));

    // The page: in the nav bar, its shell and script served.
    let page = http.text("/beat").await;
    assert!(page.contains("data-page=\"beat\""), "{page}");
    assert!(page.contains("href=\"/beat\" data-nav=\"beat\""), "{page}");
    let script = http.text("/assets/js/beat.js").await;
    assert!(script.contains("/api/beat"));
    assert!(http.text("/tasks").await.contains("data-nav=\"beat\""));

    // The gauges.
    let metrics = http.text("/metrics").await;
    for expected in [
        format!("queue_monitor_beat_leader{{schedule=\"{name}\",holder=\"{leader}\"}} 1"),
        format!("queue_monitor_beat_leader{{schedule=\"{name}\",holder=\"{follower}\"}} 0"),
        format!(
            "queue_monitor_beat_entry_next_run_timestamp_seconds{{schedule=\"{name}\",entry=\"cleanup\"}} {}.0",
            now + 4
        ),
        format!(
            "queue_monitor_beat_entry_last_run_timestamp_seconds{{schedule=\"{name}\",entry=\"cleanup\"}} {}.0",
            now - 1
        ),
    ] {
        assert!(metrics.contains(&expected), "{expected} not in\n{metrics}");
    }

    // The leader stops: its last heartbeat does not lead. No leader until another takes
    // the lease.
    heartbeat(&app, &leader, &name, false, None, &entries).await;
    let answer = eventually("no leader once it stopped", || async {
        let answer = http.get("/api/beat").await;
        schedule(&answer, &name)?["leader"]
            .is_null()
            .then_some(answer)
    })
    .await;
    let shown = schedule(&answer, &name).unwrap();
    assert!(
        shown["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|instance| instance["leader"] == false && instance["leading"] == false),
        "{answer}"
    );
    let metrics = http.text("/metrics").await;
    let stopped = format!("queue_monitor_beat_leader{{schedule=\"{name}\",holder=\"{leader}\"}} 0");
    assert!(metrics.contains(&stopped), "{stopped} not in\n{metrics}");

    // The follower takes over with a newer token.
    let later = next + Span::seconds(5);
    let taken = [entry(
        "cleanup",
        "tasks.cleanup",
        "every 5s",
        Some(next),
        Some(later),
    )];
    heartbeat(&app, &follower, &name, true, Some(8), &taken).await;
    let answer = eventually("the follower leading", || async {
        let answer = http.get("/api/beat").await;
        (schedule(&answer, &name)?["leader"]["holder"] == follower.as_str()).then_some(answer)
    })
    .await;
    let shown = schedule(&answer, &name).unwrap();
    assert_eq!(shown["leader"]["token"], 8);
    assert_eq!(shown["entries_from"], follower.as_str());
    assert_eq!(
        shown["entries"][0]["next_run"].as_f64(),
        Some(later.timestamp() as f64)
    );
    let metrics = http.text("/metrics").await;
    for expected in [
        format!("queue_monitor_beat_leader{{schedule=\"{name}\",holder=\"{follower}\"}} 1"),
        format!("queue_monitor_beat_leader{{schedule=\"{name}\",holder=\"{leader}\"}} 0"),
        format!(
            "queue_monitor_beat_entry_next_run_timestamp_seconds{{schedule=\"{name}\",entry=\"cleanup\"}} {}.0",
            later.timestamp()
        ),
    ] {
        assert!(metrics.contains(&expected), "{expected} not in\n{metrics}");
    }
    // The follower's schedule has no `report`: its gauge went with it.
    assert!(!metrics.contains("entry=\"report\""), "{metrics}");

    monitor.shutdown().await.unwrap();
}
