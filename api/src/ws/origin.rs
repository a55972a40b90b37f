//! Which pages may open a websocket: a browser sends the page's `Origin` with the upgrade
//! request, and nothing stops a page on another site from opening a socket to Corral
//! (cross-site websocket hijacking). Non-browser clients send no `Origin`.

use axum::http::{header, HeaderMap, Uri};

/// The setting that lists the origins allowed besides the server's own.
pub const SETTING: &str = "CORRAL_WS_ALLOWED_ORIGINS";

/// Origins a page may open a websocket from (`CORRAL_WS_ALLOWED_ORIGINS`). Requests without an
/// `Origin` and same-origin requests are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only the server's own origin (the default).
    #[default]
    SameOrigin,
    /// The server's own origin and these (`scheme://host[:port]`, lower case, no default port).
    Listed(Vec<String>),
    /// Any origin (`*`).
    Any,
}

impl AllowedOrigins {
    /// Reads the setting: `*`, or comma-separated origins like `https://app.example.com`; blank
    /// means the default.
    pub fn parse(value: &str) -> Result<Self, String> {
        let entries: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(Self::SameOrigin);
        }
        if entries == ["*"] {
            return Ok(Self::Any);
        }
        entries
            .iter()
            .map(|entry| {
                normalize(entry).ok_or_else(|| {
                    format!(
                        "{SETTING}: {entry:?} is not an origin like https://app.example.com \
                         (http or https, host and optional port, no path), and * stands alone"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Listed)
    }

    /// Whether an upgrade request with these headers may proceed. `uri` stands in for a
    /// missing `Host` (its authority).
    pub fn allow(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        if *self == Self::Any {
            return Ok(());
        }
        let refused = || {
            Err(format!(
                "websocket connections from origin {shown:?} are not allowed: only this server's \
                 own origin and those listed in {SETTING} may connect"
            ))
        };
        let Some(origin) = origin.to_str().ok().and_then(normalize) else {
            return refused();
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()));
        if host.is_some_and(|host| same_authority(&origin, &host)) {
            return Ok(());
        }
        match self {
            Self::Listed(origins) if origins.contains(&origin) => Ok(()),
            _ => refused(),
        }
    }
}

/// `scheme://host[:port]` in lower case without the scheme's default port, or `None` when
/// `value` is not a serialized http(s) origin (`null`, a path, user info...).
fn normalize(value: &str) -> Option<String> {
    let value = value.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = value.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// Whether the normalized `origin` names the same `host[:port]` as the `Host` header (whose
/// port, when it is the origin scheme's default, may be left out).
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default_port).unwrap_or(&host) == authority
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().expect("host"));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().expect("origin"));
        }
        headers
    }

    fn allowed(setting: &AllowedOrigins, origin: Option<&str>, host: &str) -> bool {
        setting
            .allow(&headers(origin, host), &Uri::from_static("/graphql/ws"))
            .is_ok()
    }

    #[test]
    fn by_default_only_requests_without_an_origin_and_same_origin_ones_are_allowed() {
        let default = AllowedOrigins::default();
        assert!(allowed(&default, None, "corral.example:8080"));
        assert!(allowed(
            &default,
            Some("http://corral.example:8080"),
            "corral.example:8080"
        ));
        assert!(allowed(
            &default,
            Some("https://Corral.Example"),
            "corral.example:443"
        ));
        assert!(!allowed(
            &default,
            Some("https://evil.example"),
            "corral.example"
        ));
        assert!(!allowed(
            &default,
            Some("http://corral.example:9090"),
            "corral.example:8080"
        ));
        assert!(!allowed(&default, Some("null"), "corral.example"));
        let refusal = default
            .allow(
                &headers(Some("https://evil.example"), "corral.example"),
                &Uri::from_static("/"),
            )
            .expect_err("refused");
        assert!(refusal.contains(SETTING), "{refusal}");
    }

    #[test]
    fn listed_origins_are_allowed_beside_the_servers_own_and_a_star_allows_any() {
        let listed = AllowedOrigins::parse(" https://App.example.com/ , http://localhost:3000")
            .expect("parse");
        assert_eq!(
            listed,
            AllowedOrigins::Listed(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        assert!(allowed(
            &listed,
            Some("https://app.example.com"),
            "api.example.com"
        ));
        assert!(allowed(
            &listed,
            Some("https://app.example.com:443"),
            "api.example.com"
        ));
        assert!(allowed(
            &listed,
            Some("https://api.example.com"),
            "api.example.com"
        ));
        assert!(!allowed(
            &listed,
            Some("http://app.example.com"),
            "api.example.com"
        ));
        assert!(!allowed(
            &listed,
            Some("https://evil.example"),
            "api.example.com"
        ));
        let any = AllowedOrigins::parse("*").expect("parse");
        assert!(allowed(
            &any,
            Some("https://evil.example"),
            "api.example.com"
        ));
        assert_eq!(
            AllowedOrigins::parse(" ").expect("parse"),
            AllowedOrigins::SameOrigin
        );
    }

    #[test]
    fn entries_that_are_not_origins_are_rejected_naming_the_setting() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://user@app.example.com",
            "*, https://app.example.com",
        ] {
            let err = AllowedOrigins::parse(bad).expect_err(bad);
            assert!(err.starts_with(SETTING), "{err}");
        }
    }
}
