//! Task search over the whole history: filters (state, name, worker, time), Flower's
//! search syntax ([`super::query`]), sorting and paging, as SQL that the indexes serve.

use std::time::Instant;

use super::query::Query;
use super::{Backend, Store, StoreError, on_pool};
use crate::ingest::task::Task;

/// Matches counted at most (a count beyond says "more than").
pub const COUNT_CAP: i64 = 1_000;

/// The tables of a search driven by the text index.
/// (`CROSS JOIN`: SQLite keeps the text index as the outer loop.)
const TEXT_DRIVEN: &str =
    "monitor_tasks_text CROSS JOIN monitor_tasks AS t ON t.rowid = monitor_tasks_text.rowid";

/// What a search sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// When the state last changed (default).
    #[default]
    Timestamp,
    /// When received.
    Received,
    /// When started.
    Started,
    /// The runtime.
    Runtime,
    /// The name.
    Name,
    /// The state.
    State,
}

impl Sort {
    /// Parses `name` or `-name` (descending); `None` for an unknown key.
    pub fn parse(key: &str) -> Option<(Self, bool)> {
        let (descending, key) = match key.strip_prefix('-') {
            Some(key) => (true, key),
            None => (false, key),
        };
        let sort = match key {
            "timestamp" => Self::Timestamp,
            "received" => Self::Received,
            "started" => Self::Started,
            "runtime" => Self::Runtime,
            "name" => Self::Name,
            "state" => Self::State,
            _ => return None,
        };
        Some((sort, descending))
    }

    fn column(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Received => "received",
            Self::Started => "started",
            Self::Runtime => "runtime",
            Self::Name => "name",
            Self::State => "state",
        }
    }
}

/// A search: every filter set must match.
#[derive(Clone, Debug, Default)]
pub struct TaskSearch {
    /// Flower's search syntax, parsed.
    pub query: Option<Query>,
    /// One of these states (upper case).
    pub states: Vec<String>,
    /// Exactly this task name.
    pub name: Option<String>,
    /// Exactly this worker.
    pub worker: Option<String>,
    /// Received at or after (tasks never received pass, as in Flower).
    pub received_from: Option<f64>,
    /// Received at or before (tasks never received pass, as in Flower).
    pub received_to: Option<f64>,
    /// Last changed at or after.
    pub from: Option<f64>,
    /// Last changed at or before.
    pub to: Option<f64>,
    /// Order.
    pub sort: Sort,
    /// Descending order.
    pub descending: bool,
    /// Most tasks returned.
    pub limit: i64,
    /// Tasks skipped.
    pub offset: i64,
    /// Whether to count the matches (up to [`COUNT_CAP`]).
    pub count: bool,
}

/// One page of matches.
#[derive(Clone, Debug)]
pub struct SearchPage {
    /// The tasks of the page, in order.
    pub tasks: Vec<Task>,
    /// Matches counted (at most [`COUNT_CAP`]; `None` when not asked).
    pub total: Option<i64>,
    /// Whether more than [`COUNT_CAP`] matched.
    pub total_capped: bool,
    /// Milliseconds the database took.
    pub took_ms: f64,
}

use super::sql::{Bind, Dialect, Sql, TextSplit, fts_split, push_conditions, push_filters};

macro_rules! bound {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(text) => query.bind(text.clone()),
                Bind::Real(real) => query.bind(*real),
                Bind::Int(int) => query.bind(*int),
            };
        }
        query
    }};
}

/// Text matches a count examines at most, newest first (beyond, the count says "at
/// least": a broad term over a million tasks is counted in bounded time).
const COUNT_WINDOW: i64 = 20_000;

/// How one page is read.
enum Plan {
    /// Driven by the text index, newest first seen first: stops after a page of matches.
    TextDriven,
    /// One branch per state through the (name|worker, state, timestamp) indexes, merged:
    /// several states never scan every row of a name for a rare state.
    PerState,
    /// The planner's choice (text terms as `rowid IN` the text index's matches).
    Plain,
}

