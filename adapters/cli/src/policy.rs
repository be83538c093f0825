//! `qdn-relay policy check FILE`: validates a policy file and previews who
//! would be paged when.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use qdn_relay_core::{
    Clock, HoursZone, OverLimit, PhoneNumber, Policy, Step, SystemClock, Timestamp, WhenClosed,
    first_steps, format_duration,
};

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a policy file (errors name the line and the field; exit 1)
    /// and print an on-call preview: each level's on-duty hours, and who a
    /// text arriving at any moment of the range would page first.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The policy file (TOML).
    file: PathBuf,
    /// The first day of the preview, YYYY-MM-DD in the policy's time zone
    /// (default: today).
    #[arg(long)]
    from: Option<String>,
    /// How many days to preview.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=62))]
    days: u32,
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let path = a.file.display().to_string();
    let src = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {path}"))?;
    let policy = Policy::from_toml(&src).map_err(|e| {
        if e.field.is_empty() {
            anyhow!("{path}:{}:{}: {}", e.line, e.column, e.message)
        } else {
            anyhow!("{path}:{}:{}: {}: {}", e.line, e.column, e.field, e.message)
        }
    })?;
    let zone = policy.time_zone().clone();
    let from = match &a.from {
        Some(d) => zone
            .start_of(d)
            .ok_or_else(|| anyhow!("--from: {d:?} is not a date like 2026-11-23"))?,
        None => {
            let today = zone.strftime(SystemClock.now(), "%Y-%m-%d");
            zone.start_of(&today)
                .ok_or_else(|| anyhow!("cannot find today's date in {zone}"))?
        }
    };
    let to = zone
        .start_of(&zone.strftime(
            from.plus(std::time::Duration::from_secs(
                u64::from(a.days) * 86_400 + 7200,
            )),
            "%Y-%m-%d",
        ))
        .unwrap_or(from);
    if to <= from {
        bail!("--days: the range is empty");
    }
    print!("{}", preview(&policy, &path, from, to));
    Ok(())
}

fn who(policy: &Policy, n: PhoneNumber) -> String {
    match policy.name_of(n) {
        Some(name) => format!("{name} ({n})"),
        None => n.to_string(),
    }
}

fn short(policy: &Policy, n: PhoneNumber) -> String {
    policy
        .name_of(n)
        .map_or_else(|| n.to_string(), str::to_owned)
}

fn level_name(policy: &Policy, i: usize) -> String {
    match &policy.levels()[i].name {
        Some(n) => format!("level {i} \"{n}\""),
        None => format!("level {i}"),
    }
}

type Periods = Vec<(Timestamp, Timestamp)>;

/// The line's carriers, in order, and which may reply to the customer.
fn carriers(policy: &Policy) -> String {
    let list = policy.carriers();
    if list.is_empty() {
        return "  carriers: every configured carrier, from the business line\n".to_owned();
    }
    let order: Vec<String> = list.iter().map(ToString::to_string).collect();
    let mut out = format!("  carriers, in order: {}\n", order.join(", then "));
    out.push_str(
        "    a carrier that fails carrier-wide is passed over for the next at once; \
         texts to any of these numbers are the line's\n",
    );
    // The business line is Twilio's number (the wiring checks it is
    // QDN_TWILIO_NUMBER); replies to the customer go only from it.
    let line = list
        .iter()
        .find(|c| c.carrier == "twilio")
        .unwrap_or(&list[0])
        .number;
    let replies: Vec<&str> = list
        .iter()
        .filter(|c| c.number == line)
        .map(|c| c.carrier.as_str())
        .collect();
    out.push_str(&format!(
        "    replies to the customer: from {line} only ({})\n",
        replies.join(", ")
    ));
    out
}

