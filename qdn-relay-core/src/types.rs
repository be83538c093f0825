//! Domain types that can only hold valid values.
//!
//! Parse, don't validate: a [`PhoneNumber`] is always E.164, a [`DispatchId`]
//! always a 128-bit ULID, a [`Tag`] always a short human tag, a
//! [`ProviderMessageId`] always a non-empty printable token.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`.
macro_rules! serde_via_str {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.text(&mut TextBuf::default()))
            }
        }
        deserialize_via_str!($t, $what);
    };
}

/// A value's text, written by its `text` method without the formatting
/// machinery (records hold many numbers, ids and tags): the longest is a
/// dispatch id, 26 characters.
#[derive(Default)]
struct TextBuf([u8; 32]);

impl TextBuf {
    /// Writes `n` in decimal to end at byte `end`; where it starts.
    fn digits(&mut self, mut n: u64, end: usize) -> usize {
        let mut at = end;
        loop {
            at -= 1;
            self.0[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return at;
            }
        }
    }

    /// Bytes `range` as text (only ever ASCII written by this module).
    fn str(&self, range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.0[range]).unwrap_or_default()
    }
}

/// Implements `Deserialize` through `FromStr`.
macro_rules! deserialize_via_str {
    ($t:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse()
                    .map_err(|e| serde::de::Error::custom(format_args!("invalid {}: {e}", $what)))
            }
        }
    };
}

// ---------------------------------------------------------------------------
// PhoneNumber

/// A phone number in E.164 form: `+` then 7 to 15 digits, the first not 0.
///
/// Parsing accepts the separators people type (spaces, `-`, `.`, `(`, `)`)
/// and rejects everything else with a [`PhoneNumberError`] that says why.
/// The number is stored as an integer, so it is `Copy` and 8 bytes wide.
///
/// ```
/// use qdn_relay_core::PhoneNumber;
/// let n: PhoneNumber = "+1 (619) 555-0100".parse().unwrap();
/// assert_eq!(n.to_string(), "+16195550100");
/// assert!("6195550100".parse::<PhoneNumber>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(NonZeroU64);

/// Why a string is not an E.164 phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneNumberError {
    /// The input was empty or only whitespace.
    #[error("phone number is empty")]
    Empty,
    /// E.164 numbers start with `+` and the country code.
    #[error("phone number must start with '+' and the country code (E.164), e.g. +16195550100")]
    MissingPlus,
    /// A character that is neither a digit nor a common separator.
    #[error("phone number has an invalid character {ch:?} at position {pos}")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its char index in the input.
        pos: usize,
    },
    /// Country codes never start with 0.
    #[error("phone number country code cannot start with 0")]
    LeadingZero,
    /// Fewer than 7 digits.
    #[error("phone number has {digits} digits; E.164 needs at least 7")]
    TooShort {
        /// How many digits there were.
        digits: usize,
    },
    /// More than 15 digits.
    #[error("phone number has {digits} digits; E.164 allows at most 15")]
    TooLong {
        /// How many digits there were.
        digits: usize,
    },
}

impl PhoneNumber {
    /// The digits after the `+` as an integer.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// Builds a number from the digits after the `+`; `None` if that is not
    /// 7 to 15 digits.
    pub fn from_u64(digits: u64) -> Option<Self> {
        if (1_000_000..=999_999_999_999_999).contains(&digits) {
            NonZeroU64::new(digits).map(Self)
        } else {
            None
        }
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PhoneNumberError::Empty);
        }
        let rest = s.strip_prefix('+').ok_or(PhoneNumberError::MissingPlus)?;
        let mut value: u64 = 0;
        let mut digits = 0usize;
        for (i, ch) in rest.chars().enumerate() {
            match ch {
                '0'..='9' => {
                    if digits == 0 && ch == '0' {
                        return Err(PhoneNumberError::LeadingZero);
                    }
                    digits += 1;
                    if digits <= 15 {
                        value = value * 10 + u64::from(ch as u8 - b'0');
                    }
                }
                ' ' | '-' | '.' | '(' | ')' if digits > 0 || ch == '(' || ch == ' ' => {}
                _ => return Err(PhoneNumberError::InvalidChar { ch, pos: i + 1 }),
            }
        }
        match digits {
            0..=6 => Err(PhoneNumberError::TooShort { digits }),
            7..=15 => Ok(NonZeroU64::new(value)
                .map(Self)
                .ok_or(PhoneNumberError::LeadingZero)?),
            _ => Err(PhoneNumberError::TooLong { digits }),
        }
    }
}

