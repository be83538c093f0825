//! Safety that spans dispatches (behaviour B8): who opted out of texts, and
//! how many texts went to a number or from a line lately. Both are ports
//! the driver consults before every send, with in-memory reference
//! implementations.
//!
//! - [`OptOuts`]: a number that texted `STOP` (or another opt-out keyword,
//!   see [`Keyword`]) or whose text failed with an opt-out error
//!   ([`crate::ErrorClass::OptedOut`], which the provider's adapter sets
//!   from its codes) is never texted again until it texts `START`
//!   (or `UNSTOP`, `YES`).
//! - [`RateLimiter`]: "at most N texts in any period P" per destination and
//!   for the sending line, from the dispatch's policy ([`crate::Throttle`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::policy::Rate;
use crate::types::{PhoneNumber, ProviderMessageId, Timestamp};

/// An opt-out or opt-in keyword: a whole text (any case, surrounding
/// spaces and a final `.` or `!` ignored), as carriers and Twilio's
/// Advanced Opt-Out read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Keyword {
    /// `STOP`, `STOPALL`, `STOP ALL`, `UNSUBSCRIBE`, `CANCEL`, `END`,
    /// `QUIT`, `OPTOUT`, `OPT OUT`, `REVOKE`.
    OptOut,
    /// `START`, `UNSTOP`, `YES`: only when the sender had opted out;
    /// otherwise it is an ordinary text.
    OptIn,
    /// A help keyword, when the carrier says a text was one (Twilio's
    /// Advanced Opt-Out, custom and localized keywords included): the
    /// carrier answered it, and the relay takes it without forwarding it
    /// or changing anything. [`Keyword::parse`] never reads one: a
    /// customer texting "help" to a dispatch line may mean it.
    Help,
}

impl Keyword {
    /// Reads a keyword from a whole text. `HELP` is not one: Twilio answers
    /// it, and a customer texting "help" to a dispatch line may mean it.
    ///
    /// ```
    /// use qdn_relay_core::Keyword;
    /// assert_eq!(Keyword::parse(" stop "), Some(Keyword::OptOut));
    /// assert_eq!(Keyword::parse("Unsubscribe."), Some(Keyword::OptOut));
    /// assert_eq!(Keyword::parse("START"), Some(Keyword::OptIn));
    /// assert_eq!(Keyword::parse("please stop by at 3"), None);
    /// ```
    pub fn parse(body: &str) -> Option<Keyword> {
        let t = body.trim().trim_end_matches(['.', '!']).trim();
        if t.len() > 12 {
            return None;
        }
        let t = t.to_ascii_uppercase();
        match t.as_str() {
            "STOP" | "STOPALL" | "STOP ALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT"
            | "OPTOUT" | "OPT OUT" | "OPT-OUT" | "REVOKE" => Some(Keyword::OptOut),
            "START" | "UNSTOP" | "YES" => Some(Keyword::OptIn),
            _ => None,
        }
    }
}

/// Why a safety port failed.
#[derive(Debug, thiserror::Error)]
#[error("safety port error: {0}")]
pub struct SafetyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

// ---------------------------------------------------------------------------
// OptOuts

/// Who must not be texted (behaviour B8): a number that texted `STOP` (or
/// another opt-out keyword, see [`Keyword`]) or whose text failed with an
/// opt-out error ([`crate::ErrorClass::OptedOut`], which the provider's
/// adapter sets from its codes) is never texted again until it texts
/// `START` (or `UNSTOP`, `YES`).
///
/// # Contract
///
/// - `opt_out(n)` then `is_opted_out(n)` is true, for every process that
///   shares the backend, until `opt_in(n)`. Both are idempotent.
/// - `opted_out_among(ns)` returns the members of `ns` that are opted out,
///   in one round trip.
/// - It must survive restarts in production (an in-memory list is for
///   tests and single-process trials).
///
/// The driver checks every send against it just before calling the
/// provider. If the port fails, the driver logs the error and sends anyway:
/// the provider refuses texts to numbers that texted STOP to the line (an
/// opted-out error), so a lookup outage never silences an escalation.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait OptOuts: Send + Sync {
    /// Records that `number` opted out at `at`.
    async fn opt_out(&self, number: PhoneNumber, at: Timestamp) -> Result<(), SafetyError>;
    /// Records that `number` opted back in.
    async fn opt_in(&self, number: PhoneNumber) -> Result<(), SafetyError>;
    /// Whether `number` opted out.
    async fn is_opted_out(&self, number: PhoneNumber) -> Result<bool, SafetyError>;
    /// The members of `numbers` that opted out.
    async fn opted_out_among(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<PhoneNumber>, SafetyError>;
    /// Whether the keyword text `sid` (a `STOP` or `START`, by its
    /// provider message id) was already taken. Twilio's signatures carry no
    /// time, so a captured `STOP` replayed after a later `START` would
    /// otherwise opt the number out again; a webhook retried after it was
    /// taken must not apply twice either.
    async fn keyword_taken(&self, sid: &ProviderMessageId) -> Result<bool, SafetyError>;
    /// Remembers that the keyword text `sid` was taken at `at` (after it
    /// was applied everywhere, so a try that failed half way is taken again
    /// by the provider's retry). Kept at least as long as the opt-outs.
    async fn take_keyword(&self, sid: &ProviderMessageId, at: Timestamp)
    -> Result<(), SafetyError>;
}

