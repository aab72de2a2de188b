-- Celery's database backend tables (celery/backends/database/models.py, the 5.7 layout), so
-- that a Python app configured with `result_backend = 'db+postgresql://…'` reads the rows we
-- write and we read the rows it writes. Everything is IF NOT EXISTS: Celery itself may have
-- created the tables first (SQLAlchemy's create_all), possibly with an older layout.

-- SQLAlchemy's Sequence('task_id_sequence') / ('taskset_id_sequence'): Celery's inserts call
-- nextval() on them explicitly, so they must exist under these names.
CREATE SEQUENCE IF NOT EXISTS task_id_sequence;
CREATE SEQUENCE IF NOT EXISTS taskset_id_sequence;

CREATE TABLE IF NOT EXISTS celery_taskmeta (
    id BIGINT NOT NULL DEFAULT nextval('task_id_sequence') PRIMARY KEY,
    task_id VARCHAR(155) UNIQUE,
    status VARCHAR(50),
    -- JSON bytes of the result (Celery 5.7 with the JSON serializer).
    result BYTEA,
    -- UTC, naive, as SQLAlchemy's DateTime stores it; set for READY states only.
    date_done TIMESTAMP WITHOUT TIME ZONE,
    traceback TEXT,
    children BYTEA,
    name VARCHAR(155),
    args BYTEA,
    kwargs BYTEA,
    worker VARCHAR(155),
    retries INTEGER,
    queue VARCHAR(155),
    stamps BYTEA
);

-- A table Celery created has no server-side default for id (SQLAlchemy supplies nextval in
-- its own INSERTs); ours omit id.
ALTER TABLE celery_taskmeta ALTER COLUMN id SET DEFAULT nextval('task_id_sequence');

-- Columns a table created by Celery <= 5.6, or without result_extended, lacks.
ALTER TABLE celery_taskmeta
    ADD COLUMN IF NOT EXISTS children BYTEA,
    ADD COLUMN IF NOT EXISTS name VARCHAR(155),
    ADD COLUMN IF NOT EXISTS args BYTEA,
    ADD COLUMN IF NOT EXISTS kwargs BYTEA,
    ADD COLUMN IF NOT EXISTS worker VARCHAR(155),
    ADD COLUMN IF NOT EXISTS retries INTEGER,
    ADD COLUMN IF NOT EXISTS queue VARCHAR(155),
    ADD COLUMN IF NOT EXISTS stamps BYTEA;

-- Ours, ignored by Celery's SQLAlchemy models (they select only the columns they declare):
-- group_id and parent_id complete the task meta; expires_at is when the row may be deleted,
-- fixed by the writer's expiry (like Redis' SETEX), NULL for never.
ALTER TABLE celery_taskmeta
    ADD COLUMN IF NOT EXISTS group_id VARCHAR(155),
    ADD COLUMN IF NOT EXISTS parent_id VARCHAR(155),
    ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP WITH TIME ZONE;

-- Lookup by id uses the UNIQUE index of task_id. date_done is what Celery's own cleanup
-- (celery.backend_cleanup) filters on; expires_at is what ours filters on.
CREATE INDEX IF NOT EXISTS ix_celery_taskmeta_date_done ON celery_taskmeta (date_done);
CREATE INDEX IF NOT EXISTS ix_celery_taskmeta_expires_at
    ON celery_taskmeta (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS celery_tasksetmeta (
    id BIGINT NOT NULL DEFAULT nextval('taskset_id_sequence') PRIMARY KEY,
    taskset_id VARCHAR(155) UNIQUE,
    -- JSON bytes of the GroupResult tuple: [[group_id, null], [[[task_id, null], null], ...]].
    result BYTEA,
    date_done TIMESTAMP WITHOUT TIME ZONE
);
ALTER TABLE celery_tasksetmeta ALTER COLUMN id SET DEFAULT nextval('taskset_id_sequence');
ALTER TABLE celery_tasksetmeta ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP WITH TIME ZONE;
CREATE INDEX IF NOT EXISTS ix_celery_tasksetmeta_date_done ON celery_tasksetmeta (date_done);
CREATE INDEX IF NOT EXISTS ix_celery_tasksetmeta_expires_at
    ON celery_tasksetmeta (expires_at) WHERE expires_at IS NOT NULL;

-- Push for waiting clients: every write of a task row, ours or Python's, notifies channel
-- `celery_taskmeta` with the task id. NOTIFY is delivered at commit, and identical
-- notifications of one transaction are folded into one.
CREATE OR REPLACE FUNCTION queue_results_notify_taskmeta() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('celery_taskmeta', NEW.task_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS queue_results_notify_taskmeta ON celery_taskmeta;
CREATE TRIGGER queue_results_notify_taskmeta
    AFTER INSERT OR UPDATE ON celery_taskmeta
    FOR EACH ROW EXECUTE FUNCTION queue_results_notify_taskmeta();