impl PhoneNumber {
    /// `+` and the digits.
    fn text<'a>(&self, buf: &'a mut TextBuf) -> &'a str {
        let at = buf.digits(self.0.get(), 32) - 1;
        buf.0[at] = b'+';
        buf.str(at..32)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut TextBuf::default()))
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber(+{})", self.0)
    }
}

serde_via_str!(PhoneNumber, "phone number");

// ---------------------------------------------------------------------------
// Timestamp

/// A UTC instant with millisecond precision, serialised as RFC 3339
/// (`2026-11-24T01:18:49.250Z`).
///
/// The state machine never reads a clock: every `now` is an argument of this
/// type. It is persisted and reloaded by other processes, which is why it is
/// wall-clock time and not `std::time::Instant`.
///
/// Held as the milliseconds with the sign bit flipped, which orders as the
/// milliseconds do and leaves zero free (the one instant it cannot hold is
/// `i64::MIN` ms, read as a millisecond later): an `Option<Timestamp>` is
/// then 8 bytes, not 16, and records and events hold many.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(std::num::NonZeroU64);

/// The sign bit of a [`Timestamp`]'s milliseconds, flipped in what it holds.
const SIGN: u64 = 1 << 63;

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct TimestampError {
    input: String,
    reason: String,
}

impl Timestamp {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp::from_millis(0);

    /// From milliseconds since the Unix epoch (`i64::MIN` is read as
    /// `i64::MIN + 1`).
    pub const fn from_millis(ms: i64) -> Self {
        let ms = if ms == i64::MIN { ms + 1 } else { ms };
        match std::num::NonZeroU64::new(ms.cast_unsigned() ^ SIGN) {
            Some(v) => Self(v),
            // Only `i64::MIN` flips to zero, and it was moved off above.
            None => Self(std::num::NonZeroU64::MIN),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        (self.0.get() ^ SIGN).cast_signed()
    }

    /// This instant plus `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self::from_millis(self.as_millis().saturating_add(ms))
    }

    /// How long after `earlier` this instant is (zero if it is not later).
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(
            u64::try_from(self.as_millis().saturating_sub(earlier.as_millis())).unwrap_or(0),
        )
    }

    /// The same instant as a [`jiff::Timestamp`]; outside jiff's range
    /// (years -9999 to 9999), the nearest instant jiff takes, so a far
    /// future stays the far future.
    pub fn to_jiff(self) -> jiff::Timestamp {
        let ms = self.as_millis();
        jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms > 0 {
            jiff::Timestamp::MAX
        } else {
            jiff::Timestamp::MIN
        })
    }

    /// From a [`jiff::Timestamp`] (truncated to milliseconds).
    pub fn from_jiff(t: jiff::Timestamp) -> Self {
        Self::from_millis(t.as_millisecond())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; RFC3339_MAX];
        match self.rfc3339(&mut buf) {
            Some(text) => f.pad(text),
            None => fmt::Display::fmt(&self.to_jiff(), f),
        }
    }
}

/// The longest [`Timestamp::rfc3339`]: `9999-12-31T23:59:59.999Z`.
const RFC3339_MAX: usize = 24;

