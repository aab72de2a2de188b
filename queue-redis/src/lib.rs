//! Redis broker and Redis result backend for `queue`, compatible with kombu and Celery.
//!
//! Not yet implemented: a later issue fills this crate with a broker on `fred` (kombu's list
//! layout, priorities, `unacked` bookkeeping and visibility timeout) and a result backend
//! (`celery-task-meta-<id>` with `SETEX` and `PUBLISH`). It implements the traits of
//! `queue-core` and passes the shared conformance suites.
