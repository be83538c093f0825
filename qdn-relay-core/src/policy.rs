//! Escalation policies: ordered levels of targets with timeouts, repeated;
//! on-duty windows in real time zones (B7); throttling and loop safety
//! (B8). [`crate::policy_file`] reads them from TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::carrier::{CarrierNumber, check_carriers};
use crate::schedule::{Window, Zone, any_open, next_opening, open_periods};
use crate::types::{PhoneNumber, Timestamp};

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

/// The most windows one level may have.
pub const MAX_WINDOWS_PER_LEVEL: usize = 16;

/// The most rate limits per destination or for the line.
pub const MAX_RATES: usize = 8;

/// The most texts one rate limit may allow in its period.
pub const MAX_RATE_COUNT: u32 = 10_000;

/// The most characters in a policy's label (`QDN` in `[QDN #K7]`).
pub const MAX_LABEL_CHARS: usize = 16;

/// The shortest level timeout, rate-limit period and repeat-suppression
/// window.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// The longest period a rate limit may count over, and the longest
/// repeat-suppression window: 1 day.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The repeat-suppression window of a policy file that does not set one.
pub const DEFAULT_SUPPRESS_REPEATS: Duration = Duration::from_secs(10 * 60);

/// An escalation policy: who is notified, in what order, and how long each
/// level has to acknowledge before the next one is tried.
///
/// A dispatch copies its policy when it opens ([`crate::Dispatch::policy`]),
/// so changing the configuration (or editing the policy file) never changes
/// an escalation under way: windows, throttling and timeouts are those the
/// dispatch opened with.
///
/// Beyond levels and rounds a policy may carry (all off in the constructors
/// below, so `simple` and `chain` behave exactly as they always did):
///
/// - **on-duty windows** per level ([`Policy::with_hours`]) in the policy's
///   time zone, a fixed zone, or each target's own ([`Person`]); what
///   happens when a level is off duty is [`WhenClosed`];
/// - **throttling** ([`Throttle`]): rate limits per destination and for the
///   sending line, and what to do with a text over the limit;
/// - **repeat suppression**: an identical follow-up, reply or notice to the
///   same number within a window is not sent (it breaks auto-reply loops);
/// - **relay lines**: other relay numbers that are never texted.
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
    pub(crate) levels: Vec<Level>,
    #[serde(default)]
    pub(crate) repeat: u32,
    #[serde(default = "default_label")]
    pub(crate) label: String,
    #[serde(default, skip_serializing_if = "Zone::is_utc")]
    pub(crate) time_zone: Zone,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hours: Vec<LevelHours>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) people: BTreeMap<PhoneNumber, Person>,
    #[serde(default, skip_serializing_if = "WhenClosed::is_skip")]
    pub(crate) when_closed: WhenClosed,
    #[serde(default, skip_serializing_if = "Throttle::is_off")]
    pub(crate) throttle: Throttle,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_ms",
        rename = "suppress_repeats_ms"
    )]
    pub(crate) suppress_repeats: Option<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) relay_lines: Vec<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) carriers: Vec<CarrierNumber>,
}

/// Serializes a dispatch's policy. Every dispatch of a line holds the same
/// policy (one `Arc`), so with `serde_json` each thread keeps the JSON of
/// the last policy it wrote and writes it again as it is; any other
/// serializer, or another policy, gets the policy serialized afresh. The
/// output is the same either way.
pub(crate) fn serialize_shared<S: serde::Serializer>(
    policy: &Arc<Policy>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(Arc<Policy>, Box<serde_json::value::RawValue>)>> =
            const { RefCell::new(None) };
    }
    // serde_json's writer alone takes a raw value as JSON text.
    if !std::any::type_name::<S>().starts_with("&mut serde_json::ser::Serializer<") {
        return policy.serialize(s);
    }
    LAST.with_borrow_mut(|last| {
        let json = match last {
            Some((held, json)) if Arc::ptr_eq(held, policy) => json,
            _ => {
                let json = serde_json::value::to_raw_value(&**policy)
                    .map_err(serde::ser::Error::custom)?;
                &last.insert((Arc::clone(policy), json)).1
            }
        };
        json.serialize(s)
    })
}

/// The rule on a level's timeout (also checked on a policy file's default
/// `timeout` that no level uses).
pub(crate) fn timeout_in_bounds(d: Duration) -> bool {
    (MIN_PERIOD..=MAX_LEVEL_TIMEOUT).contains(&d)
}