impl Timestamp {
    /// The instant as jiff writes it (`2026-01-05T09:00:00Z`, with `.1` to
    /// `.999` when the milliseconds are not 0), written without the
    /// formatting machinery: records hold many timestamps. `None` before
    /// 1970 or past jiff's range, which [`Timestamp::to_jiff`] writes (at
    /// the end of its range).
    fn rfc3339(self, buf: &mut [u8; RFC3339_MAX]) -> Option<&str> {
        // The last millisecond jiff takes: 9999-12-30T22:00:00Z.
        const LAST: i64 = 253_402_207_200_000;
        let ms = self.as_millis();
        if !(0..=LAST).contains(&ms) {
            return None;
        }
        let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        // Days since 1970-01-01 to a civil date (Howard Hinnant's
        // algorithm, for days >= 0).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let secs = ms_of_day / 1000;
        let ms = ms_of_day % 1000;
        let mut put = |at: usize, v: i64, width: usize| {
            let mut v = v;
            for i in (0..width).rev() {
                // 0..=9: the cast cannot truncate.
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, secs / 3600, 2);
        put(14, secs / 60 % 60, 2);
        put(17, secs % 60, 2);
        put(20, ms, 3);
        buf[4] = b'-';
        buf[7] = b'-';
        buf[10] = b'T';
        buf[13] = b':';
        buf[16] = b':';
        let end = if ms == 0 {
            19
        } else {
            // ".123", ".12" for 120 ms, ".1" for 100 ms, as jiff trims.
            buf[19] = b'.';
            let digits = if ms % 100 == 0 {
                1
            } else if ms % 10 == 0 {
                2
            } else {
                3
            };
            20 + digits
        };
        buf[end] = b'Z';
        std::str::from_utf8(&buf[..=end]).ok()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<jiff::Timestamp>()
            .map(Self::from_jiff)
            .map_err(|e| TimestampError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0; RFC3339_MAX];
        match self.rfc3339(&mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self),
        }
    }
}

deserialize_via_str!(Timestamp, "timestamp");

// ---------------------------------------------------------------------------
// DispatchId

/// The id of a dispatch: a 128-bit ULID (48 bits of milliseconds, 80 random
/// bits), written as 26 Crockford base-32 characters. Ids sort by creation
/// time.
///
/// Held as two 64-bit halves, high first, so it sorts as the 128-bit value
/// does but is aligned to 8 bytes, not 16: a `u128` would pad every index
/// entry and event that holds an id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DispatchId {
    hi: u64,
    lo: u64,
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a string is not a dispatch id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dispatch id {0:?}: expected 26 Crockford base-32 characters")]
pub struct DispatchIdError(String);

impl DispatchId {
    /// Builds an id from its creation time and 80 random bits (the core
    /// takes randomness as an argument, never from the OS).
    pub fn new(at: Timestamp, random: u128) -> Self {
        let ms = (at.as_millis().max(0) as u128) & ((1u128 << 48) - 1);
        Self::from_u128((ms << 80) | (random & ((1u128 << 80) - 1)))
    }

    /// The raw 128-bit value.
    pub fn as_u128(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// From the raw 128-bit value.
    pub fn from_u128(v: u128) -> Self {
        Self {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// The creation time encoded in the id.
    pub fn created_at(self) -> Timestamp {
        Timestamp::from_millis((self.hi >> 16) as i64)
    }
}

impl DispatchId {
    /// The 26 Crockford base-32 characters.
    fn text<'a>(&self, buf: &'a mut TextBuf) -> &'a str {
        let v = self.as_u128();
        for (i, c) in buf.0[..26].iter_mut().enumerate() {
            let shift = 5 * (25 - i);
            *c = CROCKFORD[((v >> shift) & 31) as usize];
        }
        buf.str(0..26)
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut TextBuf::default()))
    }
}

impl fmt::Debug for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DispatchId({self})")
    }
}

impl FromStr for DispatchId {
    type Err = DispatchIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DispatchIdError(s.to_owned());
        if s.len() != 26 {
            return Err(err());
        }
        let mut v: u128 = 0;
        for (i, b) in s.bytes().enumerate() {
            let b = b.to_ascii_uppercase();
            let d = match b {
                b'O' => 0,
                b'I' | b'L' => 1,
                _ => CROCKFORD.iter().position(|&c| c == b).ok_or_else(err)? as u128,
            };
            if i == 0 && d > 7 {
                return Err(err());
            }
            v = (v << 5) | d;
        }
        Ok(Self::from_u128(v))
    }
}

serde_via_str!(DispatchId, "dispatch id");

// ---------------------------------------------------------------------------
// Tag

/// A short human tag for a dispatch, like `K7`: one letter (no `I` or `O`)
/// and a number from 1 to 9999, short ones first; when those are crowded,
/// two letters and a number, like `KA7` (5,759,424 more, so a relay can
/// hold millions of open dispatches). Unique among open dispatches, so a
/// dispatcher can write `#K7 on my way`. Parsing ignores case and a
/// leading `#`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    letter: u8,
    /// The second letter, or 0 for a one-letter tag.
    second: u8,
    number: u16,
}

