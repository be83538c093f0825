//! Time-of-day windows in real time zones (behaviour B7).
//!
//! A [`Window`] is a set of weekdays and a start–end local time; an end at
//! or before the start crosses midnight and belongs to the start's day
//! (`fri 22:00–06:00` is Friday night into Saturday morning). Windows are
//! evaluated in an IANA [`Zone`] from a UTC [`Timestamp`]: the state machine
//! passes its `now`, nothing here reads a clock.
//!
//! Daylight-saving changes follow RFC 5545 and jiff's "compatible" rule:
//! a local time that does not exist (the spring-forward gap, `02:30` on
//! the night clocks jump from 02:00 to 03:00) is moved forward by the
//! gap's length (`03:30`); a local time that happens twice (the fall-back
//! repeat) means its first occurrence. So a window opens and closes at the
//! wall-clock times it names whenever they exist, and a window that lies
//! wholly inside a gap does not open that day.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::Timestamp;

// ---------------------------------------------------------------------------
// Zone

/// An IANA time zone (`America/Los_Angeles`), or UTC. Serialised as its
/// name. The zone database is bundled into the binary, so names resolve the
/// same everywhere (a Lambda image without `/usr/share/zoneinfo` too).
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

/// Why a string is not a time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: expected an IANA name like America/Los_Angeles or UTC")]
pub struct ZoneError(pub String);

impl Zone {
    /// UTC.
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
    }

    /// Looks a zone up by its IANA name (`Europe/Berlin`, `UTC`).
    pub fn get(name: &str) -> Result<Self, ZoneError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ZoneError(name.to_owned()));
        }
        let tz = TimeZone::get(name).map_err(|_| ZoneError(name.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            tz,
        })
    }

    /// Its IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is UTC.
    pub fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    /// The jiff time zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The local date and time of `t` in this zone, like `Mon 2026-03-09 07:00 PDT`.
    pub fn format(&self, t: Timestamp) -> String {
        t.to_jiff()
            .to_zoned_datetime(self.tz.clone())
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// The local time of `t` formatted with `strftime` directives.
    pub fn strftime(&self, t: Timestamp, format: &str) -> String {
        t.to_jiff()
            .to_zoned_datetime(self.tz.clone())
            .strftime(format)
            .to_string()
    }

    /// The instant local midnight starts `date` (`YYYY-MM-DD`) here.
    pub fn start_of(&self, date: &str) -> Option<Timestamp> {
        let date: Date = date.trim().parse().ok()?;
        self.resolve(date, 0)
    }

    /// The instant the local wall-clock `hour` (0–23) starts on the local
    /// date of `day`, or `None` when that date has no such hour (the
    /// clocks went forward through it) or `hour` is not one. An hour the
    /// clocks went back through happens twice; this is its first
    /// occurrence.
    pub fn hour_of_day(&self, day: Timestamp, hour: u8) -> Option<Timestamp> {
        let at = self.wall_hour(day, hour)?;
        if matches!(at.offset(), jiff::tz::AmbiguousOffset::Gap { .. }) {
            return None;
        }
        Some(Timestamp::from_jiff(at.earlier().ok()?))
    }

    /// Whether the local wall-clock `hour` (0–23) happens twice on the
    /// local date of `day` (the clocks went back through it).
    pub fn hour_repeats(&self, day: Timestamp, hour: u8) -> bool {
        self.wall_hour(day, hour)
            .is_some_and(|at| matches!(at.offset(), jiff::tz::AmbiguousOffset::Fold { .. }))
    }

    /// `hour`:00 on the local date of `day`, with however many instants it
    /// names here (none in a gap, two in a fold).
    fn wall_hour(&self, day: Timestamp, hour: u8) -> Option<jiff::tz::AmbiguousTimestamp> {
        (hour <= 23).then(|| {
            self.tz
                .to_ambiguous_timestamp(self.local_date(day).at(hour as i8, 0, 0, 0))
        })
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_jiff().to_zoned_datetime(self.tz.clone()).date()
    }

    /// The instant of a local date and time: a time in a gap moves forward
    /// by the gap's length, a repeated time is its first occurrence.
    fn resolve(&self, date: Date, minutes: u16) -> Option<Timestamp> {
        let (date, minutes) = if minutes >= 1440 {
            (date.tomorrow().ok()?, minutes - 1440)
        } else {
            (date, minutes)
        };
        let dt = date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
        let ts = self.tz.to_ambiguous_timestamp(dt).compatible().ok()?;
        Some(Timestamp::from_jiff(ts))
    }
}

