//! Who may look and who may act: basic auth or a bearer token (from the environment),
//! CSRF protection of every state-changing request, a Host check against DNS rebinding when
//! no authentication is set, and defensive response headers.
//!
//! CSRF: a POST passes when it carries the `X-CSRF-Token` header equal to the
//! `queue_monitor_csrf` cookie (double submit; the cookie is set on any answer to a request
//! that lacks it), or when it carries valid `Authorization` credentials and no `Cookie`
//! header (a script, as with Flower). Either way an `Origin` that is not this host is refused.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::state::MonitorState;

/// The cookie holding the CSRF token.
pub const CSRF_COOKIE: &str = "queue_monitor_csrf";
/// The header a state-changing request repeats the token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// `user:pass` for HTTP basic auth.
pub const BASIC_AUTH_ENV: &str = "QUEUE_MONITOR_BASIC_AUTH";
/// A bearer token (`Authorization: Bearer <token>`).
pub const TOKEN_ENV: &str = "QUEUE_MONITOR_TOKEN";

/// The credentials a request must carry. [`Auth::none`] is allowed on loopback only.
#[derive(Clone, Default)]
pub struct Auth {
    basic: Option<(String, String)>,
    token: Option<String>,
}

impl std::fmt::Debug for Auth {
    // Never prints the secrets themselves.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Auth")
            .field("basic", &self.basic.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Auth {
    /// No authentication (only for a loopback address).
    pub fn none() -> Self {
        Self::default()
    }

    /// HTTP basic auth with this user and password.
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            basic: Some((user.into(), password.into())),
            ..Self::default()
        }
    }

    /// A bearer token.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// Also accepts this bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// From `QUEUE_MONITOR_BASIC_AUTH=user:pass` and `QUEUE_MONITOR_TOKEN` (either, both or
    /// neither). An empty variable counts as unset.
    pub fn from_env() -> Result<Self, crate::MonitorError> {
        let mut auth = Self::none();
        if let Some(pair) = std::env::var(BASIC_AUTH_ENV).ok().filter(|v| !v.is_empty()) {
            let (user, password) = pair.split_once(':').ok_or_else(|| {
                crate::MonitorError::Auth(format!("{BASIC_AUTH_ENV} must be user:password"))
            })?;
            auth.basic = Some((user.to_owned(), password.to_owned()));
        }
        if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|v| !v.is_empty()) {
            auth.token = Some(token);
        }
        Ok(auth)
    }

    /// Whether any credentials are required.
    pub fn is_enabled(&self) -> bool {
        self.basic.is_some() || self.token.is_some()
    }

    /// Whether `headers` carry valid credentials.
    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        if let (Some(expected), Some(given)) = (&self.token, value.strip_prefix("Bearer ")) {
            return constant_time_eq(expected.as_bytes(), given.trim().as_bytes());
        }
        if let (Some((user, password)), Some(given)) = (&self.basic, value.strip_prefix("Basic ")) {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else {
                return false;
            };
            let expected = format!("{user}:{password}");
            return constant_time_eq(expected.as_bytes(), &decoded);
        }
        false
    }
}

/// Compares without an early exit, so timing says nothing of where a guess went wrong.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// A fresh random CSRF token (hex).
pub fn new_csrf_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn refuse(status: StatusCode, message: &str, basic: bool) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if basic && status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"queue monitor\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Whether the `Host` header names this machine (`localhost`, `127.0.0.1`, `[::1]`).
fn is_loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without Host: not a browser of today.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.ends_with(".localhost")
}

/// Whether `Origin`, when present, is this host (scheme aside).
fn origin_matches_host(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware in front of every route.
pub async fn guard(State(state): State<MonitorState>, request: Request, next: Next) -> Response {
    let auth = state.auth();
    let headers = request.headers();
    let authenticated = auth.accepts(headers);
    if auth.is_enabled() && !authenticated {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required",
            auth.basic.is_some(),
        );
    }
    if !auth.is_enabled() && !is_loopback_host(headers) {
        // A page of another site that re-points its name at 127.0.0.1 (DNS rebinding).
        return refuse(StatusCode::FORBIDDEN, "unexpected Host header", false);
    }
    let csrf_cookie = cookie(headers, CSRF_COOKIE).map(str::to_owned);
    if is_state_changing(request.method()) {
        if !origin_matches_host(headers) {
            return refuse(StatusCode::FORBIDDEN, "cross-origin request refused", false);
        }
        let script = authenticated && !headers.contains_key(header::COOKIE);
        let token_ok = match (&csrf_cookie, headers.get(CSRF_HEADER)) {
            (Some(expected), Some(given)) => {
                constant_time_eq(expected.as_bytes(), given.as_bytes())
            }
            _ => false,
        };
        if !script && !token_ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: send the queue_monitor_csrf cookie's value in the X-CSRF-Token header",
                false,
            );
        }
    }
    let mut response = next.run(request).await;
    let response_headers = response.headers_mut();
    if csrf_cookie.is_none() && !response_headers.contains_key(header::SET_COOKIE) {
        if let Ok(value) = HeaderValue::from_str(&csrf_set_cookie(&new_csrf_token())) {
            response_headers.append(header::SET_COOKIE, value);
        }
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The `Set-Cookie` value for a CSRF token: readable by the page's script (that is the
/// point of double submit), never sent cross-site.
pub fn csrf_set_cookie(token: &str) -> String {
    format!("{CSRF_COOKIE}={token}; Path=/; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn credentials_are_checked_exactly() {
        let auth = Auth::basic("admin", "s3cret").with_token("tok");
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
        assert!(auth.accepts(&headers(&[(
            header::AUTHORIZATION,
            &format!("Basic {basic}")
        )])));
        assert!(auth.accepts(&headers(&[(header::AUTHORIZATION, "Bearer tok")])));
        assert!(!auth.accepts(&headers(&[(header::AUTHORIZATION, "Bearer to")])));
        let wrong = base64::engine::general_purpose::STANDARD.encode("admin:s3cre");
        assert!(!auth.accepts(&headers(&[(
            header::AUTHORIZATION,
            &format!("Basic {wrong}")
        )])));
        assert!(!auth.accepts(&HeaderMap::new()));
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(!format!("{auth:?}").contains("tok\""));
    }

    #[test]
    fn hosts_and_origins() {
        assert!(is_loopback_host(&headers(&[(
            header::HOST,
            "127.0.0.1:5555"
        )])));
        assert!(is_loopback_host(&headers(&[(header::HOST, "localhost")])));
        assert!(is_loopback_host(&headers(&[(header::HOST, "[::1]:80")])));
        assert!(!is_loopback_host(&headers(&[(
            header::HOST,
            "evil.example:5555"
        )])));
        let same = headers(&[
            (header::HOST, "127.0.0.1:5555"),
            (header::ORIGIN, "http://127.0.0.1:5555"),
        ]);
        assert!(origin_matches_host(&same));
        let other = headers(&[
            (header::HOST, "127.0.0.1:5555"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert!(!origin_matches_host(&other));
        let null = headers(&[(header::HOST, "127.0.0.1:5555"), (header::ORIGIN, "null")]);
        assert!(!origin_matches_host(&null));
        assert_eq!(
            cookie(
                &headers(&[(header::COOKIE, "a=1; queue_monitor_csrf=xyz")]),
                CSRF_COOKIE
            ),
            Some("xyz")
        );
    }
}