const TAG_LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Candidates from the one-letter space; the rest are two-letter tags.
const ONE_LETTER_ATTEMPTS: u32 = 24;

/// Why a string is not a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tag {0:?}: expected one or two letters (not I or O) and a number from 1 to 9999, like K7 or KA7"
)]
pub struct TagError(String);

impl Tag {
    /// The `attempt`-th candidate tag for a new dispatch, drawn from `seed`.
    ///
    /// Early attempts come from the two-character space (`K7`, 216 tags);
    /// later ones widen to three, four and five characters (239,976
    /// one-letter tags in all), and from attempt 24 on to two letters and
    /// a number (`KA7` … `ZZ9999`, 5,759,424 more), so a crowded relay
    /// still finds a free tag quickly.
    pub fn candidate(seed: u64, attempt: u32) -> Tag {
        let mut x = seed ^ (u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        x = splitmix(x);
        let letter = TAG_LETTERS[(x % 24) as usize];
        if attempt >= ONE_LETTER_ATTEMPTS {
            return Tag {
                letter,
                second: TAG_LETTERS[((x >> 24) % 24) as usize],
                number: 1 + ((x >> 32) % 9999) as u16,
            };
        }
        let r = (x >> 8) as u16;
        let number = match attempt {
            0..=3 => 1 + r % 9,
            4..=7 => 10 + r % 90,
            8..=11 => 100 + r % 900,
            _ => 1000 + r % 9000,
        };
        Tag {
            letter,
            second: 0,
            number,
        }
    }

    /// Finds a tag inside a dispatcher's text: a leading `#K7` (or `[#K7]`).
    /// Returns the tag and the rest of the text.
    pub fn strip_prefix(body: &str) -> Option<(Tag, &str)> {
        let t = body.trim_start();
        let t = t.strip_prefix('[').unwrap_or(t);
        let t = t.strip_prefix('#')?;
        let end = t
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_alphanumeric()) || (i > 5))
            .map_or(t.len(), |(i, _)| i);
        let tag: Tag = t[..end].parse().ok()?;
        let rest = t[end..].strip_prefix(']').unwrap_or(&t[end..]);
        let rest = rest.trim_start_matches([':', ',', ' ', '-']);
        Some((tag, rest))
    }
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Tag {
    /// The letter or two, then the number.
    fn text<'a>(&self, buf: &'a mut TextBuf) -> &'a str {
        let mut at = buf.digits(u64::from(self.number), 32);
        for letter in [self.second, self.letter] {
            if letter != 0 {
                at -= 1;
                buf.0[at] = letter;
            }
        }
        buf.str(at..32)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut TextBuf::default()))
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

impl FromStr for Tag {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TagError(s.to_owned());
        let t = s.trim();
        let t = t.strip_prefix('#').unwrap_or(t);
        let letter_at = |i: usize| {
            t.as_bytes()
                .get(i)
                .map(u8::to_ascii_uppercase)
                .filter(|b| TAG_LETTERS.contains(b))
        };
        let letter = letter_at(0).ok_or_else(err)?;
        let second = letter_at(1).unwrap_or(0);
        let digits = &t[if second == 0 { 1 } else { 2 }..];
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if digits.starts_with('0') {
            return Err(err());
        }
        let number: u16 = digits.parse().map_err(|_| err())?;
        Ok(Tag {
            letter,
            second,
            number,
        })
    }
}

serde_via_str!(Tag, "tag");

// ---------------------------------------------------------------------------
// ProviderMessageId

/// A message id issued by an SMS provider (Twilio's `MessageSid`, `SM…`), or
/// by a host for a text it injected. 1 to 64 printable ASCII characters with
/// no whitespace.
///
/// Clones share one copy of the text: a dispatch holds each id in its
/// thread or leg, in its events and as a key of the stores' indexes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderMessageId(std::sync::Arc<str>);

/// Why a string is not a provider message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id {0:?}: expected 1 to 64 printable ASCII characters without spaces")]
pub struct ProviderMessageIdError(String);

