//! The pages, rendered on the server (maud). Every time is a `<time>`
//! with its instant: the script shows it in the viewer's zone; the text
//! the server writes (for a page without scripts) is in the policy's zone,
//! which every page names.

use std::sync::Arc;
use std::time::Duration;

use maud::{DOCTYPE, Markup, html};
use qdn_relay_core::{
    AckVia, Direction, Dispatch, DispatchStatus, EscalationReason, EventKind, HoursZone, Leg,
    Policy, Purpose, RelayEvent, State, Step, ThreadEntry, Timestamp, Zone, first_step,
    first_steps, format_duration,
};

use crate::words::{
    Countdown, actor, countdown, failure, first_words, holder, left, level_name, people, person,
    state_word,
};

/// What every page shares.
pub(crate) struct Frame<'a> {
    /// Where the console is, as the browser sees it (`/console`, or
    /// `/prod/console` behind an API Gateway stage).
    pub(crate) base: &'a str,
    /// The signed-in operator's name and CSRF token.
    pub(crate) session: Option<(&'a str, &'a str)>,
    /// Now, on the relay's clock.
    pub(crate) now: Timestamp,
    /// The policy zone the page's times are named in.
    pub(crate) zone: Option<&'a Zone>,
    /// The dispatch whose events refresh the page (its detail page).
    pub(crate) dispatch: Option<String>,
    /// Whether the page has live parts (it refreshes them).
    pub(crate) live: bool,
    /// Whether the server has an event stream for them (else the page
    /// polls).
    pub(crate) stream: bool,
}

pub(crate) fn page(f: &Frame<'_>, title: &str, body: Markup) -> Markup {
    let base = f.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · QDN relay" }
                link rel="stylesheet" href={ (base) "/console.css" };
                script src={ (base) "/console.js" } defer {}
            }
            body data-now=(f.now.as_millis())
                data-live=[f.live.then_some("1")]
                data-events=[(f.live && f.stream).then(|| format!("{base}/events"))]
                data-dispatch=[f.dispatch.as_deref()] {
                a.skip href="#main" { "Skip to content" }
                header {
                    strong { "QDN relay" }
                    @if let Some((name, csrf)) = f.session {
                        nav aria-label="Console" {
                            a href=(base) { "Dispatches" }
                            a href={ (base) "/on-call" } { "On call" }
                        }
                        form.signout method="post" action={ (base) "/sign-out" } {
                            input type="hidden" name="csrf" value=(csrf);
                            span { (name) " · " }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    (body)
                }
                footer {
                    p {
                        "Times are shown in your time zone"
                        span.viewer-zone {}
                        @if let Some(z) = f.zone {
                            "; the policy's zone is " strong.policy-zone { (z.name()) } "."
                        }
                        @if f.live {
                            " " span #live role="status" { "Updates live." }
                        }
                    }
                }
            }
        }
    }
}

/// A time: the script rewrites it in the viewer's zone.
pub(crate) fn time(zone: Option<&Zone>, t: Timestamp, short: bool) -> Markup {
    let text = match zone {
        Some(z) if short => z.strftime(t, "%H:%M"),
        Some(z) => z.strftime(t, "%a %b %-d %H:%M:%S"),
        None => t.to_string(),
    };
    html! {
        time datetime=(t.to_string()) data-t=(t.as_millis()) data-f=(if short { "hm" } else { "full" }) { (text) }
    }
}

fn countdown_markup(c: &Countdown, now: Timestamp, zone: Option<&Zone>) -> Markup {
    html! {
        @if let Some(at) = c.deadline {
            span.countdown data-deadline=(at.as_millis()) data-label=(c.label) {
                (c.label) " in " (left(now, at))
            }
        } @else if let Some(until) = c.until {
            span.countdown { (c.label) " " (time(zone, until, true)) (c.tail) }
        } @else {
            span.countdown { (c.label) }
        }
    }
}

fn badge(word: &str) -> Markup {
    html! { span class={ "state state-" (word) } { (word) } }
}

// ----- sign-in -----------------------------------------------------------------

