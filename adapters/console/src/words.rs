//! What a dispatch says to a person: its state in a word, who holds it,
//! the countdown to its next step, failures in words. Everything here is
//! read from the dispatch and the state machine's own previews
//! ([`Dispatch::next_step`], [`Dispatch::holders`]); no rule is decided
//! here.

use qdn_relay_core::{Actor, Dispatch, ErrorClass, PhoneNumber, Policy, State, Step, Timestamp};

/// A dispatch's state in one word: `open`, `holding`, `acked`, `failed`,
/// `closed` (the console's filter values).
pub(crate) fn state_word(d: &Dispatch) -> &'static str {
    match d.state() {
        State::Open if d.holding_until().is_some() => "holding",
        State::Open => "open",
        State::Acked => "acked",
        State::Closed => "closed",
        State::Failed => "failed",
    }
}

/// The filter values, in the order the console offers them.
pub(crate) const STATES: [&str; 5] = ["open", "holding", "acked", "failed", "closed"];

/// A level's name: its own, else "primary" / "backup" / "level N".
pub(crate) fn level_name(policy: &Policy, level: u32) -> String {
    match policy
        .levels()
        .get(level as usize)
        .and_then(|l| l.name.clone())
    {
        Some(n) => n,
        None if level == 0 => "primary".to_owned(),
        None if level == 1 => "backup".to_owned(),
        None => format!("level {level}"),
    }
}

/// A person: their name in the policy, else the number.
pub(crate) fn person(policy: &Policy, n: PhoneNumber) -> String {
    policy
        .name_of(n)
        .map_or_else(|| n.to_string(), str::to_owned)
}

/// A list of people.
pub(crate) fn people(policy: &Policy, ns: &[PhoneNumber]) -> String {
    ns.iter()
        .map(|&n| person(policy, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who did something.
pub(crate) fn actor(policy: &Policy, a: &Actor) -> String {
    match a {
        Actor::Phone(p) => person(policy, *p),
        Actor::Operator(o) => format!("{o} (console/dashboard)"),
        Actor::Relay => "the relay".to_owned(),
    }
}

/// Who holds a dispatch at `now`, in words.
pub(crate) fn holder(d: &Dispatch, now: Timestamp) -> String {
    let policy = d.policy();
    if let Some(ack) = d.ack() {
        return actor(policy, &ack.by);
    }
    match d.state() {
        State::Open if d.holding_until().is_some() => "nobody on duty".to_owned(),
        State::Open => {
            let h = d.holders(now);
            if h.is_empty() {
                "nobody reachable".to_owned()
            } else {
                people(policy, &h)
            }
        }
        _ => "nobody".to_owned(),
    }
}

/// The countdown shown for a dispatch: `label`, and when there is a
/// deadline the script shows "`label` in m:ss".
pub(crate) struct Countdown {
    /// The words.
    pub(crate) label: String,
    /// When the step happens (the script counts down to it).
    pub(crate) deadline: Option<Timestamp>,
    /// A time to show after the words instead ("holding until 07:00").
    pub(crate) until: Option<Timestamp>,
    /// After `until`.
    pub(crate) tail: &'static str,
}

impl Countdown {
    fn words(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            deadline: None,
            until: None,
            tail: "",
        }
    }
}

/// What happens next to a dispatch, as its own state machine would do it.
pub(crate) fn countdown(d: &Dispatch) -> Countdown {
    let policy = d.policy();
    match d.state() {
        State::Acked => return Countdown::words("acknowledged: escalation stopped"),
        State::Closed => return Countdown::words("closed"),
        State::Failed => return Countdown::words("failed: nobody acknowledged"),
        State::Open => {}
    }
    if let Some(until) = d.holding_until() {
        return Countdown {
            label: "holding until".to_owned(),
            deadline: None,
            until: Some(until),
            tail: " (nobody on duty)",
        };
    }
    let Some((at, step)) = d.next_step() else {
        return Countdown::words("fully escalated");
    };
    let label = match step {
        Step::Forward { round, level, .. } if round > d.round() => {
            format!("{} (round {})", level_name(policy, level), round + 1)
        }
        Step::Forward { level, .. } => level_name(policy, level),
        Step::Hold { .. } => "nobody on duty: holding".to_owned(),
        Step::Fail => "fully escalated: gives up".to_owned(),
    };
    Countdown {
        label,
        deadline: Some(at),
        until: None,
        tail: "",
    }
}

/// "m:ss" (or "h:mm:ss") from `now` to `at`, as the script writes it.
pub(crate) fn left(now: Timestamp, at: Timestamp) -> String {
    let s = (at.as_millis() - now.as_millis()).max(0) / 1000;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// What a delivery failure means and what the relay does about it:
/// "30006: landline or unreachable carrier — never texted again in this
/// dispatch".
pub(crate) fn failure(code: Option<u32>, class: Option<ErrorClass>) -> String {
    let what = code.map(|c| match qdn_relay_twilio::describe(c) {
        Some(d) => format!("{c}: {d}"),
        None => format!("error {c}"),
    });
    let then = class.map(|c| match c {
        ErrorClass::Unreachable => "never texted again in this dispatch",
        ErrorClass::OptedOut => "opted out: not texted again until they text START",
        ErrorClass::Filtered => "the carrier filtered the text",
        ErrorClass::Config => "the relay's configuration is wrong: an operator must fix it",
        ErrorClass::RetryLater => "may work later",
        _ => "not retried to this number",
    });
    match (what, then) {
        (Some(w), Some(t)) => format!("{w} — {t}"),
        (Some(w), None) => w,
        (None, Some(t)) => t.to_owned(),
        (None, None) => "failed".to_owned(),
    }
}

/// The first words of a text.
pub(crate) fn first_words(body: &str, max: usize) -> String {
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.chars().count() <= max {
        return body;
    }
    let cut: String = body.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(a, _)| a);
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_words() {
        assert_eq!(
            failure(Some(30006), Some(ErrorClass::Unreachable)),
            "30006: landline or unreachable carrier — never texted again in this dispatch"
        );
        assert_eq!(failure(Some(1), None), "error 1");
        assert_eq!(failure(None, None), "failed");
    }

    #[test]
    fn time_left_and_first_words() {
        let now = Timestamp::from_millis(0);
        assert_eq!(left(now, Timestamp::from_millis(252_000)), "4:12");
        assert_eq!(left(now, Timestamp::from_millis(3_723_000)), "1:02:03");
        assert_eq!(left(Timestamp::from_millis(5), now), "0:00");
        assert_eq!(
            first_words("Need  a\n10-yard dumpster", 40),
            "Need a 10-yard dumpster"
        );
        assert_eq!(first_words("Need a 10-yard dumpster Friday", 12), "Need a…");
    }
}