impl ProviderMessageId {
    /// Its text, as `Serialize` writes it.
    fn text<'a>(&'a self, _: &'a mut TextBuf) -> &'a str {
        &self.0
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProviderMessageId {
    type Err = ProviderMessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ProviderMessageIdError(s.chars().take(80).collect()));
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for ProviderMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProviderMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderMessageId({})", self.0)
    }
}

serde_via_str!(ProviderMessageId, "message id");

// ---------------------------------------------------------------------------
// JobId

/// The id of a job in the host application's job system (see
/// [`crate::Jobs`]): 1 to 128 characters, no control characters, no
/// leading or trailing whitespace. The relay never interprets it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Box<str>);

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid job id {0:?}: expected 1 to 128 characters, no control characters, no surrounding spaces"
)]
pub struct JobIdError(String);

impl JobId {
    /// Its text, as `Serialize` writes it.
    fn text<'a>(&'a self, _: &'a mut TextBuf) -> &'a str {
        &self.0
    }

    /// The longest job id, in characters.
    pub const MAX_CHARS: usize = 128;

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.chars().count() <= Self::MAX_CHARS
            && s.trim() == s
            && !s.chars().any(char::is_control);
        if !ok {
            return Err(JobIdError(s.chars().take(140).collect()));
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({:?})", &*self.0)
    }
}

