//! Escalation policies: ordered levels of targets with timeouts, repeated.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::PhoneNumber;

/// The default time a level has to acknowledge: 15 minutes (the seed's).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The longest timeout a level may have: 7 days.
pub const MAX_LEVEL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most levels a policy may have.
pub const MAX_LEVELS: usize = 32;

/// The most targets one level may notify at once.
pub const MAX_TARGETS_PER_LEVEL: usize = 16;

/// The most extra rounds through the chain.
pub const MAX_REPEAT: u32 = 10;

/// An escalation policy: who is notified, in what order, and how long each
/// level has to acknowledge before the next one is tried.
///
/// A dispatch copies its policy when it opens ([`crate::Dispatch::policy`]),
/// so changing the configuration never changes an escalation under way.
///
/// ```
/// use std::time::Duration;
/// use qdn_relay_core::{Policy, PhoneNumber};
/// let primary: PhoneNumber = "+16195550101".parse().unwrap();
/// let backup: PhoneNumber = "+18583354807".parse().unwrap();
/// let p = Policy::simple(primary, backup, Duration::from_secs(15 * 60)).unwrap();
/// assert_eq!(p.levels().len(), 2);
/// assert_eq!(p.rounds(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    levels: Vec<Level>,
    #[serde(default)]
    repeat: u32,
    #[serde(default = "default_label")]
    label: String,
}

fn default_label() -> String {
    "QDN".to_owned()
}

/// One level of a policy: every target is notified at once; the level has
/// `timeout` to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// A name for the level in events and previews ("primary", "backup").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who is texted when the dispatch reaches this level.
    pub targets: Vec<PhoneNumber>,
    /// How long the level has to acknowledge before the next one is tried.
    #[serde(with = "duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
}

/// Why a policy is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A policy needs at least one level.
    #[error("policy has no levels")]
    NoLevels,
    /// Too many levels.
    #[error("policy has {0} levels; at most {MAX_LEVELS} are allowed")]
    TooManyLevels(usize),
    /// A level with nobody to notify.
    #[error("level {level} has no targets")]
    NoTargets {
        /// Index of the level.
        level: usize,
    },
    /// A level with too many targets.
    #[error("level {level} has {count} targets; at most {MAX_TARGETS_PER_LEVEL} are allowed")]
    TooManyTargets {
        /// Index of the level.
        level: usize,
        /// How many it has.
        count: usize,
    },
    /// The same number twice in one level.
    #[error("level {level} lists {number} twice")]
    DuplicateTarget {
        /// Index of the level.
        level: usize,
        /// The repeated number.
        number: PhoneNumber,
    },
    /// A timeout of zero or more than [`MAX_LEVEL_TIMEOUT`].
    #[error("level {level} timeout must be between 1 second and 7 days")]
    BadTimeout {
        /// Index of the level.
        level: usize,
    },
    /// More than [`MAX_REPEAT`] extra rounds.
    #[error("repeat is {0}; at most {MAX_REPEAT} is allowed")]
    TooManyRepeats(u32),
    /// An empty or over-long label.
    #[error("label must be 1 to 16 printable characters")]
    BadLabel,
}

impl Policy {
    /// Builds a policy from its levels and the number of extra rounds through
    /// the whole chain after the first (`repeat = 0`: each level once).
    pub fn new(levels: Vec<Level>, repeat: u32) -> Result<Self, PolicyError> {
        let p = Policy {
            levels,
            repeat,
            label: default_label(),
        };
        p.validate()?;
        Ok(p)
    }

    /// The seed's form: `primary`, then `backup`, each with `timeout`, once.
    pub fn simple(
        primary: PhoneNumber,
        backup: PhoneNumber,
        timeout: Duration,
    ) -> Result<Self, PolicyError> {
        Self::chain(&[primary, backup], timeout)
    }

    /// One level per number, in order, each with `timeout` (the
    /// `RELAY_CHAIN` form).
    pub fn chain(numbers: &[PhoneNumber], timeout: Duration) -> Result<Self, PolicyError> {
        let names = ["primary", "backup"];
        let levels = numbers
            .iter()
            .enumerate()
            .map(|(i, &n)| Level {
                name: names.get(i).map(|s| (*s).to_owned()),
                targets: vec![n],
                timeout,
            })
            .collect();
        Self::new(levels, 0)
    }

    /// The same policy with `repeat` extra rounds.
    pub fn with_repeat(mut self, repeat: u32) -> Result<Self, PolicyError> {
        self.repeat = repeat;
        self.validate()?;
        Ok(self)
    }

