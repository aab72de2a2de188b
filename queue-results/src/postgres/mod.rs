//! [`PostgresBackend`]: results in Celery's tables, waits pushed by LISTEN/NOTIFY.

mod listener;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use queue_core::connect::RedactedUrl;
use queue_core::{BackendError, GroupMeta, ResultBackend, TaskMeta};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use tokio::time::Instant;
use tracing::{debug, info};

pub use listener::CHANNEL as NOTIFY_CHANNEL;

use crate::chord::postgres as chord;
use crate::codec::{self, TaskRow};
use crate::error::{SqlError, with_retries};
use crate::options::{SqlOptions, parse_url, split_url};
use crate::sql::Dialect;
use crate::waiters::{Waiters, Wake, deadline_after, poll_pause, wait_ready};
use listener::Listener;

/// The schema migrations of the PostgreSQL backend, for applications that run migrations
/// themselves (connect with `migrate=false` then).
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const DIALECT: Dialect = Dialect::Postgres;
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| DIALECT.upsert_tasks(1));
static SELECT_TASK: LazyLock<String> = LazyLock::new(|| DIALECT.select_task());
static UPSERT_GROUP: LazyLock<String> = LazyLock::new(|| DIALECT.upsert_group());
static SELECT_GROUP: LazyLock<String> = LazyLock::new(|| DIALECT.select_group());

/// A result backend on PostgreSQL (`postgres://` / `postgresql://` URLs).
///
/// Rows go to Celery's `celery_taskmeta` / `celery_tasksetmeta` (see the crate docs). A
/// `wait` subscribes to the `celery_taskmeta` channel before it reads, then sleeps until a
/// write of that task is notified; while the LISTEN connection is down it polls instead.
/// Clones share the pool and the subscription.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    shown_url: String,
    options: SqlOptions,
    waiters: Arc<Waiters>,
    listener: Listener,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PostgresBackend")
            .field("url", &self.inner.shown_url)
            .field("expiry", &self.inner.options.expiry)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Connects with the default options (and those in the URL's query), running the
    /// migrations unless `migrate=false`.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Connects with `options`; options in the URL's query override them.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self, SqlError> {
        Self::connect_url(&parse_url(url)?, options).await
    }

    pub(crate) async fn connect_url(
        url: &RedactedUrl,
        options: SqlOptions,
    ) -> Result<Self, SqlError> {
        let (driver_url, options) = split_url(url, options)?;
        // sqlx's own parse errors name the bad part, never the password.
        let connect_options = PgConnectOptions::from_str(driver_url.as_str())
            .map_err(|error| SqlError::Config(format!("{url}: {error}")))?;
        let pool = pool_options(&options)
            .connect_with(connect_options)
            .await
            .map_err(|source| SqlError::Connect {
                url: url.to_string(),
                source,
            })?;
        Self::with_pool(pool, url.to_string(), options).await
    }

    /// A backend on an existing pool (e.g. the application's own), with `options`
    /// (`max_connections` and `acquire_timeout` are the pool's business then).
    pub async fn from_pool(pool: PgPool, options: SqlOptions) -> Result<Self, SqlError> {
        let shown = format!(
            "postgres://{}:{}/{}",
            pool.connect_options().get_host(),
            pool.connect_options().get_port(),
            pool.connect_options().get_database().unwrap_or_default()
        );
        Self::with_pool(pool, shown, options).await
    }

    async fn with_pool(
        pool: PgPool,
        shown_url: String,
        options: SqlOptions,
    ) -> Result<Self, SqlError> {
        if options.migrate {
            let mut migrator = sqlx::migrate!("./migrations/postgres");
            // The application may keep its own migrations in the same _sqlx_migrations table.
            migrator.set_ignore_missing(true);
            migrator.run(&pool).await?;
            debug!(url = %shown_url, "result tables migrated");
        }
        // LISTEN holds its connection for good: a pool of one of its own, so that it never
        // takes a connection from the stores and reads.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with((*pool.connect_options()).clone());
        info!(url = %shown_url, expiry = ?options.expiry, "PostgreSQL result backend ready");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                shown_url,
                options,
                waiters: Arc::new(Waiters::default()),
                listener: Listener::new(listen_pool),
            }),
        })
    }

    /// The connection pool (for an application's own queries on the result tables).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The options in force.
    pub fn options(&self) -> &SqlOptions {
        &self.inner.options
    }

    fn expiry_seconds(&self) -> Option<f64> {
        self.inner.options.expiry.map(|expiry| expiry.as_secs_f64())
    }

    async fn upsert(&self, rows: &[TaskRow], what: impl Fn() -> String) -> Result<(), SqlError> {
        let batch_sql;
        let sql: &str = if rows.len() == 1 {
            &UPSERT_ONE
        } else {
            batch_sql = DIALECT.upsert_tasks(rows.len());
            &batch_sql
        };
        let expiry = self.expiry_seconds();
        with_retries(self.inner.options.retries, what, || {
            let mut query = sqlx::query::<Postgres>(sql).bind(expiry);
            for row in rows {
                query = bind_row(query, row);
            }
            query.execute(&self.inner.pool)
        })
        .await?;
        Ok(())
    }

    async fn read(&self, task_id: &str) -> Result<Option<TaskMeta>, SqlError> {
        let row = with_retries(
            self.inner.options.retries,
            || format!("reading the result of task {task_id:?}"),
            || {
                sqlx::query::<Postgres>(&SELECT_TASK)
                    .bind(task_id)
                    .fetch_optional(&self.inner.pool)
            },
        )
        .await?;
        row.map(|row| decode_row(&row)?.decode()).transpose()
    }
}