pub(crate) fn default_label() -> String {
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

/// Why a policy is not valid: the rule broken ([`PolicyError::reason`])
/// and where ([`PolicyError::field`], a path such as `levels[0].timeout`
/// named as in the policy file, so the file reader can turn it into a line).
/// Displays as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A policy needs at least one level.
    NoLevels,
    /// More than [`MAX_LEVELS`] levels.
    TooManyLevels(usize),
    /// A level with nobody to notify.
    NoTargets {
        /// Index of the level.
        level: usize,
    },
    /// A level with more than [`MAX_TARGETS_PER_LEVEL`] targets.
    TooManyTargets {
        /// Index of the level.
        level: usize,
        /// How many it has.
        count: usize,
    },
    /// The same number twice in one level.
    DuplicateTarget {
        /// Index of the level.
        level: usize,
        /// Index of the second mention among the level's targets.
        index: usize,
        /// The repeated number.
        number: PhoneNumber,
    },
    /// A timeout shorter than a second or longer than [`MAX_LEVEL_TIMEOUT`].
    BadTimeout {
        /// Index of the level.
        level: usize,
    },
    /// More than [`MAX_REPEAT`] extra rounds.
    TooManyRepeats(u32),
    /// An empty or over-long label, or one with control characters.
    BadLabel,
    /// Windows for a level that does not exist, or twice for one level.
    BadWindows {
        /// Index of the level.
        level: usize,
    },
    /// A level with an empty list of windows (it would never be on duty).
    NoWindows {
        /// Index of the level.
        level: usize,
    },
    /// A level with more than [`MAX_WINDOWS_PER_LEVEL`] windows.
    TooManyWindows {
        /// Index of the level.
        level: usize,
        /// How many it has.
        count: usize,
    },
    /// More than [`MAX_RATES`] rate limits in one list.
    TooManyRates {
        /// The list: `per_destination` or `line`.
        list: &'static str,
        /// How many it has.
        count: usize,
    },
    /// A rate limit of no texts or more than [`MAX_RATE_COUNT`], or over a
    /// period shorter than a second or longer than [`MAX_RATE_PERIOD`].
    BadRate {
        /// The list: `per_destination` or `line`.
        list: &'static str,
        /// Index of the limit in its list.
        index: usize,
        /// The limit.
        rate: Rate,
    },
    /// A repeat-suppression window shorter than a second or longer than
    /// [`MAX_RATE_PERIOD`].
    BadSuppressWindow,
    /// A level targets a relay line (it would forward to itself).
    TargetIsRelayLine {
        /// Index of the level.
        level: usize,
        /// Index of the target among the level's targets.
        index: usize,
        /// The number.
        number: PhoneNumber,
    },
    /// A bad entry in the line's carrier list (a bad or repeated carrier
    /// name, a number listed twice, a dispatcher's number).
    BadCarrier {
        /// Index of the entry.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl PolicyError {
    /// Where the rule is broken, as a path named as in the policy file:
    /// `levels`, `levels[1].targets`, `levels[1].targets[0]`,
    /// `levels[0].timeout`, `levels[0].windows`, `repeat`, `label`,
    /// `throttle.line`, `throttle.per_destination[2]`, `suppress_repeats`.
    pub fn field(&self) -> String {
        use PolicyError as E;
        match self {
            E::NoLevels | E::TooManyLevels(_) => "levels".to_owned(),
            E::NoTargets { level } | E::TooManyTargets { level, .. } => {
                format!("levels[{level}].targets")
            }
            E::DuplicateTarget { level, index, .. } | E::TargetIsRelayLine { level, index, .. } => {
                format!("levels[{level}].targets[{index}]")
            }
            E::BadTimeout { level } => format!("levels[{level}].timeout"),
            E::TooManyRepeats(_) => "repeat".to_owned(),
            E::BadLabel => "label".to_owned(),
            E::BadWindows { level } | E::NoWindows { level } | E::TooManyWindows { level, .. } => {
                format!("levels[{level}].windows")
            }
            E::TooManyRates { list, .. } => format!("throttle.{list}"),
            E::BadRate { list, index, .. } => format!("throttle.{list}[{index}]"),
            E::BadSuppressWindow => "suppress_repeats".to_owned(),
            E::BadCarrier { index, .. } => format!("carriers[{index}]"),
        }
    }

    /// What is wrong there, without the place.
    pub fn reason(&self) -> String {
        use PolicyError as E;
        let (min, max_timeout, max_period) = (
            format_duration(MIN_PERIOD),
            format_duration(MAX_LEVEL_TIMEOUT),
            format_duration(MAX_RATE_PERIOD),
        );
        match self {
            E::NoLevels => "at least one level is required".to_owned(),
            E::TooManyLevels(n) => format!("{n} levels; at most {MAX_LEVELS} are allowed"),
            E::NoTargets { .. } => "no targets: a level needs someone to text".to_owned(),
            E::TooManyTargets { count, .. } => {
                format!("{count} targets; at most {MAX_TARGETS_PER_LEVEL} are allowed")
            }
            E::DuplicateTarget { number, .. } => format!("{number} is listed twice"),
            E::BadTimeout { .. } => format!("must be between {min} and {max_timeout}"),
            E::TooManyRepeats(n) => format!("{n}; at most {MAX_REPEAT} is allowed"),
            E::BadLabel => format!("must be 1 to {MAX_LABEL_CHARS} printable characters"),
            E::BadWindows { .. } => {
                "windows must belong to an existing level, one list per level".to_owned()
            }
            E::NoWindows { .. } => {
                "empty: leave windows out for a level that is always on duty".to_owned()
            }
            E::TooManyWindows { count, .. } => {
                format!("{count} windows; at most {MAX_WINDOWS_PER_LEVEL} are allowed")
            }
            E::TooManyRates { count, .. } => {
                format!("{count} limits; at most {MAX_RATES} are allowed")
            }
            E::BadRate { rate, .. } => format!(
                "{rate}: the count must be 1 to {MAX_RATE_COUNT} and the period {min} to {max_period}"
            ),
            E::BadSuppressWindow => {
                format!("must be between {min} and {max_period}, or off")
            }
            E::TargetIsRelayLine { number, .. } => format!("{number} is a relay line (a loop)"),
            E::BadCarrier { reason, .. } => reason.clone(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.reason())
    }
}

impl Policy {
    /// Builds a policy from its levels and the number of extra rounds through
    /// the whole chain after the first (`repeat = 0`: each level once).
    pub fn new(levels: Vec<Level>, repeat: u32) -> Result<Self, PolicyError> {
        let p = Policy {
            levels,
            repeat,
            label: default_label(),
            time_zone: Zone::utc(),
            hours: Vec::new(),
            people: BTreeMap::new(),
            when_closed: WhenClosed::Skip,
            throttle: Throttle::default(),
            suppress_repeats: None,
            relay_lines: Vec::new(),
            carriers: Vec::new(),
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
        for (level, l) in self.levels.iter().enumerate() {
            if l.targets.is_empty() {
                return Err(PolicyError::NoTargets { level });
            }
            if l.targets.len() > MAX_TARGETS_PER_LEVEL {
                return Err(PolicyError::TooManyTargets {
                    level,
                    count: l.targets.len(),
                });
            }
            for (index, &number) in l.targets.iter().enumerate() {
                if l.targets[..index].contains(&number) {
                    return Err(PolicyError::DuplicateTarget {
                        level,
                        index,
                        number,
                    });
                }
            }
            if !timeout_in_bounds(l.timeout) {
                return Err(PolicyError::BadTimeout { level });
            }
        }
        if self.repeat > MAX_REPEAT {
            return Err(PolicyError::TooManyRepeats(self.repeat));
        }
        let n = self.label.chars().count();
        if n == 0 || n > MAX_LABEL_CHARS || self.label.chars().any(|c| c.is_control()) {
            return Err(PolicyError::BadLabel);
        }
        for (i, h) in self.hours.iter().enumerate() {
            let level = h.level as usize;
            if level >= self.levels.len() || self.hours[..i].iter().any(|o| o.level == h.level) {
                return Err(PolicyError::BadWindows { level });
            }
            if h.windows.is_empty() {
                return Err(PolicyError::NoWindows { level });
            }
            if h.windows.len() > MAX_WINDOWS_PER_LEVEL {
                return Err(PolicyError::TooManyWindows {
                    level,
                    count: h.windows.len(),
                });
            }
        }
        self.throttle.validate()?;
        if self
            .suppress_repeats
            .is_some_and(|d| d < MIN_PERIOD || d > MAX_RATE_PERIOD)
        {
            return Err(PolicyError::BadSuppressWindow);
        }
        for (level, l) in self.levels.iter().enumerate() {
            if let Some((index, &number)) = l
                .targets
                .iter()
                .enumerate()
                .find(|(_, t)| self.relay_lines.contains(t))
            {
                return Err(PolicyError::TargetIsRelayLine {
                    level,
                    index,
                    number,
                });
            }
        }
        if let Err(reason) = check_carriers(&self.carriers) {
            let index = (0..self.carriers.len())
                .find(|&i| check_carriers(&self.carriers[..=i]).is_err())
                .unwrap_or(0);
            return Err(PolicyError::BadCarrier { index, reason });
        }
        if let Some(index) = self
            .carriers
            .iter()
            .position(|c| self.is_target(c.number) || self.relay_lines.contains(&c.number))
        {
            let number = self.carriers[index].number;
            return Err(PolicyError::BadCarrier {
                index,
                reason: format!("{number} is a dispatcher or a relay line (a loop)"),
            });
        }
        Ok(())
    }

    /// The same policy with windows in `time_zone` (default UTC).
    pub fn with_time_zone(mut self, time_zone: Zone) -> Self {
        self.time_zone = time_zone;
        self
    }

    /// The same policy with on-duty windows for `level` (replacing any it
    /// had), evaluated in `zone`.
    pub fn with_hours(
        mut self,
        level: usize,
        windows: Vec<Window>,
        zone: HoursZone,
    ) -> Result<Self, PolicyError> {
        self.hours.retain(|h| h.level as usize != level);
        self.hours.push(LevelHours {
            level: u32::try_from(level).unwrap_or(u32::MAX),
            windows,
            zone,
        });
        self.hours.sort_by_key(|h| h.level);
        self.validate()?;
        Ok(self)
    }

    /// The same policy with a name and a time zone for a number.
    pub fn with_person(mut self, number: PhoneNumber, person: Person) -> Self {
        self.people.insert(number, person);
        self
    }

    /// The same policy with another rule for levels that are off duty.
    pub fn with_when_closed(mut self, when_closed: WhenClosed) -> Self {
        self.when_closed = when_closed;
        self
    }

    /// The same policy with rate limits.
    pub fn with_throttle(mut self, throttle: Throttle) -> Result<Self, PolicyError> {
        self.throttle = throttle;
        self.validate()?;
        Ok(self)
    }

    /// The same policy suppressing an identical follow-up, reply or notice
    /// to the same number within `window` (`None`: never).
    pub fn with_suppress_repeats(mut self, window: Option<Duration>) -> Result<Self, PolicyError> {
        self.suppress_repeats = window;
        self.validate()?;
        Ok(self)
    }

    /// The same policy with other relay lines that are never texted.
    pub fn with_relay_lines(mut self, lines: Vec<PhoneNumber>) -> Result<Self, PolicyError> {
        self.relay_lines = lines;
        self.validate()?;
        Ok(self)
    }

    /// The same policy sending through `carriers`, in order: the line's
    /// number on each carrier (see [`CarrierNumber`]). Texts to any of
    /// them are the line's; replies to the customer go only through the
    /// carriers whose number is the business line itself, so the customer
    /// always sees one number. Empty (the default): every carrier of the
    /// relay's provider, from the business line.
    pub fn with_carriers(mut self, carriers: Vec<CarrierNumber>) -> Result<Self, PolicyError> {
        self.carriers = carriers;
        self.validate()?;
        Ok(self)
    }

    /// The line's numbers on each carrier, in order (empty: the business
    /// line through every carrier).
    pub fn carriers(&self) -> &[CarrierNumber] {
        &self.carriers
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

    /// The zone windows are evaluated in unless a level says otherwise.
    pub fn time_zone(&self) -> &Zone {
        &self.time_zone
    }

    /// What happens when a level is off duty.
    pub fn when_closed(&self) -> WhenClosed {
        self.when_closed
    }

    /// The rate limits.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// The repeat-suppression window, if any.
    pub fn suppress_repeats(&self) -> Option<Duration> {
        self.suppress_repeats
    }

    /// Other relay lines, never texted.
    pub fn relay_lines(&self) -> &[PhoneNumber] {
        &self.relay_lines
    }

    /// Names and zones of numbers.
    pub fn people(&self) -> &BTreeMap<PhoneNumber, Person> {
        &self.people
    }

    /// A number's name, if the policy gives one.
    pub fn name_of(&self, n: PhoneNumber) -> Option<&str> {
        self.people.get(&n).and_then(|p| p.name.as_deref())
    }

    /// The on-duty windows of `level`, if it has any (none: always on duty).
    pub fn hours(&self, level: usize) -> Option<&LevelHours> {
        self.hours.iter().find(|h| h.level as usize == level)
    }

    /// Whether any level has windows.
    pub fn has_hours(&self) -> bool {
        !self.hours.is_empty()
    }

    /// The zone `target`'s windows at `level` are evaluated in.
    pub fn zone_for(&self, level: usize, target: PhoneNumber) -> &Zone {
        match self.hours(level).map(|h| &h.zone) {
            Some(HoursZone::Zone(z)) => z,
            Some(HoursZone::Target) => self
                .people
                .get(&target)
                .and_then(|p| p.time_zone.as_ref())
                .unwrap_or(&self.time_zone),
            _ => &self.time_zone,
        }
    }

    /// Whether `target` is on duty at `level` at `t` (always, without
    /// windows).
    pub fn on_duty(&self, level: usize, target: PhoneNumber, t: Timestamp) -> bool {
        match self.hours(level) {
            None => true,
            Some(h) => any_open(&h.windows, self.zone_for(level, target), t),
        }
    }

    /// When `target` is next on duty at `level`, at or after `t`.
    pub fn next_on_duty(
        &self,
        level: usize,
        target: PhoneNumber,
        t: Timestamp,
    ) -> Option<Timestamp> {
        match self.hours(level) {
            None => Some(t),
            Some(h) => next_opening(&h.windows, self.zone_for(level, target), t),
        }
    }

    /// The periods in `[from, to)` when `target` is on duty at `level`.
    pub fn on_duty_periods(
        &self,
        level: usize,
        target: PhoneNumber,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<(Timestamp, Timestamp)> {
        match self.hours(level) {
            None if from < to => vec![(from, to)],
            None => Vec::new(),
            Some(h) => open_periods(&h.windows, self.zone_for(level, target), from, to),
        }
    }
}

/// The on-duty windows of one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelHours {
    /// The level's index.
    pub level: u32,
    /// When it is on duty (any of them).
    pub windows: Vec<Window>,
    /// Which zone they are in.
    #[serde(default)]
    pub zone: HoursZone,
}

/// Which zone a level's windows are in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HoursZone {
    /// The policy's `time_zone`.
    #[default]
    Policy,
    /// Each target's own zone ([`Person::time_zone`]), else the policy's.
    Target,
    /// This zone.
    Zone(Zone),
}

impl Serialize for HoursZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HoursZone::Policy => s.serialize_str("policy"),
            HoursZone::Target => s.serialize_str("target"),
            HoursZone::Zone(z) => s.serialize_str(z.name()),
        }
    }
}

