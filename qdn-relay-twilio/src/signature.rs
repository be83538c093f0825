//! `X-Twilio-Signature`: Twilio signs every webhook with the account's Auth
//! Token, and this module checks it exactly as Twilio's helper libraries do.
//!
//! # The algorithm
//!
//! - **Form bodies** (`application/x-www-form-urlencoded`): the string
//!   signed is the full URL Twilio requested (scheme, host, port if any,
//!   path and query string), followed by every POST parameter sorted by
//!   name, each name immediately followed by its value. A name given more
//!   than once contributes all its values, sorted.
//! - **Other bodies** (JSON): Twilio adds `bodySHA256=<hex SHA-256 of the
//!   raw body>` to the URL's query and signs the URL alone. The body's hash
//!   must match too.
//! - The MAC is HMAC-SHA1 keyed with the Auth Token (or HMAC-SHA256 when
//!   the `X-Twilio-Webhooks-Signature-Settings` header says so), written in
//!   standard base64.
//! - Twilio is not consistent about the port, so the signature is tried
//!   against the URL with its port and without it: a URL without a port is
//!   also tried with `:443` (https) or `:80` (anything else) added, and a
//!   URL with a port is also tried with the port removed. The scheme is
//!   compared in lower case.
//! - Comparison is in constant time.
//! - A primary and a secondary token (rotation): the request is valid if
//!   either validates it.
//!
//! Where this differs from Twilio's Python library, on purpose: a name and
//! value given twice (identical pairs) are accepted whether or not the
//! duplicate was counted (Python counts it once, other helper libraries
//! twice); and removing the port from a URL with user information keeps
//! the user information (Python's keeps only the user name).
//!
//! The known-answer tests in `tests/vectors/signatures.json` are generated
//! by Twilio's own Python `RequestValidator`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The HTTP header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// The HTTP header naming the signing key and algorithm, when Twilio signs
/// with a shared key rather than the Auth Token.
pub const SIGNATURE_SETTINGS_HEADER: &str = "X-Twilio-Webhooks-Signature-Settings";

/// Which HMAC Twilio signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA1: Auth Token signatures (the default).
    #[default]
    HmacSha1,
    /// HMAC-SHA256.
    HmacSha256,
}

impl Algorithm {
    /// Reads the algorithm from the `X-Twilio-Webhooks-Signature-Settings`
    /// header (`key=…,algorithm=HMAC_SHA256`). No header, or one without
    /// `algorithm=`, means [`Algorithm::HmacSha1`].
    pub fn from_settings_header(header: Option<&str>) -> Result<Self, SignatureError> {
        for part in header.unwrap_or_default().split(',') {
            if let Some((name, value)) = part.split_once('=')
                && name.trim() == "algorithm"
                && !value.trim().is_empty()
            {
                return match value.trim().to_ascii_uppercase().as_str() {
                    "HMAC_SHA1" => Ok(Algorithm::HmacSha1),
                    "HMAC_SHA256" => Ok(Algorithm::HmacSha256),
                    _ => Err(SignatureError::UnsupportedAlgorithm {
                        name: value.trim().chars().take(40).collect(),
                    }),
                };
            }
        }
        Ok(Algorithm::HmacSha1)
    }
}

/// Why a request's signature was not accepted. Every variant should be
/// answered with a 4xx (403 for a bad or missing signature) and nothing
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request has no `X-Twilio-Signature` header (or an empty one).
    #[error("missing X-Twilio-Signature header")]
    Missing,
    /// The signature does not match the URL and body with any token.
    #[error("X-Twilio-Signature does not match the request")]
    Mismatch,
    /// The body's SHA-256 is not the one the URL's `bodySHA256` names.
    #[error("request body does not match the bodySHA256 in the URL")]
    BodyHashMismatch,
    /// A raw (JSON) body was posted to a URL without `bodySHA256`.
    #[error("URL has no bodySHA256 parameter for a non-form body")]
    MissingBodyHash,
    /// The URL cannot be the one Twilio requested.
    #[error("invalid request URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature settings header names an algorithm this library does
    /// not know.
    #[error("unsupported webhook signature algorithm {name:?}")]
    UnsupportedAlgorithm {
        /// The algorithm's name, as given (at most 40 characters).
        name: String,
    },
}

