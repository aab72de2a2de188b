//! The history at scale, and the monitor under a sustained event rate.
//!
//! `cargo bench -p queue-monitor --bench history` (release):
//! 1. writes `QUEUE_MONITOR_BENCH_TASKS` (default 1 000 000) task rows into a SQLite file
//!    through the store's writer, as ingestion does, and reports the rate;
//! 2. times the searches the dashboard and Flower's `/api/tasks` make over them (median of
//!    5, each with the capped count the dashboard asks for);
//! 3. feeds a monitor on `memory://` `QUEUE_MONITOR_BENCH_RATE` events per second (default
//!    5000: received, started, succeeded per task, in `task.multi` batches of 24) for
//!    `QUEUE_MONITOR_BENCH_SECONDS` (default 20) and reports its resident memory, the events
//!    it took and what it dropped, every few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_core::events::{Event, body_routing_key, publish_body};
use queue_core::{App, Broker, MemoryBroker};
use queue_monitor::ingest::task::Task;
use queue_monitor::store::{Sort, Store, TaskSearch, Write, query};
use queue_monitor::{Auth, Monitor, Settings};
use serde_json::json;

const NAMES: [&str; 20] = [
    "orders.charge",
    "orders.refund",
    "orders.ship",
    "mail.send",
    "mail.digest",
    "reports.daily",
    "reports.weekly",
    "images.resize",
    "images.thumbnail",
    "search.index",
    "search.reindex",
    "users.welcome",
    "users.cleanup",
    "billing.invoice",
    "billing.remind",
    "sync.pull",
    "sync.push",
    "cache.warm",
    "audit.log",
    "tasks.add",
];

