//! The SQL of a task search: filters and Flower's query as conditions, text terms as FTS5
//! expressions (SQLite) or `LIKE` over the trigram-indexed text (PostgreSQL).

use super::query::{Field, Query};
use super::schema::POSTGRES_TEXT;
use super::search::TaskSearch;

/// A value bound to a placeholder.
#[derive(Clone, Debug)]
pub(super) enum Bind {
    Text(String),
    Real(f64),
    Int(i64),
}

/// SQL with `?` placeholders and their values (numbered `$n` for PostgreSQL at the end).
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) binds: Vec<Bind>,
}

impl Sql {
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn bind(&mut self, value: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(value);
        self
    }

    pub(super) fn finish(&self, postgres: bool) -> String {
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

/// Which database, and how the task table's columns are named in this query (`t.` when
/// joined to the text index, whose columns have the same names).
pub(super) struct Dialect {
    pub(super) postgres: bool,
    pub(super) prefix: &'static str,
}

impl Dialect {
    pub(super) fn new(postgres: bool, joined: bool) -> Self {
        Self {
            postgres,
            prefix: if joined { "t." } else { "" },
        }
    }

    fn column(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// An FTS5 phrase (`"…"`, quotes doubled), optionally limited to one column.
pub(super) fn fts_phrase(column: Option<&str>, text: &str) -> String {
    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
    match column {
        Some(column) => format!("{column} : {phrase}"),
        None => phrase,
    }
}

/// A `LIKE` pattern matching `text` anywhere, lower-cased, with `\` as escape.
pub(super) fn like_anywhere(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The reprs a `kwargs:key=value` pair may appear as: Python's and ours (`{'key': 'value'}`,
/// `{'key': 1}`) or JSON.
fn kwargs_phrases(key: &str, value: &str) -> [String; 4] {
    [
        format!("'{key}': '{value}'"),
        format!("'{key}': {value}"),
        format!("\"{key}\": \"{value}\""),
        format!("\"{key}\": {value}"),
    ]
}

/// The FTS5 expression of `query` when it holds text terms only.
fn fts_expression(query: &Query) -> Option<String> {
    match query {
        Query::All | Query::Term(Some(Field::State), _) => None,
        Query::Term(field, value) => Some(fts_phrase(field.map(Field::column), value)),
        Query::KwargsPair(key, value) => Some(format!(
            "({})",
            kwargs_phrases(key, value)
                .iter()
                .map(|phrase| fts_phrase(Some("kwargs"), phrase))
                .collect::<Vec<_>>()
                .join(" OR ")
        )),
        Query::And(children) | Query::Or(children) => {
            let parts: Option<Vec<String>> = children.iter().map(fts_expression).collect();
            let joiner = if matches!(query, Query::And(_)) {
                " AND "
            } else {
                " OR "
            };
            Some(format!("({})", parts?.join(joiner)))
        }
    }
}

/// A query split for a search driven by the text index: the FTS5 expression of its
/// text-only conjuncts, and the conjuncts left for SQL.
pub(super) struct TextSplit {
    expression: String,
    rest: Vec<Query>,
}

impl TextSplit {
    /// The FTS5 expression of the text conjuncts.
    pub(super) fn expression(&self) -> &str {
        &self.expression
    }
}

/// Splits `query` when it has at least one text-only conjunct.
pub(super) fn fts_split(query: &Query) -> Option<TextSplit> {
    let conjuncts: Vec<&Query> = match query {
        Query::And(children) => children.iter().collect(),
        other => vec![other],
    };
    let mut texts = Vec::new();
    let mut rest = Vec::new();
    for conjunct in conjuncts {
        if let Query::KwargsPair(key, value) = conjunct {
            // The index finds rows holding the value (else the key; a short phrase, cheap:
            // keys repeat in every row, values rarely); SQL then checks the pair itself.
            let parts: Vec<String> = [value, key]
                .into_iter()
                .find(|part| part.chars().count() >= super::query::MIN_SUBSTRING)
                .map(|part| fts_phrase(Some("kwargs"), part))
                .into_iter()
                .collect();
            if !parts.is_empty() {
                texts.push(parts.join(" AND "));
                rest.push(conjunct.clone());
                continue;
            }
        }
        match fts_expression(conjunct) {
            Some(expression) => texts.push(expression),
            None => rest.push(conjunct.clone()),
        }
    }
    (!texts.is_empty()).then(|| TextSplit {
        expression: texts.join(" AND "),
        rest,
    })
}

fn push_text(sql: &mut Sql, dialect: &Dialect, column: Option<&str>, phrases: &[String]) {
    if dialect.postgres {
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
        sql.push(&dialect.column("rowid"))
            .push(" IN (SELECT rowid FROM monitor_tasks_text WHERE monitor_tasks_text MATCH ")
            .bind(Bind::Text(expression))
            .push(")");
    }
}

fn push_query(sql: &mut Sql, dialect: &Dialect, query: &Query) {
    match query {
        Query::All => {
            sql.push("1 = 1");
        }
        Query::Term(Some(Field::State), value) => {
            sql.push(&dialect.column("state"))
                .push(" = ")
                .bind(Bind::Text(value.to_uppercase()));
        }
        Query::Term(field, value) => {
            push_text(
                sql,
                dialect,
                field.map(Field::column),
                std::slice::from_ref(value),
            );
        }
        Query::KwargsPair(key, value) if dialect.prefix == "t." => {
            // Joined to the text index, which already narrowed the rows: check the pair.
            sql.push("(");
            for (index, phrase) in kwargs_phrases(key, value).iter().enumerate() {
                if index > 0 {
                    sql.push(" OR ");
                }
                sql.push("t.kwargs LIKE ")
                    .bind(Bind::Text(like_anywhere(phrase)))
                    .push(" ESCAPE '\\'");
            }
            sql.push(")");
        }
        Query::KwargsPair(key, value) => {
            push_text(sql, dialect, Some("kwargs"), &kwargs_phrases(key, value));
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
                push_query(sql, dialect, child);
            }
            sql.push(")");
        }
    }
}

/// ` WHERE …` for `search` (with `split`: the text index's MATCH and the rest of the query).
pub(super) fn push_filters(
    sql: &mut Sql,
    dialect: &Dialect,
    search: &TaskSearch,
    split: Option<&TextSplit>,
) {
    sql.push(" WHERE ");
    if let Some(split) = split {
        sql.push("monitor_tasks_text MATCH ")
            .bind(Bind::Text(split.expression.clone()))
            .push(" AND ");
    }
    push_conditions(sql, dialect, search, split);
}

/// The conditions of `search` as one expression (with `split`: without its text part).
pub(super) fn push_conditions(
    sql: &mut Sql,
    dialect: &Dialect,
    search: &TaskSearch,
    split: Option<&TextSplit>,
) {
    sql.push("1 = 1");
    if !search.states.is_empty() {
        sql.push(" AND ")
            .push(&dialect.column("state"))
            .push(" IN (");
        for (index, state) in search.states.iter().enumerate() {
            if index > 0 {
                sql.push(", ");
            }
            sql.bind(Bind::Text(state.to_uppercase()));
        }
        sql.push(")");
    }
    for (column, value) in [("name", &search.name), ("worker", &search.worker)] {
        if let Some(value) = value {
            sql.push(" AND ")
                .push(&dialect.column(column))
                .push(" = ")
                .bind(Bind::Text(value.clone()));
        }
    }
    let received = dialect.column("received");
    if let Some(from) = search.received_from {
        sql.push(&format!(" AND ({received} IS NULL OR {received} >= "))
            .bind(Bind::Real(from))
            .push(")");
    }
    if let Some(to) = search.received_to {
        sql.push(&format!(" AND ({received} IS NULL OR {received} <= "))
            .bind(Bind::Real(to))
            .push(")");
    }
    let timestamp = dialect.column("timestamp");
    if let Some(from) = search.from {
        sql.push(&format!(" AND {timestamp} >= "))
            .bind(Bind::Real(from));
    }
    if let Some(to) = search.to {
        sql.push(&format!(" AND {timestamp} <= "))
            .bind(Bind::Real(to));
    }
    let rest: Vec<&Query> = match (split, &search.query) {
        (Some(split), _) => split.rest.iter().collect(),
        (None, Some(query)) => vec![query],
        (None, None) => Vec::new(),
    };
    for query in rest {
        if *query != Query::All {
            sql.push(" AND ");
            push_query(sql, dialect, query);
        }
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
        push_filters(&mut sqlite, &Dialect::new(false, false), &search, None);
        assert_eq!(
            sqlite.finish(false),
            " WHERE 1 = 1 AND name = ? AND (state = ? AND rowid IN (SELECT rowid FROM monitor_tasks_text WHERE monitor_tasks_text MATCH ?))"
        );
        assert!(matches!(&sqlite.binds[2], Bind::Text(text) if text == "args : \"4 2\""));
        let split = fts_split(search.query.as_ref().unwrap()).unwrap();
        let mut driven = Sql::default();
        push_filters(
            &mut driven,
            &Dialect::new(false, true),
            &search,
            Some(&split),
        );
        assert_eq!(
            driven.finish(false),
            " WHERE monitor_tasks_text MATCH ? AND 1 = 1 AND t.name = ? AND t.state = ?"
        );
        let mut postgres = Sql::default();
        push_filters(&mut postgres, &Dialect::new(true, false), &search, None);
        assert!(
            postgres
                .finish(true)
                .contains("lower(coalesce(args, '')) LIKE $3 ESCAPE")
        );
        assert_eq!(like_anywhere("50%_x"), "%50\\%\\_x%");
        assert_eq!(fts_phrase(None, "say \"hi\""), "\"say \"\"hi\"\"\"");
        let mixed = parse("(state:SUCCESS OR abc) kwargs:region=eu-5").unwrap();
        let split = fts_split(&mixed).unwrap();
        assert_eq!(split.rest.len(), 2, "the OR and the pair's own check");
        assert_eq!(split.expression, "kwargs : \"eu-5\"");
        let nested = fts_split(&parse("(kwargs:a=1 OR abc)").unwrap()).unwrap();
        assert!(
            nested.expression.starts_with("((kwargs : \"'a': '1'\" OR"),
            "{}",
            nested.expression
        );
    }
}
