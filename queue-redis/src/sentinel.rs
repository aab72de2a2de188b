//! `sentinel://` URLs as kombu and Celery spell them: one URL per sentinel, joined by `;`.
//!
//! ```text
//! sentinel://[[user]:password@]host[:port][/db];sentinel://host[:port]...[?master_name=name&option=value...]
//! ```
//!
//! kombu (`SentinelChannel`) and Celery's `SentinelBackend` split the text on `;`, take every
//! part's host and port (default 26379) as a sentinel and the credentials and database from
//! the **first** part; the master's name comes from the transport option `master_name`. Here
//! the credentials, the database and the query may be written on any part (written twice,
//! they must agree), and `master_name` is a query option. To read the same URL in Python,
//! put the credentials and the database on the first part (or leave the database at 0) and
//! set `broker_transport_options = {"master_name": ...}` (and
//! `result_backend_transport_options` for results).
//!
//! Writing the database on the first part (`sentinel://h1:26379/0;sentinel://h2:26379`) also
//! makes the whole text one valid URL (the rest is its path), which `queue`'s URL-based
//! configuration needs; `sentinel://h1;sentinel://h2/0` is not a valid URL and only
//! [`RedisBroker::connect`](crate::RedisBroker::connect) and friends read it.
//!
//! The credentials are the Redis master's (kombu passes them to `master_for`); the sentinels
//! are asked without a password, as kombu does without `sentinel_kwargs`.

use url::Url;

use crate::error::RedisError;

/// kombu's `SentinelTransport.default_port`.
pub(crate) const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Whether `text` is a `sentinel://` URL (or several).
pub(crate) fn is_sentinel(text: &str) -> bool {
    text.get(..11)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("sentinel://"))
}

/// The parts of a `sentinel://` URL list.
#[derive(Debug)]
pub(crate) struct SentinelUrl {
    /// A single `sentinel://` URL with the credentials, the database and all the query
    /// options, for the rest of the option parsing.
    pub(crate) merged: Url,
    /// The sentinels, in the order given.
    pub(crate) hosts: Vec<(String, u16)>,
}

