//! The pages' scripts, styles, icon and the vendored chart library (uPlot, MIT), embedded at
//! build time and served under `/assets/`, each with an `ETag` so a browser revalidates
//! instead of downloading again.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::MonitorState;

/// One embedded file: its path under `/assets/`, its media type and its bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media_type:expr) => {
        Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../../assets/", $path)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JAVASCRIPT),
    asset!("js/lib.js", JAVASCRIPT),
    asset!("js/charts.js", JAVASCRIPT),
    asset!("js/overview.js", JAVASCRIPT),
    asset!("js/queues.js", JAVASCRIPT),
    asset!("js/queue.js", JAVASCRIPT),
    asset!("js/workers.js", JAVASCRIPT),
    asset!("js/worker.js", JAVASCRIPT),
    asset!("js/tasks.js", JAVASCRIPT),
    asset!("js/task.js", JAVASCRIPT),
    asset!("js/beat.js", JAVASCRIPT),
    asset!("vendor/uplot/uPlot.iife.min.js", JAVASCRIPT),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

pub(super) fn router() -> Router<MonitorState> {
    Router::new().route("/assets/{*path}", get(serve)).route(
        "/favicon.ico",
        get(|headers: HeaderMap| async move { respond(find("favicon.svg"), &headers) }),
    )
}

fn find(path: &str) -> Option<(usize, &'static Asset)> {
    ASSETS
        .iter()
        .enumerate()
        .find(|(_, asset)| asset.path == path)
}

async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    respond(find(&path), &headers)
}

fn respond(found: Option<(usize, &'static Asset)>, headers: &HeaderMap) -> Response {
    let Some((index, asset)) = found else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = &etags()[index];
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| given.as_bytes() == etag.as_bytes());
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.media_type)], asset.bytes).into_response()
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        response_headers.insert(header::ETAG, value);
    }
    response
}

/// One strong ETag per asset: a 64-bit FNV-1a hash of its bytes (computed once).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = asset
                    .bytes
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
                    });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_served_as_javascript_and_revalidated() {
        let (_, asset) = find("js/app.js").expect("app.js is embedded");
        assert_eq!(asset.media_type, JAVASCRIPT);
        let response = respond(find("js/app.js"), &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let etag = response.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            respond(find("js/app.js"), &again).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            respond(find("../Cargo.toml"), &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        for asset in ASSETS.iter().filter(|asset| asset.path.starts_with("js/")) {
            let text = std::str::from_utf8(asset.bytes).expect("UTF-8");
            for line in text.lines().filter(|line| line.starts_with("import ")) {
                let Some(target) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let path = format!("js/{}", target.trim_start_matches("./"));
                assert!(find(&path).is_some(), "{} imports {target}", asset.path);
            }
        }
    }
}