pub(crate) fn sign_in(f: &Frame<'_>, error: Option<&str>, enabled: bool) -> Markup {
    let base = f.base;
    page(
        f,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if !enabled {
                p.error role="alert" {
                    "The console is off: the server has no dashboard token (RELAY_DASHBOARD_TOKEN)."
                }
            }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.stack method="post" action={ (base) "/sign-in" } {
                label for="token" { "Dashboard token" }
                input #token type="password" name="token" required autocomplete="current-password" autofocus;
                label for="name" { "Your name (shown on acks and replies)" }
                input #name type="text" name="name" maxlength="64" autocomplete="name" placeholder="console";
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub(crate) fn message(f: &Frame<'_>, title: &str, text: &str) -> Markup {
    page(
        f,
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (text) }
            p { a href=(f.base) { "Back to the dispatches" } }
        },
    )
}

// ----- the list ------------------------------------------------------------------

pub(crate) struct ListView<'a> {
    pub(crate) dispatches: &'a [Dispatch],
    pub(crate) state: Option<&'a str>,
    pub(crate) q: &'a str,
    pub(crate) error: Option<String>,
}

pub(crate) fn list(f: &Frame<'_>, v: &ListView<'_>) -> Markup {
    let base = f.base;
    page(
        f,
        "Dispatches",
        html! {
            h1 { "Dispatches" }
            form.filters method="get" action=(base) role="search" {
                label for="state" { "State" }
                select #state name="state" {
                    option value="" selected[v.state.is_none()] { "all" }
                    @for s in crate::words::STATES {
                        option value=(s) selected[v.state == Some(s)] { (s) }
                    }
                }
                label for="q" { "Search" }
                input #q type="search" name="q" value=(v.q) placeholder="number, tag or job id";
                button type="submit" { "Show" }
            }
            @if let Some(e) = &v.error {
                p.error role="alert" { (e) }
            }
            section #list data-live aria-live="polite" {
                @if v.dispatches.is_empty() {
                    p.empty { "No dispatches." }
                }
                ul.rows {
                    @for d in v.dispatches {
                        (row(f, d))
                    }
                }
            }
        },
    )
}

fn row(f: &Frame<'_>, d: &Dispatch) -> Markup {
    let policy = d.policy();
    let word = state_word(d);
    let zone = Some(policy.time_zone());
    let first = d
        .thread()
        .iter()
        .find(|t| t.direction == Direction::Inbound)
        .map(|t| first_words(&t.body, 60))
        .unwrap_or_default();
    html! {
        li class={ "row row-" (word) } data-dispatch=(d.id()) data-tag=(d.tag()) data-customer=(d.customer()) {
            a href={ (f.base) "/dispatches/" (d.id()) } {
                div.line1 {
                    strong.tag { "#" (d.tag()) }
                    " " span.customer { (d.customer()) }
                    " " (badge(word))
                }
                div.body { (first) }
                div.meta {
                    span { "Level: " (level_name(policy, d.level())) }
                    " · " span { "Holder: " (holder(d, f.now)) }
                }
                div.next { (countdown_markup(&countdown(d), f.now, zone)) }
                div.opened { "Opened " (time(zone, d.opened_at(), false)) }
            }
        }
    }
}

// ----- one dispatch -------------------------------------------------------------

