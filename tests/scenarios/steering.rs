//! Steering a running worker by remote control, on every broker: `add_consumer`,
//! `cancel_consumer`.

use serde_json::{Map, Value, json};

use super::{Urls, WAIT, add, app, unique_queue};
use queue::{App, Worker};

async fn call(app: &App, node: &str, method: &str, queue: &str) -> Value {
    let mut arguments = Map::new();
    arguments.insert("queue".into(), Value::from(queue));
    let replies = app
        .control()
        .destination([node])
        .timeout(WAIT)
        .call(method, arguments)
        .await
        .expect("control call");
    replies.get(node).cloned().unwrap_or_default()
}

async fn active_queues(app: &App, node: &str) -> Vec<String> {
    let replies = app
        .control()
        .destination([node])
        .timeout(WAIT)
        .inspect()
        .active_queues()
        .await
        .expect("active_queues");
    replies
        .get(node)
        .and_then(Value::as_array)
        .map(|queues| {
            queues
                .iter()
                .filter_map(|queue| queue["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `add_consumer` makes a running worker take tasks of a queue it did not consume (sent
/// before the call); after `cancel_consumer` a task of the cancelled queue waits in the
/// broker, and runs once the queue is added back.
pub async fn consumers_added_and_cancelled_by_remote_control(urls: Urls) {
    let first = unique_queue("consumers.first");
    let added = unique_queue("consumers.added");
    let app = app(&urls, &first).await;
    let node = format!("celery@{}", unique_queue("consumers"));
    let worker = Worker::new(app.clone())
        .node_name(node.as_str())
        .queues([first.as_str()])
        .concurrency(2)
        .spawn();
    tokio::time::timeout(WAIT, async {
        while app
            .control()
            .destination([node.as_str()])
            .timeout(std::time::Duration::from_millis(200))
            .ping()
            .await
            .expect("ping")
            .is_empty()
        {}
    })
    .await
    .expect("the worker answers ping");

    let on_added = add::new(1, 1)
        .queue(added.as_str())
        .send(&app)
        .await
        .unwrap();
    assert_eq!(
        call(&app, &node, "add_consumer", &added).await,
        json!({"ok": format!("add consumer {added}")})
    );
    assert_eq!(on_added.get(WAIT).await.unwrap(), 2);
    assert_eq!(
        call(&app, &node, "add_consumer", &added).await,
        json!({"ok": format!("already consuming from {added}")})
    );
    assert_eq!(
        active_queues(&app, &node).await,
        [first.clone(), added.clone()]
    );

    assert_eq!(
        call(&app, &node, "cancel_consumer", &first).await,
        json!({"ok": format!("no longer consuming from {first}")})
    );
    assert_eq!(
        active_queues(&app, &node).await,
        std::slice::from_ref(&added)
    );
    let waiting = add::new(2, 2).send(&app).await.unwrap();
    // A task of the queue still consumed runs; the one of the cancelled queue is still
    // in the broker after it.
    let after = add::new(3, 3)
        .queue(added.as_str())
        .send(&app)
        .await
        .unwrap();
    assert_eq!(after.get(WAIT).await.unwrap(), 6);
    let length = app.broker().queue_length(&first).await.unwrap();
    assert_eq!(length.total, 1, "the task of the cancelled queue waits");

    assert_eq!(
        call(&app, &node, "add_consumer", &first).await,
        json!({"ok": format!("add consumer {first}")})
    );
    assert_eq!(waiting.get(WAIT).await.unwrap(), 4);
    worker.shutdown().await.unwrap();
}