impl<'de> Deserialize<'de> for HoursZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match s.as_ref() {
            "policy" => Ok(HoursZone::Policy),
            "target" => Ok(HoursZone::Target),
            name => Zone::get(name)
                .map(HoursZone::Zone)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A number's name and time zone, for previews and per-target windows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Person {
    /// A name (`ana`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where they are, for levels whose windows are in each target's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Zone>,
}

/// What happens when nobody is on duty. A level that is off duty is
/// always passed over for a later one that is on duty; when no level is on
/// duty before the chain runs out, the dispatch holds (it stays open, its
/// status says until when) and then texts the level it held for:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenClosed {
    /// Whichever level comes on duty first ("skip to the next open level").
    #[default]
    Skip,
    /// The first off-duty level, in escalation order, when its next window
    /// opens ("hold until the next window opens": escalation order is
    /// kept even if a later level opens sooner).
    Hold,
}

impl WhenClosed {
    fn is_skip(&self) -> bool {
        *self == WhenClosed::Skip
    }
}

/// What happens to a text over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimit {
    /// Send it as soon as the limits allow.
    #[default]
    Delay,
    /// Like `Delay`, and when it goes, the dispatch's other delayed texts
    /// to the same number go with it as one text.
    Digest,
    /// Do not send it: the leg is marked skipped with an event (a dropped
    /// forward escalates like a failed one). Replies to the customer are
    /// never dropped, only delayed.
    Drop,
}