pub(crate) fn detail(
    f: &Frame<'_>,
    d: &Dispatch,
    st: &DispatchStatus,
    done: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let policy = d.policy();
    let zone = Some(policy.time_zone());
    let word = state_word(d);
    let base = f.base;
    let csrf = f.session.map(|(_, c)| c).unwrap_or("");
    let action = |name: &str| format!("{base}/dispatches/{}/{name}", d.id());
    let last = matches!(d.next_step(), Some((_, Step::Fail)));
    html! {
        p { a href=(base) { "← All dispatches" } }
        h1 { "#" (d.tag()) " " span.customer { (d.customer()) } }
        @if let Some(done) = done {
            p.done role="status" { (done) }
        }
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        section #summary data-live {
            dl.summary {
                dt { "State" } dd { (badge(word)) }
                dt { "Next" } dd { (countdown_markup(&countdown(d), f.now, zone)) }
                dt { "Level" } dd { (level_name(policy, d.level())) @if policy.rounds() > 1 { ", round " (d.round() + 1) " of " (policy.rounds()) } }
                dt { "Holder" } dd { (holder(d, f.now)) }
                @if let Some(ack) = d.ack() {
                    dt { "Acknowledged" } dd.ack {
                        "by " (actor(policy, &ack.by)) " " (via(ack.via)) " at " (time(zone, ack.at, false))
                    }
                }
                dt { "Line" } dd { (d.line()) }
                dt { "Opened" } dd { (time(zone, d.opened_at(), false)) }
                @if let Some(job) = d.job_id() {
                    dt { "Job" } dd { (job) }
                }
                @if let Some(js) = &st.job_sync {
                    dt { "Job sync" } dd {
                        @if js.failures > 0 {
                            "failing (" (js.failures) " in a row"
                            @if let Some(e) = &js.last_error { ": " (e) }
                            "); " (js.owed) " to record"
                        } @else if js.owed > 0 {
                            (js.owed) " to record"
                        } @else {
                            "up to date"
                        }
                    }
                }
            }
            @if d.state() != State::Closed && d.state() != State::Failed {
                div.actions {
                    @if d.state() == State::Open {
                        form method="post" action=(action("ack")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" name="do" value="ack" { "Ack" }
                        }
                        form method="post" action=(action("escalate")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" name="do" value="escalate" aria-describedby=[last.then_some("last-level")] { "Escalate now" }
                        }
                    }
                    form method="post" action=(action("close")) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" name="do" value="close" { "Close" }
                    }
                }
                @if last && d.state() == State::Open {
                    p.note #last-level { "Nobody comes after this level: escalating now ends the dispatch as failed." }
                }
            }
        }
        @if d.state().is_open() {
            section.reply {
                form.stack method="post" action=(action("reply")) {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="body" { "Reply to customer (from " (d.line()) ")" }
                    textarea #body name="body" rows="3" required maxlength="1600" {}
                    button type="submit" name="do" value="reply" { "Send reply" }
                }
            }
        }
        section #timeline data-live {
            h2 { "Timeline" }
            @if st.thread_from > 0 || st.legs_from > 0 {
                p.note {
                    (st.thread_from) " earlier texts and " (st.legs_from)
                    " earlier sent texts are in the dispatch's history. "
                    a href=(format!("{base}/dispatches/{}?history=all", d.id())) { "Show the whole timeline" }
                }
            }
            ol.timeline {
                @for item in timeline(st) {
                    (item.render(d, zone))
                }
            }
            @if d.events_dropped() > 0 {
                p.note { (d.events_dropped()) " older events are not kept." }
            }
        }
        section #policy data-live {
            h2 { "Escalation policy (as the dispatch opened)" }
            (policy_table(policy, Some(d)))
        }
    }
}

fn via(v: AckVia) -> &'static str {
    match v {
        AckVia::Reply => "(replied to the customer)",
        AckVia::Command => "(texted a command)",
        AckVia::Dashboard => "(from the console or dashboard)",
    }
}

enum Item<'a> {
    Text(&'a ThreadEntry),
    Leg(
        &'a Leg,
        Vec<(Timestamp, &'static str)>,
        Option<(Option<u32>, Option<qdn_relay_core::ErrorClass>)>,
    ),
    Event(&'a RelayEvent),
}

impl Item<'_> {
    fn at(&self) -> Timestamp {
        match self {
            Item::Text(t) => t.at,
            Item::Leg(l, _, _) => l.created_at,
            Item::Event(e) => e.at,
        }
    }

    fn render(&self, d: &Dispatch, zone: Option<&Zone>) -> Markup {
        let policy = d.policy();
        match self {
            Item::Text(t) => {
                let who = match t.direction {
                    Direction::Inbound if t.from == qdn_relay_core::Actor::Phone(d.customer()) => {
                        "Customer".to_owned()
                    }
                    Direction::Inbound => format!("{} (dispatcher)", actor(policy, &t.from)),
                    Direction::Outbound => format!("Reply by {}", actor(policy, &t.from)),
                };
                let class = if t.direction == Direction::Inbound {
                    "in"
                } else {
                    "out"
                };
                html! {
                    li class={ "text " (class) } {
                        div.when { (time(zone, t.at, false)) }
                        div { strong { (who) } }
                        div.body { (t.body) }
                        @for m in &t.media {
                            div.body { "Media: " (m.url) }
                        }
                    }
                }
            }
            Item::Leg(l, history, fail) => {
                let what = match l.purpose {
                    Purpose::Forward { level, round } => {
                        if round > 0 {
                            format!(
                                "Forward to {} (round {})",
                                level_name(policy, level),
                                round + 1
                            )
                        } else {
                            format!("Forward to {}", level_name(policy, level))
                        }
                    }
                    Purpose::FollowUp => "Follow-up".to_owned(),
                    Purpose::Reply => "Reply to the customer".to_owned(),
                    Purpose::Notice => "Notice".to_owned(),
                };
                let status = l.status.as_str();
                html! {
                    li.leg data-leg=(l.index) {
                        div.when { (time(zone, l.created_at, false)) }
                        div {
                            strong { (what) } " → " (person(policy, l.to))
                            @if policy.name_of(l.to).is_some() { " (" (l.to) ")" }
                            " " span class={ "status status-" (status) } data-status=(status) { (status) }
                        }
                        ol.history {
                            li { "queued " (time(zone, l.created_at, true)) }
                            @for (at, s) in history {
                                li {
                                    (s) " " (time(zone, *at, true))
                                    " (" (delay(at.since(l.created_at))) ")"
                                }
                            }
                        }
                        @if let Some(reason) = l.skipped {
                            div.fail { "Not sent: " (reason.describe()) }
                        }
                        @if let Some((code, class)) = fail {
                            div.fail { (failure(*code, *class)) }
                        }
                        details { summary { "Text" } div.body { (l.body) } }
                    }
                }
            }
            Item::Event(e) => {
                let words = event_words(d, e);
                html! {
                    li.event data-event=(e.kind.name()) {
                        div.when { (time(zone, e.at, false)) }
                        div { (words) }
                    }
                }
            }
        }
    }
}

/// How long after the relay decided to send it: "at once", "after 36m".
fn delay(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        "at once".to_owned()
    } else {
        format!(
            "after {}",
            format_duration(Duration::from_secs(d.as_secs()))
        )
    }
}

