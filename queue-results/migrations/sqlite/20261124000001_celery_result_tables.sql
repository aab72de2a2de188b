-- Celery's database backend tables (celery/backends/database/models.py, the 5.7 layout as
-- SQLAlchemy creates it on SQLite), so that a Python app configured with
-- `result_backend = 'db+sqlite:///…'` on the same file reads the rows we write.

CREATE TABLE IF NOT EXISTS celery_taskmeta (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    task_id VARCHAR(155) UNIQUE,
    status VARCHAR(50),
    -- JSON bytes of the result (Celery 5.7 with the JSON serializer).
    result BLOB,
    -- UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', SQLAlchemy's storage format for DateTime.
    date_done DATETIME,
    traceback TEXT,
    children BLOB,
    name VARCHAR(155),
    args BLOB,
    kwargs BLOB,
    worker VARCHAR(155),
    retries INTEGER,
    queue VARCHAR(155),
    stamps BLOB,
    -- Ours (Celery's models ignore columns they do not declare).
    group_id VARCHAR(155),
    parent_id VARCHAR(155),
    -- When the row may be deleted, in Unix microseconds; NULL for never.
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS ix_celery_taskmeta_date_done ON celery_taskmeta (date_done);
CREATE INDEX IF NOT EXISTS ix_celery_taskmeta_expires_at
    ON celery_taskmeta (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS celery_tasksetmeta (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    taskset_id VARCHAR(155) UNIQUE,
    -- JSON bytes of the GroupResult tuple: [[group_id, null], [[[task_id, null], null], ...]].
    result BLOB,
    date_done DATETIME,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS ix_celery_tasksetmeta_date_done ON celery_tasksetmeta (date_done);
CREATE INDEX IF NOT EXISTS ix_celery_tasksetmeta_expires_at
    ON celery_tasksetmeta (expires_at) WHERE expires_at IS NOT NULL;
