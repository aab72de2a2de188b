//! [`SqliteBackend`]: results in Celery's tables in a SQLite file (or in memory).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{NaiveDateTime, Utc};
use queue_core::chord::{ChordClaim, ChordJoin, ChordPart};
use queue_core::connect::RedactedUrl;
use queue_core::protocol::time::parse_timestamp;
use queue_core::{BackendError, GroupMeta, ResultBackend, TaskMeta};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};
use tracing::{debug, info};

use crate::chord::sqlite as chord;
use crate::codec::{self, TaskRow};
use crate::error::{SqlError, with_retries};
use crate::options::{SqlOptions, parse_url, split_url};
use crate::sql::Dialect;
use crate::waiters::{Waiters, Wake, poll_pause, wait_ready};

/// The schema migrations of the SQLite backend, for applications that run migrations
/// themselves (connect with `migrate=false` then).
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

const DIALECT: Dialect = Dialect::Sqlite;
/// SQLite has one writer at a time; a few connections let reads proceed beside it (WAL).
const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// Retries of opening the database while another process holds it busy.
const CONNECT_RETRIES: u32 = 4;

static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| DIALECT.upsert_tasks(1));
static SELECT_TASK: LazyLock<String> = LazyLock::new(|| DIALECT.select_task());
static UPSERT_GROUP: LazyLock<String> = LazyLock::new(|| DIALECT.upsert_group());
static SELECT_GROUP: LazyLock<String> = LazyLock::new(|| DIALECT.select_group());

/// A result backend in a SQLite database (`sqlite://` URLs), e.g. an embedded result store
/// next to a single-host application: `sqlite://results.db`, `sqlite:///var/lib/app/r.db`,
/// `sqlite::memory:`.
///
/// The file is created when missing (unless the URL sets sqlx's `mode`), in WAL mode with
/// `synchronous=NORMAL`: a crash of the application loses nothing committed, a power cut may
/// lose the last results. SQLite cannot push: a `wait` polls (5 ms, doubling up to the
/// `poll_interval`), and is woken at once by writes of this same backend (or its clones).
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    shown_url: String,
    options: SqlOptions,
    waiters: Waiters,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SqliteBackend")
            .field("url", &self.inner.shown_url)
            .field("expiry", &self.inner.options.expiry)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database of `url` with the default options (and those
    /// in the URL's query), running the migrations unless `migrate=false`.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Self::connect_with(url, SqlOptions::default()).await
    }

    /// Opens the database of `url` with `options`; options in the URL's query override them.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self, SqlError> {
        Self::connect_url(&parse_url(url)?, options).await
    }

    pub(crate) async fn connect_url(
        url: &RedactedUrl,
        options: SqlOptions,
    ) -> Result<Self, SqlError> {
        let (driver_url, options) = split_url(url, options)?;
        let explicit_mode = driver_url.query_pairs().any(|(key, _)| key == "mode");
        let mut connect_options = SqliteConnectOptions::from_str(driver_url.as_str())
            .map_err(|error| SqlError::Config(format!("{url}: {error}")))?;
        let in_memory = is_in_memory(&driver_url);
        if !explicit_mode {
            // An embedded result store is expected to appear on first use.
            connect_options = connect_options.create_if_missing(true);
        }
        let mut pool_options = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
        if in_memory {
            // The database lives as long as one of its connections: keep exactly one.
            pool_options = pool_options
                .max_connections(options.max_connections.unwrap_or(1))
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            connect_options = connect_options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            pool_options = pool_options
                .max_connections(options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS));
        }
        // Switching a new file to WAL needs it to itself for a moment: processes opening it
        // together may find it busy, which does not last.
        let pool = with_retries(
            CONNECT_RETRIES,
            || format!("opening {url}"),
            || pool_options.clone().connect_with(connect_options.clone()),
        )
        .await
        .map_err(|error| match error {
            SqlError::Database { source, .. } => SqlError::Connect {
                url: url.to_string(),
                source,
            },
            other => other,
        })?;
        Self::with_pool(pool, url.to_string(), options).await
    }

    /// A backend on an existing pool, with `options`.
    pub async fn from_pool(pool: SqlitePool, options: SqlOptions) -> Result<Self, SqlError> {
        let shown = format!(
            "sqlite://{}",
            pool.connect_options().get_filename().display()
        );
        Self::with_pool(pool, shown, options).await
    }

    async fn with_pool(
        pool: SqlitePool,
        shown_url: String,
        options: SqlOptions,
    ) -> Result<Self, SqlError> {
        if options.migrate {
            migrate(&pool).await?;
            debug!(url = %shown_url, "result tables migrated");
        }
        info!(url = %shown_url, expiry = ?options.expiry, "SQLite result backend ready");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                shown_url,
                options,
                waiters: Waiters::default(),
            }),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The options in force.
    pub fn options(&self) -> &SqlOptions {
        &self.inner.options
    }

    /// (expiry instant or none, now), in Unix microseconds.
    fn clock(&self) -> (Option<i64>, i64) {
        let now = Utc::now();
        let expires_at = self.inner.options.expiry.map(|expiry| {
            chrono::Duration::from_std(expiry)
                .ok()
                .and_then(|expiry| now.checked_add_signed(expiry))
                .map_or(i64::MAX, |at| at.timestamp_micros())
        });
        (expires_at, now.timestamp_micros())
    }

    async fn upsert(&self, rows: &[TaskRow], what: impl Fn() -> String) -> Result<(), SqlError> {
        let batch_sql;
        let sql: &str = if rows.len() == 1 {
            &UPSERT_ONE
        } else {
            batch_sql = DIALECT.upsert_tasks(rows.len());
            &batch_sql
        };
        let dates: Vec<Option<String>> = rows
            .iter()
            .map(|row| row.date_done.map(format_date))
            .collect();
        with_retries(self.inner.options.retries, what, || {
            let (expires_at, now) = self.clock();
            let mut query = sqlx::query::<Sqlite>(sql).bind(expires_at).bind(now);
            for (row, date) in rows.iter().zip(&dates) {
                query = bind_row(query, row, date);
            }
            query.execute(&self.inner.pool)
        })
        .await?;
        for row in rows {
            self.inner.waiters.notify(&row.task_id);
        }
        Ok(())
    }

    async fn read(&self, task_id: &str) -> Result<Option<TaskMeta>, SqlError> {
        let row = with_retries(
            self.inner.options.retries,
            || format!("reading the result of task {task_id:?}"),
            || {
                sqlx::query::<Sqlite>(&SELECT_TASK)
                    .bind(task_id)
                    .bind(self.clock().1)
                    .fetch_optional(&self.inner.pool)
            },
        )
        .await?;
        row.map(|row| decode_row(&row)?.decode()).transpose()
    }
}