/// Everything that happened, in order: texts, each text sent with its
/// status history, and the dispatch's own events (as far as `st` holds
/// them: the record's, or the whole history).
fn timeline(st: &DispatchStatus) -> Vec<Item<'_>> {
    let mut items: Vec<Item<'_>> = Vec::new();
    for t in &st.thread {
        // Replies are shown as the legs that carry them.
        if t.direction == Direction::Inbound {
            items.push(Item::Text(t));
        }
    }
    // Each leg's events, found once.
    let mut by_leg: std::collections::HashMap<u32, Vec<&RelayEvent>> =
        std::collections::HashMap::new();
    for e in &st.events {
        let leg = match &e.kind {
            EventKind::Sent { leg, .. }
            | EventKind::Delivery { leg, .. }
            | EventKind::SendFailed { leg, .. } => *leg,
            _ => continue,
        };
        by_leg.entry(leg).or_default().push(e);
    }
    for l in &st.legs {
        let mut history: Vec<(Timestamp, &'static str)> = Vec::new();
        let mut fail = None;
        for e in by_leg.get(&l.index).into_iter().flatten() {
            match &e.kind {
                EventKind::Sent { leg, .. } if *leg == l.index => {
                    history.push((e.at, "accepted"));
                }
                EventKind::Delivery {
                    leg,
                    status,
                    code,
                    class,
                } if *leg == l.index => {
                    history.push((e.at, status.as_str()));
                    if status.is_failure() {
                        fail = Some((*code, *class));
                    }
                }
                EventKind::SendFailed { leg, code, .. }
                    if *leg == l.index && l.status.is_failure() =>
                {
                    fail = Some((*code, l.error_class));
                }
                _ => {}
            }
        }
        if fail.is_none() && l.status.is_failure() && l.skipped.is_none() {
            fail = Some((l.error_code, l.error_class));
        }
        items.push(Item::Leg(l, history, fail));
    }
    for e in &st.events {
        let shown = matches!(
            e.kind,
            EventKind::Escalated { .. }
                | EventKind::Holding { .. }
                | EventKind::LevelOffDuty { .. }
                | EventKind::LevelSkipped { .. }
                | EventKind::Repeated { .. }
                | EventKind::Exhausted
                | EventKind::Acked { .. }
                | EventKind::Closed { .. }
                | EventKind::Unreachable { .. }
                | EventKind::OptedOut { .. }
                | EventKind::OptedIn { .. }
                | EventKind::Ignored { .. }
                | EventKind::Deferred { .. }
        ) || e.kind.name().starts_with("job");
        if shown {
            items.push(Item::Event(e));
        }
    }
    items.sort_by_key(Item::at);
    items
}