/// At most `count` texts in any period of length `per` (a bucket of
/// `count` tokens where each token spent comes back `per` later). Written
/// `"5/15m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many texts.
    pub count: u32,
    /// In how long.
    pub per: Duration,
}

/// Why a string is not a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {0:?}: expected COUNT/PERIOD like 5/15m or 1/1s")]
pub struct RateError(pub String);

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RateError(s.to_owned());
        let (count, per) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        let per = parse_duration(per).map_err(|_| err())?;
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_duration(self.per))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Rate limits (behaviour B8): per destination number, and for the
/// sending line, shared by every dispatch through the
/// [`crate::RateLimiter`] port. Off when both lists are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Throttle {
    /// Limits on texts to any one number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_destination: Vec<Rate>,
    /// Limits on texts from the business line, to anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line: Vec<Rate>,
    /// What happens to a text over a limit.
    #[serde(default)]
    pub over_limit: OverLimit,
}

impl Throttle {
    /// The limits a relay keeps when its policy names none (the
    /// `RELAY_CHAIN` form): at most 60 texts in any 5 minutes and 1,000 in
    /// any day to one number (a dispatcher, a customer), texts over them
    /// delayed and merged into one (`digest`), never dropped. A real line
    /// never meets them; a loop between two auto-responders, or a customer
    /// (or a script) flooding the line, does, and is slowed to a trickle of
    /// digests instead of thousands of texts.
    pub fn safe_defaults() -> Self {
        Throttle {
            per_destination: vec![
                Rate {
                    count: 60,
                    per: Duration::from_secs(5 * 60),
                },
                Rate {
                    count: 1_000,
                    per: Duration::from_secs(24 * 60 * 60),
                },
            ],
            line: Vec::new(),
            over_limit: OverLimit::Digest,
        }
    }

