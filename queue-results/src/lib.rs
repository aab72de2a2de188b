//! SQL result backends for `queue` on `sqlx`: PostgreSQL and SQLite.
//!
//! Not yet implemented: a later issue fills this crate with result backends modelled on
//! Celery's database backend (`celery_taskmeta`, `celery_tasksetmeta`), migrations run on
//! connect, LISTEN/NOTIFY waits on PostgreSQL. SQL is never used as a broker.
