//! Periodic tasks for the `queue` task system: a beat that runs on every node and fires each
//! tick once.
//!
//! - [`Schedule`]: fixed intervals, cron expressions in a time zone, one-off times;
//! - [`Entry`]: a schedule, the signature it sends and a [`Missed`] policy;
//! - [`Beat`]: the scheduler; any number run, the one holding a lease (with a fencing token,
//!   in Redis, PostgreSQL or SQLite: [`queue_core::lease`]) sends, and records every tick in
//!   the store before sending it, so a tick is never sent twice, even across a failover;
//! - [`file`]: the TOML schedule file of `queue beat --schedule FILE`;
//! - [`tick_id`]: each tick's id, the task id of the message it sends.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use queue_beat::Beat;
//! use queue_core::{App, Signature};
//! let app = App::builder().broker("redis://127.0.0.1/0").build().await?;
//! Beat::new(app)
//!     .every("heartbeat", Duration::from_secs(10), Signature::new("tasks.heartbeat"))
//!     .cron("nightly", "0 3 * * *", chrono_tz::Europe::Berlin, Signature::new("reports.nightly"))
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

mod beat;
mod due;
mod entry;
mod error;
pub mod file;
mod leader;
mod report;
mod schedule;
mod status;
mod tick;

pub use beat::{Beat, BeatHandle, DEFAULT_LEASE_TTL, DEFAULT_NAME};
pub use chrono_tz;
pub use entry::{Entry, Missed};
pub use error::BeatError;
pub use report::{HEARTBEAT_EVENT, fields as heartbeat_fields};
pub use schedule::{Schedule, ScheduleError, parse_zone};
pub use status::{BeatStatus, EntryStatus, SentTick};
pub use tick::tick_id;