    /// Whether no limit is set.
    pub fn is_off(&self) -> bool {
        self.per_destination.is_empty() && self.line.is_empty()
    }

    fn validate(&self) -> Result<(), PolicyError> {
        for (list, rates) in [
            ("per_destination", &self.per_destination),
            ("line", &self.line),
        ] {
            if rates.len() > MAX_RATES {
                return Err(PolicyError::TooManyRates {
                    list,
                    count: rates.len(),
                });
            }
            for (index, &rate) in rates.iter().enumerate() {
                if rate.count == 0
                    || rate.count > MAX_RATE_COUNT
                    || rate.per < MIN_PERIOD
                    || rate.per > MAX_RATE_PERIOD
                {
                    return Err(PolicyError::BadRate { list, index, rate });
                }
            }
        }
        Ok(())
    }
}

/// Formats a duration the way [`parse_duration`] reads it: `15m`, `1h30m`,
/// `90s` → `1m30s`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
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

pub(crate) mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

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
    fn an_error_names_its_field_and_reason() {
        let l = |t: &[&str], secs| Level {
            name: None,
            targets: t.iter().map(|s| n(s)).collect(),
            timeout: Duration::from_secs(secs),
        };
        let e = Policy::new(vec![l(&["+16195550101"], 60), l(&["+16195550102"], 0)], 0)
            .expect_err("a zero timeout");
        assert_eq!(e.field(), "levels[1].timeout");
        assert_eq!(
            e.to_string(),
            "levels[1].timeout: must be between 1s and 7d"
        );
        let e = Policy::new(vec![l(&["+16195550101", "+16195550102"], 60)], 0)
            .and_then(|p| p.with_relay_lines(vec![n("+16195550102")]))
            .expect_err("a relay line");
        assert_eq!(
            e,
            PolicyError::TargetIsRelayLine {
                level: 0,
                index: 1,
                number: n("+16195550102")
            }
        );
        assert_eq!(e.field(), "levels[0].targets[1]");
        let rate = |count, per| Rate {
            count,
            per: Duration::from_secs(per),
        };
        let e = Policy::new(vec![l(&["+16195550101"], 60)], 0)
            .and_then(|p| {
                p.with_throttle(Throttle {
                    per_destination: vec![rate(1, 60), rate(5, 2 * 86_400)],
                    ..Throttle::default()
                })
            })
            .expect_err("a two-day period");
        assert_eq!(
            e.to_string(),
            "throttle.per_destination[1]: 5/2d: the count must be 1 to 10000 and the period 1s to 1d"
        );
        let e = Policy::new(vec![l(&["+16195550101"], 60)], 0)
            .and_then(|p| p.with_hours(0, Vec::new(), HoursZone::Policy))
            .expect_err("no windows");
        assert_eq!(e, PolicyError::NoWindows { level: 0 });
        assert_eq!(e.field(), "levels[0].windows");
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
