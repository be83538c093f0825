//! The URL Twilio called, rebuilt from what API Gateway tells the function.
//!
//! Twilio signs the full URL it posted to. Behind an API Gateway HTTP API
//! the function never sees that URL whole: it gets the domain in
//! `requestContext.domainName`, the stage in `requestContext.stage`, and
//! the path in `rawPath` — which, for a named stage on the
//! `execute-api` domain, starts with `/<stage>` (for the `$default` stage
//! it does not). The router, on the other hand, matches `/sms/inbound`
//! whatever the stage. [`rebuild`] turns the facts of one request into
//! both: the path the router matches ([`Rebuilt::route`]) and the URL
//! whose signature is checked ([`Rebuilt::public`]).
//!
//! A configured public base URL (`RELAY_PUBLIC_URL`, e.g. a custom domain
//! `https://relay.example.com` or `https://api.example.com/relay`) wins:
//! the public URL is that base plus the route path. It is the only way to
//! get custom domains right, since a request through a custom domain
//! carries nothing that says which base path mapping it came through.

use std::fmt;

/// `RELAY_PUBLIC_URL`, split into its origin and its base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBase {
    origin: String,
    path: String,
}

/// `RELAY_PUBLIC_URL` is not an absolute http(s) URL without query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RELAY_PUBLIC_URL must be an absolute http:// or https:// URL without query, got {0:?}")]
pub struct BadPublicBase(pub String);

