-- Ours: the chord join of Rust workers. Celery's database backend has no counter join (its
-- chords poll with the `celery.chord_unlock` task), so these tables are ours alone: one row
-- per chord, one per recorded header part. Python workers never read them.

CREATE TABLE IF NOT EXISTS queue_chords (
    group_id VARCHAR(155) NOT NULL PRIMARY KEY,
    -- The header's size; NULL until chord_start (a part may come first).
    size INTEGER,
    -- 'open'; 'claimed': the finisher holding `token` dispatches the body; 'done'.
    status VARCHAR(10) NOT NULL DEFAULT 'open',
    token VARCHAR(64),
    -- When the status (or size) last changed, in Unix microseconds: a claim older than the
    -- lease may be retaken.
    updated INTEGER NOT NULL,
    -- Refreshed by every part, in Unix microseconds; NULL for never.
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS ix_queue_chords_expires_at
    ON queue_chords (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS queue_chord_parts (
    group_id VARCHAR(155) NOT NULL,
    task_id VARCHAR(155) NOT NULL,
    -- NULL (no index) sorts last, as Celery's `+inf` score.
    group_index INTEGER,
    state VARCHAR(50) NOT NULL,
    -- JSON bytes of the value or exception dict, as celery_taskmeta.result.
    result BLOB
);
-- A part counts once per (task id, index); NULL indexes are equal to each other here.
CREATE UNIQUE INDEX IF NOT EXISTS ux_queue_chord_parts
    ON queue_chord_parts (group_id, task_id, COALESCE(group_index, -1));