/// What was posted: form parameters or a raw body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Decoded form parameters, in any order, repeated names included
    /// (see [`crate::Form::pairs`]).
    Form(&'a [(String, String)]),
    /// A raw body (JSON), checked against the URL's `bodySHA256`.
    Body(&'a [u8]),
}

/// Checks `X-Twilio-Signature` against a primary and an optional secondary
/// Auth Token.
///
/// ```
/// use qdn_relay_twilio::{SignatureValidator, Secret};
/// let v = SignatureValidator::new(Secret::new("12345"));
/// let params = vec![("Body".to_string(), "hi".to_string())];
/// let url = "https://relay.example.com/sms/inbound";
/// let sig = v.sign_form(url, &params);
/// assert!(v.validate_form(url, &params, Some(&sig)).is_ok());
/// assert!(v.validate_form(url, &params, Some("bogus")).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct SignatureValidator {
    primary: Secret,
    secondary: Option<Secret>,
}

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// An HMAC of either algorithm, fed piece by piece.
enum AnyMac {
    Sha1(HmacSha1),
    Sha256(HmacSha256),
}

impl AnyMac {
    fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        match algorithm {
            Algorithm::HmacSha1 => AnyMac::Sha1(
                <HmacSha1 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            ),
            Algorithm::HmacSha256 => AnyMac::Sha256(
                <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            ),
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            AnyMac::Sha1(m) => m.update(data),
            AnyMac::Sha256(m) => m.update(data),
        }
    }
    fn finish_base64(self) -> String {
        let engine = base64::engine::general_purpose::STANDARD;
        match self {
            AnyMac::Sha1(m) => engine.encode(m.finalize().into_bytes()),
            AnyMac::Sha256(m) => engine.encode(m.finalize().into_bytes()),
        }
    }
}

/// The lowercase hex SHA-256 of a body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Computes the signature of `url` followed by `params`, sorted, with
/// `key`. With `dedup`, identical name/value pairs count once (Python's
/// helper library).
fn compute(
    algorithm: Algorithm,
    key: &str,
    url: &str,
    params: &[(String, String)],
    dedup: bool,
) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Sorting pairs sorts by name, then by value: exactly "names sorted,
    // each name's values sorted". Rust compares strings by UTF-8 bytes,
    // which is code point order, as Python does.
    sorted.sort_unstable();
    if dedup {
        sorted.dedup();
    }
    let mut mac = AnyMac::new(algorithm, key.as_bytes());
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.finish_base64()
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The two forms of `url` Twilio may have signed: with its port (the
/// scheme's default added if it had none) and without it.
fn url_variants(url: &str) -> Result<[String; 2], SignatureError> {
    let (scheme, rest) = url.split_once("://").ok_or(SignatureError::InvalidUrl {
        reason: "no scheme://",
    })?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(SignatureError::InvalidUrl {
            reason: "invalid scheme",
        });
    }
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[host_start..];
    // An IPv6 literal's colons are inside the brackets.
    let search_from = hostport.rfind(']').map_or(0, |i| i + 1);
    let port_colon = hostport[search_from..].rfind(':').map(|i| search_from + i);
    let (host_end, port) = match port_colon {
        Some(i) => (host_start + i, &hostport[i + 1..]),
        None => (authority.len(), ""),
    };
    if hostport[..port_colon.unwrap_or(hostport.len())].is_empty() {
        return Err(SignatureError::InvalidUrl { reason: "no host" });
    }
    if !port.is_empty() && (port.len() > 5 || port.parse::<u16>().is_err()) {
        return Err(SignatureError::InvalidUrl {
            reason: "invalid port",
        });
    }
    let without = format!("{scheme}://{}{tail}", &authority[..host_end]);
    let with = if port.is_empty() {
        let default = if scheme == "https" { 443 } else { 80 };
        format!("{scheme}://{}:{default}{tail}", &authority[..host_end])
    } else {
        format!("{scheme}://{authority}{tail}")
    };
    Ok([with, without])
}