fn pool_options(options: &SqlOptions) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
        .acquire_timeout(options.acquire_timeout)
        // sqlx already pings every connection when it is released; pinging again on each
        // acquire would double the round trips. A connection idle for a while may have been
        // cut (server restart, failover): that one is checked before use.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_secs(1) {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn bind_row<'q>(query: PgQuery<'q>, row: &'q TaskRow) -> PgQuery<'q> {
    query
        .bind(&row.task_id)
        .bind(&row.status)
        .bind(&row.result)
        .bind(row.date_done)
        .bind(&row.traceback)
        .bind(&row.children)
        .bind(&row.name)
        .bind(&row.args)
        .bind(&row.kwargs)
        .bind(&row.worker)
        .bind(row.retries)
        .bind(&row.queue)
        .bind(&row.group_id)
        .bind(&row.parent_id)
}

fn decode_row(row: &PgRow) -> Result<TaskRow, SqlError> {
    let task_id: String = row.try_get("task_id").unwrap_or_default();
    let fields = || -> Result<TaskRow, sqlx::Error> {
        Ok(TaskRow {
            task_id: task_id.clone(),
            status: row.try_get("status")?,
            result: row.try_get("result")?,
            date_done: row.try_get("date_done")?,
            traceback: row.try_get("traceback")?,
            children: row.try_get("children")?,
            name: row.try_get("name")?,
            args: row.try_get("args")?,
            kwargs: row.try_get("kwargs")?,
            worker: row.try_get("worker")?,
            retries: row.try_get("retries")?,
            queue: row.try_get("queue")?,
            group_id: row.try_get("group_id")?,
            parent_id: row.try_get("parent_id")?,
        })
    };
    fields().map_err(|error| SqlError::Corrupt {
        what: format!("the stored result of task {task_id:?}"),
        reason: error.to_string(),
    })
}

impl codec::RowWriter for PostgresBackend {
    fn upsert_rows(
        &self,
        rows: &[TaskRow],
        what: &(dyn Fn() -> String + Sync),
    ) -> impl std::future::Future<Output = Result<(), SqlError>> + Send {
        self.upsert(rows, what)
    }
}