serde_via_str!(JobId, "job id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_parse_only_e164() {
        assert_eq!(
            "+16195550100".parse::<PhoneNumber>().unwrap().to_string(),
            "+16195550100"
        );
        assert_eq!(
            " +44 20 7946 0958 "
                .parse::<PhoneNumber>()
                .unwrap()
                .to_string(),
            "+442079460958"
        );
        assert_eq!("".parse::<PhoneNumber>(), Err(PhoneNumberError::Empty));
        assert_eq!(
            "6195550100".parse::<PhoneNumber>(),
            Err(PhoneNumberError::MissingPlus)
        );
        assert_eq!(
            "+0195550100".parse::<PhoneNumber>(),
            Err(PhoneNumberError::LeadingZero)
        );
        assert_eq!(
            "+1234".parse::<PhoneNumber>(),
            Err(PhoneNumberError::TooShort { digits: 4 })
        );
        assert_eq!(
            "+1234567890123456".parse::<PhoneNumber>(),
            Err(PhoneNumberError::TooLong { digits: 16 })
        );
        assert!(matches!(
            "+1619555010x".parse::<PhoneNumber>(),
            Err(PhoneNumberError::InvalidChar { ch: 'x', .. })
        ));
        assert!("+1 619+5550100".parse::<PhoneNumber>().is_err());
        let n: PhoneNumber = serde_json::from_str("\"+16195550100\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+16195550100\"");
        assert!(serde_json::from_str::<PhoneNumber>("\"555\"").is_err());
    }

    #[test]
    fn timestamps_round_trip_rfc3339() {
        let t = Timestamp::from_millis(1_795_000_000_250);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&s).unwrap(), t);
        assert!(s.ends_with("Z\""), "{s}");
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn timestamps_have_a_niche_and_hold_every_millisecond_but_the_least() {
        assert_eq!(size_of::<Option<Timestamp>>(), 8);
        assert_eq!(Timestamp::UNIX_EPOCH.as_millis(), 0);
        for ms in [i64::MIN + 1, -1, 0, 1, i64::MAX] {
            assert_eq!(Timestamp::from_millis(ms).as_millis(), ms);
        }
        assert_eq!(Timestamp::from_millis(i64::MIN).as_millis(), i64::MIN + 1);
        assert!(Timestamp::from_millis(-1) < Timestamp::UNIX_EPOCH);
        assert_eq!(
            Timestamp::from_millis(i64::MAX).plus(std::time::Duration::from_secs(1)),
            Timestamp::from_millis(i64::MAX)
        );
    }

    #[test]
    fn dispatch_ids_round_trip_and_sort_by_time() {
        let a = DispatchId::new(Timestamp::from_millis(1_000), 0xFFFF_FFFF);
        let b = DispatchId::new(Timestamp::from_millis(2_000), 1);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<DispatchId>().unwrap(), a);
        assert_eq!(
            a.to_string().to_lowercase().parse::<DispatchId>().unwrap(),
            a
        );
        assert_eq!(a.created_at(), Timestamp::from_millis(1_000));
        assert!("not-an-id".parse::<DispatchId>().is_err());
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<DispatchId>().is_err());
    }

    #[test]
    fn tags_parse_and_strip() {
        let t: Tag = "#k7".parse().unwrap();
        assert_eq!(t.to_string(), "K7");
        assert!("K0".parse::<Tag>().is_err());
        assert!("I7".parse::<Tag>().is_err());
        assert_eq!(
            "k1000".parse::<Tag>().map(|t| t.to_string()),
            Ok("K1000".to_owned())
        );
        assert!("K10000".parse::<Tag>().is_err());
        let (tag, rest) = Tag::strip_prefix("#K7 on my way").unwrap();
        assert_eq!((tag.to_string().as_str(), rest), ("K7", "on my way"));
        let (tag, rest) = Tag::strip_prefix("[#b12]: ACK").unwrap();
        assert_eq!((tag.to_string().as_str(), rest), ("B12", "ACK"));
        assert!(Tag::strip_prefix("on my way #K7").is_none());
        assert!(Tag::strip_prefix("#hello there").is_none());
        for attempt in 0..40 {
            let c = Tag::candidate(42, attempt);
            assert_eq!(c.to_string().parse::<Tag>().unwrap(), c);
        }
    }

    #[test]
    fn two_letter_tags_widen_the_space_after_the_short_ones() {
        let t: Tag = "#ka7".parse().unwrap();
        assert_eq!(t.to_string(), "KA7");
        assert_ne!(t, "K7".parse::<Tag>().unwrap());
        assert_eq!("ZZ9999".parse::<Tag>().unwrap().to_string(), "ZZ9999");
        for bad in [
            "KI7", "OK7", "KA0", "KA10000", "KAB7", "KA", "K", "KA07", "K A7", "KÄ7",
        ] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
        let (tag, rest) = Tag::strip_prefix("#KA9999 on my way").unwrap();
        assert_eq!((tag.to_string().as_str(), rest), ("KA9999", "on my way"));
        let (tag, rest) = Tag::strip_prefix("[#bc12]: ACK").unwrap();
        assert_eq!((tag.to_string().as_str(), rest), ("BC12", "ACK"));
        // Short ones first: the one-letter space for the first 24 attempts,
        // two letters after; over many seeds every two-letter candidate is
        // valid, and they spread over the space.
        let mut seen = std::collections::HashSet::new();
        for seed in 0..2_000u64 {
            for attempt in 0..32 {
                let c = Tag::candidate(seed, attempt);
                let s = c.to_string();
                let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
                assert_eq!(
                    letters,
                    if attempt < 24 { 1 } else { 2 },
                    "{s} at {attempt}"
                );
                assert_eq!(s.parse::<Tag>().unwrap(), c);
                if attempt >= 24 {
                    seen.insert(c);
                }
            }
        }
        assert!(
            seen.len() > 15_000,
            "two-letter candidates spread: {}",
            seen.len()
        );
    }

    #[test]
    fn provider_ids_are_printable_tokens() {
        assert!(
            "SM0123456789abcdef0123456789abcdef"
                .parse::<ProviderMessageId>()
                .is_ok()
        );
        assert!("".parse::<ProviderMessageId>().is_err());
        assert!("has space".parse::<ProviderMessageId>().is_err());
        assert!("x".repeat(65).parse::<ProviderMessageId>().is_err());
    }

    #[test]
    fn job_ids_are_bounded_printable_strings() {
        let j: JobId = "dumpster/2026-11-29 #1042".parse().unwrap();
        assert_eq!(j.as_str(), "dumpster/2026-11-29 #1042");
        assert_eq!(
            "é".repeat(128)
                .parse::<JobId>()
                .unwrap()
                .as_str()
                .chars()
                .count(),
            128
        );
        assert!("é".repeat(129).parse::<JobId>().is_err());
        assert!("".parse::<JobId>().is_err());
        assert!(" j1".parse::<JobId>().is_err());
        assert!("j\n1".parse::<JobId>().is_err());
        let s = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<JobId>(&s).unwrap(), j);
        assert!(serde_json::from_str::<JobId>("\"\"").is_err());
    }

    /// The timestamps written without jiff's printer are what jiff writes.
    fn written_as_jiff_writes(ms: i64) {
        let t = Timestamp::from_millis(ms);
        let want = t.to_jiff().to_string();
        assert_eq!(t.to_string(), want, "{ms}");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{want}\""),
            "{ms}"
        );
        if t.to_jiff().as_millisecond() == ms {
            // Within jiff's range: it reads back.
            assert_eq!(want.parse::<Timestamp>().unwrap(), t, "{ms}");
        }
    }

    #[test]
    fn timestamps_are_written_as_jiff_writes_them() {
        for ms in [
            0,
            1,
            10,
            100,
            120,
            999,
            1000,
            86_399_999,
            86_400_000,
            951_782_400_000,     // 2000-02-29
            1_767_603_600_000,   // 2026-01-05T09:00:00Z
            4_107_542_400_000,   // 2100-03-01
            253_402_207_200_000, // the last jiff takes
            253_402_207_200_001, // past it: jiff's own
            -1,                  // before 1970: jiff's own
        ] {
            written_as_jiff_writes(ms);
        }
        assert_eq!(
            format!("{:>26}", Timestamp::from_millis(0)),
            "      1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn times_past_jiffs_range_are_written_as_its_ends_and_read_back_stable() {
        for (ms, end) in [
            (i64::MAX, jiff::Timestamp::MAX),
            (i64::MIN + 1, jiff::Timestamp::MIN),
        ] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(t.to_string(), end.to_string());
            let back: Timestamp = t.to_string().parse().unwrap();
            assert_eq!(back.as_millis(), end.as_millisecond());
            assert_eq!(back.to_string(), t.to_string(), "written the same again");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_timestamp_is_written_as_jiff_writes_it(ms in 0i64..=253_402_207_200_000) {
            written_as_jiff_writes(ms);
        }

        /// Numbers and tags are written as the formatting machinery would
        /// write them, in text and in JSON.
        #[test]
        fn numbers_and_tags_are_written_as_format_writes_them(
            digits in 1_000_000u64..=999_999_999_999_999,
            letter in 0usize..24,
            second in proptest::option::of(0usize..24),
            number in 1u16..=9999,
        ) {
            let n = PhoneNumber::from_u64(digits).unwrap_or_else(|| unreachable!());
            proptest::prop_assert_eq!(n.to_string(), format!("+{digits}"));
            proptest::prop_assert_eq!(
                serde_json::to_string(&n).ok(),
                Some(format!("\"+{digits}\""))
            );
            const LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
            let mut text = String::from(LETTERS[letter] as char);
            text.extend(second.map(|i| LETTERS[i] as char));
            text.push_str(&number.to_string());
            let tag: Tag = text.parse().unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert_eq!(tag.to_string(), text.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&tag).ok(), Some(format!("\"{text}\"")));
        }

        /// Held with its sign flipped, a timestamp still sorts and reads
        /// back as its milliseconds do.
        #[test]
        fn timestamps_sort_and_read_back_as_their_millis(a in (i64::MIN + 1).., b in (i64::MIN + 1)..) {
            let (x, y) = (Timestamp::from_millis(a), Timestamp::from_millis(b));
            proptest::prop_assert_eq!((x.as_millis(), y.as_millis()), (a, b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x.plus(std::time::Duration::from_millis(5)).as_millis(), a.saturating_add(5));
        }

        /// Held as two halves, an id still sorts, hashes apart and reads
        /// back as its 128-bit value does.
        #[test]
        fn dispatch_ids_sort_and_read_back_as_their_value(a: u128, b: u128) {
            let (x, y) = (DispatchId::from_u128(a), DispatchId::from_u128(b));
            proptest::prop_assert_eq!((x.as_u128(), y.as_u128()), (a, b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x == y, a == b);
            // Ids in text are 26 base-32 characters: 130 bits, of which a
            // valid first character leaves the 128.
            proptest::prop_assert_eq!(x.to_string().parse::<DispatchId>(), Ok(x));
            proptest::prop_assert_eq!(
                x.created_at(),
                Timestamp::from_millis((a >> 80) as i64)
            );
        }
    }
}