/// The first non-empty `bodySHA256` in the URL's query, decoded.
fn body_hash_param(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == "bodySHA256" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

impl SignatureValidator {
    /// A validator with one Auth Token.
    pub fn new(primary: Secret) -> Self {
        Self {
            primary,
            secondary: None,
        }
    }

    /// Also accepts signatures made with `secondary` (the previous or the
    /// next token, while rotating).
    pub fn with_secondary(mut self, secondary: Secret) -> Self {
        self.secondary = Some(secondary);
        self
    }

    fn tokens(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.primary).chain(self.secondary.as_ref())
    }

    /// Checks the signature of a form-encoded webhook with HMAC-SHA1.
    ///
    /// `url` is the full public URL Twilio requested (behind a proxy: the
    /// configured public base URL plus the path and query), `params` the
    /// decoded form body, `signature` the `X-Twilio-Signature` header.
    pub fn validate_form(
        &self,
        url: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        self.validate(Algorithm::HmacSha1, url, Payload::Form(params), signature)
    }

    /// Checks the signature of a webhook with a raw (JSON) body with
    /// HMAC-SHA1: the URL must carry `bodySHA256`, the body must hash to
    /// it, and the signature covers the URL alone.
    pub fn validate_body(
        &self,
        url: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        self.validate(Algorithm::HmacSha1, url, Payload::Body(body), signature)
    }

    /// Checks a signature made with `algorithm` (see
    /// [`Algorithm::from_settings_header`]).
    pub fn validate(
        &self,
        algorithm: Algorithm,
        url: &str,
        payload: Payload<'_>,
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let signature = match signature {
            None | Some("") => return Err(SignatureError::Missing),
            Some(s) => s,
        };
        let urls = url_variants(url)?;
        let (params, dedup_differs): (&[(String, String)], bool) = match payload {
            Payload::Form(params) => (params, has_duplicate_pairs(params)),
            Payload::Body(body) => {
                let expected = body_hash_param(url).ok_or(SignatureError::MissingBodyHash)?;
                if !ct_eq(&body_sha256_hex(body), &expected) {
                    return Err(SignatureError::BodyHashMismatch);
                }
                (&[], false)
            }
        };
        let mut ok = false;
        for token in self.tokens() {
            for u in &urls {
                ok |= ct_eq(
                    &compute(algorithm, token.expose(), u, params, false),
                    signature,
                );
                if dedup_differs {
                    ok |= ct_eq(
                        &compute(algorithm, token.expose(), u, params, true),
                        signature,
                    );
                }
            }
        }
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// Signs a form webhook as Twilio would (HMAC-SHA1 with the primary
    /// token, the URL as given): for tools that post test webhooks.
    pub fn sign_form(&self, url: &str, params: &[(String, String)]) -> String {
        compute(
            Algorithm::HmacSha1,
            self.primary.expose(),
            url,
            params,
            false,
        )
    }

    /// Signs a raw-body webhook as Twilio would: appends
    /// `bodySHA256=<hex>` to `url` and signs the result. Returns the URL
    /// to post to and the signature.
    pub fn sign_body(&self, url: &str, body: &[u8]) -> (String, String) {
        let sep = if url.contains('?') { '&' } else { '?' };
        let signed_url = format!("{url}{sep}bodySHA256={}", body_sha256_hex(body));
        let sig = compute(
            Algorithm::HmacSha1,
            self.primary.expose(),
            &signed_url,
            &[],
            false,
        );
        (signed_url, sig)
    }
}

fn has_duplicate_pairs(params: &[(String, String)]) -> bool {
    let mut seen: Vec<&(String, String)> = params.iter().collect();
    seen.sort_unstable();
    seen.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn url_variants_add_or_remove_the_port() {
        let v = |u| url_variants(u).unwrap();
        assert_eq!(
            v("https://example.com/sms?x=1"),
            [
                "https://example.com:443/sms?x=1".to_string(),
                "https://example.com/sms?x=1".to_string()
            ]
        );
        assert_eq!(
            v("http://example.com"),
            [
                "http://example.com:80".to_string(),
                "http://example.com".to_string()
            ]
        );
        assert_eq!(
            v("https://example.com:8443/a"),
            [
                "https://example.com:8443/a".to_string(),
                "https://example.com/a".to_string()
            ]
        );
        assert_eq!(
            v("HTTPS://user:pw@Example.com:443?q=a:b"),
            [
                "https://user:pw@Example.com:443?q=a:b".to_string(),
                "https://user:pw@Example.com?q=a:b".to_string()
            ]
        );
        assert_eq!(
            v("http://[::1]:8080/x"),
            [
                "http://[::1]:8080/x".to_string(),
                "http://[::1]/x".to_string()
            ]
        );
        assert_eq!(
            v("http://[::1]/x"),
            [
                "http://[::1]:80/x".to_string(),
                "http://[::1]/x".to_string()
            ]
        );
        for bad in [
            "example.com/x",
            "https:///x",
            "https://h:99999/",
            "https://h:8a/",
            "ht tp://h/",
        ] {
            assert!(url_variants(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn twilio_documentation_example() {
        // The example of Twilio's security documentation.
        let v = SignatureValidator::new(Secret::new("12345"));
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert_eq!(v.sign_form(url, &params), expected);
        assert_eq!(v.validate_form(url, &params, Some(expected)), Ok(()));
        let mut reordered = params.clone();
        reordered.reverse();
        assert_eq!(v.validate_form(url, &reordered, Some(expected)), Ok(()));
    }

    #[test]
    fn missing_and_wrong_signatures() {
        let v = SignatureValidator::new(Secret::new("tok"));
        let p = pairs(&[("a", "1")]);
        let url = "https://h/x";
        assert_eq!(v.validate_form(url, &p, None), Err(SignatureError::Missing));
        assert_eq!(
            v.validate_form(url, &p, Some("")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            v.validate_form(url, &p, Some("AAAA")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v.validate_form("nourl", &p, Some("AAAA")),
            Err(SignatureError::InvalidUrl {
                reason: "no scheme://"
            })
        );
    }

    #[test]
    fn body_variant_checks_the_hash() {
        let v = SignatureValidator::new(Secret::new("tok"));
        let body = br#"{"a":1}"#;
        let (url, sig) = v.sign_body("https://h/x?y=1", body);
        assert!(url.starts_with("https://h/x?y=1&bodySHA256="));
        assert_eq!(v.validate_body(&url, body, Some(&sig)), Ok(()));
        assert_eq!(
            v.validate_body(&url, br#"{"a":2}"#, Some(&sig)),
            Err(SignatureError::BodyHashMismatch)
        );
        assert_eq!(
            v.validate_body("https://h/x", body, Some(&sig)),
            Err(SignatureError::MissingBodyHash)
        );
    }

    #[test]
    fn duplicate_pairs_are_accepted_counted_once_or_twice() {
        let v = SignatureValidator::new(Secret::new("tok"));
        let url = "https://h/x";
        let p = pairs(&[("a", "1"), ("a", "1"), ("b", "2")]);
        let twice = compute(Algorithm::HmacSha1, "tok", url, &p, false);
        let once = compute(Algorithm::HmacSha1, "tok", url, &p, true);
        assert_ne!(twice, once);
        assert_eq!(v.validate_form(url, &p, Some(&twice)), Ok(()));
        assert_eq!(v.validate_form(url, &p, Some(&once)), Ok(()));
    }

    #[test]
    fn settings_header() {
        assert_eq!(
            Algorithm::from_settings_header(None),
            Ok(Algorithm::HmacSha1)
        );
        assert_eq!(
            Algorithm::from_settings_header(Some("key=k1, algorithm=HMAC_SHA256")),
            Ok(Algorithm::HmacSha256)
        );
        assert_eq!(
            Algorithm::from_settings_header(Some("key=k1")),
            Ok(Algorithm::HmacSha1)
        );
        assert!(matches!(
            Algorithm::from_settings_header(Some("algorithm=MD5")),
            Err(SignatureError::UnsupportedAlgorithm { .. })
        ));
    }

    #[test]
    fn body_hash_is_lower_hex() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
