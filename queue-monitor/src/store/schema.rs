//! The history's tables and indexes, created if missing (idempotent, so a monitor opens a
//! file or database written by an earlier run as it is).
//!
//! Tasks carry their searchable fields as columns (indexed by name, state, worker and time)
//! and the whole record as JSON in `data`. Text search: on SQLite an FTS5 table with the
//! trigram tokenizer over the text columns (a substring of 3 characters or more is an index
//! lookup, case-insensitive), kept in step by triggers; on PostgreSQL a `pg_trgm` GIN index
//! over the lower-cased text (plain `LIKE` scans if the extension cannot be created).

/// SQLite's statements, in order.
pub const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS monitor_tasks (
        uuid TEXT PRIMARY KEY,
        name TEXT,
        state TEXT NOT NULL,
        worker TEXT,
        received REAL,
        started REAL,
        timestamp REAL NOT NULL,
        runtime REAL,
        args TEXT,
        kwargs TEXT,
        result TEXT,
        parent_id TEXT,
        root_id TEXT,
        data TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_timestamp ON monitor_tasks (timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name ON monitor_tasks (name, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_state ON monitor_tasks (state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_worker ON monitor_tasks (worker, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_received ON monitor_tasks (received)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_started ON monitor_tasks (started)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_runtime ON monitor_tasks (runtime)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_parent ON monitor_tasks (parent_id)",
    // Filters combined (a name with states, a worker with states) and Flower's sort by
    // received within a name, without reading every row of the name.
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name_state ON monitor_tasks (name, state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_worker_state ON monitor_tasks (worker, state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name_received ON monitor_tasks (name, received)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS monitor_tasks_text USING fts5(
        uuid, name, state, worker, args, kwargs, result,
        content = 'monitor_tasks', tokenize = 'trigram')",
    "CREATE TRIGGER IF NOT EXISTS monitor_tasks_text_insert AFTER INSERT ON monitor_tasks BEGIN
        INSERT INTO monitor_tasks_text (rowid, uuid, name, state, worker, args, kwargs, result)
        VALUES (new.rowid, new.uuid, new.name, new.state, new.worker, new.args, new.kwargs, new.result);
    END",
    "CREATE TRIGGER IF NOT EXISTS monitor_tasks_text_delete AFTER DELETE ON monitor_tasks BEGIN
        INSERT INTO monitor_tasks_text (monitor_tasks_text, rowid, uuid, name, state, worker, args, kwargs, result)
        VALUES ('delete', old.rowid, old.uuid, old.name, old.state, old.worker, old.args, old.kwargs, old.result);
    END",
    "CREATE TRIGGER IF NOT EXISTS monitor_tasks_text_update
    AFTER UPDATE OF name, state, worker, args, kwargs, result ON monitor_tasks BEGIN
        INSERT INTO monitor_tasks_text (monitor_tasks_text, rowid, uuid, name, state, worker, args, kwargs, result)
        VALUES ('delete', old.rowid, old.uuid, old.name, old.state, old.worker, old.args, old.kwargs, old.result);
        INSERT INTO monitor_tasks_text (rowid, uuid, name, state, worker, args, kwargs, result)
        VALUES (new.rowid, new.uuid, new.name, new.state, new.worker, new.args, new.kwargs, new.result);
    END",
    "CREATE TABLE IF NOT EXISTS monitor_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL,
        type TEXT NOT NULL,
        hostname TEXT NOT NULL,
        timestamp REAL NOT NULL,
        fields TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS monitor_events_uuid ON monitor_events (uuid, id)",
    "CREATE INDEX IF NOT EXISTS monitor_events_timestamp ON monitor_events (timestamp)",
    "CREATE TABLE IF NOT EXISTS monitor_workers (
        hostname TEXT PRIMARY KEY,
        updated REAL NOT NULL,
        data TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS monitor_queue_samples (
        queue TEXT NOT NULL,
        time REAL NOT NULL,
        messages BIGINT NOT NULL,
        oldest_age REAL,
        delayed BIGINT,
        dead_letters BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS monitor_queue_samples_queue ON monitor_queue_samples (queue, time)",
    "CREATE INDEX IF NOT EXISTS monitor_queue_samples_time ON monitor_queue_samples (time)",
];

/// PostgreSQL's statements, in order (the `pg_trgm` ones in [`POSTGRES_TRIGRAM`]).
pub const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS monitor_tasks (
        uuid TEXT PRIMARY KEY,
        name TEXT,
        state TEXT NOT NULL,
        worker TEXT,
        received DOUBLE PRECISION,
        started DOUBLE PRECISION,
        timestamp DOUBLE PRECISION NOT NULL,
        runtime DOUBLE PRECISION,
        args TEXT,
        kwargs TEXT,
        result TEXT,
        parent_id TEXT,
        root_id TEXT,
        data TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_timestamp ON monitor_tasks (timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name ON monitor_tasks (name, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_state ON monitor_tasks (state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_worker ON monitor_tasks (worker, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_received ON monitor_tasks (received)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_started ON monitor_tasks (started)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_runtime ON monitor_tasks (runtime)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_parent ON monitor_tasks (parent_id)",
    // Filters combined (a name with states, a worker with states) and Flower's sort by
    // received within a name, without reading every row of the name.
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name_state ON monitor_tasks (name, state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_worker_state ON monitor_tasks (worker, state, timestamp)",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_name_received ON monitor_tasks (name, received)",
    "CREATE TABLE IF NOT EXISTS monitor_events (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL,
        type TEXT NOT NULL,
        hostname TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL,
        fields TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS monitor_events_uuid ON monitor_events (uuid, id)",
    "CREATE INDEX IF NOT EXISTS monitor_events_timestamp ON monitor_events (timestamp)",
    "CREATE TABLE IF NOT EXISTS monitor_workers (
        hostname TEXT PRIMARY KEY,
        updated DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS monitor_queue_samples (
        queue TEXT NOT NULL,
        time DOUBLE PRECISION NOT NULL,
        messages BIGINT NOT NULL,
        oldest_age DOUBLE PRECISION,
        delayed BIGINT,
        dead_letters BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS monitor_queue_samples_queue ON monitor_queue_samples (queue, time)",
    "CREATE INDEX IF NOT EXISTS monitor_queue_samples_time ON monitor_queue_samples (time)",
];

/// The text index on PostgreSQL, where `pg_trgm` can be had.
pub const POSTGRES_TRIGRAM: &[&str] = &[
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS monitor_tasks_text ON monitor_tasks USING gin (
        (lower(coalesce(uuid, '') || ' ' || coalesce(name, '') || ' ' || coalesce(state, '') || ' '
          || coalesce(worker, '') || ' ' || coalesce(args, '') || ' ' || coalesce(kwargs, '') || ' '
          || coalesce(result, ''))) gin_trgm_ops)",
];

/// PostgreSQL's expression the trigram index covers (free text).
pub const POSTGRES_TEXT: &str =
    "lower(coalesce(uuid, '') || ' ' || coalesce(name, '') || ' ' || coalesce(state, '') || ' '
          || coalesce(worker, '') || ' ' || coalesce(args, '') || ' ' || coalesce(kwargs, '') || ' '
          || coalesce(result, ''))";
