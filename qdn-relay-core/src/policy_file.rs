//! The policy file reader; the format is on [`Policy::from_toml`]. The
//! reader checks only what it reads (syntax, types, names, unknown keys);
//! the rules on values (bounds, duplicates, loops) are
//! [`Policy::validate`]'s alone, and the field path of its error
//! ([`PolicyError::field`]) is turned back into a line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::carrier::CarrierNumber;
use crate::policy::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_SUPPRESS_REPEATS, HoursZone, Level, LevelHours, OverLimit, Person,
    Policy, PolicyError, Throttle, WhenClosed, default_label, parse_duration, timeout_in_bounds,
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
    /// Reads a policy file: an escalation policy in TOML, validated on
    /// load. Every error names the line and the field (`line 14:
    /// levels[1].windows[0]: invalid time "25:00"`).
    ///
    /// ```toml
    /// time_zone = "America/Los_Angeles"   # IANA name; default UTC
    /// when_closed = "hold"                # or "skip" (default)
    /// repeat = 1                          # extra rounds through the chain
    /// timeout = "15m"                     # each level's default
    /// suppress_repeats = "10m"            # default 10m; "off" to send repeats
    /// relay_lines = ["+16195550999"]      # other relay numbers: never texted
    ///
    /// [[carriers]]                        # the line's number on each carrier, in order
    /// carrier = "twilio"                  # (default: every carrier, from the line)
    /// number = "+16195550000"             # the business line: the customer sees it
    /// [[carriers]]
    /// carrier = "aws-sms"
    /// number = "+16195550900"             # texts to it are the line's too
    ///
    /// [people]
    /// ana = "+16195550101"
    /// ben = { number = "+18583354807", time_zone = "America/Denver" }
    ///
    /// [throttle]
    /// per_destination = ["1/1m", "5/15m", "11/1h"]
    /// line = ["1/1s"]
    /// over_limit = "digest"               # or "delay" (default), "drop"
    ///
    /// [[levels]]
    /// name = "day dispatcher"
    /// targets = ["ana"]                   # names from [people] or numbers
    /// timeout = "10m"
    /// windows = ["mon-sat 07:00-19:00"]
    ///
    /// [[levels]]
    /// name = "night on-call"
    /// targets = ["ben"]
    /// time_zone = "target"                # each target's own zone
    /// windows = [{ days = "daily", start = "19:00", end = "07:00" }]
    /// ```
    ///
    /// Parsing does no I/O: the caller reads the file.
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
    "carriers",
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

    /// Reads the file into a policy, then checks it once with
    /// [`Policy::validate`]: the reader only reads (types, names, syntax);
    /// every rule on values lives in [`Policy`], and its error's field path
    /// is placed back on the file ([`Reader::place`]).
    fn policy(&self) -> Result<Policy, PolicyFileError> {
        let doc = DeTable::parse(self.src).map_err(|e| self.syntax(&e))?;
        let root = doc.get_ref();
        self.known_keys(root, "", TOP_KEYS)?;

        let label = match root.get("label") {
            Some(v) => self.str(v, "label")?.to_owned(),
            None => default_label(),
        };
        let time_zone = match root.get("time_zone") {
            Some(v) => self.zone(v, "time_zone")?,
            None => Zone::utc(),
        };
        let default_timeout = match root.get("timeout") {
            Some(v) => {
                let d = self.duration(v, "timeout")?;
                if !timeout_in_bounds(d) {
                    // The levels' rule, even where no level inherits it.
                    let e = PolicyError::BadTimeout { level: 0 };
                    return Err(self.err(v.span(), "timeout", e.reason()));
                }
                d
            }
            None => DEFAULT_ACK_TIMEOUT,
        };
        let repeat = match root.get("repeat") {
            Some(v) => u32::try_from(self.int(v, "repeat")?).unwrap_or(u32::MAX),
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
        let suppress_repeats = match root.get("suppress_repeats") {
            None => Some(DEFAULT_SUPPRESS_REPEATS),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(false) => None,
                DeValue::String(s) if s.trim() == "off" => None,
                _ => Some(self.duration(v, "suppress_repeats")?),
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
        // [[carriers]]: the line's number on each carrier, in order
        let mut carriers = Vec::new();
        if let Some(v) = root.get("carriers") {
            for (i, item) in self.array(v, "carriers")?.iter().enumerate() {
                let field = format!("carriers[{i}]");
                let t = self.table(item, &field)?;
                self.known_keys(t, &field, &["carrier", "number"])?;
                let cf = format!("{field}.carrier");
                let carrier = t
                    .get("carrier")
                    .ok_or_else(|| self.err(item.span(), &cf, "required: twilio, aws-sms, ..."))?;
                let nf = format!("{field}.number");
                let number = t.get("number").ok_or_else(|| {
                    self.err(item.span(), &nf, "required: the line's number on it")
                })?;
                carriers.push(CarrierNumber {
                    carrier: self.str(carrier, &cf)?.trim().to_owned(),
                    number: self.number(number, &nf)?,
                });
            }
        }

        // [people]
        let mut names: BTreeMap<String, PhoneNumber> = BTreeMap::new();
        let mut people: BTreeMap<PhoneNumber, Person> = BTreeMap::new();
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
                people.insert(
                    number,
                    Person {
                        name: Some(name),
                        time_zone: zone,
                    },
                );
            }
        }

        // [throttle]
        let mut throttle = Throttle::default();
        if let Some(v) = root.get("throttle") {
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
                        into.push(s.parse().map_err(|e: crate::policy::RateError| {
                            self.err(item.span(), &field, e.to_string())
                        })?);
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

        // [[levels]] (none: the policy's own rule says so)
        let items = match root.get("levels") {
            Some(v) => self.array(v, "levels")?,
            None => &[],
        };
        let mut levels = Vec::with_capacity(items.len());
        let mut hours = Vec::new();
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
                targets.push(match names.get(s.trim()) {
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
                });
            }
            let timeout = match t.get("timeout") {
                Some(v) => self.duration(v, &format!("{field}.timeout"))?,
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
                let mut windows = Vec::new();
                for (j, w) in self.array(v, &wf)?.iter().enumerate() {
                    windows.push(self.window(w, &format!("{wf}[{j}]"))?);
                }
                hours.push(LevelHours {
                    level: u32::try_from(i).unwrap_or(u32::MAX),
                    windows,
                    zone,
                });
            } else if zone != HoursZone::Policy {
                return Err(self.err(
                    item.span(),
                    &format!("{field}.time_zone"),
                    "a time zone without windows does nothing: add windows",
                ));
            }
            levels.push(Level {
                name,
                targets,
                timeout,
            });
        }

        let policy = Policy {
            levels,
            repeat,
            label,
            time_zone,
            hours,
            people,
            when_closed,
            throttle,
            suppress_repeats,
            relay_lines,
            carriers,
        };
        policy.validate().map_err(|e| self.place(&e, root))?;
        Ok(policy)
    }

    /// Places an error of [`Policy::validate`] on the file: the value its
    /// field path names, or the nearest enclosing one that is written.
    fn place(&self, e: &PolicyError, root: &Table<'_>) -> PolicyFileError {
        let field = e.field();
        let mut span = 0..0;
        let mut at: Option<&Value<'_>> = None;
        for segment in field.split('.') {
            let (key, indexes) = segment.split_once('[').unwrap_or((segment, ""));
            let next = match at {
                None => root.get(key),
                Some(v) => v.get_ref().as_table().and_then(|t| t.get(key)),
            };
            let Some(mut v) = next else {
                break;
            };
            span = v.span();
            for index in indexes
                .split('[')
                .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
            {
                match v.get_ref().as_array().and_then(|a| a.get(index)) {
                    Some(item) => {
                        v = item;
                        span = v.span();
                    }
                    None => break,
                }
            }
            at = Some(v);
        }
        self.err(span, &field, e.reason())
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

    #[test]
    fn the_policys_own_rules_are_placed_on_the_file() {
        // (source, line, column, field, message): each rule is checked by
        // `Policy::validate` alone and placed by its field path.
        let one = "[[levels]]\ntargets = [\"+16195550101\"]\n";
        let seventeen = ["\"mon 07:00-08:00\""; 17].join(", ");
        let cases: Vec<(String, usize, usize, &str, String)> = vec![
            (
                "[[levels]]\ntargets = [\"+16195550101\", \"+16195550102\",\n  \"+16195550101\"]\n"
                    .into(),
                3,
                3,
                "levels[0].targets[2]",
                "+16195550101 is listed twice".into(),
            ),
            (
                "[people]\nana = \"+16195550101\"\n[[levels]]\ntargets = [\"ana\", \"+16195550101\"]\n"
                    .into(),
                4,
                19,
                "levels[0].targets[1]",
                "+16195550101 is listed twice".into(),
            ),
            (
                "relay_lines = [\"+16195550101\"]\n[[levels]]\ntargets = \"+16195550101\"\n".into(),
                3,
                11,
                "levels[0].targets[0]",
                "+16195550101 is a relay line (a loop)".into(),
            ),
            (
                format!("{one}timeout = \"8d\"\n"),
                3,
                11,
                "levels[0].timeout",
                "must be between 1s and 7d".into(),
            ),
            (
                format!("timeout = \"0s\"\n{one}timeout = \"5m\"\n"),
                1,
                11,
                "timeout",
                "must be between 1s and 7d".into(),
            ),
            (
                format!("{one}windows = []\n"),
                3,
                11,
                "levels[0].windows",
                "empty: leave windows out for a level that is always on duty".into(),
            ),
            (
                format!("{one}windows = [{seventeen}]\n"),
                3,
                11,
                "levels[0].windows",
                "17 windows; at most 16 are allowed".into(),
            ),
            (
                format!("suppress_repeats = \"2d\"\n{one}"),
                1,
                20,
                "suppress_repeats",
                "must be between 1s and 1d, or off".into(),
            ),
            (
                format!("[throttle]\nline = [\"1/1s\", \"10001/1h\"]\n{one}"),
                2,
                17,
                "throttle.line[1]",
                "10001/1h: the count must be 1 to 10000 and the period 1s to 1d".into(),
            ),
            (
                format!("[throttle]\nline = [{}]\n{one}", ["\"1/1s\""; 9].join(", ")),
                2,
                8,
                "throttle.line",
                "9 limits; at most 8 are allowed".into(),
            ),
            (
                "levels = []\n".into(),
                1,
                10,
                "levels",
                "at least one level is required".into(),
            ),
        ];
        for (src, line, column, field, message) in &cases {
            let e = err(src);
            assert_eq!(
                (e.line, e.column, e.field.as_str(), e.message.as_str()),
                (*line, *column, *field, message.as_str()),
                "{src}\n→ {e}"
            );
        }
    }
}