impl Default for Zone {
    fn default() -> Self {
        Self::utc()
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for Zone {
    type Err = ZoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::get(s)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Zone::get(&s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Weekdays

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A set of weekdays. Written as a list of days and ranges: `mon-fri`,
/// `sat,sun`, `fri-mon` (ranges may wrap), or `daily`, `weekdays`,
/// `weekends`. Full names (`monday`) are accepted too.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

/// Why a string is not a set of weekdays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid days {0:?}: expected days like mon-fri, sat,sun, daily, weekdays or weekends")]
pub struct WeekdaysError(pub String);

impl Weekdays {
    /// Every day.
    pub const ALL: Weekdays = Weekdays(0x7f);

    /// Whether it holds `day`.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    /// Whether it holds no day.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn day(s: &str) -> Option<u8> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() < 3 {
            return None;
        }
        let full = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        DAY_NAMES
            .iter()
            .zip(full)
            .position(|(short, long)| s == *short || (long.starts_with(&s)))
            .map(|i| i as u8)
    }
}

impl FromStr for Weekdays {
    type Err = WeekdaysError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WeekdaysError(s.to_owned());
        let mut bits = 0u8;
        for part in s.split(',').map(str::trim) {
            match part.to_ascii_lowercase().as_str() {
                "daily" | "every day" | "all" => bits |= 0x7f,
                "weekdays" => bits |= 0x1f,
                "weekends" | "weekend" => bits |= 0x60,
                p => match p.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (Self::day(a).ok_or_else(err)?, Self::day(b).ok_or_else(err)?);
                        let mut d = a;
                        loop {
                            bits |= 1 << d;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => bits |= 1 << Self::day(p).ok_or_else(err)?,
                },
            }
        }
        if bits == 0 {
            return Err(err());
        }
        Ok(Weekdays(bits))
    }
}

impl fmt::Display for Weekdays {
    /// The shortest list of days and ranges: `mon-sat`, `sat,sun`, `daily`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0x7f {
            return f.write_str("daily");
        }
        let mut parts = Vec::new();
        let mut d = 0u8;
        while d < 7 {
            if self.0 & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let start = d;
            while d + 1 < 7 && self.0 & (1 << (d + 1)) != 0 {
                d += 1;
            }
            parts.push(match d - start {
                0 => DAY_NAMES[start as usize].to_owned(),
                1 => format!("{},{}", DAY_NAMES[start as usize], DAY_NAMES[d as usize]),
                _ => format!("{}-{}", DAY_NAMES[start as usize], DAY_NAMES[d as usize]),
            });
            d += 1;
        }
        f.write_str(&parts.join(","))
    }
}

impl fmt::Debug for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weekdays({self})")
    }
}

impl Serialize for Weekdays {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Weekdays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// LocalTime

/// A wall-clock time of day, minute precision: `07:00`, `19:30`; `24:00`
/// is allowed as an end (midnight at the end of the day).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalTime(u16);

/// Why a string is not a time of day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: expected HH:MM from 00:00 to 24:00")]
pub struct LocalTimeError(pub String);

impl LocalTime {
    /// From hours and minutes; `None` past 24:00.
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        let m = u16::from(hour) * 60 + u16::from(minute);
        (minute < 60 && m <= 1440).then_some(Self(m))
    }

    /// Minutes since midnight (0 to 1440).
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for LocalTime {
    type Err = LocalTimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LocalTimeError(s.to_owned());
        let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(err());
        }
        let h: u8 = h.parse().map_err(|_| err())?;
        let m: u8 = m.parse().map_err(|_| err())?;
        Self::new(h, m).ok_or_else(err)
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl fmt::Debug for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalTime({self})")
    }
}

impl Serialize for LocalTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Window