impl Store {
    /// One page of the tasks matching `search`.
    pub async fn search(&self, search: &TaskSearch) -> Result<SearchPage, StoreError> {
        let postgres = matches!(self.backend(), Backend::Postgres(_));
        let started = Instant::now();
        let split = if postgres {
            None
        } else {
            search.query.as_ref().and_then(fts_split)
        };
        let newest_first = search.sort == Sort::Timestamp && search.descending;
        let plan = if split.is_some() && newest_first {
            Plan::TextDriven
        } else if search.states.len() > 1 && search.sort == Sort::Timestamp {
            Plan::PerState
        } else {
            Plan::Plain
        };
        let page = page_sql(search, postgres, &plan, split.as_ref());
        let text = page.finish(postgres);
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            bound!(sqlx::query_as::<Db, (String,)>(&text), &page.binds)
                .fetch_all(pool)
                .await?
        });
        let (mut total, mut capped) = (None, false);
        if search.count {
            let count = count_sql(search, postgres, split.as_ref());
            let text = count.finish(postgres);
            let (examined, matched): (i64, i64) = on_pool!(self.backend(), |pool, Db| {
                bound!(sqlx::query_as::<Db, (i64, i64)>(&text), &count.binds)
                    .fetch_one(pool)
                    .await?
            });
            capped = matched > COUNT_CAP || (split.is_some() && examined >= COUNT_WINDOW);
            total = Some(matched.min(COUNT_CAP));
        }
        let tasks = rows
            .into_iter()
            .filter_map(|(data,)| serde_json::from_str(&data).ok())
            .collect();
        Ok(SearchPage {
            tasks,
            total,
            total_capped: capped,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

fn push_order(sql: &mut Sql, search: &TaskSearch) {
    let direction = if search.descending { " DESC" } else { " ASC" };
    sql.push(" ORDER BY ")
        .push(search.sort.column())
        .push(direction)
        .push(", uuid")
        .push(direction);
}

fn push_page(sql: &mut Sql, search: &TaskSearch) {
    sql.push(" LIMIT ")
        .bind(Bind::Int(search.limit.max(0)))
        .push(" OFFSET ")
        .bind(Bind::Int(search.offset.max(0)));
}

fn page_sql(search: &TaskSearch, postgres: bool, plan: &Plan, split: Option<&TextSplit>) -> Sql {
    let mut sql = Sql::default();
    match plan {
        Plan::TextDriven => {
            let dialect = Dialect::new(postgres, true);
            sql.push("SELECT t.data FROM ").push(TEXT_DRIVEN);
            push_filters(&mut sql, &dialect, search, split);
            sql.push(" ORDER BY monitor_tasks_text.rowid DESC");
            push_page(&mut sql, search);
        }
        Plan::PerState => {
            let dialect = Dialect::new(postgres, false);
            let wanted = search.offset.max(0) + search.limit.max(0);
            sql.push("SELECT data FROM monitor_tasks WHERE uuid IN (");
            for (index, state) in search.states.iter().enumerate() {
                if index > 0 {
                    sql.push(" UNION ALL ");
                }
                let one = TaskSearch {
                    states: vec![state.clone()],
                    ..search.clone()
                };
                sql.push("SELECT uuid FROM (SELECT uuid FROM monitor_tasks");
                push_filters(&mut sql, &dialect, &one, None);
                push_order(&mut sql, search);
                sql.push(" LIMIT ")
                    .bind(Bind::Int(wanted))
                    .push(&format!(") AS state_{index}"));
            }
            sql.push(")");
            push_order(&mut sql, search);
            push_page(&mut sql, search);
        }
        Plan::Plain => {
            let dialect = Dialect::new(postgres, false);
            sql.push("SELECT data FROM monitor_tasks");
            push_filters(&mut sql, &dialect, search, None);
            push_order(&mut sql, search);
            push_page(&mut sql, search);
        }
    }
    sql
}

/// `(examined, matched)`: with text terms (SQLite), over the newest [`COUNT_WINDOW`] text
/// matches; otherwise every match up to the cap.
fn count_sql(search: &TaskSearch, postgres: bool, split: Option<&TextSplit>) -> Sql {
    let mut sql = Sql::default();
    match split {
        Some(split) => {
            let dialect = Dialect::new(postgres, true);
            sql.push("SELECT COUNT(*), COALESCE(SUM(CASE WHEN ");
            push_conditions(&mut sql, &dialect, search, Some(split));
            sql.push(" THEN 1 ELSE 0 END), 0) FROM (SELECT rowid FROM monitor_tasks_text WHERE monitor_tasks_text MATCH ")
                .bind(Bind::Text(split.expression().to_owned()))
                .push(" ORDER BY rowid DESC LIMIT ")
                .bind(Bind::Int(COUNT_WINDOW))
                .push(") AS matched CROSS JOIN monitor_tasks AS t ON t.rowid = matched.rowid");
        }
        None => {
            let dialect = Dialect::new(postgres, false);
            sql.push("SELECT COUNT(*), COUNT(*) FROM (SELECT 1 FROM monitor_tasks");
            push_filters(&mut sql, &dialect, search, None);
            sql.push(" LIMIT ")
                .bind(Bind::Int(COUNT_CAP + 1))
                .push(") AS matches");
        }
    }
    sql
}