/// [`OptOuts`] in memory.
#[derive(Debug, Default)]
pub struct MemoryOptOuts {
    numbers: Mutex<HashSet<PhoneNumber>>,
    keywords: Mutex<HashSet<ProviderMessageId>>,
}

impl MemoryOptOuts {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every opted-out number (a snapshot for tests).
    pub fn all(&self) -> Vec<PhoneNumber> {
        let mut v: Vec<_> = lock(&self.numbers).iter().copied().collect();
        v.sort();
        v
    }

    /// Whether `n` opted out (synchronously, for tests).
    pub fn contains(&self, n: PhoneNumber) -> bool {
        lock(&self.numbers).contains(&n)
    }
}

#[async_trait]
impl OptOuts for MemoryOptOuts {
    async fn opt_out(&self, number: PhoneNumber, _at: Timestamp) -> Result<(), SafetyError> {
        lock(&self.numbers).insert(number);
        Ok(())
    }
    async fn opt_in(&self, number: PhoneNumber) -> Result<(), SafetyError> {
        lock(&self.numbers).remove(&number);
        Ok(())
    }
    async fn is_opted_out(&self, number: PhoneNumber) -> Result<bool, SafetyError> {
        Ok(lock(&self.numbers).contains(&number))
    }
    async fn opted_out_among(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<PhoneNumber>, SafetyError> {
        let g = lock(&self.numbers);
        Ok(numbers.iter().copied().filter(|n| g.contains(n)).collect())
    }
    async fn keyword_taken(&self, sid: &ProviderMessageId) -> Result<bool, SafetyError> {
        Ok(lock(&self.keywords).contains(sid))
    }
    async fn take_keyword(
        &self,
        sid: &ProviderMessageId,
        _at: Timestamp,
    ) -> Result<(), SafetyError> {
        lock(&self.keywords).insert(sid.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// RateLimiter

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "number", rename_all = "snake_case")]
pub enum RateKey {
    /// Texts to one number.
    Destination(PhoneNumber),
    /// Texts from one business line.
    Line(PhoneNumber),
}

/// What a [`RateLimiter`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send now: the send was counted against every claim.
    Admitted,
    /// Over a limit: nothing was counted; try again at this instant (later
    /// than `now`).
    NotBefore(Timestamp),
}

/// Counts texts against "at most N in any period P" limits.
///
/// # Contract
///
/// - `acquire(now, claims)` is atomic over all its claims: either every
///   limit of every claim allows one more text at `now`, the text is
///   counted against every key, and it returns `Admitted`; or nothing is
///   counted and it returns `NotBefore(t)` with `t > now`, the earliest
///   instant at which all of them would allow it (if no other text is
///   counted meanwhile).
/// - A limit `count/per` on a key is never exceeded: after any sequence of
///   admissions, no half-open period of length `per` holds more than
///   `count` admitted texts for that key.
/// - An admitted text stays counted even if the provider then refuses it.
///
/// If the port fails, the driver logs the error and sends anyway.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Admits one text at `now` against every `(key, limits)` claim, or says
    /// when it could go.
    async fn acquire(
        &self,
        now: Timestamp,
        claims: &[(RateKey, Vec<Rate>)],
    ) -> Result<Admission, SafetyError>;
}

/// [`RateLimiter`] in memory: for each key, the times of its recent texts
/// (as many as its largest limit counts).
#[derive(Debug, Default)]
pub struct MemoryRateLimiter(Mutex<HashMap<RateKey, VecDeque<Timestamp>>>);

impl MemoryRateLimiter {
    /// No history.
    pub fn new() -> Self {
        Self::default()
    }
}