fn event_words(d: &Dispatch, e: &RelayEvent) -> String {
    let policy = d.policy();
    let zone = policy.time_zone();
    match &e.kind {
        EventKind::Escalated {
            from_level,
            reason,
            by,
        } => {
            let why = match reason {
                EscalationReason::Timeout => "nobody acknowledged in time".to_owned(),
                EscalationReason::DeliveryFailed => "every text of the level failed".to_owned(),
                EscalationReason::Pass => "a dispatcher texted PASS".to_owned(),
                EscalationReason::Operator => match by {
                    Some(by) => format!("escalated now by {}", actor(policy, by)),
                    None => "escalated now from the console".to_owned(),
                },
                EscalationReason::NoReachableTarget => "nobody in it could be texted".to_owned(),
            };
            format!("Escalation past {}: {why}", level_name(policy, *from_level))
        }
        EventKind::Holding { level, until, .. } => format!(
            "Holding: nobody on duty until {} ({}), then {}",
            zone.strftime(*until, "%a %H:%M"),
            zone.name(),
            level_name(policy, *level)
        ),
        EventKind::LevelOffDuty { level, .. } => {
            format!("Passed over {}: off duty", level_name(policy, *level))
        }
        EventKind::LevelSkipped { level, .. } => {
            format!("Skipped {}: nobody reachable", level_name(policy, *level))
        }
        EventKind::Repeated { round } => format!("Starting round {} of the chain", round + 1),
        EventKind::Exhausted => "Failed: every level of every round was tried".to_owned(),
        EventKind::Acked { by, .. } => format!("Acknowledged by {}", actor(policy, by)),
        EventKind::Closed { by } => format!("Closed by {}", actor(policy, by)),
        EventKind::Unreachable { number } => {
            format!(
                "{} is never texted again in this dispatch",
                person(policy, *number)
            )
        }
        EventKind::OptedOut { number, .. } => {
            format!(
                "{} opted out: not texted until they text START",
                person(policy, *number)
            )
        }
        EventKind::OptedIn { number } => format!("{} opted back in", person(policy, *number)),
        EventKind::Ignored { reason } => format!("Ignored: {reason}"),
        EventKind::Deferred { leg, until } => format!(
            "Text {leg} held back by a rate limit until {}",
            zone.strftime(*until, "%H:%M:%S")
        ),
        other => format!("Job system: {}", other.name().replace('_', " ")),
    }
}

