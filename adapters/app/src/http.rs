//! The HTTP surface's settings ([`HttpConfig`]) and their one check, shared
//! by the settings (which name the variable at fault at start) and by the
//! router's state (`qdn_relay_axum::AppState::new`), which takes them.

use http::HeaderValue;
use qdn_relay_twilio::Secret;

/// The default request body limit: 64 KiB (a Twilio webhook is a few KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The shortest dashboard token accepted, in characters.
const MIN_TOKEN_CHARS: usize = 16;

/// The HTTP surface's settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The public base URL Twilio calls (`RELAY_PUBLIC_URL`), e.g.
    /// `https://relay.example.com` or an API Gateway stage URL. When set it
    /// wins over the `Host` header for signature checks.
    pub public_url: Option<String>,
    /// The dashboard's bearer token (`RELAY_DASHBOARD_TOKEN`). Without one
    /// every dashboard route answers 401.
    pub dashboard_token: Option<Secret>,
    /// Origins allowed by CORS (`RELAY_CORS_ORIGINS`); none by default.
    pub cors_origins: Vec<String>,
    /// The largest request body accepted; larger ones get 413.
    pub body_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            dashboard_token: None,
            cors_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Why an [`HttpConfig`] is not valid. Each message names its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// The public URL is not an absolute http(s) URL.
    #[error(
        "RELAY_PUBLIC_URL must be an absolute http:// or https:// URL without query, got {0:?}"
    )]
    PublicUrl(String),
    /// A CORS origin is not `scheme://host[:port]` (it could never match
    /// a browser's `Origin`).
    #[error(
        "RELAY_CORS_ORIGINS entry {0:?} is not an origin like https://dash.example.com (scheme http or https, a host, an optional port; no path, query, user or wildcard)"
    )]
    CorsOrigin(String),
    /// The dashboard token is too short to be a secret.
    #[error("RELAY_DASHBOARD_TOKEN must be at least 16 characters")]
    WeakToken,
}

impl HttpConfigError {
    /// The environment variable at fault.
    pub fn var(&self) -> &'static str {
        match self {
            HttpConfigError::PublicUrl(_) => "RELAY_PUBLIC_URL",
            HttpConfigError::CorsOrigin(_) => "RELAY_CORS_ORIGINS",
            HttpConfigError::WeakToken => "RELAY_DASHBOARD_TOKEN",
        }
    }
}

/// An [`HttpConfig`] checked: what the router needs in its own form.
#[derive(Clone, Debug)]
pub struct CheckedHttp {
    /// The public base URL without a trailing `/`, if set.
    pub public_url: Option<String>,
    /// The allowed CORS origins, as header values.
    pub cors_origins: Vec<HeaderValue>,
}

impl HttpConfig {
    /// Checks every field: the public URL (normalised), the dashboard
    /// token's length and the CORS origins.
    pub fn check(&self) -> Result<CheckedHttp, HttpConfigError> {
        let public_url = match &self.public_url {
            None => None,
            Some(u) => Some(normalize_public_url(u)?),
        };
        if let Some(t) = &self.dashboard_token
            && t.expose().chars().count() < MIN_TOKEN_CHARS
        {
            return Err(HttpConfigError::WeakToken);
        }
        let mut cors_origins = Vec::new();
        for o in &self.cors_origins {
            if o.trim().is_empty() {
                continue;
            }
            let origin = normalize_origin(o)?;
            let hv = HeaderValue::from_str(&origin)
                .map_err(|_| HttpConfigError::CorsOrigin(o.to_owned()))?;
            if !cors_origins.contains(&hv) {
                cors_origins.push(hv);
            }
        }
        Ok(CheckedHttp {
            public_url,
            cors_origins,
        })
    }
}