/// When a level is on duty: on `days`, from `start` to `end` local time.
/// An `end` at or before `start` crosses midnight and belongs to the start's
/// day (`start = end` is 24 hours from `start`).
///
/// Daylight-saving changes follow RFC 5545 and jiff's "compatible" rule:
/// a local time that does not exist (the spring-forward gap, `02:30` on
/// the night clocks jump from 02:00 to 03:00) is moved forward by the
/// gap's length (`03:30`); a local time that happens twice (the fall-back
/// repeat) means its first occurrence. So a window opens and closes at the
/// wall-clock times it names whenever they exist, and a window that lies
/// wholly inside a gap does not open that day.
///
/// ```
/// use qdn_relay_core::{Window, Zone};
/// use qdn_relay_core::Timestamp;
/// let day: Window = "mon-sat 07:00-19:00".parse().unwrap();
/// let la = Zone::get("America/Los_Angeles").unwrap();
/// // Monday 2026-01-05 09:00 UTC is 01:00 in Los Angeles: closed.
/// let t: Timestamp = "2026-01-05T09:00:00Z".parse().unwrap();
/// assert!(!day.is_open(&la, t));
/// // It opens at 07:00 PST = 15:00 UTC.
/// assert_eq!(day.next_opening(&la, t).unwrap().to_string(), "2026-01-05T15:00:00Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// The days it opens on.
    #[serde(default = "all_days")]
    pub days: Weekdays,
    /// Local opening time.
    pub start: LocalTime,
    /// Local closing time (at or before `start`: the next day).
    pub end: LocalTime,
}

fn all_days() -> Weekdays {
    Weekdays::ALL
}

/// Why a string is not a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window {0:?}: expected e.g. \"mon-fri 07:00-19:00\" or \"22:00-06:00\"")]
pub struct WindowError(pub String);

/// How far ahead the next opening is looked for: more than a week, so any
/// weekly pattern is found.
const LOOKAHEAD_DAYS: i32 = 9;

impl Window {
    /// The window's length in minutes, before daylight-saving changes.
    fn span_minutes(&self) -> u16 {
        if self.end > self.start {
            self.end.0 - self.start.0
        } else {
            1440 - self.start.0 + self.end.0
        }
    }

    /// The occurrence that opens on local `date`, as instants, if `date` is
    /// one of its days and the occurrence is not empty.
    fn occurrence(&self, zone: &Zone, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days.contains(date.weekday()) {
            return None;
        }
        let open = zone.resolve(date, self.start.0)?;
        let close = zone.resolve(date, self.start.0 + self.span_minutes())?;
        (close > open).then_some((open, close))
    }

    /// Whether the window holds at `t`.
    pub fn is_open(&self, zone: &Zone, t: Timestamp) -> bool {
        let date = zone.local_date(t);
        [date.yesterday().ok(), Some(date)]
            .into_iter()
            .flatten()
            .filter_map(|d| self.occurrence(zone, d))
            .any(|(o, c)| o <= t && t < c)
    }

