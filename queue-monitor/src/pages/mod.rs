//! The dashboard's pages: one HTML shell per page (overview, queues, a queue's dead letters
//! and delayed tasks, workers, a worker, tasks, a task, beat) whose scripts fetch the JSON API and
//! follow `/api/live`. Scripts, styles and the chart library are embedded in the binary
//! ([`assets`]): the monitor needs no file and no network beside itself.
//!
//! Every page answer carries a strict `Content-Security-Policy`: scripts and styles only from
//! this origin, no inline script, no frames. The scripts put untrusted strings (task
//! arguments, results, tracebacks, worker names) in the page as text, never as HTML.

mod assets;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use crate::state::MonitorState;

/// Scripts, styles, images, fetches and the live stream from this origin only; no plugin,
/// no frame, no inline script (the pages have none).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The shell every page shares; `{page}` and `{title}` are ours, never user input.
const SHELL: &str = include_str!("../../assets/index.html");

/// The pages' routes, for pages served under `prefix` (`""` or `/monitor`); merged into
/// the monitor's router.
pub(crate) fn router(prefix: &str) -> Router<MonitorState> {
    let shell: Arc<str> = shell(prefix).into();
    let page = move |name: &'static str, title: &'static str| {
        let shell = shell.clone();
        get(move || async move { page(&shell, name, title) })
    };
    Router::new()
        .route("/", page("overview", "Overview"))
        .route("/queues", page("queues", "Queues"))
        .route("/queues/{queue}", page("queue", "Queue"))
        .route("/workers", page("workers", "Workers"))
        .route("/workers/{worker}", page("worker", "Worker"))
        .route("/tasks", page("tasks", "Tasks"))
        .route("/tasks/{task_id}", page("task", "Task"))
        .route("/beat", page("beat", "Beat"))
        .merge(assets::router())
}

/// The overview page alone (the monitor also serves it at `{prefix}/`).
pub(crate) fn overview(prefix: &str) -> MethodRouter<MonitorState> {
    let shell: Arc<str> = shell(prefix).into();
    get(move || async move { page(&shell, "overview", "Overview") })
}

/// The shell with its links under `prefix` (checked to be a plain path by the monitor).
fn shell(prefix: &str) -> String {
    SHELL
        .replace("href=\"/", &format!("href=\"{prefix}/"))
        .replace("src=\"/", &format!("src=\"{prefix}/"))
        .replace("{prefix}", prefix)
}

/// The shell for `page`: its script reads the page's name from `<body data-page>`, the
/// prefix from `<body data-prefix>` and the queue, worker or task from the address.
fn page(shell: &str, page: &'static str, title: &'static str) -> Response {
    let html = shell.replace("{page}", page).replace("{title}", title);
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // The shell is tiny and holds no data; always fetched, so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_has_no_inline_script_and_names_its_page() {
        let response = page(&shell(""), "tasks", "Tasks");
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(SHELL.contains("data-page=\"{page}\""));
        // Every <script> loads a file: the policy would block an inline one.
        for script in SHELL.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        }
    }

    #[test]
    fn a_prefix_moves_every_link_of_the_shell() {
        let html = shell("/ops/monitor");
        assert!(html.contains("data-prefix=\"/ops/monitor\""));
        assert!(html.contains("src=\"/ops/monitor/assets/js/app.js\""));
        assert!(html.contains("href=\"/ops/monitor/tasks\""));
        for attribute in ["href=\"/", "src=\"/"] {
            for (index, _) in html.match_indices(attribute) {
                assert!(html[index..].starts_with(&format!("{attribute}ops/monitor")));
            }
        }
        assert!(shell("").contains("data-prefix=\"\""));
    }
}
