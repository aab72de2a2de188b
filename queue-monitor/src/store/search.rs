//! Task search over the whole history: filters (state, name, worker, time), Flower's
//! search syntax ([`super::query`]), sorting and paging, as SQL that the indexes serve.

use std::time::Instant;

use super::query::{Field, Query};
use super::schema::POSTGRES_TEXT;
use super::{Backend, Store, StoreError, on_pool};
use crate::ingest::task::Task;

/// Matches counted at most (a count beyond says "more than").
pub const COUNT_CAP: i64 = 10_000;

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

#[derive(Clone, Debug)]
enum Bind {
    Text(String),
    Real(f64),
    Int(i64),
}

/// SQL with `?` placeholders and their values (numbered `$n` for PostgreSQL at the end).
#[derive(Default)]
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(value);
        self
    }

    fn finish(&self, postgres: bool) -> String {
        if !postgres {
            return self.text.clone();
        }
        let mut numbered = String::with_capacity(self.text.len() + 16);
        let mut index = 0;
        for char in self.text.chars() {
            if char == '?' {
                index += 1;
                numbered.push_str(&format!("${index}"));
            } else {
                numbered.push(char);
            }
        }
        numbered
    }
}

/// An FTS5 phrase (`"…"`, quotes doubled), optionally limited to one column.
fn fts_phrase(column: Option<&str>, text: &str) -> String {
    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
    match column {
        Some(column) => format!("{column} : {phrase}"),
        None => phrase,
    }
}

