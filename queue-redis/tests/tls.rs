//! `rediss://`: broker and backend over TLS, verifying the server against the CA named by
//! `ssl_ca_certs` (Celery's and redis-py's option name); a server whose certificate does not
//! verify is refused. Runs a private TLS-only redis-server with certificates made here.

mod common;

use std::time::Duration;

use queue_core::{Broker, ConsumeOptions, Publish, ResultBackend, TaskMeta};

use common::{PrivateRedis, id_of, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_backend_over_tls() {
    let Some(server) = PrivateRedis::start_tls() else {
        return;
    };
    let ca = server.dir().join("ca.pem");
    let url = format!(
        "rediss://127.0.0.1:{}/0?ssl_ca_certs={}",
        server.port,
        ca.display()
    );
    let broker = queue_redis::RedisBroker::connect(&url)
        .await
        .expect("TLS connect");
    assert!(broker.options().is_tls());
    broker
        .publish(vec![Publish::new("tls.q", message("secure", 4))])
        .await
        .unwrap();
    let consumer = broker
        .consume(ConsumeOptions::new(["tls.q"]))
        .await
        .unwrap();
    let delivery = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(delivery.iter().map(id_of).collect::<Vec<_>>(), ["secure"]);
    consumer.ack(&delivery[0]).await.unwrap();
    consumer.close().await.unwrap();

    let backend = queue_redis::RedisBackend::connect(&url, None)
        .await
        .unwrap();
    backend
        .store(TaskMeta::success("tls-task", serde_json::json!(1)))
        .await
        .unwrap();
    let meta = backend
        .wait("tls-task", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(meta.map(|meta| meta.result), Some(serde_json::json!(1)));

    // The system's roots do not know our CA: refused, promptly, with an error.
    let untrusted = format!("rediss://127.0.0.1:{}/0", server.port);
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        queue_redis::RedisBroker::connect(&untrusted),
    )
    .await
    .expect("a TLS failure is reported, not waited on");
    assert!(refused.is_err());
}