/// Adopts Celery's tables, then runs the migrations. Unlike PostgreSQL's, sqlx's SQLite
/// migrator takes no lock: processes opening a new file together (a quickstart's worker and
/// client) race to record the same migration, and the losers fail on the version's
/// uniqueness. Running again finds it recorded, so a failed run is retried a few times.
async fn migrate(pool: &SqlitePool) -> Result<(), SqlError> {
    const ATTEMPTS: u32 = 5;
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    // The application may keep its own migrations in the same _sqlx_migrations table.
    migrator.set_ignore_missing(true);
    let mut failures = 0;
    loop {
        let outcome = match adopt_celery_tables(pool).await {
            Ok(()) => migrator.run(pool).await.map_err(SqlError::from),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(error) if failures + 1 < ATTEMPTS => {
                failures += 1;
                debug!(%error, attempt = failures, "migrating the result tables failed; retrying");
                tokio::time::sleep(SqlOptions::retry_delay(failures)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Columns a table that Celery created (any version, with or without `result_extended`)
/// may lack, with their types.
const ADOPTED_COLUMNS: [(&str, &[(&str, &str)]); 2] = [
    (
        "celery_taskmeta",
        &[
            ("children", "BLOB"),
            ("name", "VARCHAR(155)"),
            ("args", "BLOB"),
            ("kwargs", "BLOB"),
            ("worker", "VARCHAR(155)"),
            ("retries", "INTEGER"),
            ("queue", "VARCHAR(155)"),
            ("stamps", "BLOB"),
            ("group_id", "VARCHAR(155)"),
            ("parent_id", "VARCHAR(155)"),
            ("expires_at", "INTEGER"),
        ],
    ),
    ("celery_tasksetmeta", &[("expires_at", "INTEGER")]),
];

/// Adds the missing columns to tables Celery created before us. SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so this cannot be a migration; it runs before them, since
/// their indexes name these columns. Tables that do not exist are left to the migrations.
async fn adopt_celery_tables(pool: &SqlitePool) -> Result<(), SqlError> {
    for (table, wanted) in ADOPTED_COLUMNS {
        let present: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(table)
            .fetch_all(pool)
            .await
            .map_err(|error| SqlError::database(format!("inspecting table {table}"), error))?;
        if present.is_empty() {
            continue;
        }
        for (column, kind) in wanted {
            if !present.iter().any(|name| name == column) {
                info!(table, column, "adding a column to a table Celery created");
                sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                    .execute(pool)
                    .await
                    .map_err(|error| {
                        SqlError::database(format!("adding column {column} to {table}"), error)
                    })?;
            }
        }
    }
    Ok(())
}

/// `sqlite::memory:`, `sqlite://:memory:` and `?mode=memory` name a private in-memory
/// database.
fn is_in_memory(url: &url::Url) -> bool {
    let text = url.as_str();
    let database = text
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    database == ":memory:"
        || url
            .query_pairs()
            .any(|(key, value)| key == "mode" && value == "memory")
}

/// SQLAlchemy's storage format for DateTime on SQLite, which Celery's models read back.
fn format_date(date: NaiveDateTime) -> String {
    date.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_row<'q>(
    query: SqliteQuery<'q>,
    row: &'q TaskRow,
    date: &'q Option<String>,
) -> SqliteQuery<'q> {
    query
        .bind(&row.task_id)
        .bind(&row.status)
        .bind(&row.result)
        .bind(date)
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

fn decode_row(row: &SqliteRow) -> Result<TaskRow, SqlError> {
    let task_id: String = row.try_get("task_id").unwrap_or_default();
    let corrupt = |reason: String| SqlError::Corrupt {
        what: format!("the stored result of task {task_id:?}"),
        reason,
    };
    let fields = || -> Result<TaskRow, sqlx::Error> {
        Ok(TaskRow {
            task_id: task_id.clone(),
            status: row.try_get("status")?,
            result: row.try_get("result")?,
            date_done: None,
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
    let mut decoded = fields().map_err(|error| corrupt(error.to_string()))?;
    let date: Option<String> = row
        .try_get_unchecked("date_done")
        .map_err(|error| corrupt(error.to_string()))?;
    decoded.date_done = date
        .map(|text| {
            parse_timestamp(&text)
                .map(|time| time.naive_utc())
                .ok_or_else(|| corrupt(format!("date_done {text:?} is not a timestamp")))
        })
        .transpose()?;
    Ok(decoded)
}

impl codec::RowWriter for SqliteBackend {
    fn upsert_rows(
        &self,
        rows: &[TaskRow],
        what: &(dyn Fn() -> String + Sync),
    ) -> impl std::future::Future<Output = Result<(), SqlError>> + Send {
        self.upsert(rows, what)
    }
}

#[async_trait]
impl ResultBackend for SqliteBackend {
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
        let longest = self.inner.options.poll_interval;
        let mode = |reads| Wake::Poll(poll_pause(reads, longest));
        let meta = wait_ready(&self.inner.waiters, task_id, timeout, mode, || {
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
                sqlx::query::<Sqlite>("DELETE FROM celery_taskmeta WHERE task_id = ?1")
                    .bind(task_id)
                    .execute(&self.inner.pool)
            },
        )
        .await?;
        Ok(())
    }

    async fn save_group(&self, group: &GroupMeta) -> Result<(), BackendError> {
        let bytes = codec::encode_group(group)?;
        with_retries(
            self.inner.options.retries,
            || format!("saving group {:?}", group.group_id),
            || {
                let (expires_at, _) = self.clock();
                sqlx::query::<Sqlite>(&UPSERT_GROUP)
                    .bind(&group.group_id)
                    .bind(&bytes)
                    .bind(format_date(Utc::now().naive_utc()))
                    .bind(expires_at)
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
                sqlx::query::<Sqlite>(&SELECT_GROUP)
                    .bind(group_id)
                    .bind(self.clock().1)
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
                    || {
                        sqlx::query::<Sqlite>(&sql)
                            .bind(self.clock().1)
                            .execute(&self.inner.pool)
                    },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_are_recognised() {
        for (text, memory) in [
            ("sqlite::memory:", true),
            ("sqlite://?mode=memory", true),
            ("sqlite://results.db", false),
            ("sqlite:///tmp/memory.db", false),
        ] {
            let url = url::Url::parse(text).unwrap();
            assert_eq!(is_in_memory(&url), memory, "{text}");
        }
    }

    #[test]
    fn dates_use_sqlalchemy_storage_format() {
        let date = parse_timestamp("2026-11-24T15:28:38.2182+00:00")
            .unwrap()
            .naive_utc();
        assert_eq!(format_date(date), "2026-11-24 15:28:38.218200");
        let whole = parse_timestamp("2026-11-24T15:28:38+00:00")
            .unwrap()
            .naive_utc();
        assert_eq!(format_date(whole), "2026-11-24 15:28:38.000000");
    }
}
