//! A Sentinel failover under load: producers and a consumer go through `sentinel://`
//! (`QUEUE_TEST_REDIS_SENTINEL_URL`, `cargo xtask services up redis-sentinel`) while the
//! test kills the master with SIGKILL (its pid from `INFO server`). Both must go on against
//! the promoted replica within 10 s; the test prints how long that took and how many
//! acknowledged publishes were lost (Redis replicates asynchronously: what the old master
//! acknowledged but had not yet sent to its replica is gone). Then it restarts the killed
//! node as a replica of the new master and waits until another failover would succeed, so
//! that other tests and reruns find a usable topology. It holds the topology exclusively
//! (the conformance suites through Sentinel wait meanwhile).

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::HashesInterface;
use queue_core::{Broker, ConsumeOptions, Publish, ResultBackend, TaskMeta};
use queue_redis::{RedisBackend, RedisBroker};

use common::sentinel::{self, URL_VARIABLE};
use common::{id_of, message};

const PRODUCERS: u64 = 2;
const BATCH: u64 = 10;
const RESUME_WITHIN: Duration = Duration::from_secs(10);

/// The killed node, to restart as a replica (also when the test fails half-way).
struct Killed {
    port: u16,
    args: Vec<String>,
    sentinels: Vec<u16>,
    restarted: bool,
}

