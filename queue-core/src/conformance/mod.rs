//! The conformance suites every [`Broker`](crate::Broker) and
//! [`ResultBackend`](crate::ResultBackend) must pass (feature `conformance`).
//!
//! The in-memory implementations run them in `queue-core`'s own tests; the Redis, RabbitMQ and
//! SQL crates run the very same checks against real servers. Every check:
//!
//! - is a `pub async fn` in [`broker`], [`backend`] or [`chord`] taking the thing under test
//!   (`Arc<dyn Broker>` / `Arc<dyn ResultBackend>`) and a unique name prefix, so that checks
//!   run concurrently on one server without seeing each other's queues or task ids
//!   ([`unique_prefix`] makes one);
//! - panics with a message that says what is wrong (it is meant to run inside a test);
//! - synchronises with the APIs' own waits ([`Consumer::fetch`](crate::Consumer::fetch) with a
//!   wait, [`ResultBackend::wait`](crate::ResultBackend::wait)), never with sleeps. Time-based
//!   behaviour (eta, defer, expiry) uses real time with generous bounds.
//!
//! A driver crate runs all of them with one line per suite:
//!
//! ```text
//! // queue-redis/tests/conformance.rs
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! queue_core::broker_conformance_tests!(server = "QUEUE_TEST_REDIS_URL", |url: String| async move {
//!     Arc::new(queue_redis::RedisBroker::connect(&url).await.unwrap())
//! });
//! queue_core::backend_conformance_tests!(
//!     server = "QUEUE_TEST_REDIS_URL",
//!     |url: String, expiry: Option<Duration>| async move {
//!         Arc::new(queue_redis::RedisBackend::connect(&url, expiry).await.unwrap())
//!     }
//! );
//! ```
//!
//! With `server = "VARIABLE"`, every test first asks [`server_url`] for the variable: set, the
//! factory gets its value; unset, the test prints `skipped: VARIABLE is not set` and returns
//! (and fails under CI, `CI=true` or `CI=1`). A server's suite therefore never runs against
//! something else under the server's name. [`server`] holds that decision for the other
//! tests of the workspace too.
//!
//! See [`broker_conformance_tests!`](crate::broker_conformance_tests) and
//! [`backend_conformance_tests!`](crate::backend_conformance_tests). The driver crate needs
//! `queue-core` with the `conformance` feature among its dev-dependencies; it does not need
//! tokio's macros itself.

pub mod backend;
pub mod broadcast;
pub mod broker;
pub mod chord;
pub mod lease;
pub mod server;

pub use server::{is_ci, server_url, skip_or_fail};

use std::time::Duration;

use chrono::{DateTime, FixedOffset};

/// Tolerance allowed between the wall clock of the test and the broker's when checking that
/// a delayed message was not delivered before its time (servers keep their own clocks).
pub const CLOCK_TOLERANCE: Duration = Duration::from_millis(50);

/// A name prefix unique to one run of one check: `conf-<check>-<8 hex digits>`.
///
/// Queue names and task ids of a check all start with it, so that checks running at the same
/// time on one server (or leftovers of earlier runs) never meet.
pub fn unique_prefix(check: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("conf-{check}-{}", &random[..8])
}

/// The current wall-clock time.
pub(crate) fn now() -> DateTime<FixedOffset> {
    crate::protocol::time::now()
}

/// `instant + duration` on the wall clock.
pub(crate) fn later(duration: Duration) -> DateTime<FixedOffset> {
    now() + chrono::Duration::from_std(duration).expect("small durations convert")
}

/// Re-exports used by the expansion of the test macros.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Expands to one `#[tokio::test]` per broker check of [`conformance::broker`](broker), in a
/// module `broker_conformance` (test names: `broker_conformance::<check>`, e.g.
/// `cargo test broker_conformance::priority`).
///
/// The argument is an expression evaluating to a future of the broker under test; it is
/// evaluated once per test. The future yields an `Arc<B>` for a broker type `B`, or an
/// `Arc<dyn Broker>`. Items of the calling module are in scope.
///
/// ```
/// // tests/conformance.rs of a broker crate (here: the memory broker)
/// use std::sync::Arc;
/// use queue_core::MemoryBroker;
///
/// queue_core::broker_conformance_tests!(async { Arc::new(MemoryBroker::new()) });
/// # fn main() {}
/// ```
///
/// For a broker on a server, `server = "VARIABLE", factory` names the environment variable
/// holding the server's URL and a closure `|url: String| future` making the broker from it.
/// Each test then skips (or fails under CI) when the variable is not set, through
/// [`server_url`](crate::conformance::server_url): it never runs on a stand-in.
///
/// ```
/// // tests/conformance.rs of a broker crate on a server
/// use std::sync::Arc;
/// # struct Rabbit(queue_core::MemoryBroker);
/// # impl Rabbit { async fn connect(_url: &str) -> queue_core::MemoryBroker { queue_core::MemoryBroker::new() } }
///
/// queue_core::broker_conformance_tests!(server = "QUEUE_TEST_AMQP_URL", |url: String| async move {
///     Arc::new(Rabbit::connect(&url).await)
/// });
/// # fn main() {}
/// ```
///
/// Tests run on tokio's multi-threaded runtime (two worker threads); the calling crate needs
/// no tokio features of its own.
#[macro_export]
macro_rules! broker_conformance_tests {
    (server = $variable:expr, $factory:expr $(,)?) => {
        $crate::__broker_checks! { (@server $variable, $factory) }
    };
    ($factory:expr $(,)?) => {
        $crate::__broker_checks! { (@local $factory) }
    };
}

/// Expands to one `#[tokio::test]` per check of [`conformance::broadcast`](broadcast) (the
/// broker's [`Broadcast`](crate::broadcast::Broadcast) side), in a module
/// `broadcast_conformance`. Same forms as
/// [`broker_conformance_tests!`](crate::broker_conformance_tests); a broker crate adds it
/// when it implements [`Broker::broadcast`](crate::Broker::broadcast).
///
/// ```
/// use std::sync::Arc;
/// use queue_core::MemoryBroker;
///
/// queue_core::broadcast_conformance_tests!(async { Arc::new(MemoryBroker::new()) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! broadcast_conformance_tests {
    (server = $variable:expr, $factory:expr $(,)?) => {
        $crate::__broadcast_checks! { (@server $variable, $factory) }
    };
    ($factory:expr $(,)?) => {
        $crate::__broadcast_checks! { (@local $factory) }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __broadcast_checks {
    ($make:tt) => {
        mod broadcast_conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::__private::tokio;

            $crate::__broadcast_check! { $make; fanout_reaches_every_subscriber }
            $crate::__broadcast_check! { $make; topic_routes_by_pattern }
            $crate::__broadcast_check! { $make; direct_routes_to_its_key }
            $crate::__broadcast_check! { $make; a_dropped_subscription_is_left_behind }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __broadcast_check {
    ($make:tt; $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let broker: ::std::sync::Arc<dyn $crate::Broker> =
                $crate::__conformance_subject!($make);
            let prefix = $crate::conformance::unique_prefix(stringify!($check));
            $crate::conformance::broadcast::$check(broker, &prefix).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __broker_checks {
    ($make:tt) => {
        $crate::__broker_conformance_tests! {
            $make;
            publish_consume_round_trip,
            fifo_within_priority,
            higher_priority_first,
            strict_queue_order,
            weighted_queue_order,
            fetch_respects_max_and_wait,
            fetch_returns_when_message_arrives,
            ack_removes,
            unacked_redelivered_after_close,
            unacked_redelivered_after_drop,
            reject_with_and_without_requeue,
            dead_letter_lists_with_reason,
            eta_held_by_broker,
            defer_redelivers_at_time,
            queue_length_by_priority,
            purge_removes_ready,
            batch_delivered_exactly_once,
            republish_and_ack_replaces_the_original,
            backlog_stats_count_ready_delayed_and_dead,
            backlog_delayed_listed_and_run_now,
            backlog_dead_letters_requeued_and_purged,
            backlog_known_queues_name_the_queue,
            queues_added_and_removed_while_consuming,
        }
    };
}

/// Expands to one `#[tokio::test]` per result backend check of
/// [`conformance::backend`](backend), in a module `backend_conformance` (test names:
/// `backend_conformance::<check>`).
///
/// The argument is a closure `|expiry: Option<Duration>| future` that makes the backend under
/// test; it is called once per test. `Some(expiry)` asks for results that expire after
/// `expiry` (the `results_expire` check asks for [`backend::EXPIRY`], 1 s); `None` asks for
/// the backend's default expiry. The future yields an `Arc<B>` for a backend type `B`, or an
/// `Arc<dyn ResultBackend>`. Items of the calling module are in scope.
///
/// ```
/// // tests/conformance.rs of a result backend crate (here: the memory backend)
/// use std::sync::Arc;
/// use std::time::Duration;
/// use queue_core::MemoryBackend;
///
/// queue_core::backend_conformance_tests!(|expiry: Option<Duration>| async move {
///     Arc::new(match expiry {
///         Some(expiry) => MemoryBackend::with_expiry(Some(expiry)),
///         None => MemoryBackend::new(),
///     })
/// });
/// # fn main() {}
/// ```
///
/// For a backend on a server, `server = "VARIABLE", factory` names the environment variable
/// holding the server's URL and a closure `|url: String, expiry: Option<Duration>| future`
/// making the backend. Each test then skips (or fails under CI) when the variable is not
/// set, through [`server_url`](crate::conformance::server_url).
///
/// Tests run on tokio's multi-threaded runtime (two worker threads); the calling crate needs
/// no tokio features of its own.
#[macro_export]
macro_rules! backend_conformance_tests {
    (server = $variable:expr, $factory:expr $(,)?) => {
        $crate::__backend_checks! { (@server $variable, $factory) }
    };
    ($factory:expr $(,)?) => {
        $crate::__backend_checks! { (@local $factory) }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __backend_checks {
    ($make:tt) => {
        $crate::__backend_conformance_tests! {
            $make;
            unknown_id_is_none,
            store_get_round_trip,
            failure_meta_round_trip,
            success_not_overwritten,
            wait_returns_when_ready,
            wait_times_out_with_latest,
            forget_removes,
            group_round_trip,
            store_many_round_trip,
            chord_completes_once_in_any_order,
            chord_duplicate_part_counts_once,
            chord_concurrent_parts_complete_once,
            chord_failure_parts_keep_state,
            chord_unindexed_part_sorts_last,
            chord_part_before_start_counts,
            chord_restarts_after_done,
        }
    };
}

/// Expands to one `#[tokio::test]` per check of [`conformance::lease`](lease), in a module
/// `lease_conformance`. Same forms as
/// [`broker_conformance_tests!`](crate::broker_conformance_tests); the factory yields an
/// `Arc<L>` for a [`Lease`](crate::lease::Lease) type `L`, or an `Arc<dyn Lease>`.
///
/// ```
/// use std::sync::Arc;
/// use queue_core::lease::MemoryLease;
///
/// queue_core::lease_conformance_tests!(async { Arc::new(MemoryLease::new()) });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! lease_conformance_tests {
    (server = $variable:expr, $factory:expr $(,)?) => {
        $crate::__lease_checks! { (@server $variable, $factory) }
    };
    ($factory:expr $(,)?) => {
        $crate::__lease_checks! { (@local $factory) }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_checks {
    ($make:tt) => {
        mod lease_conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::__private::tokio;

            $crate::__lease_check! { $make; one_holder_at_a_time }
            $crate::__lease_check! { $make; expired_lease_is_taken_over }
            $crate::__lease_check! { $make; released_lease_is_free_at_once }
            $crate::__lease_check! { $make; ticks_claimed_once_and_forwards }
            $crate::__lease_check! { $make; concurrent_claims_one_wins }
            $crate::__lease_check! { $make; ticks_survive_a_new_holder }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_check {
    ($make:tt; $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let store: ::std::sync::Arc<dyn $crate::lease::Lease> =
                $crate::__conformance_subject!($make);
            let prefix = $crate::conformance::unique_prefix(stringify!($check));
            $crate::conformance::lease::$check(store, &prefix).await;
        }
    };
}

/// The subject of one test: an expression, in the test's body, that returns from the test
/// (after the skip line) when the server's variable is not set.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_subject {
    ((@local $factory:expr) $($argument:expr)?) => {
        ($factory)$(($argument))?.await
    };
    ((@server $variable:expr, $factory:expr) $($argument:expr)?) => {{
        let ::core::option::Option::Some(url) = $crate::conformance::server_url($variable) else {
            return;
        };
        ($factory)(url $(, $argument)?).await
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __broker_conformance_tests {
    ($make:tt; $($check:ident),* $(,)?) => {
        mod broker_conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::__private::tokio;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let broker: ::std::sync::Arc<dyn $crate::Broker> =
                        $crate::__conformance_subject!($make);
                    let prefix = $crate::conformance::unique_prefix(stringify!($check));
                    $crate::conformance::broker::$check(broker, &prefix).await;
                }
            )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __backend_conformance_tests {
    ($make:tt; $($check:ident),* $(,)?) => {
        mod backend_conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::__private::tokio;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let backend: ::std::sync::Arc<dyn $crate::ResultBackend> =
                        $crate::__conformance_subject!($make ::core::option::Option::None);
                    let prefix = $crate::conformance::unique_prefix(stringify!($check));
                    $crate::conformance::backend::$check(backend, &prefix).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn results_expire() {
                let backend: ::std::sync::Arc<dyn $crate::ResultBackend> = $crate::__conformance_subject!(
                    $make ::core::option::Option::Some($crate::conformance::backend::EXPIRY)
                );
                let prefix = $crate::conformance::unique_prefix("results_expire");
                $crate::conformance::backend::results_expire(backend, &prefix).await;
            }
        }
    };
}