/// An origin as browsers send it in `Origin`: scheme and host in lower
/// case, the scheme's default port left out, no path (one trailing `/` is
/// forgiven). Anything else could never equal a browser's `Origin` and is
/// refused: a path, a query, user info, a wildcard, another scheme.
fn normalize_origin(o: &str) -> Result<String, HttpConfigError> {
    let bad = || HttpConfigError::CorsOrigin(o.to_owned());
    let t = o.trim();
    let t = t.strip_suffix('/').unwrap_or(t);
    let (scheme, rest) = t.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(bad()),
    };
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@', '*', '\\'])
        || rest.contains(char::is_whitespace)
    {
        return Err(bad());
    }
    // host, [v6 host], host:port, [v6]:port
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(bad());
            }
            (format!("[{}]", h.to_ascii_lowercase()), port)
        }
        None => {
            let (h, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let label_ok = |l: &str| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if !h.split('.').all(label_ok) {
                return Err(bad());
            }
            (h.to_ascii_lowercase(), port)
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            (p != default_port && n.to_string() != default_port).then(|| n.to_string())
        }
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

fn normalize_public_url(u: &str) -> Result<String, HttpConfigError> {
    let t = u.trim().trim_end_matches('/');
    let ok = (t.starts_with("https://") || t.starts_with("http://"))
        && t.split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
        && !t.contains('?')
        && !t.contains('#')
        && !t.contains(char::is_whitespace);
    if ok {
        Ok(t.to_owned())
    } else {
        Err(HttpConfigError::PublicUrl(u.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_checked_and_normalised() {
        let c = HttpConfig {
            public_url: Some(" https://relay.example.com/ ".into()),
            dashboard_token: Some(Secret::new("0123456789abcdef")),
            cors_origins: vec!["https://dash.example.com/".into(), " ".into()],
            ..HttpConfig::default()
        };
        let checked = c.check().expect("valid");
        assert_eq!(
            checked.public_url.as_deref(),
            Some("https://relay.example.com")
        );
        assert_eq!(checked.cors_origins, ["https://dash.example.com"]);
        for (bad, var) in [
            (
                HttpConfig {
                    public_url: Some("https://relay.example.com/?x=1".into()),
                    ..HttpConfig::default()
                },
                "RELAY_PUBLIC_URL",
            ),
            (
                HttpConfig {
                    cors_origins: vec!["https://dash.example.com/app".into()],
                    ..HttpConfig::default()
                },
                "RELAY_CORS_ORIGINS",
            ),
            (
                HttpConfig {
                    dashboard_token: Some(Secret::new("short")),
                    ..HttpConfig::default()
                },
                "RELAY_DASHBOARD_TOKEN",
            ),
        ] {
            let e = bad.check().expect_err(var);
            assert_eq!(e.var(), var);
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        for (given, want) in [
            ("https://dash.example.com", "https://dash.example.com"),
            ("HTTPS://Dash.Example.COM/", "https://dash.example.com"),
            ("https://dash.example.com:443", "https://dash.example.com"),
            ("http://localhost:80", "http://localhost"),
            ("http://localhost:3000", "http://localhost:3000"),
            (
                "https://dash.example.com:8443",
                "https://dash.example.com:8443",
            ),
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            (" https://a-b.example.com ", "https://a-b.example.com"),
        ] {
            assert_eq!(normalize_origin(given).expect(given), want, "{given}");
        }
    }

    #[test]
    fn origins_that_can_never_match_are_refused() {
        for bad in [
            "dash.example.com",
            "ftp://dash.example.com",
            "https://",
            "https://dash.example.com/app",
            "https://dash.example.com?x=1",
            "https://dash.example.com#x",
            "https://user@dash.example.com",
            "https://*.example.com",
            "*",
            "null",
            "https://dash.example.com:0",
            "https://dash.example.com:99999",
            "https://dash.example.com:port",
            "https://dash..example.com",
            "https://-dash.example.com",
            "https://dash example.com",
            "https://[zz::1]",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad} accepted");
        }
    }
}
