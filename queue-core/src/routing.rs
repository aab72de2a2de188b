//! Routing: which queue a task goes to. An explicit queue on the call wins, then the first
//! matching route (a glob on the task name), then the queue the task declares, then the
//! default queue (`celery`).

use globset::{Glob, GlobMatcher};

use crate::error::Error;

/// Task name → queue.
#[derive(Clone, Debug)]
pub struct Router {
    routes: Vec<(GlobMatcher, String)>,
    default_queue: String,
}

impl Router {
    /// A router with no routes.
    pub fn new(default_queue: impl Into<String>) -> Self {
        Self {
            routes: Vec::new(),
            default_queue: default_queue.into(),
        }
    }

    /// Adds a route: task names matching the glob `pattern` go to `queue`.
    pub fn add(&mut self, pattern: &str, queue: String) -> Result<(), Error> {
        let glob = Glob::new(pattern).map_err(|error| {
            Error::Config(format!("invalid route pattern {pattern:?}: {error}"))
        })?;
        self.routes.push((glob.compile_matcher(), queue));
        Ok(())
    }

    /// Sets the default queue.
    pub fn set_default_queue(&mut self, queue: String) {
        self.default_queue = queue;
    }

    /// The default queue.
    pub fn default_queue(&self) -> &str {
        &self.default_queue
    }

    /// The queue for a task named `name`.
    pub fn route<'a>(
        &'a self,
        name: &str,
        explicit: Option<&'a str>,
        declared: Option<&'a str>,
    ) -> &'a str {
        explicit
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|(matcher, _)| matcher.is_match(name))
                    .map(|(_, queue)| queue.as_str())
            })
            .or(declared)
            .unwrap_or(&self.default_queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_explicit_route_declared_default() {
        let mut router = Router::new("celery");
        router.add("reports.*", "reports".into()).unwrap();
        router.add("*", "catch_all".into()).unwrap();
        assert_eq!(
            router.route("reports.daily", Some("now"), Some("own")),
            "now"
        );
        assert_eq!(router.route("reports.daily", None, Some("own")), "reports");
        assert_eq!(router.route("mail.send", None, None), "catch_all");
        let plain = Router::new("celery");
        assert_eq!(plain.route("mail.send", None, Some("mail")), "mail");
        assert_eq!(plain.route("mail.send", None, None), "celery");
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(Router::new("celery").add("a[", "q".into()).is_err());
    }
}
