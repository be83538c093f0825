//! The policy file: an escalation policy in TOML, validated on load. Every
//! error names the line and the field (`line 14: levels[1].windows[0]:
//! invalid time "25:00"`).
//!
//! ```toml
//! time_zone = "America/Los_Angeles"   # IANA name; default UTC
//! when_closed = "hold"                # or "skip" (default)
//! repeat = 1                          # extra rounds through the chain
//! timeout = "15m"                     # each level's default
//! suppress_repeats = "10m"            # default 10m; "off" to send repeats
//! relay_lines = ["+16195550999"]      # other relay numbers: never texted
//!
//! [people]
//! ana = "+16195550101"
//! ben = { number = "+18583354807", time_zone = "America/Denver" }
//!
//! [throttle]
//! per_destination = ["1/1m", "5/15m", "11/1h"]
//! line = ["1/1s"]
//! over_limit = "digest"               # or "delay" (default), "drop"
//!
//! [[levels]]
//! name = "day dispatcher"
//! targets = ["ana"]                   # names from [people] or numbers
//! timeout = "10m"
//! windows = ["mon-sat 07:00-19:00"]
//!
//! [[levels]]
//! name = "night on-call"
//! targets = ["ben"]
//! time_zone = "target"                # each target's own zone
//! windows = [{ days = "daily", start = "19:00", end = "07:00" }]
//! ```
//!
//! Parsing does no I/O: the caller reads the file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::policy::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_SUPPRESS_REPEATS, HoursZone, Level, MAX_LEVEL_TIMEOUT, MAX_LEVELS,
    MAX_REPEAT, OverLimit, Person, Policy, PolicyError, Rate, Throttle, WhenClosed, parse_duration,
};
use crate::schedule::{LocalTime, Weekdays, Window, Zone};
use crate::types::PhoneNumber;

/// Why a policy file is not valid: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyFileError {
    /// The line (1-based).
    pub line: usize,
    /// The column (1-based, in characters).
    pub column: usize,
    /// The field, as a path (`levels[1].windows[0]`); empty for a syntax
    /// error outside any field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.field, self.message)
        }
    }
}

impl Policy {
    /// Reads a policy file (see [`crate::policy_file`]).
    ///
    /// ```
    /// use qdn_relay_core::Policy;
    /// let p = Policy::from_toml(r#"
    /// [[levels]]
    /// targets = ["+16195550101"]
    /// "#).unwrap();
    /// assert_eq!(p.levels().len(), 1);
    /// let e = Policy::from_toml("[[levels]]\ntargets = []\n").unwrap_err();
    /// assert_eq!((e.line, e.field.as_str()), (2, "levels[0].targets"));
    /// ```
    pub fn from_toml(src: &str) -> Result<Policy, PolicyFileError> {
        Reader { src }.policy()
    }
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

struct Reader<'s> {
    src: &'s str,
}

const TOP_KEYS: &[&str] = &[
    "label",
    "time_zone",
    "when_closed",
    "repeat",
    "timeout",
    "suppress_repeats",
    "relay_lines",
    "people",
    "throttle",
    "levels",
];

