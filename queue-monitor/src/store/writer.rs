//! The one writer: takes queued writes in batches (one transaction each; a task updated
//! several times in a batch is written once), and the pruner that keeps the history within
//! its bounds.

use std::collections::HashMap;

use hashlink::LinkedHashMap;
use std::time::Duration;

use sqlx::QueryBuilder;
use tokio::sync::{mpsc, watch};

use super::read::{QueueSample, TimelineEntry};
use super::{Backend, StoreError, Write, on_pool};
use crate::ingest::task::Task;
use crate::ingest::worker::Worker;

/// Most writes taken into one transaction.
const MAX_BATCH: usize = 5000;
/// Rows per multi-row INSERT (SQLite allows 32 766 parameters per statement).
const ROWS_PER_STATEMENT: usize = 200;
/// Rows deleted per pruning statement, so that the writer is never held up long.
const PRUNE_CHUNK: i64 = 5000;

#[derive(Default)]
struct Batch {
    /// In the order first written, so that rowids follow the order tasks were first seen.
    tasks: LinkedHashMap<String, Task>,
    events: Vec<TimelineEntry>,
    workers: HashMap<String, Worker>,
    samples: Vec<QueueSample>,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
    count: usize,
}

impl Batch {
    fn add(&mut self, write: Write) {
        self.count += 1;
        match write {
            Write::Task(task) => {
                self.tasks.replace(task.uuid.clone(), *task);
            }
            Write::Event(event) => self.events.push(event),
            Write::Worker(worker) => {
                self.workers.insert(worker.hostname.clone(), *worker);
            }
            Write::QueueSample(sample) => self.samples.push(sample),
            Write::Flush(done) => self.flushes.push(done),
        }
    }
}

/// Writes what the [`Store`](super::Store) queues; run it with [`Writer::run`].
#[derive(Debug)]
pub struct Writer {
    backend: Backend,
    receiver: mpsc::Receiver<Write>,
}

impl Writer {
    pub(crate) fn new(backend: Backend, receiver: mpsc::Receiver<Write>) -> Self {
        Self { backend, receiver }
    }