impl Killed {
    /// Once the sentinels name another master (up to 30 s), starts the node as its replica;
    /// if none was promoted, as the master it was.
    fn restart_as_replica(&mut self) {
        if self.restarted {
            return;
        }
        self.restarted = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        let master = loop {
            match sentinel::master_port(&self.sentinels) {
                Some(master) if master != self.port => break Some(master),
                _ if Instant::now() >= deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut command = Command::new("redis-server");
        command.args(&self.args);
        if let Some(master) = master {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let status = command.status().expect("run redis-server");
        assert!(status.success(), "restarting the killed node failed");
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.restart_as_replica();
    }
}

/// The arguments that start the node on `port` again as it was (pid file, log, directory).
fn node_args(port: u16) -> Vec<String> {
    let get = |name: &str| {
        sentinel::cli(port, &["CONFIG", "GET", name])
            .and_then(|answer| answer.lines().nth(1).map(str::to_owned))
            .unwrap_or_default()
    };
    let mut args = vec![
        "--port".to_owned(),
        port.to_string(),
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--daemonize".to_owned(),
        "yes".to_owned(),
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
    ];
    for name in ["dir", "pidfile", "logfile"] {
        let value = get(name);
        if !value.is_empty() {
            args.extend([format!("--{name}"), value]);
        }
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_moves_producers_and_consumers_to_the_promoted_replica() {
    let Some(base) = queue_core::conformance::server_url(URL_VARIABLE) else {
        return;
    };
    let _exclusive = tokio::task::block_in_place(sentinel::exclusive_topology);
    let sentinels = sentinel::sentinel_ports(&base);
    tokio::task::block_in_place(|| sentinel::wait_healthy(&sentinels, Duration::from_secs(60)));
    let old_master = sentinel::master_port(&sentinels).expect("a master");
    let pid = sentinel::info_field(old_master, "server", "process_id").expect("process_id");
    let args = node_args(old_master);

    let url = sentinel::with_db(&base, 10, "visibility_timeout=3&command_timeout=20");
    let broker = Arc::new(RedisBroker::connect(&url).await.expect("connect"));
    let backend = RedisBackend::connect(&sentinel::with_db(&base, 10, ""), None)
        .await
        .expect("connect the backend");
    let queue = queue_core::conformance::unique_prefix("failover");
    let started = Instant::now();
    let sequence = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<(Instant, u64)>>> = Arc::default();
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    // Time after the kill of the first acknowledged publish sent after it.
    let publish_resumed: Arc<Mutex<Option<Duration>>> = Arc::default();

    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let (broker, queue, sequence, stop) = (
            broker.clone(),
            queue.clone(),
            sequence.clone(),
            stop.clone(),
        );
        let (killed_at, acknowledged, resumed) = (
            killed_at.clone(),
            acknowledged.clone(),
            publish_resumed.clone(),
        );
        producers.push(tokio::spawn(async move {
            let mut errors = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let sent_after_kill = *killed_at.lock().unwrap();
                let first = sequence.fetch_add(BATCH, Ordering::SeqCst);
                let ids: Vec<String> = (first..first + BATCH).map(|n| format!("m{n:08}")).collect();
                let batch = ids
                    .iter()
                    .map(|id| Publish::new(&queue, message(id, 0)))
                    .collect();
                match broker.publish(batch).await {
                    Ok(()) => {
                        acknowledged.lock().unwrap().extend(ids);
                        if let Some((at, _)) = sent_after_kill {
                            resumed.lock().unwrap().get_or_insert_with(|| at.elapsed());
                        }
                    }
                    // Not acknowledged: not counted as lost.
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            errors
        }));
    }

    let received = Arc::new(Mutex::new(HashSet::new()));
    let consume_resumed: Arc<Mutex<Option<Duration>>> = Arc::default();
    let consumer_task = tokio::spawn({
        let (broker, queue, stop, received) = (
            broker.clone(),
            queue.clone(),
            stop.clone(),
            received.clone(),
        );
        let (killed_at, resumed) = (killed_at.clone(), consume_resumed.clone());
        async move {
            let consumer = broker.consume(ConsumeOptions::new([queue])).await.unwrap();
            let mut errors = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match consumer.fetch(50, Duration::from_millis(200)).await {
                    Ok(deliveries) => {
                        for delivery in deliveries {
                            let id = id_of(&delivery);
                            let number: u64 = id[1..].parse().unwrap();
                            if let Some((at, sequence_at_kill)) = *killed_at.lock().unwrap() {
                                if number >= sequence_at_kill + PRODUCERS * BATCH {
                                    resumed.lock().unwrap().get_or_insert_with(|| at.elapsed());
                                }
                            }
                            // An ack lost with the master only means a redelivery.
                            if consumer.ack(&delivery).await.is_err() {
                                errors += 1;
                            }
                            received.lock().unwrap().insert(id);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (consumer, errors)
        }
    });

    // Load until a good number of publishes were acknowledged, then SIGKILL the master.
    acknowledged_at_least(&acknowledged, LOAD_BEFORE_KILL).await;
    let before_kill = acknowledged.lock().unwrap().len();
    assert!(before_kill > 0, "nothing published before the kill");
    let mut killed = Killed {
        port: old_master,
        args,
        sentinels: sentinels.clone(),
        restarted: false,
    };
    let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success(), "kill -KILL {pid}");
    // Times count from the moment the process is gone (a publish answered before that was
    // answered by the old master).
    // (A zombie's command line is empty.)
    let gone_by = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| !line.is_empty()) {
        assert!(
            Instant::now() < gone_by,
            "the killed master {pid} is still there"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    *killed_at.lock().unwrap() = Some((Instant::now(), sequence.load(Ordering::SeqCst)));
    let kill_time = killed_at.lock().unwrap().unwrap().0;

    // Both sides resume within the limit.
    while publish_resumed.lock().unwrap().is_none() || consume_resumed.lock().unwrap().is_none() {
        assert!(
            kill_time.elapsed() < RESUME_WITHIN,
            "no resumption within {RESUME_WITHIN:?} of the kill: publish {:?}, consume {:?}",
            publish_resumed.lock().unwrap(),
            consume_resumed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_master = loop {
        match sentinel::master_port(&sentinels) {
            Some(master) if master != old_master => break master,
            _ => {
                assert!(kill_time.elapsed() < RESUME_WITHIN, "no replica promoted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Some more load on the new master, then stop the producers.
    let resumed_with = acknowledged.lock().unwrap().len();
    acknowledged_at_least(&acknowledged, resumed_with + LOAD_AFTER_FAILOVER).await;
    stop.store(true, Ordering::SeqCst);
    let mut publish_errors = 0;
    for producer in producers {
        publish_errors += producer.await.unwrap();
    }
    let (consumer, consume_errors) = consumer_task.await.unwrap();

    // Drain: what is ready, and what a lost ack left unacked (restored after 3 s).
    let client = broker.client();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for delivery in consumer
            .fetch(100, Duration::from_millis(300))
            .await
            .unwrap()
        {
            consumer.ack(&delivery).await.unwrap();
            received.lock().unwrap().insert(id_of(&delivery));
        }
        let ready = broker.queue_length(&queue).await.unwrap().total;
        let unacked: u64 = client.hlen("unacked").await.unwrap();
        let all_in = acknowledged.is_subset(&received.lock().unwrap());
        if (ready == 0 && unacked == 0) || all_in {
            break;
        }
        assert!(
            Instant::now() < drain_deadline,
            "{ready} ready, {unacked} unacked left"
        );
    }
    consumer.close().await.unwrap();

    // The result backend writes and reads on the new master too.
    let task_id = queue_core::conformance::unique_prefix("failover-result");
    backend
        .store(TaskMeta::success(&task_id, serde_json::json!(42)))
        .await
        .expect("store on the new master");
    let stored = backend.get(&task_id).await.expect("get").expect("stored");
    assert_eq!(stored.result, serde_json::json!(42));

    let lost = acknowledged.difference(&received.lock().unwrap()).count();
    println!(
        "failover {old_master} -> {new_master}: publishes resumed {:?} and consumption {:?} after the SIGKILL; \
         {lost} of {} acknowledged publishes lost ({before_kill} acknowledged before the kill); \
         {publish_errors} failed publish batches, {consume_errors} consumer errors; {:?} in all",
        publish_resumed.lock().unwrap().unwrap(),
        consume_resumed.lock().unwrap().unwrap(),
        acknowledged.len(),
        started.elapsed()
    );

    // Leave the topology as usable as it was: the killed node back, as a replica.
    tokio::task::block_in_place(|| {
        killed.restart_as_replica();
        sentinel::wait_healthy(&sentinels, Duration::from_secs(60));
    });
    assert_eq!(killed.port, old_master);
}

/// Publishes acknowledged before the kill, and on the new master after it.
const LOAD_BEFORE_KILL: usize = 1000;
const LOAD_AFTER_FAILOVER: usize = 300;

/// Waits until `count` publishes were acknowledged (within 30 s).
async fn acknowledged_at_least<T>(
    acknowledged: &std::sync::Mutex<std::collections::HashSet<T>>,
    count: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} publishes acknowledged in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