/// A `LIKE` pattern matching `text` anywhere, lower-cased, with `\` as escape.
fn like_anywhere(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn push_text(sql: &mut Sql, postgres: bool, column: Option<&str>, phrases: &[String]) {
    if postgres {
        let target = match column {
            Some(column) => format!("lower(coalesce({column}, ''))"),
            None => POSTGRES_TEXT.to_owned(),
        };
        sql.push("(");
        for (index, phrase) in phrases.iter().enumerate() {
            if index > 0 {
                sql.push(" OR ");
            }
            sql.push(&target)
                .push(" LIKE ")
                .bind(Bind::Text(like_anywhere(phrase)))
                .push(" ESCAPE '\\'");
        }
        sql.push(")");
    } else {
        let expression = phrases
            .iter()
            .map(|phrase| fts_phrase(column, phrase))
            .collect::<Vec<_>>()
            .join(" OR ");
        sql.push("rowid IN (SELECT rowid FROM monitor_tasks_text WHERE monitor_tasks_text MATCH ")
            .bind(Bind::Text(expression))
            .push(")");
    }
}

fn push_query(sql: &mut Sql, postgres: bool, query: &Query) {
    match query {
        Query::All => {
            sql.push("1 = 1");
        }
        Query::Term(Some(Field::State), value) => {
            sql.push("state = ").bind(Bind::Text(value.to_uppercase()));
        }
        Query::Term(field, value) => {
            push_text(
                sql,
                postgres,
                field.map(Field::column),
                std::slice::from_ref(value),
            );
        }
        Query::KwargsPair(key, value) => {
            // The kwargs are a repr: `{'key': 'value'}` from Python and from us, or JSON.
            let phrases = [
                format!("'{key}': '{value}'"),
                format!("'{key}': {value}"),
                format!("\"{key}\": \"{value}\""),
                format!("\"{key}\": {value}"),
            ];
            push_text(sql, postgres, Some("kwargs"), &phrases);
        }
        Query::And(children) | Query::Or(children) => {
            let joiner = if matches!(query, Query::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sql.push("(");
            for (index, child) in children.iter().enumerate() {
                if index > 0 {
                    sql.push(joiner);
                }
                push_query(sql, postgres, child);
            }
            sql.push(")");
        }
    }
}

fn push_filters(sql: &mut Sql, postgres: bool, search: &TaskSearch) {
    sql.push(" WHERE 1 = 1");
    if !search.states.is_empty() {
        sql.push(" AND state IN (");
        for (index, state) in search.states.iter().enumerate() {
            if index > 0 {
                sql.push(", ");
            }
            sql.bind(Bind::Text(state.to_uppercase()));
        }
        sql.push(")");
    }
    if let Some(name) = &search.name {
        sql.push(" AND name = ").bind(Bind::Text(name.clone()));
    }
    if let Some(worker) = &search.worker {
        sql.push(" AND worker = ").bind(Bind::Text(worker.clone()));
    }
    if let Some(from) = search.received_from {
        sql.push(" AND (received IS NULL OR received >= ")
            .bind(Bind::Real(from))
            .push(")");
    }
    if let Some(to) = search.received_to {
        sql.push(" AND (received IS NULL OR received <= ")
            .bind(Bind::Real(to))
            .push(")");
    }
    if let Some(from) = search.from {
        sql.push(" AND timestamp >= ").bind(Bind::Real(from));
    }
    if let Some(to) = search.to {
        sql.push(" AND timestamp <= ").bind(Bind::Real(to));
    }
    if let Some(query) = &search.query {
        if *query != Query::All {
            sql.push(" AND ");
            push_query(sql, postgres, query);
        }
    }
}

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

impl Store {
    /// One page of the tasks matching `search`.
    pub async fn search(&self, search: &TaskSearch) -> Result<SearchPage, StoreError> {
        let postgres = matches!(self.backend(), Backend::Postgres(_));
        let started = Instant::now();
        let mut page = Sql::default();
        page.push("SELECT data FROM monitor_tasks");
        push_filters(&mut page, postgres, search);
        let direction = if search.descending { " DESC" } else { " ASC" };
        page.push(" ORDER BY ")
            .push(search.sort.column())
            .push(direction)
            .push(", uuid")
            .push(direction)
            .push(" LIMIT ")
            .bind(Bind::Int(search.limit.max(0)))
            .push(" OFFSET ")
            .bind(Bind::Int(search.offset.max(0)));
        let text = page.finish(postgres);
        let rows: Vec<(String,)> = on_pool!(self.backend(), |pool, Db| {
            bound!(sqlx::query_as::<Db, (String,)>(&text), &page.binds)
                .fetch_all(pool)
                .await?
        });
        let mut total = None;
        if search.count {
            let mut count = Sql::default();
            count.push("SELECT COUNT(*) FROM (SELECT 1 FROM monitor_tasks");
            push_filters(&mut count, postgres, search);
            count
                .push(" LIMIT ")
                .bind(Bind::Int(COUNT_CAP + 1))
                .push(") AS matches");
            let text = count.finish(postgres);
            let (counted,): (i64,) = on_pool!(self.backend(), |pool, Db| {
                bound!(sqlx::query_as::<Db, (i64,)>(&text), &count.binds)
                    .fetch_one(pool)
                    .await?
            });
            total = Some(counted);
        }
        let tasks = rows
            .into_iter()
            .filter_map(|(data,)| serde_json::from_str(&data).ok())
            .collect();
        Ok(SearchPage {
            tasks,
            total: total.map(|total| total.min(COUNT_CAP)),
            total_capped: total.is_some_and(|total| total > COUNT_CAP),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::parse;

    #[test]
    fn queries_become_sql_for_each_dialect() {
        let search = TaskSearch {
            query: Some(parse("state:failure args:\"4 2\"").unwrap()),
            name: Some("tasks.add".into()),
            limit: 10,
            ..TaskSearch::default()
        };
        let mut sqlite = Sql::default();
        push_filters(&mut sqlite, false, &search);
        assert_eq!(
            sqlite.finish(false),
            " WHERE 1 = 1 AND name = ? AND (state = ? AND rowid IN (SELECT rowid FROM monitor_tasks_text WHERE monitor_tasks_text MATCH ?))"
        );
        assert!(matches!(&sqlite.binds[2], Bind::Text(text) if text == "args : \"4 2\""));
        let mut postgres = Sql::default();
        push_filters(&mut postgres, true, &search);
        assert!(
            postgres
                .finish(true)
                .contains("lower(coalesce(args, '')) LIKE $3 ESCAPE")
        );
        assert_eq!(like_anywhere("50%_x"), "%50\\%\\_x%");
        assert_eq!(fts_phrase(None, "say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