/// The whole report.
pub fn preview(policy: &Policy, path: &str, from: Timestamp, to: Timestamp) -> String {
    let zone = policy.time_zone();
    let mut out = String::new();
    let rates = |r: &[qdn_relay_core::Rate]| -> String {
        if r.is_empty() {
            "none".to_owned()
        } else {
            r.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!("{path}: valid\n"));
    out.push_str(&format!(
        "  time zone {zone}; when a level is off duty: {}; {} round(s); label [{}]\n",
        match policy.when_closed() {
            WhenClosed::Skip => "skip to the next level on duty",
            WhenClosed::Hold => "hold until its next window",
        },
        policy.rounds(),
        policy.label()
    ));
    let t = policy.throttle();
    if t.is_off() {
        out.push_str("  throttle: off\n");
    } else {
        out.push_str(&format!(
            "  throttle: per destination {}; line {}; over the limit: {}\n",
            rates(&t.per_destination),
            rates(&t.line),
            match t.over_limit {
                OverLimit::Delay => "delay",
                OverLimit::Digest => "delay and merge (digest)",
                OverLimit::Drop => "drop (with an event)",
            }
        ));
    }
    match policy.suppress_repeats() {
        Some(d) => out.push_str(&format!(
            "  identical texts to one number within {} are not repeated\n",
            format_duration(d)
        )),
        None => out.push_str("  repeated texts are not suppressed\n"),
    }
    out.push_str(&carriers(policy));
    if !policy.relay_lines().is_empty() {
        let lines: Vec<String> = policy
            .relay_lines()
            .iter()
            .map(ToString::to_string)
            .collect();
        out.push_str(&format!(
            "  never texted (relay lines): {}\n",
            lines.join(", ")
        ));
    }

    let fmt = |t: Timestamp| zone.strftime(t, "%a %m-%d %H:%M");
    out.push_str(&format!(
        "\nOn duty, from {} until {} ({zone}):\n",
        zone.strftime(from, "%a %Y-%m-%d"),
        zone.strftime(to.plus(std::time::Duration::ZERO), "%a %Y-%m-%d"),
    ));
    for (i, l) in policy.levels().iter().enumerate() {
        let targets: Vec<String> = l.targets.iter().map(|&n| who(policy, n)).collect();
        out.push_str(&format!(
            "  {}: {}; {} to acknowledge\n",
            level_name(policy, i),
            targets.join(", "),
            format_duration(l.timeout)
        ));
        let Some(hours) = policy.hours(i) else {
            out.push_str("    always\n");
            continue;
        };
        let windows: Vec<String> = hours.windows.iter().map(ToString::to_string).collect();
        let in_zone = match &hours.zone {
            HoursZone::Policy => zone.to_string(),
            HoursZone::Target => "each target's own zone".to_owned(),
            HoursZone::Zone(z) => z.to_string(),
        };
        out.push_str(&format!(
            "    windows: {} ({in_zone})\n",
            windows.join("; ")
        ));
        // Targets with the same periods share a line.
        let mut groups: Vec<(Periods, Vec<String>)> = Vec::new();
        for &n in &l.targets {
            let periods = policy.on_duty_periods(i, n, from, to);
            match groups.iter_mut().find(|(p, _)| *p == periods) {
                Some((_, names)) => names.push(short(policy, n)),
                None => groups.push((periods, vec![short(policy, n)])),
            }
        }
        for (periods, names) in groups {
            if periods.is_empty() {
                out.push_str(&format!(
                    "    {}: not on duty in this range\n",
                    names.join(", ")
                ));
                continue;
            }
            out.push_str(&format!("    {}:\n", names.join(", ")));
            for (a, b) in periods {
                out.push_str(&format!("      {} – {}\n", fmt(a), fmt(b)));
            }
        }
    }

    out.push_str(&format!(
        "\nA customer's text arriving ... is forwarded first to ({zone}):\n"
    ));
    let shared = Arc::new(policy.clone());
    for (a, b, step) in first_steps(&shared, from, to) {
        let what = step_words(policy, step.as_ref());
        out.push_str(&format!("  {} – {}  {what}\n", fmt(a), fmt(b)));
    }
    out
}

/// What a text arriving in a stretch does first, in words; the step is
/// the state machine's own ([`qdn_relay_core::first_steps`]).
fn step_words(policy: &Policy, step: Option<&Step>) -> String {
    let zone = policy.time_zone();
    let names = |to: &[PhoneNumber]| -> String {
        to.iter()
            .map(|&n| short(policy, n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match step {
        Some(Step::Forward { level, to, .. }) => {
            format!("{}: {}", level_name(policy, *level as usize), names(to))
        }
        Some(Step::Hold { level, until, .. }) => format!(
            "nobody on duty: held until {}, then {}",
            zone.strftime(*until, "%a %m-%d %H:%M"),
            level_name(policy, *level as usize)
        ),
        Some(Step::Fail) => "nobody is ever on duty: the dispatch fails".to_owned(),
        None => "(cannot preview)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use qdn_relay_core::Zone;

    use super::*;

    #[test]
    fn the_example_previews_holds_and_shifts() {
        let src = include_str!("../../../examples/policy.toml");
        let policy = Policy::from_toml(src).expect("valid");
        let zone: Zone = policy.time_zone().clone();
        let from = zone.start_of("2026-11-23").expect("date");
        let to = zone.start_of("2026-11-30").expect("date");
        let text = preview(&policy, "examples/policy.toml", from, to);
        assert!(text.contains("examples/policy.toml: valid"), "{text}");
        assert!(
            text.contains("level 0 \"day dispatcher\": maria (+16195550101), dev (+16195550102)"),
            "{text}"
        );
        assert!(text.contains("Mon 11-23 07:00 – Mon 11-23 19:00"), "{text}");
        assert!(
            text.contains("level 0 \"day dispatcher\": maria, dev"),
            "{text}"
        );
        // sam is on call from 18:00 Denver = 17:00 Los Angeles.
        assert!(text.contains("Mon 11-23 19:00 – "), "{text}");
        assert!(text.contains("level 1 \"night on-call\": sam"), "{text}");
        // Hold mode: Monday 00:00–07:00 sam is on duty (weekend until 00:00
        // Denver = 23:00 LA Sunday; weekday nights from Mon 17:00 LA)...
        assert!(text.contains("held until"), "{text}");
        assert!(
            text.contains("carriers: every configured carrier, from the business line"),
            "{text}"
        );
    }

    #[test]
    fn the_two_carrier_example_shows_its_carriers_in_order() {
        let src = include_str!("../../../examples/two-carriers.toml");
        let policy = Policy::from_toml(src).expect("valid");
        let from = Timestamp::from_millis(1_767_603_600_000);
        let to = from.plus(std::time::Duration::from_secs(86_400));
        let text = preview(&policy, "examples/two-carriers.toml", from, to);
        assert!(
            text.contains("carriers, in order: twilio +16195550000, then aws-sms +16195550900"),
            "{text}"
        );
        assert!(
            text.contains("replies to the customer: from +16195550000 only (twilio)"),
            "{text}"
        );
    }
}