/// When a text to a key with `history` (oldest first) could go under
/// `rates`: `now` if it can go now.
pub fn earliest_admission(
    history: &VecDeque<Timestamp>,
    rates: &[Rate],
    now: Timestamp,
) -> Timestamp {
    let mut at = now;
    for r in rates {
        let n = r.count as usize;
        if history.len() >= n {
            // The n-th most recent text must be at least `per` before.
            let nth = history[history.len() - n];
            at = at.max(nth.plus(r.per));
        }
    }
    at
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(
        &self,
        now: Timestamp,
        claims: &[(RateKey, Vec<Rate>)],
    ) -> Result<Admission, SafetyError> {
        let mut g = lock(&self.0);
        let empty = VecDeque::new();
        let at = claims
            .iter()
            .map(|(k, rates)| earliest_admission(g.get(k).unwrap_or(&empty), rates, now))
            .max()
            .unwrap_or(now);
        if at > now {
            return Ok(Admission::NotBefore(at));
        }
        for (k, rates) in claims {
            let keep = rates.iter().map(|r| r.count as usize).max().unwrap_or(0);
            if keep == 0 {
                continue;
            }
            let h = g.entry(*k).or_default();
            h.push_back(now);
            while h.len() > keep {
                h.pop_front();
            }
        }
        Ok(Admission::Admitted)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn n(s: &str) -> PhoneNumber {
        s.parse().unwrap()
    }

    #[test]
    fn keywords_are_whole_texts() {
        for k in [
            "STOP",
            "stop",
            "Stop!",
            "STOPALL",
            "stop all",
            "unsubscribe",
            "Cancel",
            "END",
            "quit",
            "optout",
            "revoke",
        ] {
            assert_eq!(Keyword::parse(k), Some(Keyword::OptOut), "{k}");
        }
        for k in ["START", "unstop", "Yes."] {
            assert_eq!(Keyword::parse(k), Some(Keyword::OptIn), "{k}");
        }
        for k in ["HELP", "stop by at 3", "don't stop", "", "starting now"] {
            assert_eq!(Keyword::parse(k), None, "{k}");
        }
    }

    #[tokio::test]
    async fn opt_outs_remember_until_opt_in() {
        let o = MemoryOptOuts::new();
        let a = n("+16195550101");
        o.opt_out(a, Timestamp::UNIX_EPOCH).await.unwrap();
        o.opt_out(a, Timestamp::UNIX_EPOCH).await.unwrap();
        assert!(o.is_opted_out(a).await.unwrap());
        assert_eq!(
            o.opted_out_among(&[a, n("+16195550102")]).await.unwrap(),
            vec![a]
        );
        o.opt_in(a).await.unwrap();
        assert!(!o.is_opted_out(a).await.unwrap());
    }

    #[tokio::test]
    async fn the_limiter_never_exceeds_any_limit_and_says_when() {
        let l = MemoryRateLimiter::new();
        let a = RateKey::Destination(n("+16195550101"));
        let rates = vec![
            Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            Rate {
                count: 3,
                per: Duration::from_secs(600),
            },
        ];
        let claims = vec![(a, rates)];
        let t0 = Timestamp::from_millis(1_000_000);
        assert_eq!(l.acquire(t0, &claims).await.unwrap(), Admission::Admitted);
        assert_eq!(
            l.acquire(t0, &claims).await.unwrap(),
            Admission::NotBefore(t0.plus(Duration::from_secs(60)))
        );
        let t1 = t0.plus(Duration::from_secs(60));
        assert_eq!(l.acquire(t1, &claims).await.unwrap(), Admission::Admitted);
        let t2 = t1.plus(Duration::from_secs(60));
        assert_eq!(l.acquire(t2, &claims).await.unwrap(), Admission::Admitted);
        // Three in ten minutes: the fourth waits for the first to age out.
        let t3 = t2.plus(Duration::from_secs(60));
        assert_eq!(
            l.acquire(t3, &claims).await.unwrap(),
            Admission::NotBefore(t0.plus(Duration::from_secs(600)))
        );
        // All or nothing: a line limit that refuses counts nothing.
        let line = RateKey::Line(n("+16195550000"));
        let b = RateKey::Destination(n("+16195550102"));
        let one = vec![Rate {
            count: 1,
            per: Duration::from_secs(1),
        }];
        assert_eq!(
            l.acquire(t3, &[(line, one.clone())]).await.unwrap(),
            Admission::Admitted
        );
        assert!(matches!(
            l.acquire(t3, &[(b, one.clone()), (line, one.clone())])
                .await
                .unwrap(),
            Admission::NotBefore(_)
        ));
        assert_eq!(
            l.acquire(t3, &[(b, one)]).await.unwrap(),
            Admission::Admitted,
            "b was not counted"
        );
    }
}
