//! The dashboard's pages: one HTML shell per page (overview, queues, a queue's dead letters
//! and delayed tasks, workers, a worker, tasks, a task) whose scripts fetch the JSON API and
//! follow `/api/live`. Scripts, styles and the chart library are embedded in the binary
//! ([`assets`]): the monitor needs no file and no network beside itself.
//!
//! Every page answer carries a strict `Content-Security-Policy`: scripts and styles only from
//! this origin, no inline script, no frames. The scripts put untrusted strings (task
//! arguments, results, tracebacks, worker names) in the page as text, never as HTML.

mod assets;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::MonitorState;

/// Scripts, styles, images, fetches and the live stream from this origin only; no plugin,
/// no frame, no inline script (the pages have none).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The shell every page shares; `{page}` and `{title}` are ours, never user input.
const SHELL: &str = include_str!("../../assets/index.html");

/// The pages' routes; merged into the monitor's router.
pub(crate) fn router() -> Router<MonitorState> {
    Router::new()
        .route("/", get(|| async { page("overview", "Overview") }))
        .route("/queues", get(|| async { page("queues", "Queues") }))
        .route("/queues/{queue}", get(|| async { page("queue", "Queue") }))
        .route("/workers", get(|| async { page("workers", "Workers") }))
        .route(
            "/workers/{worker}",
            get(|| async { page("worker", "Worker") }),
        )
        .route("/tasks", get(|| async { page("tasks", "Tasks") }))
        .route("/tasks/{task_id}", get(|| async { page("task", "Task") }))
        .merge(assets::router())
}

/// The shell for `page`: its script reads the page's name from `<body data-page>` and the
/// queue, worker or task from the address.
fn page(page: &'static str, title: &'static str) -> Response {
    let html = SHELL.replace("{page}", page).replace("{title}", title);
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
        let response = page("tasks", "Tasks");
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
}
