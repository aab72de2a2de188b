//! The store against a real (in-memory) SQLite: writes through the writer, Flower's search
//! syntax over the FTS index, paging and counting, pruning by count and age.

use std::time::Duration;

use tokio::sync::watch;

use super::query::parse;
use super::{Bounds, Sort, Store, TaskSearch, TimelineEntry, Write};
use crate::ingest::task::Task;

fn task(index: usize, state: &str, args: &str, kwargs: &str, timestamp: f64) -> Task {
    let mut task = Task::new(format!("task-{index}"));
    task.name = Some(
        if index % 2 == 0 {
            "tasks.even"
        } else {
            "tasks.odd"
        }
        .to_owned(),
    );
    task.state = state.to_owned();
    task.worker = Some(format!("celery@w{}", index % 3));
    task.args = Some(args.to_owned());
    task.kwargs = Some(kwargs.to_owned());
    task.result = Some(format!("'result {index}'"));
    task.timestamp = Some(timestamp);
    task.received = Some(timestamp - 1.0);
    task.runtime = Some(index as f64);
    task
}

/// A store in memory with `tasks` written (and each a timeline event).
async fn store_with(tasks: Vec<Task>) -> (Store, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (store, writer) = Store::open(None, 1000).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let writing = tokio::spawn(writer.run(stopped));
    for task in tasks {
        store.write(Write::Event(TimelineEntry {
            uuid: task.uuid.clone(),
            kind: "task-received".into(),
            hostname: "celery@w".into(),
            timestamp: task.timestamp.unwrap_or_default(),
            fields: serde_json::Map::new(),
        }));
        store.write(Write::Task(Box::new(task)));
    }
    for _ in 0..200 {
        if store.pending() == 0 && store.task_count().await.unwrap() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    (store, stop, writing)
}

fn ids(page: &super::SearchPage) -> Vec<String> {
    page.tasks.iter().map(|task| task.uuid.clone()).collect()
}

fn search(query: &str) -> TaskSearch {
    TaskSearch {
        query: Some(parse(query).unwrap()),
        limit: 100,
        count: true,
        ..TaskSearch::default()
    }
}

#[tokio::test]
async fn flower_queries_find_what_they_say() {
    let (store, stop, writing) = store_with(vec![
        task(
            0,
            "SUCCESS",
            "(1, 'alice')",
            "{'user': 'alice', 'n': 1}",
            10.0,
        ),
        task(1, "FAILURE", "(2, 'bob')", "{'user': 'bob'}", 20.0),
        task(2, "FAILURE", "(3, 'Alice Smith')", "{}", 30.0),
        task(3, "RETRY", "(4, 'carol')", "{\"user\": \"carol\"}", 40.0),
    ])
    .await;
    let page = store.search(&search("state:failure")).await.unwrap();
    assert_eq!(ids(&page), ["task-1", "task-2"]);
    assert_eq!(page.total, Some(2));
    let page = store.search(&search("alice")).await.unwrap();
    assert_eq!(
        ids(&page),
        ["task-0", "task-2"],
        "case-insensitive substring over every field"
    );
    let page = store
        .search(&search("state:FAILURE args:alice"))
        .await
        .unwrap();
    assert_eq!(ids(&page), ["task-2"]);
    let page = store.search(&search("kwargs:user=alice")).await.unwrap();
    assert_eq!(ids(&page), ["task-0"]);
    let page = store.search(&search("kwargs:user=carol")).await.unwrap();
    assert_eq!(ids(&page), ["task-3"], "JSON kwargs too");
    let page = store
        .search(&search("(args:bob OR args:carol) name:tasks.odd"))
        .await
        .unwrap();
    assert_eq!(ids(&page), ["task-1", "task-3"]);
    let page = store.search(&search("\"result 3\"")).await.unwrap();
    assert_eq!(ids(&page), ["task-3"]);
    // Newest first, text only: in the order the text index keeps (first seen).
    let mut newest = search("alice");
    newest.descending = true;
    let page = store.search(&newest).await.unwrap();
    assert_eq!(
        (ids(&page), page.total, page.total_capped),
        (
            vec!["task-2".to_owned(), "task-0".to_owned()],
            Some(2),
            false
        )
    );
    newest.states = vec!["FAILURE".into()];
    assert_eq!(ids(&store.search(&newest).await.unwrap()), ["task-2"]);
    let page = store.search(&search("task-2")).await.unwrap();
    assert_eq!(ids(&page), ["task-2"], "the id is free text too");

    // Filters, sorting and paging.
    let mut filtered = search("");
    filtered.states = vec!["FAILURE".into(), "RETRY".into()];
    filtered.worker = Some("celery@w1".into());
    assert_eq!(ids(&store.search(&filtered).await.unwrap()), ["task-1"]);
    let mut sorted = search("");
    sorted.sort = Sort::Runtime;
    sorted.descending = true;
    sorted.limit = 2;
    sorted.offset = 1;
    let page = store.search(&sorted).await.unwrap();
    assert_eq!(
        (ids(&page), page.total),
        (vec!["task-2".to_owned(), "task-1".to_owned()], Some(4))
    );
    let mut ranged = search("");
    ranged.from = Some(15.0);
    ranged.to = Some(35.0);
    assert_eq!(
        ids(&store.search(&ranged).await.unwrap()),
        ["task-1", "task-2"]
    );
    let mut received = search("");
    received.received_from = Some(25.0);
    assert_eq!(
        ids(&store.search(&received).await.unwrap()),
        ["task-2", "task-3"]
    );

    // Updates replace the row and its text index.
    let mut changed = task(1, "SUCCESS", "(2, 'dave')", "{}", 50.0);
    changed.name = Some("tasks.odd".into());
    store.write(Write::Task(Box::new(changed)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ids(&store.search(&search("args:bob")).await.unwrap()).is_empty());
    assert_eq!(
        ids(&store.search(&search("args:dave")).await.unwrap()),
        ["task-1"]
    );
    assert_eq!(store.timeline("task-1").await.unwrap().len(), 1);
    let _ = stop.send(true);
    writing.await.unwrap();
}

#[tokio::test]
async fn pruning_keeps_the_newest_within_count_and_age() {
    let tasks = (0..20)
        .map(|index| task(index, "SUCCESS", "()", "{}", 1000.0 + index as f64))
        .collect();
    let (store, stop, writing) = store_with(tasks).await;
    assert_eq!(store.task_count().await.unwrap(), 20);
    let bounds = Bounds {
        max_tasks: 10,
        max_events: 15,
        max_age: Duration::from_secs(1_000_000),
    };
    let (tasks, events) = store.prune(bounds, 2000.0).await.unwrap();
    assert_eq!((tasks, events), (10, 5));
    assert_eq!(store.task_count().await.unwrap(), 10);
    assert!(store.task("task-9").await.unwrap().is_none());
    assert!(store.task("task-10").await.unwrap().is_some());
    // By age: rows older than 1005 s before "now" go.
    let bounds = Bounds {
        max_tasks: 100,
        max_events: 100,
        max_age: Duration::from_secs(995),
    };
    store.prune(bounds, 2010.0).await.unwrap();
    let left = store.search(&search("")).await.unwrap();
    assert_eq!(left.total, Some(5), "{:?}", ids(&left));
    // The text index follows the deletions.
    assert_eq!(
        store.search(&search("task-12")).await.unwrap().total,
        Some(0)
    );
    let _ = stop.send(true);
    writing.await.unwrap();
}