/// Splits and parses `text`; errors never repeat the text (it may hold a password).
pub(crate) fn parse(text: &str) -> Result<SentinelUrl, RedisError> {
    let mut hosts = Vec::new();
    let mut credentials: Option<(String, Option<String>)> = None;
    let mut database: Option<String> = None;
    let mut query: Vec<(String, String)> = Vec::new();
    for (index, part) in text.split(';').enumerate() {
        let number = index + 1;
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if !is_sentinel(part) {
            return Err(RedisError::Config(format!(
                "part {number} of a sentinel:// URL list is not a sentinel:// URL"
            )));
        }
        let url = Url::parse(part).map_err(|error| {
            RedisError::Config(format!(
                "part {number} of a sentinel:// URL list is invalid: {error}"
            ))
        })?;
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| {
                RedisError::Config(format!("part {number} of a sentinel:// URL has no host"))
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        hosts.push((host, url.port().unwrap_or(DEFAULT_SENTINEL_PORT)));
        if !url.username().is_empty() || url.password().is_some() {
            let these = (url.username().to_owned(), url.password().map(str::to_owned));
            match &credentials {
                Some(known) if *known != these => {
                    return Err(RedisError::Config(
                        "the parts of a sentinel:// URL name different credentials".into(),
                    ));
                }
                _ => credentials = Some(these),
            }
        }
        let db = url.path().trim_matches('/');
        if !db.is_empty() {
            match &database {
                Some(known) if known != db => {
                    return Err(RedisError::Config(
                        "the parts of a sentinel:// URL name different databases".into(),
                    ));
                }
                _ => database = Some(db.to_owned()),
            }
        }
        query.extend(
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    let Some((first_host, first_port)) = hosts.first().cloned() else {
        return Err(RedisError::Config(
            "a sentinel:// URL names no sentinel".into(),
        ));
    };
    let mut merged = Url::parse(&format!("sentinel://{first_host}:{first_port}"))
        .or_else(|_| Url::parse(&format!("sentinel://[{first_host}]:{first_port}")))
        .map_err(|error| RedisError::Config(format!("invalid sentinel host: {error}")))?;
    if let Some((username, password)) = &credentials {
        // Both were valid (already encoded) in a URL of the same scheme.
        let _ = merged.set_username(username);
        let _ = merged.set_password(password.as_deref());
    }
    merged.set_path(&format!("/{}", database.unwrap_or_default()));
    if !query.is_empty() {
        merged.query_pairs_mut().extend_pairs(query);
    }
    Ok(SentinelUrl { merged, hosts })
}

/// `sentinel://[user:***@]h1:p1;sentinel://h2:p2/db`: the URL list without its password or
/// query, for logs.
pub(crate) fn redacted(merged: &Url, hosts: &[(String, u16)]) -> String {
    let mut shown = String::new();
    for (index, (host, port)) in hosts.iter().enumerate() {
        if index > 0 {
            shown.push(';');
        }
        shown.push_str("sentinel://");
        if index == 0 && (!merged.username().is_empty() || merged.password().is_some()) {
            shown.push_str(merged.username());
            if merged.password().is_some() {
                shown.push_str(":***");
            }
            shown.push('@');
        }
        if host.contains(':') {
            shown.push_str(&format!("[{host}]:{port}"));
        } else {
            shown.push_str(&format!("{host}:{port}"));
        }
    }
    shown.push_str(merged.path());
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisOptions;

    #[test]
    fn kombu_spelling_with_the_database_on_the_last_part() {
        let text = "sentinel://:s3cret@127.0.0.1:26379;sentinel://127.0.0.1:26380;sentinel://127.0.0.1:26381/3?master_name=mymaster";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed.hosts,
            [
                ("127.0.0.1".to_owned(), 26379),
                ("127.0.0.1".to_owned(), 26380),
                ("127.0.0.1".to_owned(), 26381)
            ]
        );
        assert_eq!(parsed.merged.password(), Some("s3cret"));
        assert_eq!(parsed.merged.path(), "/3");
        let options = RedisOptions::from_url(text).unwrap();
        assert_eq!(options.database, 3);
        assert_eq!(options.master_name.as_deref(), Some("mymaster"));
        let shown = options.to_string();
        assert_eq!(
            shown,
            "sentinel://:***@127.0.0.1:26379;sentinel://127.0.0.1:26380;sentinel://127.0.0.1:26381/3"
        );
        assert!(!format!("{options:?}").contains("s3cret"));
        let config = options.fred_config().unwrap();
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        assert_eq!(config.database, Some(3));
        match config.server {
            fred::prelude::ServerConfig::Sentinel {
                hosts,
                service_name,
                password,
                ..
            } => {
                assert_eq!(hosts.len(), 3);
                assert_eq!(hosts[2].port, 26381);
                assert_eq!(service_name, "mymaster");
                assert_eq!(password, None, "sentinels are asked without a password");
            }
            other => panic!("not a sentinel config: {other:?}"),
        }
    }

    #[test]
    fn one_valid_url_when_the_database_comes_first() {
        // Through queue_core's RedactedUrl (one url::Url), as the connector receives it.
        let text = "sentinel://127.0.0.1:26390/2;sentinel://127.0.0.1:26391;sentinel://[::1]/2?master_name=m&visibility_timeout=5";
        let url: queue_core::connect::RedactedUrl = text.parse().unwrap();
        let options = RedisOptions::from_url(url.expose().as_str()).unwrap();
        assert_eq!(options.database, 2);
        assert_eq!(options.master_name.as_deref(), Some("m"));
        assert_eq!(options.visibility_timeout.as_secs(), 5);
        assert_eq!(
            options.to_string(),
            "sentinel://127.0.0.1:26390;sentinel://127.0.0.1:26391;sentinel://[::1]:26379/2"
        );
        // The kombu spelling with the database last is no single URL.
        let last = "sentinel://127.0.0.1:26390;sentinel://127.0.0.1:26391/0?master_name=m";
        assert!(last.parse::<queue_core::connect::RedactedUrl>().is_err());
    }

    #[test]
    fn bad_lists_are_errors_that_hide_the_password() {
        for text in [
            "sentinel://:pw@h1:26379/0;sentinel://h2/1?master_name=m",
            "sentinel://:pw@h1;sentinel://:other@h2?master_name=m",
            "sentinel://:pw@h1;redis://h2?master_name=m",
            "sentinel://:pw@h1:99999?master_name=m",
            "sentinel://:pw@h1/0",
            "sentinel://:pw@h1/0?master_name=",
            "sentinel://:pw@/0?master_name=m",
            "redis://:pw@h1/0?master_name=m",
            "sentinel://:pw@h1;;?master_name=m",
        ] {
            let error = RedisOptions::from_url(text).unwrap_err();
            let text_shown = error.to_string();
            assert!(matches!(error, RedisError::Config(_)), "{text_shown}");
            assert!(!text_shown.contains("pw"), "{text_shown}");
        }
    }
}
