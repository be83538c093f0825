//! Sessions and CSRF tokens, without server-side state (so every server
//! and every Lambda instance that knows the dashboard token accepts them).
//!
//! - The key is derived from the dashboard token (HMAC-SHA256 of a fixed
//!   label): changing the token signs everybody out.
//! - A session cookie is `v1.<expires ms>.<nonce>.<name>.<mac>`: the
//!   operator's name (base64url) and a random nonce, signed with the key.
//!   It is never the token itself.
//! - A session's CSRF token is the HMAC of its nonce: every form carries
//!   it, every POST but the sign-in checks it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use qdn_relay_core::Timestamp;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "qdn_console";

/// How long a session lasts.
pub(crate) const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The signing key, derived from the dashboard token.
#[derive(Clone)]
pub(crate) struct Keys {
    key: [u8; 32],
    token: Box<[u8]>,
}

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) expires: Timestamp,
    pub(crate) nonce: String,
    pub(crate) name: String,
}

impl Keys {
    pub(crate) fn new(token: &str) -> Self {
        Self {
            key: mac(token.as_bytes(), b"qdn-relay console session v1"),
            token: token.as_bytes().into(),
        }
    }

    /// Whether `given` is the dashboard token (in constant time).
    pub(crate) fn is_token(&self, given: &str) -> bool {
        let a = mac(&self.key, given.as_bytes());
        let b = mac(&self.key, &self.token);
        bool::from(a.ct_eq(&b))
    }

    /// A new session for `name`, expiring `SESSION_TTL` after `now`.
    pub(crate) fn issue(&self, now: Timestamp, name: &str) -> Session {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        Session {
            expires: now.plus(SESSION_TTL),
            nonce: B64.encode(nonce),
            name: name.to_owned(),
        }
    }

    /// The cookie value of a session.
    pub(crate) fn cookie_value(&self, s: &Session) -> String {
        let body = format!(
            "v1.{}.{}.{}",
            s.expires.as_millis(),
            s.nonce,
            B64.encode(s.name.as_bytes())
        );
        let tag = B64.encode(mac(&self.key, body.as_bytes()));
        format!("{body}.{tag}")
    }

    /// The session a cookie value carries, if it is ours, intact and not
    /// expired at `now`.
    pub(crate) fn open(&self, value: &str, now: Timestamp) -> Option<Session> {
        let (body, tag) = value.rsplit_once('.')?;
        let tag = B64.decode(tag).ok()?;
        let expected = mac(&self.key, body.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&tag)) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(exp), Some(nonce), Some(name), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let expires = Timestamp::from_millis(exp.parse().ok()?);
        if expires <= now {
            return None;
        }
        let name = String::from_utf8(B64.decode(name).ok()?).ok()?;
        Some(Session {
            expires,
            nonce: nonce.to_owned(),
            name,
        })
    }

    /// The CSRF token of a session.
    pub(crate) fn csrf(&self, s: &Session) -> String {
        B64.encode(mac(&self.key, format!("csrf.{}", s.nonce).as_bytes()))
    }

    /// Whether `given` is the session's CSRF token (in constant time).
    pub(crate) fn check_csrf(&self, s: &Session, given: &str) -> bool {
        let expected = self.csrf(s);
        bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
    }
}

fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// The operator's name from the sign-in form: trimmed, 1 to 64 printable
/// characters, or "console".
pub(crate) fn operator_name(given: Option<&str>) -> Result<String, &'static str> {
    let name = given.map(str::trim).filter(|n| !n.is_empty());
    let name = name.unwrap_or("console");
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("Your name must be 1 to 64 printable characters.");
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "dashboard-token-0123456789";

    #[test]
    fn a_session_round_trips_and_rejects_tampering_expiry_and_other_keys() {
        let k = Keys::new(T);
        let now = Timestamp::from_millis(1_000_000);
        let s = k.issue(now, "ana");
        let v = k.cookie_value(&s);
        assert!(!v.contains(T), "the cookie is not the token");
        assert_eq!(k.open(&v, now), Some(s.clone()));
        // Expired.
        assert_eq!(k.open(&v, now.plus(SESSION_TTL)), None);
        // Another token's key.
        assert_eq!(Keys::new("another-token-0123456789").open(&v, now), None);
        // Tampered: a longer expiry or another name.
        let forged = v.replacen(&s.expires.as_millis().to_string(), "9999999999999", 1);
        assert_eq!(k.open(&forged, now), None);
        let forged = v.replacen(&B64.encode("ana"), &B64.encode("bob"), 1);
        assert_eq!(k.open(&forged, now), None);
        assert_eq!(k.open("", now), None);
        assert_eq!(k.open("v1.1.2.3", now), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let k = Keys::new(T);
        let now = Timestamp::from_millis(1_000_000);
        let (a, b) = (k.issue(now, "ana"), k.issue(now, "ana"));
        assert!(k.check_csrf(&a, &k.csrf(&a)));
        assert!(!k.check_csrf(&a, &k.csrf(&b)));
        assert!(!k.check_csrf(&a, ""));
        assert!(k.is_token(T));
        assert!(!k.is_token("dashboard-token-012345678"));
        assert!(!k.is_token(""));
    }

    #[test]
    fn operator_names() {
        assert_eq!(operator_name(None).as_deref(), Ok("console"));
        assert_eq!(operator_name(Some("  ana ")).as_deref(), Ok("ana"));
        assert!(operator_name(Some("a\nb")).is_err());
        assert!(operator_name(Some(&"x".repeat(65))).is_err());
    }
}