fn variable(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn rss_megabytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A task as ingestion would record it: spread over a week, a few states, 10 workers.
fn task(index: u64, now: f64) -> Task {
    let mut task = Task::new(format!("{index:08x}-0000-4000-8000-{:012x}", index * 7919));
    let name = NAMES[(index % NAMES.len() as u64) as usize];
    task.name = Some(name.to_owned());
    task.state = match index % 100 {
        0..=89 => "SUCCESS",
        90..=94 => "FAILURE",
        95..=97 => "RETRY",
        _ => "REVOKED",
    }
    .to_owned();
    task.worker = Some(format!("celery@worker-{}", index % 10));
    let received = now - 7.0 * 86_400.0 + index as f64 * 0.6;
    task.received = Some(received);
    task.started = Some(received + 0.01);
    task.runtime = Some((index % 1000) as f64 / 1000.0);
    task.timestamp = Some(received + 0.5);
    task.args = Some(format!("({index}, 'user-{}')", index % 250_000));
    task.kwargs = Some(format!(
        "{{'order': {}, 'region': 'eu-{}'}}",
        index * 3,
        index % 7
    ));
    task.result = Some(if task.state == "FAILURE" {
        "None".to_owned()
    } else {
        format!("{{'ok': True, 'id': {index}}}")
    });
    if task.state == "FAILURE" {
        task.exception = Some(format!("ValueError('card declined {index}')"));
    }
    task
}

async fn load(store: &Store, count: u64, capacity: usize) -> f64 {
    let now = queue_monitor::state::now();
    let started = Instant::now();
    for index in 0..count {
        // Paced so that nothing is dropped: ingestion would drop and count instead.
        while store.pending() > capacity / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store.write(Write::Task(Box::new(task(index, now))));
    }
    store.flush().await;
    assert_eq!(store.dropped(), 0);
    count as f64 / started.elapsed().as_secs_f64()
}

async fn time_search(store: &Store, label: &str, search: TaskSearch) {
    let mut times = Vec::new();
    let mut found = (0, None, false);
    for _ in 0..5 {
        let started = Instant::now();
        let page = store.search(&search).await.expect("the search runs");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        found = (page.tasks.len(), page.total, page.total_capped);
    }
    times.sort_by(f64::total_cmp);
    let (returned, total, capped) = found;
    let total = match total {
        Some(total) if capped => format!(">{total}"),
        Some(total) => total.to_string(),
        None => "-".to_owned(),
    };
    println!(
        "  {label:<44} median {:>7.1} ms  max {:>7.1} ms  page {returned:>3}  matches {total}",
        times[2], times[4]
    );
}

fn search(q: &str) -> TaskSearch {
    TaskSearch {
        query: Some(query::parse(q).expect("a valid query")),
        limit: 50,
        count: true,
        descending: true,
        ..TaskSearch::default()
    }
}

async fn searches(store: &Store) {
    let now = queue_monitor::state::now();
    time_search(store, "newest 50 (no filter)", search("")).await;
    time_search(store, "state:FAILURE", search("state:FAILURE")).await;
    time_search(
        store,
        "name filter (orders.refund)",
        TaskSearch {
            name: Some("orders.refund".into()),
            ..search("")
        },
    )
    .await;
    time_search(
        store,
        "worker filter",
        TaskSearch {
            worker: Some("celery@worker-3".into()),
            ..search("")
        },
    )
    .await;
    time_search(
        store,
        "states FAILURE,REVOKED + name",
        TaskSearch {
            states: vec!["FAILURE".into(), "REVOKED".into()],
            name: Some("billing.invoice".into()),
            ..search("")
        },
    )
    .await;
    time_search(
        store,
        "args text, one user (args:'user-123457')",
        search("args:\"'user-123457'\""),
    )
    .await;
    time_search(
        store,
        "free text, rare (card declined 99991)",
        search("\"card declined 99991\""),
    )
    .await;
    time_search(
        store,
        "free text, broad (eu-3: 1/7 of rows)",
        search("eu-3"),
    )
    .await;
    time_search(
        store,
        "state:FAILURE args:user-99",
        search("state:FAILURE args:user-99"),
    )
    .await;
    time_search(
        store,
        "broad text + name filter (eu-3, mail.send)",
        TaskSearch {
            name: Some("mail.send".into()),
            ..search("eu-3")
        },
    )
    .await;
    time_search(
        store,
        "kwargs:region=eu-5 name:billing",
        search("kwargs:region=eu-5 name:billing"),
    )
    .await;
    time_search(
        store,
        "last hour, sorted by runtime",
        TaskSearch {
            from: Some(now - 7.0 * 86_400.0 + 600_000.0 - 3600.0),
            sort: Sort::Runtime,
            ..search("")
        },
    )
    .await;
    time_search(
        store,
        "Flower /api/tasks?taskname&sort_by=-received",
        TaskSearch {
            name: Some("tasks.add".into()),
            sort: Sort::Received,
            count: false,
            ..search("")
        },
    )
    .await;
}

async fn sustained(rate: u64, seconds: u64) {
    let broker = Arc::new(MemoryBroker::new());
    let app = App::builder()
        .broker_instance(broker.clone())
        .build()
        .await
        .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let history = directory.path().join("sustained.sqlite");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = Monitor::new(app)
        .settings(Settings {
            tasks_in_memory: 10_000,
            ..Settings::default()
        })
        .auth(Auth::none())
        .history(format!("sqlite://{}", history.display()))
        .start(listener)
        .await
        .unwrap();
    let broadcast = (broker as Arc<dyn Broker>).broadcast().unwrap();
    let start_rss = rss_megabytes();
    println!(
        "sustained {rate} events/s for {seconds} s (memory broker, SQLite history): RSS {start_rss:.0} MB at start"
    );
    let started = Instant::now();
    let mut sent = 0u64;
    let mut task_index = 0u64;
    let mut next_report = 5;
    let mut peak = start_rss;
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent + 24 <= due {
            let mut batch = Vec::with_capacity(24);
            for _ in 0..8 {
                let uuid = format!("sustained-{task_index}");
                let now = queue_monitor::state::now();
                let base = json!({"hostname": "celery@bench", "timestamp": now, "uuid": uuid});
                let mut received = base.clone();
                received["type"] = json!("task-received");
                received["name"] = json!(NAMES[(task_index % 20) as usize]);
                received["args"] = json!(format!("({task_index}, 'user-{task_index}')"));
                received["kwargs"] = json!("{}");
                let mut begun = base.clone();
                begun["type"] = json!("task-started");
                let mut done = base;
                done["type"] = json!("task-succeeded");
                done["result"] = json!("'ok'");
                done["runtime"] = json!(0.01);
                for value in [received, begun, done] {
                    batch.push(serde_json::from_value::<Event>(value).unwrap());
                }
                task_index += 1;
            }
            let body = Event::encode(&batch);
            publish_body(
                broadcast.as_ref(),
                "celery@bench",
                body_routing_key(&batch),
                body,
            )
            .await
            .unwrap();
            sent += 24;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        peak = peak.max(rss_megabytes());
        if started.elapsed() >= Duration::from_secs(next_report) {
            let state = running.state();
            println!(
                "  t={next_report:>3}s sent {sent:>8} received {:>8} dropped(events) {:>6} dropped(history) {:>6} pending {:>6} RSS {:.0} MB",
                state.events_received(),
                state.events_dropped(),
                state.store().dropped(),
                state.store().pending(),
                rss_megabytes()
            );
            next_report += 5;
        }
    }
    let state = running.state().clone();
    let rows = state.store().task_count().await.unwrap_or_default();
    println!(
        "  end: sent {sent}, received {}, dropped {} (events) {} (history), {rows} task rows, RSS peak {peak:.0} MB",
        state.events_received(),
        state.events_dropped(),
        state.store().dropped(),
    );
    running.shutdown().await.unwrap();
}

#[tokio::main]
async fn main() {
    let count = variable("QUEUE_MONITOR_BENCH_TASKS", 1_000_000);
    let directory = tempfile::tempdir().unwrap();
    // QUEUE_MONITOR_BENCH_KEEP=path keeps the database there (to look at its query plans).
    let path = std::env::var("QUEUE_MONITOR_BENCH_KEEP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| directory.path().join("history.sqlite"));
    let capacity = 50_000;
    let (store, writer) = Store::open(Some(&format!("sqlite://{}", path.display())), capacity)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writing = tokio::spawn(writer.run(stopped));
    let rate = load(&store, count, capacity).await;
    // What the monitor's pruner does every minute (it also refreshes the statistics).
    let bounds = queue_monitor::store::Bounds {
        max_tasks: count,
        max_events: count * 10,
        max_age: Duration::from_secs(30 * 86_400),
    };
    let pruning = Instant::now();
    store
        .prune(bounds, queue_monitor::state::now())
        .await
        .unwrap();
    println!(
        "pruning pass (nothing beyond the bounds, statistics refreshed): {:.0} ms",
        pruning.elapsed().as_secs_f64() * 1000.0
    );
    let rows = store.task_count().await.unwrap();
    let size = std::fs::metadata(&path).map_or(0, |meta| meta.len()) / 1_048_576;
    println!(
        "history: {rows} task rows written at {rate:.0} rows/s through the writer; file {size} MB (+WAL)"
    );
    println!("searches over {rows} tasks (SQLite, FTS5 trigram index):");
    searches(&store).await;
    let _ = stop.send(true);
    let _ = writing.await;
    if variable("QUEUE_MONITOR_BENCH_SECONDS", 20) == 0 {
        return;
    }
    sustained(
        variable("QUEUE_MONITOR_BENCH_RATE", 5000),
        variable("QUEUE_MONITOR_BENCH_SECONDS", 20),
    )
    .await;
}