    /// Writes until `stop` turns true, then writes what is still queued and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                write = self.receiver.recv() => write,
                _ = crate::stopped(&mut stop) => None,
            };
            let Some(first) = first else {
                break;
            };
            let mut batch = Batch::default();
            batch.add(first);
            while batch.count < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(write) => batch.add(write),
                    Err(_) => break,
                }
            }
            self.flush(batch).await;
        }
        self.receiver.close();
        loop {
            let mut batch = Batch::default();
            while batch.count < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(write) => batch.add(write),
                    Err(_) => break,
                }
            }
            if batch.count == 0 {
                break;
            }
            self.flush(batch).await;
        }
    }

    async fn flush(&self, mut batch: Batch) {
        let count = batch.count;
        let flushes = std::mem::take(&mut batch.flushes);
        if let Err(error) = write_batch(&self.backend, batch).await {
            tracing::warn!(%error, writes = count, "history: a batch could not be written");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_batch(backend: &Backend, batch: Batch) -> Result<(), StoreError> {
    let tasks: Vec<Task> = batch.tasks.into_iter().map(|(_, task)| task).collect();
    let workers: Vec<Worker> = batch.workers.into_values().collect();
    on_pool!(backend, |pool, Db| {
        let mut transaction = pool.begin().await?;
        for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for task in chunk {
                rows.push((task, serde_json::to_string(task)?));
            }
            let mut builder = QueryBuilder::<Db>::new(
                "INSERT INTO monitor_tasks (uuid, name, state, worker, received, started, timestamp, runtime, args, kwargs, result, parent_id, root_id, data) ",
            );
            builder.push_values(rows, |mut row, (task, data)| {
                row.push_bind(task.uuid.clone())
                    .push_bind(task.name.clone())
                    .push_bind(task.state.clone())
                    .push_bind(task.worker.clone())
                    .push_bind(task.received)
                    .push_bind(task.started)
                    .push_bind(task.timestamp.unwrap_or_default())
                    .push_bind(task.runtime)
                    .push_bind(task.args.clone())
                    .push_bind(task.kwargs.clone())
                    .push_bind(task.result.clone())
                    .push_bind(task.parent_id.clone())
                    .push_bind(task.root_id.clone())
                    .push_bind(data);
            });
            builder.push(
                " ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, state = excluded.state, \
                 worker = excluded.worker, received = excluded.received, started = excluded.started, \
                 timestamp = excluded.timestamp, runtime = excluded.runtime, args = excluded.args, \
                 kwargs = excluded.kwargs, result = excluded.result, parent_id = excluded.parent_id, \
                 root_id = excluded.root_id, data = excluded.data",
            );
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in batch.events.chunks(ROWS_PER_STATEMENT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for event in chunk {
                rows.push((event, serde_json::to_string(&event.fields)?));
            }
            let mut builder = QueryBuilder::<Db>::new(
                "INSERT INTO monitor_events (uuid, type, hostname, timestamp, fields) ",
            );
            builder.push_values(rows, |mut row, (event, fields)| {
                row.push_bind(event.uuid.clone())
                    .push_bind(event.kind.clone())
                    .push_bind(event.hostname.clone())
                    .push_bind(event.timestamp)
                    .push_bind(fields);
            });
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in workers.chunks(ROWS_PER_STATEMENT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for worker in chunk {
                let updated = worker
                    .heartbeats
                    .last()
                    .copied()
                    .or(worker.inspected_at)
                    .unwrap_or_default();
                rows.push((
                    worker.hostname.clone(),
                    updated,
                    serde_json::to_string(worker)?,
                ));
            }
            let mut builder =
                QueryBuilder::<Db>::new("INSERT INTO monitor_workers (hostname, updated, data) ");
            builder.push_values(rows, |mut row, (hostname, updated, data)| {
                row.push_bind(hostname).push_bind(updated).push_bind(data);
            });
            builder.push(
                " ON CONFLICT (hostname) DO UPDATE SET updated = excluded.updated, data = excluded.data",
            );
            builder.build().execute(&mut *transaction).await?;
        }
        for chunk in batch.samples.chunks(ROWS_PER_STATEMENT) {
            let mut builder = QueryBuilder::<Db>::new(
                "INSERT INTO monitor_queue_samples (queue, time, messages, oldest_age, delayed, dead_letters) ",
            );
            builder.push_values(chunk, |mut row, sample| {
                row.push_bind(sample.queue.clone())
                    .push_bind(sample.time)
                    .push_bind(sample.messages)
                    .push_bind(sample.oldest_age)
                    .push_bind(sample.delayed)
                    .push_bind(sample.dead_letters);
            });
            builder.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    })
}

/// The history's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Task rows kept.
    pub max_tasks: u64,
    /// Event rows kept.
    pub max_events: u64,
    /// Rows older than this go.
    pub max_age: Duration,
}

/// Deletes what is beyond `bounds` at `now` (seconds since the epoch); returns the task
/// and event rows deleted.
pub async fn prune(backend: &Backend, bounds: Bounds, now: f64) -> Result<(u64, u64), StoreError> {
    let cutoff = now - bounds.max_age.as_secs_f64();
    let offset = i64::try_from(bounds.max_tasks).unwrap_or(i64::MAX);
    let events_offset = i64::try_from(bounds.max_events).unwrap_or(i64::MAX);
    on_pool!(backend, |pool, Db| {
        let task_cutoff: Option<(f64,)> = QueryBuilder::<Db>::new(
            "SELECT timestamp FROM monitor_tasks ORDER BY timestamp DESC LIMIT 1 OFFSET ",
        )
        .push_bind(offset)
        .build_query_as()
        .fetch_optional(pool)
        .await?;
        // The row at offset `max_tasks` is the first one beyond the bound: it goes too.
        let mut tasks = 0;
        loop {
            let mut builder = QueryBuilder::<Db>::new(
                "DELETE FROM monitor_tasks WHERE uuid IN (SELECT uuid FROM monitor_tasks WHERE timestamp < ",
            );
            builder.push_bind(cutoff);
            if let Some((beyond,)) = task_cutoff {
                builder.push(" OR timestamp <= ").push_bind(beyond);
            }
            builder
                .push(" ORDER BY timestamp LIMIT ")
                .push_bind(PRUNE_CHUNK)
                .push(")");
            let deleted = builder.build().execute(pool).await?.rows_affected();
            tasks += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                break;
            }
        }
        let last_kept: Option<(i64,)> = QueryBuilder::<Db>::new(
            "SELECT id FROM monitor_events ORDER BY id DESC LIMIT 1 OFFSET ",
        )
        .push_bind(events_offset)
        .build_query_as()
        .fetch_optional(pool)
        .await?;
        let mut events = 0;
        loop {
            let mut builder = QueryBuilder::<Db>::new(
                "DELETE FROM monitor_events WHERE id IN (SELECT id FROM monitor_events WHERE timestamp < ",
            );
            builder.push_bind(cutoff);
            if let Some((id,)) = last_kept {
                builder.push(" OR id <= ").push_bind(id);
            }
            builder
                .push(" ORDER BY id LIMIT ")
                .push_bind(PRUNE_CHUNK)
                .push(")");
            let deleted = builder.build().execute(pool).await?.rows_affected();
            events += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                break;
            }
        }
        QueryBuilder::<Db>::new("DELETE FROM monitor_queue_samples WHERE time < ")
            .push_bind(cutoff)
            .build()
            .execute(pool)
            .await?;
        if matches!(backend, Backend::Sqlite(_)) {
            // Fresh statistics let the planner pick the right index for combined filters
            // (sampled: milliseconds whatever the size).
            sqlx::query::<Db>("PRAGMA analysis_limit = 1000")
                .execute(pool)
                .await?;
            sqlx::query::<Db>("ANALYZE").execute(pool).await?;
        }
        QueryBuilder::<Db>::new("DELETE FROM monitor_workers WHERE updated < ")
            .push_bind(cutoff)
            .build()
            .execute(pool)
            .await?;
        Ok((tasks, events))
    })
}