    /// Every occurrence that overlaps `[from, to)`, in order (not clipped).
    pub fn occurrences(
        &self,
        zone: &Zone,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        let Ok(mut date) = zone.local_date(from).yesterday() else {
            return out;
        };
        loop {
            if let Some((o, c)) = self.occurrence(zone, date) {
                if o >= to {
                    break;
                }
                if c > from {
                    out.push((o, c));
                }
            } else if zone.resolve(date, 0).is_none_or(|t| t >= to) {
                break;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        out
    }

    /// The earliest instant at or after `t` when the window holds (`t`
    /// itself if it holds now); `None` if it never opens.
    pub fn next_opening(&self, zone: &Zone, t: Timestamp) -> Option<Timestamp> {
        if self.is_open(zone, t) {
            return Some(t);
        }
        let mut date = zone.local_date(t);
        for _ in 0..LOOKAHEAD_DAYS {
            if let Some((o, _)) = self.occurrence(zone, date)
                && o > t
            {
                return Some(o);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

impl FromStr for Window {
    type Err = WindowError;
    /// `"mon-fri 07:00-19:00"`, `"22:00-06:00"` (every day).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WindowError(s.to_owned());
        let s = s.trim();
        let (days, times) = match s.rsplit_once(' ') {
            Some((d, t)) => (d.parse().map_err(|_| err())?, t),
            None => (Weekdays::ALL, s),
        };
        let (a, b) = times.split_once('-').ok_or_else(err)?;
        Ok(Window {
            days,
            start: a.parse().map_err(|_| err())?,
            end: b.parse().map_err(|_| err())?,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{}", self.days, self.start, self.end)
    }
}

/// Whether any of `windows` holds at `t` (no windows: always).
pub(crate) fn any_open(windows: &[Window], zone: &Zone, t: Timestamp) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.is_open(zone, t))
}

/// The earliest instant at or after `t` when any of `windows` holds.
pub(crate) fn next_opening(windows: &[Window], zone: &Zone, t: Timestamp) -> Option<Timestamp> {
    if windows.is_empty() {
        return Some(t);
    }
    windows.iter().filter_map(|w| w.next_opening(zone, t)).min()
}

/// The periods in `[from, to)` when any of `windows` holds, merged where
/// they touch or overlap, clipped to the range.
pub(crate) fn open_periods(
    windows: &[Window],
    zone: &Zone,
    from: Timestamp,
    to: Timestamp,
) -> Vec<(Timestamp, Timestamp)> {
    if windows.is_empty() {
        return if from < to {
            vec![(from, to)]
        } else {
            Vec::new()
        };
    }
    let mut all: Vec<(Timestamp, Timestamp)> = windows
        .iter()
        .flat_map(|w| w.occurrences(zone, from, to))
        .map(|(o, c)| (o.max(from), c.min(to)))
        .filter(|(o, c)| o < c)
        .collect();
    all.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(all.len());
    for (o, c) in all {
        match merged.last_mut() {
            Some(last) if o <= last.1 => last.1 = last.1.max(c),
            _ => merged.push((o, c)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    fn z(s: &str) -> Zone {
        Zone::get(s).unwrap()
    }

    #[test]
    fn times_at_and_past_the_ends_of_the_calendar_answer_without_panicking() {
        let ends = [
            i64::MIN + 1,
            jiff::Timestamp::MIN.as_millisecond(),
            jiff::Timestamp::MAX.as_millisecond(),
            i64::MAX,
        ];
        let zones = [z("UTC"), z("Pacific/Kiritimati"), z("Pacific/Pago_Pago")];
        let windows = [
            w("mon-sat 07:00-19:00"),
            w("fri 22:00-06:00"),
            w("daily 00:00-00:00"),
        ];
        for ms in ends {
            let at = Timestamp::from_millis(ms);
            for zone in &zones {
                assert!(!zone.format(at).is_empty());
                for hour in [0, 23] {
                    let _ = zone.hour_of_day(at, hour);
                    let _ = zone.hour_repeats(at, hour);
                }
                for window in &windows {
                    let open = window.is_open(zone, at);
                    let next = window.next_opening(zone, at);
                    assert!(!open || next == Some(at));
                    let _ = window.occurrences(
                        zone,
                        at,
                        at.plus(std::time::Duration::from_secs(86_400)),
                    );
                }
            }
        }
    }

    #[test]
    fn a_days_wall_clock_hours_skip_the_gap_and_take_a_repeated_hour_once() {
        let la = z("America/Los_Angeles");
        // 2026-03-08: clocks go forward at 02:00 PST to 03:00 PDT.
        let spring = t("2026-03-08T12:00:00Z");
        assert_eq!(la.hour_of_day(spring, 1), Some(t("2026-03-08T09:00:00Z")));
        assert_eq!(la.hour_of_day(spring, 2), None, "02:00 does not happen");
        assert_eq!(la.hour_of_day(spring, 3), Some(t("2026-03-08T10:00:00Z")));
        assert_eq!(la.hour_of_day(spring, 23), Some(t("2026-03-09T06:00:00Z")));
        assert!((0..24).all(|h| !la.hour_repeats(spring, h)));
        // 2026-11-01: clocks go back at 02:00 PDT to 01:00 PST.
        let autumn = t("2026-11-01T12:00:00Z");
        assert_eq!(
            la.hour_of_day(autumn, 1),
            Some(t("2026-11-01T08:00:00Z")),
            "the first 01:00"
        );
        assert!(la.hour_repeats(autumn, 1));
        assert!(!la.hour_repeats(autumn, 2));
        assert_eq!(la.hour_of_day(autumn, 2), Some(t("2026-11-01T10:00:00Z")));
        assert_eq!(la.hour_of_day(autumn, 23), Some(t("2026-11-02T07:00:00Z")));
        assert_eq!(la.hour_of_day(autumn, 24), None);
        // An ordinary day: every hour once.
        let plain = t("2026-06-01T12:00:00Z");
        assert!((0..24).all(|h| la.hour_of_day(plain, h).is_some() && !la.hour_repeats(plain, h)));
    }

    #[test]
    fn days_parse_and_print() {
        assert_eq!(
            "mon-sat".parse::<Weekdays>().unwrap().to_string(),
            "mon-sat"
        );
        assert_eq!(
            "sat,sun".parse::<Weekdays>().unwrap().to_string(),
            "sat,sun"
        );
        assert_eq!(
            "weekends".parse::<Weekdays>().unwrap().to_string(),
            "sat,sun"
        );
        assert_eq!(
            "fri-mon".parse::<Weekdays>().unwrap().to_string(),
            "mon,fri-sun"
        );
        assert_eq!(
            "Monday, wed".parse::<Weekdays>().unwrap().to_string(),
            "mon,wed"
        );
        assert_eq!("daily".parse::<Weekdays>().unwrap(), Weekdays::ALL);
        assert!("funday".parse::<Weekdays>().is_err());
        assert!("".parse::<Weekdays>().is_err());
        assert!("mo".parse::<Weekdays>().is_err());
    }

    #[test]
    fn times_parse() {
        assert_eq!("07:00".parse::<LocalTime>().unwrap().minutes(), 420);
        assert_eq!("7:05".parse::<LocalTime>().unwrap().minutes(), 425);
        assert_eq!("24:00".parse::<LocalTime>().unwrap().minutes(), 1440);
        for bad in ["24:01", "7", "07:60", "7:5", "x:00", ""] {
            assert!(bad.parse::<LocalTime>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_day_window_in_los_angeles() {
        let la = z("America/Los_Angeles");
        let day = w("mon-sat 07:00-19:00");
        // Monday 2026-01-05, PST (UTC-8).
        assert!(!day.is_open(&la, t("2026-01-05T14:59:59Z")));
        assert!(day.is_open(&la, t("2026-01-05T15:00:00Z")));
        assert!(day.is_open(&la, t("2026-01-06T02:59:59Z")));
        assert!(!day.is_open(&la, t("2026-01-06T03:00:00Z")));
        // Saturday evening → the next opening is Monday 07:00.
        assert_eq!(
            day.next_opening(&la, t("2026-01-11T03:00:00Z")),
            Some(t("2026-01-12T15:00:00Z"))
        );
    }

    #[test]
    fn a_window_across_midnight_belongs_to_its_start_day() {
        let utc = Zone::utc();
        let night = w("fri 22:00-06:00");
        assert!(
            night.is_open(&utc, t("2026-01-09T23:00:00Z")),
            "Friday night"
        );
        assert!(
            night.is_open(&utc, t("2026-01-10T05:59:00Z")),
            "Saturday morning"
        );
        assert!(!night.is_open(&utc, t("2026-01-10T06:00:00Z")));
        assert!(
            !night.is_open(&utc, t("2026-01-10T23:00:00Z")),
            "not Saturday night"
        );
        assert!(
            !night.is_open(&utc, t("2026-01-09T05:00:00Z")),
            "not Friday morning"
        );
        let all_day = w("daily 00:00-00:00");
        assert!(all_day.is_open(&utc, t("2026-01-09T05:00:00Z")));
    }

    /// Spring forward: 02:00 → 03:00 local. A window starting at 02:30
    /// opens at 03:30 (moved forward by the gap); one inside the gap never
    /// opens that day; an overnight window is an hour shorter.
    #[test]
    fn spring_forward_gap_los_angeles() {
        let la = z("America/Los_Angeles");
        // 2026-03-08: 02:00 PST jumps to 03:00 PDT (10:00Z).
        let w1 = w("sun 02:30-05:00");
        assert_eq!(
            w1.next_opening(&la, t("2026-03-08T08:00:00Z")),
            Some(t("2026-03-08T10:30:00Z")),
            "03:30 PDT"
        );
        assert!(!w1.is_open(&la, t("2026-03-08T10:29:00Z")));
        assert!(w1.is_open(&la, t("2026-03-08T10:30:00Z")));
        assert!(
            !w1.is_open(&la, t("2026-03-08T12:00:00Z")),
            "closed at 05:00 PDT"
        );
        let gap = w("sun 02:00-03:00");
        assert_eq!(
            gap.next_opening(&la, t("2026-03-08T08:00:00Z")),
            Some(t("2026-03-15T09:00:00Z")),
            "the hour does not exist on the 8th: next Sunday 02:00 PDT"
        );
        let night = w("sat 22:00-06:00");
        let periods = open_periods(
            &[night],
            &la,
            t("2026-03-07T00:00:00Z"),
            t("2026-03-09T00:00:00Z"),
        );
        assert_eq!(
            periods,
            vec![(t("2026-03-08T06:00:00Z"), t("2026-03-08T13:00:00Z"))],
            "22:00 PST to 06:00 PDT: seven hours"
        );
    }

    #[test]
    fn spring_forward_gap_berlin_and_sydney() {
        let berlin = z("Europe/Berlin");
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let w1 = w("sun 02:30-04:00");
        assert_eq!(
            w1.next_opening(&berlin, t("2026-03-28T23:00:00Z")),
            Some(t("2026-03-29T01:30:00Z")),
            "03:30 CEST"
        );
        // Sydney springs forward on 2026-10-04: 02:00 AEST → 03:00 AEDT (16:00Z on the 3rd).
        let sydney = z("Australia/Sydney");
        assert_eq!(
            w1.next_opening(&sydney, t("2026-10-03T14:00:00Z")),
            Some(t("2026-10-03T16:30:00Z")),
            "03:30 AEDT"
        );
    }

    /// Fall back: 02:00 → 01:00 local, 01:xx happens twice. A start or end
    /// in the repeated hour is its first occurrence; an overnight window is
    /// an hour longer.
    #[test]
    fn fall_back_repeat_los_angeles_and_berlin() {
        let la = z("America/Los_Angeles");
        // 2026-11-01: 02:00 PDT goes back to 01:00 PST (09:00Z).
        let w1 = w("sun 01:30-01:45");
        assert_eq!(
            w1.next_opening(&la, t("2026-11-01T07:00:00Z")),
            Some(t("2026-11-01T08:30:00Z")),
            "the first 01:30 (PDT)"
        );
        assert!(w1.is_open(&la, t("2026-11-01T08:40:00Z")));
        assert!(
            !w1.is_open(&la, t("2026-11-01T09:40:00Z")),
            "the second 01:40 (PST) is past the first 01:45"
        );
        let night = w("sat 22:00-06:00");
        let periods = open_periods(
            &[night],
            &la,
            t("2026-10-31T00:00:00Z"),
            t("2026-11-02T00:00:00Z"),
        );
        assert_eq!(
            periods,
            vec![(t("2026-11-01T05:00:00Z"), t("2026-11-01T14:00:00Z"))],
            "22:00 PDT to 06:00 PST: nine hours"
        );
        // Berlin: 2026-10-25, 03:00 CEST goes back to 02:00 CET (01:00Z).
        let berlin = z("Europe/Berlin");
        let w2 = w("sun 02:30-05:00");
        assert_eq!(
            w2.next_opening(&berlin, t("2026-10-24T22:00:00Z")),
            Some(t("2026-10-25T00:30:00Z")),
            "the first 02:30 (CEST)"
        );
        assert!(
            w2.is_open(&berlin, t("2026-10-25T01:30:00Z")),
            "the second 02:30 is inside"
        );
        assert!(!w2.is_open(&berlin, t("2026-10-25T04:00:00Z")), "05:00 CET");
    }

    #[test]
    fn southern_hemisphere_fall_back_sydney() {
        // 2026-04-05: 03:00 AEDT goes back to 02:00 AEST (16:00Z on the 4th).
        let sydney = z("Australia/Sydney");
        let w1 = w("sun 02:30-03:30");
        assert_eq!(
            w1.next_opening(&sydney, t("2026-04-04T14:00:00Z")),
            Some(t("2026-04-04T15:30:00Z")),
            "the first 02:30 (AEDT)"
        );
        assert!(
            w1.is_open(&sydney, t("2026-04-04T17:00:00Z")),
            "until 03:30 AEST"
        );
        assert!(!w1.is_open(&sydney, t("2026-04-04T17:30:00Z")));
    }

    #[test]
    fn periods_merge_touching_windows() {
        let utc = Zone::utc();
        let day = w("daily 07:00-19:00");
        let night = w("daily 19:00-07:00");
        let p = open_periods(
            &[day, night],
            &utc,
            t("2026-01-05T00:00:00Z"),
            t("2026-01-07T00:00:00Z"),
        );
        assert_eq!(
            p,
            vec![(t("2026-01-05T00:00:00Z"), t("2026-01-07T00:00:00Z"))]
        );
        assert_eq!(
            next_opening(&[], &utc, t("2026-01-05T00:00:00Z")),
            Some(t("2026-01-05T00:00:00Z"))
        );
    }

    #[test]
    fn zones_serialise_by_name_and_unknown_names_fail() {
        let la = z("America/Los_Angeles");
        assert_eq!(
            serde_json::to_string(&la).unwrap(),
            "\"America/Los_Angeles\""
        );
        assert!(Zone::get("Mars/Olympus_Mons").is_err());
        let w1: Window =
            serde_json::from_str(r#"{"days":"mon-fri","start":"07:00","end":"19:00"}"#).unwrap();
        assert_eq!(w1, w("mon-fri 07:00-19:00"));
        assert_eq!(w1.to_string(), "mon-fri 07:00-19:00");
    }
}
