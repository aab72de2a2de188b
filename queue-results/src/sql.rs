//! The statements, written once for both databases: they differ only in placeholders and in
//! the clock (PostgreSQL's `now()`; on SQLite, the time the caller binds).

/// The task columns we write and read (besides `id`, `stamps` and `expires_at`), in the
/// order of [`TaskRow`](crate::codec::TaskRow)'s fields.
pub(crate) const TASK_COLUMNS: [&str; 14] = [
    "task_id",
    "status",
    "result",
    "date_done",
    "traceback",
    "children",
    "name",
    "args",
    "kwargs",
    "worker",
    "retries",
    "queue",
    "group_id",
    "parent_id",
];

/// Most rows per upsert statement: far below both databases' limits on bound parameters
/// (65535 for PostgreSQL, 32766 for SQLite).
pub(crate) const MAX_BATCH: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
}

impl Dialect {
    fn placeholder(self, number: usize) -> String {
        match self {
            Dialect::Postgres => format!("${number}"),
            Dialect::Sqlite => format!("?{number}"),
        }
    }

    /// Parameters before the rows' own: PostgreSQL binds the expiry in seconds ($1);
    /// SQLite binds the row's expiry instant (?1) and the current instant (?2), in Unix µs.
    fn leading_parameters(self) -> usize {
        match self {
            Dialect::Postgres => 1,
            Dialect::Sqlite => 2,
        }
    }

    fn expires_at(self) -> &'static str {
        match self {
            Dialect::Postgres => "now() + $1::float8 * interval '1 second'",
            Dialect::Sqlite => "?1",
        }
    }

    fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => "?2",
        }
    }

    /// `INSERT` of `rows` task rows that updates existing rows, except a SUCCESS that has not
    /// expired: the guard makes "a SUCCESS is never overwritten" hold in the database itself,
    /// whatever the order in which concurrent writers arrive.
    pub fn upsert_tasks(self, rows: usize) -> String {
        let mut sql = format!(
            "INSERT INTO celery_taskmeta ({}, expires_at) VALUES ",
            TASK_COLUMNS.join(", ")
        );
        let mut number = self.leading_parameters();
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for _ in TASK_COLUMNS {
                number += 1;
                sql.push_str(&self.placeholder(number));
                sql.push_str(", ");
            }
            sql.push_str(self.expires_at());
            sql.push(')');
        }
        let updates: Vec<String> = TASK_COLUMNS[1..]
            .iter()
            .chain(["expires_at"].iter())
            .map(|column| format!("{column} = EXCLUDED.{column}"))
            .collect();
        sql.push_str(&format!(
            " ON CONFLICT (task_id) DO UPDATE SET {}, stamps = NULL \
             WHERE celery_taskmeta.status IS DISTINCT FROM 'SUCCESS' \
             OR celery_taskmeta.expires_at <= {}",
            updates.join(", "),
            self.now()
        ));
        if self == Dialect::Sqlite {
            // SQLite spells IS DISTINCT FROM as IS NOT.
            sql = sql.replace("IS DISTINCT FROM", "IS NOT");
        }
        sql
    }

    /// The live row of one task ($1 / ?1: the id; SQLite's ?2: now).
    pub fn select_task(self) -> String {
        format!(
            "SELECT {} FROM celery_taskmeta WHERE task_id = {} AND {}",
            TASK_COLUMNS.join(", "),
            self.placeholder(1),
            self.live(2),
        )
    }

    /// Upsert of a group: $1 id, $2 result, then the dialect's expiry parameters.
    pub fn upsert_group(self) -> String {
        let (date_done, expires_at) = match self {
            Dialect::Postgres => (
                "(now() AT TIME ZONE 'UTC')",
                "now() + $3::float8 * interval '1 second'",
            ),
            Dialect::Sqlite => ("?3", "?4"),
        };
        format!(
            "INSERT INTO celery_tasksetmeta (taskset_id, result, date_done, expires_at) \
             VALUES ({}, {}, {date_done}, {expires_at}) \
             ON CONFLICT (taskset_id) DO UPDATE SET result = EXCLUDED.result, \
             date_done = EXCLUDED.date_done, expires_at = EXCLUDED.expires_at",
            self.placeholder(1),
            self.placeholder(2),
        )
    }

    /// The live record of one group ($1 / ?1: the id; SQLite's ?2: now).
    pub fn select_group(self) -> String {
        format!(
            "SELECT result FROM celery_tasksetmeta WHERE taskset_id = {} AND {}",
            self.placeholder(1),
            self.live(2)
        )
    }

    /// Deletes up to `limit` expired rows of `table` (SQLite's ?1: now), in batches so that
    /// a large cleanup never holds locks for long. On PostgreSQL, rows another worker's
    /// cleanup is deleting are skipped rather than waited for.
    pub fn delete_expired(self, table: &str, limit: usize) -> String {
        let (now, skip_locked) = match self {
            Dialect::Postgres => ("now()", " FOR UPDATE SKIP LOCKED"),
            Dialect::Sqlite => ("?1", ""),
        };
        format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE expires_at <= {now} LIMIT {limit}{skip_locked})"
        )
    }

    fn live(self, now_parameter: usize) -> String {
        let now = match self {
            Dialect::Postgres => "now()".to_owned(),
            Dialect::Sqlite => self.placeholder(now_parameter),
        };
        format!("(expires_at IS NULL OR expires_at > {now})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_number_their_parameters_per_row() {
        let sql = Dialect::Postgres.upsert_tasks(2);
        assert!(sql.contains("($2, $3,"), "{sql}");
        assert!(sql.contains("$15, now() + $1::float8"), "{sql}");
        assert!(sql.contains("($16, "), "{sql}");
        assert!(sql.contains("$29, now()"), "{sql}");
        assert!(sql.contains("IS DISTINCT FROM 'SUCCESS'"), "{sql}");
        let sql = Dialect::Sqlite.upsert_tasks(1);
        assert!(sql.contains("(?3, ?4,"), "{sql}");
        assert!(sql.contains("?16, ?1)"), "{sql}");
        assert!(
            sql.contains("IS NOT 'SUCCESS' OR celery_taskmeta.expires_at <= ?2"),
            "{sql}"
        );
    }
}