impl<'s> Reader<'s> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> PolicyFileError {
        let at = span.start.min(self.src.len());
        let before = &self.src[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PolicyFileError {
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A TOML syntax or type error: its span, and the key on its line.
    fn syntax(&self, e: &toml::de::Error) -> PolicyFileError {
        let span = e.span().unwrap_or(0..0);
        let mut err = self.err(span.clone(), "", e.message().trim().to_owned());
        let line = self
            .src
            .lines()
            .nth(err.line.saturating_sub(1))
            .unwrap_or("");
        let t = line.trim();
        err.field = if t.starts_with('[') {
            t.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
        } else {
            t.split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        err
    }

    fn policy(&self) -> Result<Policy, PolicyFileError> {
        let doc = DeTable::parse(self.src).map_err(|e| self.syntax(&e))?;
        let root = doc.get_ref();
        self.known_keys(root, "", TOP_KEYS)?;

        let time_zone = match root.get("time_zone") {
            Some(v) => self.zone(v, "time_zone")?,
            None => Zone::utc(),
        };
        let default_timeout = match root.get("timeout") {
            Some(v) => self.timeout(v, "timeout")?,
            None => DEFAULT_ACK_TIMEOUT,
        };
        let repeat = match root.get("repeat") {
            Some(v) => {
                let n = self.int(v, "repeat")?;
                if n > u64::from(MAX_REPEAT) {
                    return Err(self.err(v.span(), "repeat", format!("at most {MAX_REPEAT}")));
                }
                n as u32
            }
            None => 0,
        };
        let when_closed = match root.get("when_closed") {
            Some(v) => match self.str(v, "when_closed")? {
                "skip" => WhenClosed::Skip,
                "hold" => WhenClosed::Hold,
                other => {
                    return Err(self.err(
                        v.span(),
                        "when_closed",
                        format!("{other:?}: expected \"skip\" or \"hold\""),
                    ));
                }
            },
            None => WhenClosed::Skip,
        };
        let suppress = match root.get("suppress_repeats") {
            None => Some(DEFAULT_SUPPRESS_REPEATS),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(false) => None,
                DeValue::String(s) if s.trim() == "off" => None,
                _ => {
                    let d = self.duration(v, "suppress_repeats")?;
                    if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
                        return Err(self.err(
                            v.span(),
                            "suppress_repeats",
                            "must be between 1s and 1d, or \"off\"",
                        ));
                    }
                    Some(d)
                }
            },
        };
        let relay_lines = match root.get("relay_lines") {
            Some(v) => {
                let mut out = Vec::new();
                for (i, item) in self.array(v, "relay_lines")?.iter().enumerate() {
                    out.push(self.number(item, &format!("relay_lines[{i}]"))?);
                }
                out
            }
            None => Vec::new(),
        };

        // [people]
        let mut names: BTreeMap<String, PhoneNumber> = BTreeMap::new();
        let mut people: Vec<(PhoneNumber, Person)> = Vec::new();
        if let Some(v) = root.get("people") {
            for (key, val) in self.table(v, "people")? {
                let name = key.get_ref().to_string();
                let field = format!("people.{name}");
                let (number, zone) = match val.get_ref() {
                    DeValue::String(_) => (self.number(val, &field)?, None),
                    DeValue::Table(t) => {
                        self.known_keys(t, &field, &["number", "time_zone"])?;
                        let n = t.get("number").ok_or_else(|| {
                            self.err(val.span(), &field, "needs a number = \"+1...\"")
                        })?;
                        let number = self.number(n, &format!("{field}.number"))?;
                        let zone = match t.get("time_zone") {
                            Some(z) => Some(self.zone(z, &format!("{field}.time_zone"))?),
                            None => None,
                        };
                        (number, zone)
                    }
                    other => {
                        return Err(self.err(
                            val.span(),
                            &field,
                            format!(
                                "expected a phone number or a table, found {}",
                                other.type_str()
                            ),
                        ));
                    }
                };
                if let Some((other, _)) = names.iter().find(|(_, n)| **n == number) {
                    return Err(self.err(
                        val.span(),
                        &field,
                        format!("{number} is already {other}"),
                    ));
                }
                names.insert(name.clone(), number);
                people.push((
                    number,
                    Person {
                        name: Some(name),
                        time_zone: zone,
                    },
                ));
            }
        }

        // [throttle]
        let mut throttle = Throttle::default();
        let mut throttle_span = 0..0;
        if let Some(v) = root.get("throttle") {
            throttle_span = v.span();
            let t = self.table(v, "throttle")?;
            self.known_keys(t, "throttle", &["per_destination", "line", "over_limit"])?;
            for (key, into) in [
                ("per_destination", &mut throttle.per_destination),
                ("line", &mut throttle.line),
            ] {
                if let Some(v) = t.get(key) {
                    for (i, item) in self
                        .array(v, &format!("throttle.{key}"))?
                        .iter()
                        .enumerate()
                    {
                        let field = format!("throttle.{key}[{i}]");
                        let s = self.str(item, &field)?;
                        let r: Rate = s.parse().map_err(|e: crate::policy::RateError| {
                            self.err(item.span(), &field, e.to_string())
                        })?;
                        if r.count == 0
                            || r.per < Duration::from_secs(1)
                            || r.per > Duration::from_secs(86_400)
                        {
                            return Err(self.err(
                                item.span(),
                                &field,
                                format!("{s:?}: at least 1 text, over 1s to 1d"),
                            ));
                        }
                        into.push(r);
                    }
                }
            }
            if let Some(v) = t.get("over_limit") {
                throttle.over_limit = match self.str(v, "throttle.over_limit")? {
                    "delay" => OverLimit::Delay,
                    "digest" => OverLimit::Digest,
                    "drop" => OverLimit::Drop,
                    other => {
                        return Err(self.err(
                            v.span(),
                            "throttle.over_limit",
                            format!("{other:?}: expected \"delay\", \"digest\" or \"drop\""),
                        ));
                    }
                };
            }
        }

        // [[levels]]
        let levels_v = root.get("levels").ok_or_else(|| {
            self.err(
                0..0,
                "levels",
                "required: at least one [[levels]] table with targets",
            )
        })?;
        let items = self.array(levels_v, "levels")?;
        if items.is_empty() {
            return Err(self.err(levels_v.span(), "levels", "at least one level is required"));
        }
        if items.len() > MAX_LEVELS {
            return Err(self.err(
                levels_v.span(),
                "levels",
                format!("at most {MAX_LEVELS} levels"),
            ));
        }
        let mut levels = Vec::with_capacity(items.len());
        let mut hours: Vec<(usize, Vec<Window>, HoursZone)> = Vec::new();
        let mut spans: Vec<LevelSpans> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("levels[{i}]");
            let t = self.table(item, &field)?;
            self.known_keys(
                t,
                &field,
                &["name", "targets", "timeout", "time_zone", "windows"],
            )?;
            let name = match t.get("name") {
                Some(v) => Some(self.str(v, &format!("{field}.name"))?.to_owned()),
                None => None,
            };
            let tf = format!("{field}.targets");
            let tv = t
                .get("targets")
                .ok_or_else(|| self.err(item.span(), &tf, "required: who this level texts"))?;
            let list: Vec<&Value<'_>> = match tv.get_ref() {
                DeValue::String(_) => vec![tv],
                _ => self.array(tv, &tf)?.iter().collect(),
            };
            let mut targets = Vec::with_capacity(list.len());
            for (j, tgt) in list.iter().enumerate() {
                let f = format!("{tf}[{j}]");
                let s = self.str(tgt, &f)?;
                let n = match names.get(s.trim()) {
                    Some(n) => *n,
                    None => s.parse().map_err(|e| {
                        self.err(
                            tgt.span(),
                            &f,
                            format!(
                                "{s:?} is neither a name from [people] nor a phone number ({e})"
                            ),
                        )
                    })?,
                };
                if targets.contains(&n) {
                    return Err(self.err(tgt.span(), &f, format!("{n} is listed twice")));
                }
                if relay_lines.contains(&n) {
                    return Err(self.err(tgt.span(), &f, format!("{n} is a relay line (a loop)")));
                }
                targets.push(n);
            }
            let timeout = match t.get("timeout") {
                Some(v) => self.timeout(v, &format!("{field}.timeout"))?,
                None => default_timeout,
            };
            let zone = match t.get("time_zone") {
                None => HoursZone::Policy,
                Some(v) => match self.str(v, &format!("{field}.time_zone"))? {
                    "policy" => HoursZone::Policy,
                    "target" => HoursZone::Target,
                    _ => HoursZone::Zone(self.zone(v, &format!("{field}.time_zone"))?),
                },
            };
            if let Some(v) = t.get("windows") {
                let wf = format!("{field}.windows");
                let ws = self.array(v, &wf)?;
                if ws.is_empty() {
                    return Err(self.err(
                        v.span(),
                        &wf,
                        "empty: leave windows out for a level that is always on duty",
                    ));
                }
                if ws.len() > crate::policy::MAX_WINDOWS_PER_LEVEL {
                    return Err(self.err(
                        v.span(),
                        &wf,
                        format!("at most {} windows", crate::policy::MAX_WINDOWS_PER_LEVEL),
                    ));
                }
                let mut windows = Vec::with_capacity(ws.len());
                for (j, w) in ws.iter().enumerate() {
                    windows.push(self.window(w, &format!("{wf}[{j}]"))?);
                }
                hours.push((i, windows, zone));
            } else if zone != HoursZone::Policy {
                return Err(self.err(
                    item.span(),
                    &format!("{field}.time_zone"),
                    "a time zone without windows does nothing: add windows",
                ));
            }
            spans.push(LevelSpans {
                level: item.span(),
                targets: tv.span(),
                timeout: t.get("timeout").map(|v| v.span()),
            });
            levels.push(Level {
                name,
                targets,
                timeout,
            });
        }