impl PublicBase {
    /// Parses a base URL: `https://host[:port][/base/path]`, a trailing `/`
    /// ignored.
    pub fn parse(url: &str) -> Result<Self, BadPublicBase> {
        let bad = || BadPublicBase(url.to_owned());
        let t = url.trim().trim_end_matches('/');
        let (scheme, rest) = t.split_once("://").ok_or_else(bad)?;
        if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
            return Err(bad());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || t.contains(['?', '#'])
            || t.contains(char::is_whitespace)
            || path.contains("//")
        {
            return Err(bad());
        }
        Ok(Self {
            origin: format!("{}://{authority}", scheme.to_ascii_lowercase()),
            path: path.to_owned(),
        })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The base path (`""` or `/relay`), without a trailing `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL of a route under this base, e.g. `…/sms/status`.
    pub fn join(&self, route: &str) -> String {
        format!("{}{}{route}", self.origin, self.path)
    }
}

impl fmt::Display for PublicBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

/// What API Gateway (payload format 2.0) says about one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// `requestContext.domainName`: the host the client called.
    pub domain_name: Option<&'a str>,
    /// `requestContext.stage`: `$default` or a stage name.
    pub stage: Option<&'a str>,
    /// `rawPath`, exactly as in the event.
    pub raw_path: &'a str,
    /// `rawQueryString`, exactly as in the event (no `?`).
    pub raw_query: Option<&'a str>,
    /// The `Host` header, used only when there is no `domainName`.
    pub host: Option<&'a str>,
    /// `X-Forwarded-Proto`, used only with the `Host` fallback.
    pub forwarded_proto: Option<&'a str>,
}

/// A request's two URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The path and query the router matches: `/sms/inbound?x=1`, with the
    /// stage (or the public base path) taken off.
    pub route: String,
    /// The absolute URL the client called: what Twilio signed. `None` when
    /// the event names no host at all.
    pub public: Option<String>,
}

/// Whether `path` is `prefix` or starts with `prefix/`; the rest if so.
fn strip_segment_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Whether `domain` is API Gateway's own `execute-api` domain, where a
/// named stage is always the first path segment.
fn is_execute_api(domain: &str) -> bool {
    let d = domain.split(':').next().unwrap_or(domain);
    d.contains(".execute-api.")
        && (d.ends_with(".amazonaws.com") || d.ends_with(".amazonaws.com.cn"))
}

/// Rebuilds the route path and the public URL of one request (see the
/// module docs).
///
/// - The route path is `rawPath` without the public base's path, or else
///   without `/<stage>` for a named stage.
/// - The public URL is `base + route path` when a base is configured; else
///   `https://<domainName>` plus the path the client called: `rawPath`, with
///   `/<stage>` put back in front on the `execute-api` domain if a
///   conversion upstream removed it.
/// - The query string is kept byte for byte in both.
pub fn rebuild(base: Option<&PublicBase>, facts: &RequestFacts<'_>) -> Rebuilt {
    let raw_path = if facts.raw_path.is_empty() {
        "/"
    } else {
        facts.raw_path
    };
    let stage_prefix = facts
        .stage
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "$default")
        .map(|s| format!("/{s}"));
    let stripped = base
        .and_then(|b| strip_segment_prefix(raw_path, b.path()))
        .or_else(|| {
            stage_prefix
                .as_deref()
                .and_then(|p| strip_segment_prefix(raw_path, p))
        })
        .unwrap_or(raw_path);
    let route_path = if stripped.is_empty() { "/" } else { stripped };
    let query = facts
        .raw_query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let route = format!("{route_path}{query}");

    let public = match base {
        Some(b) => Some(format!("{}{route}", b)),
        None => {
            let (origin, called_path) = match facts.domain_name.filter(|d| !d.is_empty()) {
                Some(domain) => {
                    let path = match &stage_prefix {
                        Some(p)
                            if is_execute_api(domain)
                                && strip_segment_prefix(raw_path, p).is_none() =>
                        {
                            format!("{p}{raw_path}")
                        }
                        _ => raw_path.to_owned(),
                    };
                    (Some(format!("https://{domain}")), path)
                }
                None => {
                    let proto = facts
                        .forwarded_proto
                        .and_then(|p| p.split(',').next())
                        .map(str::trim)
                        .filter(|p| *p == "http" || *p == "https")
                        .unwrap_or("https");
                    let origin = facts
                        .host
                        .filter(|h| !h.is_empty())
                        .map(|h| format!("{proto}://{h}"));
                    (origin, raw_path.to_owned())
                }
            };
            origin.map(|o| format!("{o}{called_path}{query}"))
        }
    };
    Rebuilt { route, public }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "abc123defg.execute-api.us-east-1.amazonaws.com";

    fn facts<'a>(stage: &'a str, raw_path: &'a str, raw_query: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            domain_name: Some(API),
            stage: Some(stage),
            raw_path,
            raw_query: Some(raw_query),
            host: Some(API),
            forwarded_proto: Some("https"),
        }
    }

    fn base(s: &str) -> PublicBase {
        PublicBase::parse(s).expect("base")
    }

    #[test]
    fn default_stage_has_no_prefix() {
        let r = rebuild(None, &facts("$default", "/sms/inbound", ""));
        assert_eq!(r.route, "/sms/inbound");
        assert_eq!(
            r.public.as_deref(),
            Some(&*format!("https://{API}/sms/inbound"))
        );
    }

    #[test]
    fn named_stage_is_routed_without_and_signed_with_its_prefix() {
        let r = rebuild(None, &facts("prod", "/prod/sms/inbound", ""));
        assert_eq!(r.route, "/sms/inbound");
        assert_eq!(
            r.public.as_deref(),
            Some(&*format!("https://{API}/prod/sms/inbound"))
        );
    }

    #[test]
    fn a_stripped_stage_is_put_back_on_the_execute_api_domain() {
        // As if a conversion upstream had already taken the stage off.
        let r = rebuild(None, &facts("prod", "/sms/inbound", ""));
        assert_eq!(r.route, "/sms/inbound");
        assert_eq!(
            r.public.as_deref(),
            Some(&*format!("https://{API}/prod/sms/inbound"))
        );
    }

    #[test]
    fn only_a_whole_segment_is_a_stage() {
        let r = rebuild(None, &facts("sms", "/smsx/inbound", ""));
        assert_eq!(r.route, "/smsx/inbound");
        let r = rebuild(None, &facts("prod", "/prod", ""));
        assert_eq!(r.route, "/");
        assert_eq!(r.public.as_deref(), Some(&*format!("https://{API}/prod")));
    }

    #[test]
    fn the_query_string_is_kept_byte_for_byte() {
        let q = "b=2&a=%2B1%20x&a=3";
        let r = rebuild(None, &facts("prod", "/prod/sms/status", q));
        assert_eq!(r.route, format!("/sms/status?{q}"));
        assert_eq!(
            r.public.as_deref(),
            Some(&*format!("https://{API}/prod/sms/status?{q}"))
        );
        let r = rebuild(
            Some(&base("https://relay.example.com")),
            &facts("prod", "/prod/x", q),
        );
        assert_eq!(
            r.public.as_deref(),
            Some(&*format!("https://relay.example.com/x?{q}"))
        );
    }

    #[test]
    fn a_configured_custom_domain_wins() {
        let b = base("https://relay.example.com/");
        let mut f = facts("prod", "/sms/inbound", "");
        f.domain_name = Some("relay.example.com");
        let r = rebuild(Some(&b), &f);
        assert_eq!(r.route, "/sms/inbound");
        assert_eq!(
            r.public.as_deref(),
            Some("https://relay.example.com/sms/inbound")
        );
        // Some mappings leave the stage in rawPath: still the same URL.
        f.raw_path = "/prod/sms/inbound";
        let r = rebuild(Some(&b), &f);
        assert_eq!(r.route, "/sms/inbound");
        assert_eq!(
            r.public.as_deref(),
            Some("https://relay.example.com/sms/inbound")
        );
    }

    #[test]
    fn a_base_path_mapping_is_taken_off_the_route() {
        let b = base("https://api.example.com/relay");
        let mut f = facts("prod", "/relay/sms/inbound", "x=1");
        f.domain_name = Some("api.example.com");
        let r = rebuild(Some(&b), &f);
        assert_eq!(r.route, "/sms/inbound?x=1");
        assert_eq!(
            r.public.as_deref(),
            Some("https://api.example.com/relay/sms/inbound?x=1")
        );
        // A mapping that does not show in rawPath.
        f.raw_path = "/sms/inbound";
        let r = rebuild(Some(&b), &f);
        assert_eq!(r.route, "/sms/inbound?x=1");
        assert_eq!(
            r.public.as_deref(),
            Some("https://api.example.com/relay/sms/inbound?x=1")
        );
    }

    #[test]
    fn the_stage_url_as_base_matches_the_rebuilt_one() {
        let b = base(&format!("https://{API}/prod"));
        let f = facts("prod", "/prod/sms/inbound", "");
        assert_eq!(rebuild(Some(&b), &f), rebuild(None, &f));
    }

    #[test]
    fn without_domain_name_the_host_header_is_used() {
        let f = RequestFacts {
            raw_path: "/sms/inbound",
            host: Some("localhost:9000"),
            forwarded_proto: Some("http"),
            ..RequestFacts::default()
        };
        let r = rebuild(None, &f);
        assert_eq!(
            r.public.as_deref(),
            Some("http://localhost:9000/sms/inbound")
        );
        let r = rebuild(None, &RequestFacts::default());
        assert_eq!(r.route, "/");
        assert_eq!(r.public, None);
    }

    #[test]
    fn bases_are_checked() {
        assert_eq!(
            base("https://Relay.example.com/").to_string(),
            "https://Relay.example.com"
        );
        assert_eq!(base("HTTPS://a.com/x/y/").path(), "/x/y");
        assert_eq!(base("http://a.com:8080").origin(), "http://a.com:8080");
        for bad in [
            "relay.example.com",
            "ftp://a.com",
            "https://",
            "https:///x",
            "https://a.com/?x=1",
            "https://a.com/#f",
            "https://u@a.com",
            "https://a.com//x",
        ] {
            assert!(PublicBase::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            base("https://a.com/relay").join("/sms/status"),
            "https://a.com/relay/sms/status"
        );
    }
}