/// The policy's levels, the current one marked, and what comes next.
pub(crate) fn policy_table(policy: &Policy, d: Option<&Dispatch>) -> Markup {
    let zone = policy.time_zone();
    let current = d.filter(|d| d.state() == State::Open).map(Dispatch::level);
    let next = d.and_then(Dispatch::next_step);
    html! {
        p { "Time zone " strong { (zone.name()) } "; " (policy.rounds()) " round(s); "
            @match policy.when_closed() {
                qdn_relay_core::WhenClosed::Hold => "when nobody is on duty it holds for the next window.",
                _ => "an off-duty level is passed over.",
            }
        }
        ol.levels start="0" {
            @for (i, l) in policy.levels().iter().enumerate() {
                @let here = current == Some(i as u32);
                li class=[here.then_some("current")] aria-current=[here.then_some("step")] {
                    strong { (level_name(policy, i as u32)) }
                    @if here { " " span.now { "← now" } }
                    ": " (people(policy, &l.targets))
                    "; " (format_duration(l.timeout)) " to acknowledge"
                    @if let Some(h) = policy.hours(i) {
                        "; on duty "
                        (h.windows.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                        @match &h.zone {
                            HoursZone::Target => " (each target's zone)",
                            HoursZone::Zone(z) => { " (" (z.name()) ")" }
                            _ => "",
                        }
                    }
                }
            }
        }
        @if let Some((at, step)) = next {
            p.comes-next {
                "Comes next, at " (time(Some(zone), at, true)) ": "
                @match step {
                    Step::Forward { level, to, .. } => { (level_name(policy, level)) " — " (people(policy, &to)) }
                    Step::Hold { level, until, .. } => { "nobody on duty: hold until " (time(Some(zone), until, true)) ", then " (level_name(policy, level)) }
                    Step::Fail => "nobody: the chain is exhausted and the dispatch fails",
                }
            }
        }
    }
}

// ----- on call --------------------------------------------------------------

/// A week from local midnight today: each level's grid of who is on duty
/// each hour, with the hours a text would first reach it marked and the
/// hours it would be held shaded; then the same week in words.
pub(crate) fn on_call(f: &Frame<'_>, policies: &[(String, Arc<Policy>)]) -> Markup {
    page(
        f,
        "On call",
        html! {
            h1 { "On call" }
            @for (line, policy) in policies {
                (on_call_line(f, line, policy))
            }
        },
    )
}

fn on_call_line(f: &Frame<'_>, line: &str, policy: &Arc<Policy>) -> Markup {
    let zone = policy.time_zone();
    let today = zone.strftime(f.now, "%Y-%m-%d");
    let Some(mut midnight) = zone.start_of(&today) else {
        return html! { p.error { "Cannot read the calendar of " (zone.name()) "." } };
    };
    let mut days = Vec::new();
    for _ in 0..7 {
        let next_day = zone.strftime(midnight.plus(Duration::from_secs(26 * 3600)), "%Y-%m-%d");
        let Some(next) = zone.start_of(&next_day) else {
            break;
        };
        days.push((midnight, next));
        midnight = next;
    }
    // Rows are wall-clock hours: on the day the clocks go forward one hour
    // does not happen (its cell says so), on the day they go back one
    // happens twice (its cell shows the first and says so).
    let hour = |d: usize, h: u64| zone.hour_of_day(days[d].0, h as u8);
    // What a text arriving at each hour does first, by the state machine.
    let first: Vec<Vec<Option<Step>>> = (0..days.len())
        .map(|d| {
            (0..24)
                .map(|h| hour(d, h).and_then(|t| first_step(policy, t)))
                .collect()
        })
        .collect();
    let week_end = days.last().map_or(f.now, |d| d.1);
    html! {
        section.line {
            h2 { "Line " (line) }
            p { "Hours in the policy's zone, " strong { (zone.name()) } ". "
                "★ = a text arriving then reaches this level first; "
                span.held-key { "held" } " = nobody on duty, the text waits." }
            @for (i, l) in policy.levels().iter().enumerate() {
                h3 { (level_name(policy, i as u32)) ": " (people(policy, &l.targets)) }
                div.gridwrap {
                    table.grid {
                        caption.sr { "Who in " (level_name(policy, i as u32)) " is on duty each hour" }
                        thead { tr {
                            th scope="col" { "h" }
                            @for (d, _) in &days { th scope="col" { (zone.strftime(*d, "%a")) br; (zone.strftime(*d, "%-d")) } }
                        } }
                        tbody {
                            @for h in 0..24u64 {
                                tr {
                                    th scope="row" { (format!("{h:02}")) }
                                    @for d in 0..days.len() {
                                        @if let Some(t) = hour(d, h) {
                                            @let on: Vec<_> = l.targets.iter().copied().filter(|&n| policy.on_duty(i, n, t)).collect();
                                            @let step = &first[d][h as usize];
                                            @let held = matches!(step, Some(Step::Hold { .. }));
                                            @let here = matches!(step, Some(Step::Forward { level, .. }) if *level as usize == i);
                                            @let cls = match (held, here) { (true, _) => "held", (_, true) => "first", _ => "" };
                                            @let twice = zone.hour_repeats(days[d].0, h as u8);
                                            td class=[(!cls.is_empty()).then_some(cls)] title=[twice.then_some("The clocks go back: this hour happens twice; shown as the first time")] {
                                                @if here { "★ " }
                                                @if held { "held " }
                                                @if on.is_empty() { "—" } @else { (short_names(policy, &on)) }
                                                @if twice { " (twice)" }
                                            }
                                        } @else {
                                            td.gap { "no such hour (clocks go forward)" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "A text arriving… reaches first" }
            ul.stretches {
                @for (a, b, step) in first_steps(policy, f.now, week_end) {
                    li {
                        (zone.strftime(a, "%a %H:%M")) " – " (zone.strftime(b, "%a %H:%M")) ": "
                        @match step {
                            Some(Step::Forward { level, to, .. }) => { (level_name(policy, level)) " — " (people(policy, &to)) }
                            Some(Step::Hold { level, until, .. }) => { "nobody on duty: held until " (zone.strftime(until, "%a %H:%M")) ", then " (level_name(policy, level)) }
                            Some(Step::Fail) => "nobody is ever on duty: the dispatch fails",
                            None => "(cannot preview)",
                        }
                    }
                }
            }
        }
    }
}

fn short_names(policy: &Policy, ns: &[qdn_relay_core::PhoneNumber]) -> String {
    ns.iter()
        .map(|&n| {
            let p = person(policy, n);
            if policy.name_of(n).is_some() {
                p
            } else {
                // A bare number: its last four digits.
                let digits: String = p.chars().rev().take(4).collect();
                format!("…{}", digits.chars().rev().collect::<String>())
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