        let build = || -> Result<Policy, PolicyError> {
            let mut p = Policy::new(levels.clone(), repeat)?
                .with_time_zone(time_zone.clone())
                .with_when_closed(when_closed)
                .with_throttle(throttle.clone())?
                .with_suppress_repeats(suppress)?
                .with_relay_lines(relay_lines.clone())?;
            if let Some(v) = root.get("label") {
                let label = v.get_ref().as_str().unwrap_or_default();
                p = p.with_label(label)?;
            }
            for (number, person) in &people {
                p = p.with_person(*number, person.clone());
            }
            for (level, windows, zone) in &hours {
                p = p.with_hours(*level, windows.clone(), zone.clone())?;
            }
            Ok(p)
        };
        if let Some(v) = root.get("label") {
            self.str(v, "label")?;
        }
        build().map_err(|e| self.policy_error(&e, root, &spans, throttle_span))
    }

    /// Places an error found by [`Policy::validate`].
    fn policy_error(
        &self,
        e: &PolicyError,
        root: &Table<'_>,
        spans: &[LevelSpans],
        throttle: Range<usize>,
    ) -> PolicyFileError {
        let top = |key: &str| root.get(key).map_or(0..0, |v| v.span());
        let msg = e.to_string();
        let level = |i: usize, what: &str, span: Option<Range<usize>>| {
            let s = spans.get(i);
            let span = span.or_else(|| s.map(|s| s.level.clone())).unwrap_or(0..0);
            self.err(span, &format!("levels[{i}]{what}"), msg.clone())
        };
        match e {
            PolicyError::NoTargets { level: i }
            | PolicyError::TooManyTargets { level: i, .. }
            | PolicyError::DuplicateTarget { level: i, .. }
            | PolicyError::TargetIsRelayLine { level: i, .. } => {
                level(*i, ".targets", spans.get(*i).map(|s| s.targets.clone()))
            }
            PolicyError::BadTimeout { level: i } => level(
                *i,
                ".timeout",
                spans.get(*i).and_then(|s| s.timeout.clone()),
            ),
            PolicyError::BadWindows { level: i } => level(*i, ".windows", None),
            PolicyError::BadLabel => self.err(top("label"), "label", msg),
            PolicyError::TooManyRepeats(_) => self.err(top("repeat"), "repeat", msg),
            PolicyError::BadSuppressWindow => {
                self.err(top("suppress_repeats"), "suppress_repeats", msg)
            }
            PolicyError::BadRate(_) => self.err(throttle, "throttle", msg),
            _ => self.err(top("levels"), "levels", msg),
        }
    }

    fn known_keys(&self, t: &Table<'_>, at: &str, keys: &[&str]) -> Result<(), PolicyFileError> {
        for (k, _) in t.iter() {
            let name: &str = k.get_ref();
            if !keys.contains(&name) {
                let field = if at.is_empty() {
                    name.to_owned()
                } else {
                    format!("{at}.{name}")
                };
                return Err(self.err(
                    k.span(),
                    &field,
                    format!("unknown field; expected one of: {}", keys.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn str<'v>(&self, v: &'v Value<'_>, field: &str) -> Result<&'v str, PolicyFileError> {
        v.get_ref().as_str().ok_or_else(|| {
            self.err(
                v.span(),
                field,
                format!("expected a string, found {}", v.get_ref().type_str()),
            )
        })
    }

    fn int(&self, v: &Value<'_>, field: &str) -> Result<u64, PolicyFileError> {
        v.get_ref()
            .as_integer()
            .and_then(|i| i.as_str().parse::<u64>().ok().filter(|_| i.radix() == 10))
            .ok_or_else(|| {
                self.err(
                    v.span(),
                    field,
                    format!("expected a whole number, found {}", v.get_ref().type_str()),
                )
            })
    }

    fn array<'v, 'i>(
        &self,
        v: &'v Value<'i>,
        field: &str,
    ) -> Result<&'v [Value<'i>], PolicyFileError> {
        v.get_ref().as_array().map(|a| &a[..]).ok_or_else(|| {
            self.err(
                v.span(),
                field,
                format!("expected an array, found {}", v.get_ref().type_str()),
            )
        })
    }

    fn table<'v, 'i>(
        &self,
        v: &'v Value<'i>,
        field: &str,
    ) -> Result<&'v Table<'i>, PolicyFileError> {
        v.get_ref().as_table().ok_or_else(|| {
            self.err(
                v.span(),
                field,
                format!("expected a table, found {}", v.get_ref().type_str()),
            )
        })
    }

    fn zone(&self, v: &Value<'_>, field: &str) -> Result<Zone, PolicyFileError> {
        let s = self.str(v, field)?;
        Zone::get(s).map_err(|e| self.err(v.span(), field, e.to_string()))
    }

    fn number(&self, v: &Value<'_>, field: &str) -> Result<PhoneNumber, PolicyFileError> {
        let s = self.str(v, field)?;
        s.parse()
            .map_err(|e| self.err(v.span(), field, format!("{s:?} is not a phone number: {e}")))
    }

    fn duration(&self, v: &Value<'_>, field: &str) -> Result<Duration, PolicyFileError> {
        match v.get_ref() {
            DeValue::Integer(_) => Ok(Duration::from_secs(self.int(v, field)?)),
            _ => {
                let s = self.str(v, field)?;
                parse_duration(s).map_err(|e| self.err(v.span(), field, e.to_string()))
            }
        }
    }

    fn timeout(&self, v: &Value<'_>, field: &str) -> Result<Duration, PolicyFileError> {
        let d = self.duration(v, field)?;
        if d < Duration::from_secs(1) || d > MAX_LEVEL_TIMEOUT {
            return Err(self.err(v.span(), field, "must be between 1s and 7d"));
        }
        Ok(d)
    }

    fn window(&self, v: &Value<'_>, field: &str) -> Result<Window, PolicyFileError> {
        match v.get_ref() {
            DeValue::String(s) => s.parse().map_err(|e: crate::schedule::WindowError| {
                self.err(v.span(), field, e.to_string())
            }),
            DeValue::Table(t) => {
                self.known_keys(t, field, &["days", "start", "end"])?;
                let days = match t.get("days") {
                    None => Weekdays::ALL,
                    Some(d) => {
                        let df = format!("{field}.days");
                        let text = match d.get_ref() {
                            DeValue::String(s) => s.to_string(),
                            DeValue::Array(_) => {
                                let mut parts = Vec::new();
                                for (k, p) in self.array(d, &df)?.iter().enumerate() {
                                    parts.push(self.str(p, &format!("{df}[{k}]"))?.to_owned());
                                }
                                parts.join(",")
                            }
                            other => {
                                return Err(self.err(
                                    d.span(),
                                    &df,
                                    format!(
                                        "expected days like \"mon-fri\", found {}",
                                        other.type_str()
                                    ),
                                ));
                            }
                        };
                        text.parse().map_err(|e: crate::schedule::WeekdaysError| {
                            self.err(d.span(), &df, e.to_string())
                        })?
                    }
                };
                let time = |key: &str| -> Result<LocalTime, PolicyFileError> {
                    let f = format!("{field}.{key}");
                    let tv = t
                        .get(key)
                        .ok_or_else(|| self.err(v.span(), &f, "required, like \"07:00\""))?;
                    let s = self.str(tv, &f)?;
                    s.parse().map_err(|e: crate::schedule::LocalTimeError| {
                        self.err(tv.span(), &f, e.to_string())
                    })
                };
                Ok(Window {
                    days,
                    start: time("start")?,
                    end: time("end")?,
                })
            }
            other => Err(self.err(
                v.span(),
                field,
                format!(
                    "expected \"mon-fri 07:00-19:00\" or {{ days, start, end }}, found {}",
                    other.type_str()
                ),
            )),
        }
    }
}

struct LevelSpans {
    level: Range<usize>,
    targets: Range<usize>,
    timeout: Option<Range<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> PolicyFileError {
        Policy::from_toml(src).expect_err("invalid")
    }

    const GOOD: &str = r#"
time_zone = "America/Los_Angeles"
when_closed = "hold"
repeat = 1

[people]
ana = "+16195550101"
ben = { number = "+18583354807", time_zone = "America/Denver" }

[throttle]
per_destination = ["1/1m", "5/15m", "11/1h"]
line = ["1/1s"]
over_limit = "digest"

[[levels]]
name = "day"
targets = ["ana"]
timeout = "10m"
windows = ["mon-sat 07:00-19:00"]

[[levels]]
name = "night"
targets = ["ben", "+16195550105"]
time_zone = "target"
windows = [{ days = ["mon-fri", "sun"], start = "19:00", end = "07:00" }]

[[levels]]
name = "manager"
targets = "+16195550104"
"#;

    #[test]
    fn a_full_policy_reads() {
        let p = Policy::from_toml(GOOD).expect("valid");
        assert_eq!(p.levels().len(), 3);
        assert_eq!(p.rounds(), 2);
        assert_eq!(p.when_closed(), WhenClosed::Hold);
        assert_eq!(p.time_zone().name(), "America/Los_Angeles");
        assert_eq!(p.levels()[0].timeout, Duration::from_secs(600));
        assert_eq!(p.levels()[2].timeout, DEFAULT_ACK_TIMEOUT);
        assert_eq!(p.throttle().per_destination.len(), 3);
        assert_eq!(p.throttle().over_limit, OverLimit::Digest);
        assert_eq!(p.suppress_repeats(), Some(DEFAULT_SUPPRESS_REPEATS));
        let ben: PhoneNumber = "+18583354807".parse().unwrap();
        assert_eq!(p.name_of(ben), Some("ben"));
        assert_eq!(p.zone_for(1, ben).name(), "America/Denver");
        assert_eq!(p.zone_for(0, ben).name(), "America/Los_Angeles");
        assert_eq!(
            p.hours(1).unwrap().windows[0].to_string(),
            "mon-fri,sun 19:00-07:00"
        );
        assert!(p.hours(2).is_none());
        // The snapshot round-trips through JSON (stores persist it).
        let json = serde_json::to_string(&p).unwrap();
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn syntax_errors_name_the_line_and_key() {
        let e = err("repeat = 1\n[[levels]]\ntargets = [\"+16195550101\"\ntimeout = \"5m\"\n");
        assert_eq!(e.line, 4, "{e}");
        let e = err("repeat = 1\nrepeat = 2\n[[levels]]\ntargets = [\"+16195550101\"]\n");
        assert_eq!((e.line, e.field.as_str()), (2, "repeat"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_line_and_field() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "time_zone = \"Mars/Base\"\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                1,
                "time_zone",
            ),
            (
                "[[levels]]\ntargets = [\"+16195550101\"]\n\n[[levels]]\ntargets = []\n",
                5,
                "levels[1].targets",
            ),
            (
                "[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"0s\"\n",
                3,
                "levels[0].timeout",
            ),
            (
                "[[levels]]\ntargets = [\"bob\"]\n",
                2,
                "levels[0].targets[0]",
            ),
            (
                "[[levels]]\ntargets = [\"+16195550101\"]\nwindows = [\"mon-fri 07:00-25:00\"]\n",
                3,
                "levels[0].windows[0]",
            ),
            (
                "[[levels]]\ntargets = [\"+16195550101\"]\nwindows = [{ days = \"funday\", start = \"07:00\", end = \"08:00\" }]\n",
                3,
                "levels[0].windows[0].days",
            ),
            (
                "[[levels]]\ntargets = [\"+16195550101\"]\nwindws = []\n",
                3,
                "levels[0].windws",
            ),
            (
                "when_closed = \"wait\"\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                1,
                "when_closed",
            ),
            (
                "[throttle]\nper_destination = [\"0/1m\"]\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                2,
                "throttle.per_destination[0]",
            ),
            (
                "repeat = 11\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                1,
                "repeat",
            ),
            (
                "label = \"\"\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                1,
                "label",
            ),
            ("time_zone = \"UTC\"\n", 1, "levels"),
            (
                "relay_lines = [\"+16195550101\"]\n[[levels]]\ntargets = [\"+16195550101\"]\n",
                3,
                "levels[0].targets[0]",
            ),
        ];
        for (src, line, field) in cases {
            let e = err(src);
            assert_eq!((e.line, e.field.as_str()), (*line, *field), "{src}\n→ {e}");
        }
    }
}