#[async_trait]
impl ResultBackend for PostgresBackend {
    async fn store(&self, meta: TaskMeta) -> Result<(), BackendError> {
        codec::store_one(self, &meta).await
    }

    async fn store_many(&self, metas: Vec<TaskMeta>) -> Result<(), BackendError> {
        codec::store_batch(self, &metas).await
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskMeta>, BackendError> {
        Ok(self.read(task_id).await?)
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskMeta>, BackendError> {
        let inner = &self.inner;
        let deadline = deadline_after(timeout);
        inner.listener.ready(&inner.waiters, deadline).await;
        let mode = |reads: u32| {
            if inner.listener.is_listening() {
                Wake::Notified
            } else {
                Wake::Poll(poll_pause(reads, inner.options.poll_interval))
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let meta = wait_ready(&inner.waiters, task_id, remaining, mode, || {
            self.read(task_id)
        })
        .await?;
        Ok(meta)
    }

    async fn forget(&self, task_id: &str) -> Result<(), BackendError> {
        with_retries(
            self.inner.options.retries,
            || format!("forgetting task {task_id:?}"),
            || {
                sqlx::query::<Postgres>("DELETE FROM celery_taskmeta WHERE task_id = $1")
                    .bind(task_id)
                    .execute(&self.inner.pool)
            },
        )
        .await?;
        Ok(())
    }

    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError> {
        let bytes = codec::encode_group(group)?;
        let expiry = self.expiry_seconds();
        with_retries(
            self.inner.options.retries,
            || format!("saving group {:?}", group.group_id),
            || {
                sqlx::query::<Postgres>(&UPSERT_GROUP)
                    .bind(&group.group_id)
                    .bind(&bytes)
                    .bind(expiry)
                    .execute(&self.inner.pool)
            },
        )
        .await?;
        Ok(())
    }

    async fn get_group(&self, group_id: &str) -> Result<Option<GroupMeta>, BackendError> {
        let row = with_retries(
            self.inner.options.retries,
            || format!("reading group {group_id:?}"),
            || {
                sqlx::query::<Postgres>(&SELECT_GROUP)
                    .bind(group_id)
                    .fetch_optional(&self.inner.pool)
            },
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = row.try_get("result").map_err(|error| SqlError::Corrupt {
            what: format!("the stored group {group_id:?}"),
            reason: error.to_string(),
        })?;
        Ok(Some(codec::decode_group(group_id, bytes.as_deref())?))
    }

    async fn chord_start(&self, group_id: &str, size: u64) -> Result<(), BackendError> {
        Ok(chord::start(&self.inner.pool, &self.inner.options, group_id, size).await?)
    }

    async fn chord_part(&self, group_id: &str, part: ChordPart) -> Result<ChordJoin, BackendError> {
        Ok(chord::part(&self.inner.pool, &self.inner.options, group_id, part).await?)
    }

    async fn chord_dispatched(&self, claim: &ChordClaim) -> Result<(), BackendError> {
        Ok(chord::dispatched(&self.inner.pool, &self.inner.options, claim).await?)
    }

    async fn cleanup_expired(&self) -> Result<u64, BackendError> {
        const BATCH: usize = 10_000;
        let mut removed = 0;
        for table in ["celery_taskmeta", "celery_tasksetmeta"] {
            let sql = DIALECT.delete_expired(table, BATCH);
            loop {
                let done = with_retries(
                    self.inner.options.retries,
                    || format!("deleting expired rows of {table}"),
                    || sqlx::query::<Postgres>(&sql).execute(&self.inner.pool),
                )
                .await?;
                removed += done.rows_affected();
                if done.rows_affected() < BATCH as u64 {
                    break;
                }
            }
        }
        removed += chord::cleanup_expired(&self.inner.pool, &self.inner.options).await?;
        if removed > 0 {
            debug!(removed, "expired results deleted");
        }
        Ok(removed)
    }
}
