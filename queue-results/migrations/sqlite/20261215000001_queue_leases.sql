-- Ours: the leader leases of periodic schedulers (queue-beat) and the last tick of each of
-- their entries, for `queue_core::lease::Lease`. Celery has no such tables.

-- One row per lease, kept for good once created: `token` is the last fencing token given
-- out, and only grows (a new holding sets `token + 1`), so it survives releases and
-- expiries. Free when `holder` is NULL or `expires_at` (Unix milliseconds, SQLite's clock)
-- has passed.
CREATE TABLE IF NOT EXISTS queue_leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER
);

-- The last tick claimed per entry of a schedule, in milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS queue_beat_ticks (
    name TEXT NOT NULL,
    entry TEXT NOT NULL,
    tick_ms INTEGER NOT NULL,
    PRIMARY KEY (name, entry)
);