    /// The same policy with another label in forwarded texts (`[QDN #K7]`).
    pub fn with_label(mut self, label: &str) -> Result<Self, PolicyError> {
        self.label = label.to_owned();
        self.validate()?;
        Ok(self)
    }

    /// Checks every rule; [`Policy::new`] calls it, and so should anything
    /// that deserialises a policy from outside.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.levels.is_empty() {
            return Err(PolicyError::NoLevels);
        }
        if self.levels.len() > MAX_LEVELS {
            return Err(PolicyError::TooManyLevels(self.levels.len()));
        }
        for (i, l) in self.levels.iter().enumerate() {
            if l.targets.is_empty() {
                return Err(PolicyError::NoTargets { level: i });
            }
            if l.targets.len() > MAX_TARGETS_PER_LEVEL {
                return Err(PolicyError::TooManyTargets {
                    level: i,
                    count: l.targets.len(),
                });
            }
            for (j, t) in l.targets.iter().enumerate() {
                if l.targets[..j].contains(t) {
                    return Err(PolicyError::DuplicateTarget {
                        level: i,
                        number: *t,
                    });
                }
            }
            if l.timeout < Duration::from_secs(1) || l.timeout > MAX_LEVEL_TIMEOUT {
                return Err(PolicyError::BadTimeout { level: i });
            }
        }
        if self.repeat > MAX_REPEAT {
            return Err(PolicyError::TooManyRepeats(self.repeat));
        }
        let n = self.label.chars().count();
        if n == 0 || n > 16 || self.label.chars().any(|c| c.is_control()) {
            return Err(PolicyError::BadLabel);
        }
        Ok(())
    }

    /// The levels, in escalation order.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Extra rounds through the chain after the first.
    pub fn repeat(&self) -> u32 {
        self.repeat
    }

    /// Rounds in all (`repeat + 1`).
    pub fn rounds(&self) -> u32 {
        self.repeat + 1
    }

    /// The label in forwarded texts.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether `n` is a target of any level.
    pub fn is_target(&self, n: PhoneNumber) -> bool {
        self.levels.iter().any(|l| l.targets.contains(&n))
    }

    /// The first level that lists `n`, if any.
    pub fn level_of(&self, n: PhoneNumber) -> Option<usize> {
        self.levels.iter().position(|l| l.targets.contains(&n))
    }
}

/// Parses a duration like `15m`, `90s`, `1h30m`, `500ms` or a bare number of
/// seconds.
///
/// ```
/// use std::time::Duration;
/// use qdn_relay_core::parse_duration;
/// assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_owned());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" | "hr" | "hrs" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(d).ok_or_else(err)?;
    }
    Ok(total)
}

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected e.g. 15m, 90s, 1h30m or 500ms")]
pub struct DurationError(String);

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        s.parse().unwrap()
    }

    #[test]
    fn simple_policy_is_primary_then_backup() {
        let p = Policy::simple(n("+16195550101"), n("+18583354807"), DEFAULT_ACK_TIMEOUT).unwrap();
        assert_eq!(p.levels()[0].targets, vec![n("+16195550101")]);
        assert_eq!(p.levels()[1].targets, vec![n("+18583354807")]);
        assert_eq!(p.levels()[1].timeout, DEFAULT_ACK_TIMEOUT);
        assert_eq!(p.level_of(n("+18583354807")), Some(1));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert_eq!(Policy::new(vec![], 0), Err(PolicyError::NoLevels));
        let l = |t: Vec<PhoneNumber>, secs| Level {
            name: None,
            targets: t,
            timeout: Duration::from_secs(secs),
        };
        assert_eq!(
            Policy::new(vec![l(vec![], 60)], 0),
            Err(PolicyError::NoTargets { level: 0 })
        );
        assert_eq!(
            Policy::new(vec![l(vec![n("+16195550101")], 0)], 0),
            Err(PolicyError::BadTimeout { level: 0 })
        );
        assert!(matches!(
            Policy::new(vec![l(vec![n("+16195550101"), n("+16195550101")], 60)], 0),
            Err(PolicyError::DuplicateTarget { level: 0, .. })
        ));
        assert_eq!(
            Policy::new(vec![l(vec![n("+16195550101")], 60)], 11),
            Err(PolicyError::TooManyRepeats(11))
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h 5m").unwrap(), Duration::from_secs(3900));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
