//! Simulated time: a harness that drives the real [`Relay`] over in-memory
//! adapters and a [`ManualClock`], jumping from deadline to deadline.
//!
//! ```
//! # async fn demo() {
//! use std::time::Duration;
//! use qdn_relay_core::{Policy, testing::Simulation};
//! let primary = "+16195550101".parse().unwrap();
//! let backup = "+18583354807".parse().unwrap();
//! let sim = Simulation::new(
//!     "+16195550000".parse().unwrap(),
//!     Policy::simple(primary, backup, Duration::from_secs(900)).unwrap(),
//! );
//! sim.customer_texts("+16195550100".parse().unwrap(), "Need a dumpster").await.unwrap();
//! sim.advance(Duration::from_secs(15 * 60)).await.unwrap();
//! assert_eq!(sim.provider.accepted_to(backup).len(), 1);
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{MemoryJobs, RecordingProvider, RecordingSink};
use crate::driver::{Outcome, Relay, RelayError};
use crate::event::{EventKind, RelayEvent};
use crate::input::{DeliveryError, DeliveryReport, DeliveryStatus, InboundText};
use crate::memory::MemoryStore;
use crate::policy::Policy;
use crate::ports::{Clock, ManualClock};
use crate::safety::{MemoryOptOuts, MemoryRateLimiter};
use crate::types::{PhoneNumber, ProviderMessageId, Timestamp};

/// The simulated relay's concrete type.
pub type SimRelay = Relay<MemoryStore, RecordingProvider, ManualClock>;

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// More deadlines fired than the bound allows: a livelock.
    #[error("livelock: more than {0} deadline jumps")]
    Livelock(usize),
    /// The relay refused an input.
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// A relay on virtual time. Its parts are public so tests can inspect and
/// script them.
pub struct Simulation {
    /// The virtual clock.
    pub clock: Arc<ManualClock>,
    /// The store.
    pub store: Arc<MemoryStore>,
    /// The provider: records every send, answers from a script.
    pub provider: Arc<RecordingProvider>,
    /// Every event.
    pub sink: Arc<RecordingSink>,
    /// Who opted out.
    pub opt_outs: Arc<MemoryOptOuts>,
    /// Rate-limit history.
    pub limiter: Arc<MemoryRateLimiter>,
    /// The job system (wired in only by [`Simulation::with_jobs`]).
    pub jobs: Arc<MemoryJobs>,
    /// The relay under test.
    pub relay: SimRelay,
    /// The business line.
    pub line: PhoneNumber,
    start: Timestamp,
    max_jumps: usize,
    sids: AtomicU64,
}

/// 2026-01-05T09:00:00Z, a Monday morning: where simulations start.
pub const SIM_START: Timestamp = Timestamp::from_millis(1_767_603_600_000);

impl Simulation {
    /// A relay for `line` with `policy`, at [`SIM_START`], seeded for
    /// reproducible ids and tags.
    pub fn new(line: PhoneNumber, policy: Policy) -> Self {
        Self::build(line, policy, false)
    }

    /// Like [`Simulation::new`], with [`Simulation::jobs`] wired in as the
    /// relay's job system.
    pub fn with_jobs(line: PhoneNumber, policy: Policy) -> Self {
        Self::build(line, policy, true)
    }

    fn build(line: PhoneNumber, policy: Policy, with_jobs: bool) -> Self {
        let clock = Arc::new(ManualClock::new(SIM_START));
        let store = Arc::new(MemoryStore::new());
        let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
        let sink = Arc::new(RecordingSink::new());
        let opt_outs = Arc::new(MemoryOptOuts::new());
        let limiter = Arc::new(MemoryRateLimiter::new());
        let jobs = Arc::new(MemoryJobs::new());
        let mut builder = Relay::builder(store.clone(), provider.clone(), clock.clone())
            .line(line, policy)
            .sink(sink.clone())
            .opt_outs(opt_outs.clone())
            .rate_limiter(limiter.clone())
            .seed(7);
        if with_jobs {
            builder = builder.jobs(jobs.clone());
        }
        let relay = builder.build();
        Self {
            clock,
            store,
            provider,
            sink,
            opt_outs,
            limiter,
            jobs,
            relay,
            line,
            start: SIM_START,
            max_jumps: 10_000,
            sids: AtomicU64::new(0),
        }
    }

    /// Bounds how many deadline jumps one [`Simulation::advance`] may make.
    pub fn with_max_jumps(mut self, n: usize) -> Self {
        self.max_jumps = n;
        self
    }

    /// The virtual time now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A fresh inbound message id (`SMin…`).
    pub fn next_sid(&self) -> ProviderMessageId {
        let n = self.sids.fetch_add(1, Ordering::SeqCst) + 1;
        ProviderMessageId::from_str_unchecked(&format!("SMin{n:030x}"))
    }

    /// A text from `from` to the business line, with a fresh message id.
    pub fn text(&self, from: PhoneNumber, body: &str) -> InboundText {
        InboundText {
            sid: self.next_sid(),
            from,
            to: self.line,
            body: body.to_owned(),
            media: Vec::new(),
        }
    }

    /// A customer texts the business line.
    pub async fn customer_texts(&self, from: PhoneNumber, body: &str) -> Result<Outcome, SimError> {
        Ok(self.relay.inbound(self.text(from, body)).await?)
    }

    /// A dispatcher texts the business line.
    pub async fn dispatcher_texts(
        &self,
        from: PhoneNumber,
        body: &str,
    ) -> Result<Outcome, SimError> {
        Ok(self.relay.inbound(self.text(from, body)).await?)
    }

    /// The provider reports a delivery status for a message it sent.
    pub async fn report(
        &self,
        sid: &ProviderMessageId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    ) -> Result<Outcome, SimError> {
        Ok(self
            .relay
            .delivery(DeliveryReport {
                sid: sid.clone(),
                status,
                error,
            })
            .await?)
    }

    /// Moves virtual time forward by `d`, stopping at every deadline on the
    /// way and sweeping there. Returns how many sweeps fired something.
    pub async fn advance(&self, d: Duration) -> Result<usize, SimError> {
        let target = self.clock.now().plus(d);
        let mut jumps = 0;
        let mut fired = 0;
        while let Some(next) = self.store.next_deadline().filter(|t| *t <= target) {
            jumps += 1;
            if jumps > self.max_jumps {
                return Err(SimError::Livelock(self.max_jumps));
            }
            if next > self.clock.now() {
                self.clock.set(next);
            }
            let report = self.relay.sweep().await;
            if let Some(e) = report.query_error {
                return Err(SimError::Relay(e.into()));
            }
            if let Some((_, e)) = report.errors.into_iter().next() {
                return Err(e.into());
            }
            fired += report.fired;
        }
        self.clock.set(target);
        Ok(fired)
    }

    /// Jumps to the next deadline, if any, and sweeps there.
    pub async fn step(&self) -> Result<Option<Timestamp>, SimError> {
        let Some(next) = self.store.next_deadline() else {
            return Ok(None);
        };
        let d = next.since(self.clock.now());
        self.advance(d).await?;
        Ok(Some(next))
    }

    /// Runs until nothing is due any more (or `horizon` passes).
    pub async fn run_until_idle(&self, horizon: Duration) -> Result<(), SimError> {
        let end = self.clock.now().plus(horizon);
        let mut jumps = 0;
        while let Some(next) = self.store.next_deadline().filter(|t| *t <= end) {
            jumps += 1;
            if jumps > self.max_jumps {
                return Err(SimError::Livelock(self.max_jumps));
            }
            self.advance(next.since(self.clock.now())).await?;
        }
        Ok(())
    }

    /// A readable timeline of everything so far: events and the texts the
    /// provider sent, in order, with the virtual time since the start.
    pub fn timeline(&self) -> String {
        let mut out = String::new();
        let mut lines: Vec<(u64, String)> = self
            .sink
            .events_in_order()
            .into_iter()
            .map(|(seq, ev)| {
                (
                    seq,
                    format!("{}  {}", self.clock_label(ev.at), describe(&ev)),
                )
            })
            .collect();
        for s in self.provider.sent() {
            let at = self.clock_label(s.at.unwrap_or(self.start));
            let (from, to) = (s.message.from, s.message.to);
            let text = match &s.result {
                Ok(_) => format!("{at}  SMS {from} → {to}: {:?}", s.message.body),
                Err(e) => format!("{at}  SMS {from} → {to} FAILED: {e}"),
            };
            lines.push((s.seq, text));
        }
        lines.sort_by_key(|(seq, _)| *seq);
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }

    fn clock_label(&self, t: Timestamp) -> String {
        let s = t.since(self.start).as_secs();
        format!("+{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    }
}

/// One line describing an event.
fn describe(ev: &RelayEvent) -> String {
    let tag = ev.tag;
    match &ev.kind {
        EventKind::Opened { customer, .. } => {
            format!("#{tag} opened: customer {customer} texted the business line")
        }
        EventKind::CustomerText { .. } => format!("#{tag} customer texted again"),
        EventKind::Forwarded { round, level, to } => {
            let to: Vec<String> = to.iter().map(ToString::to_string).collect();
            format!(
                "#{tag} forwarded to level {level} (round {round}): {}",
                to.join(", ")
            )
        }
        EventKind::Escalated {
            from_level,
            reason,
            by,
        } => match by {
            Some(by) => format!("#{tag} escalating past level {from_level}: {reason:?} by {by}"),
            None => format!("#{tag} escalating past level {from_level}: {reason:?}"),
        },
        EventKind::Repeated { round } => format!("#{tag} starting round {round}"),
        EventKind::LevelSkipped { level, .. } => {
            format!("#{tag} level {level} skipped: nobody reachable")
        }
        EventKind::Exhausted => format!("#{tag} FAILED: every level of every round tried"),
        EventKind::Acked { by, .. } => format!("#{tag} acknowledged by {by}"),
        EventKind::DispatcherText {
            from,
            route,
            command,
        } => match command {
            Some(c) => format!("#{tag} {from} sent {c:?} (routed by {route:?})"),
            None => format!("#{tag} {from} replied (routed by {route:?})"),
        },
        EventKind::Replied { by } => format!("#{tag} reply from {by} queued to the customer"),
        EventKind::Sent { leg, sid, via, .. } => match via {
            Some(v) => format!(
                "#{tag} leg {leg} accepted by {} from {} ({sid})",
                v.carrier, v.from
            ),
            None => format!("#{tag} leg {leg} accepted by the provider ({sid})"),
        },
        EventKind::CarrierSkipped { leg, skip } => format!(
            "#{tag} leg {leg}: carrier {} passed over ({:?}{})",
            skip.carrier,
            skip.kind,
            skip.code.map(|c| format!(" {c}")).unwrap_or_default()
        ),
        EventKind::CarriersDown {
            leg,
            kind,
            retry_at,
            ..
        } => {
            format!("#{tag} leg {leg}: every carrier down ({kind:?}); holding, retry at {retry_at}")
        }
        EventKind::CarriersRecovered { leg, .. } => {
            format!("#{tag} leg {leg} sent: a carrier is back")
        }
        EventKind::SendFailed {
            leg,
            kind,
            code,
            will_retry,
            ..
        } => format!(
            "#{tag} leg {leg} send failed ({kind:?}{}){}",
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            if *will_retry { ", will retry" } else { "" }
        ),
        EventKind::Delivery {
            leg, status, code, ..
        } => format!(
            "#{tag} leg {leg} {status}{}",
            code.map(|c| format!(" (error {c})")).unwrap_or_default()
        ),
        EventKind::Unreachable { number } => {
            format!("#{tag} {number} unreachable: not texted again")
        }
        EventKind::Ignored { reason } => format!("#{tag} ignored: {reason}"),
        EventKind::Closed { by } => format!("#{tag} closed by {by}"),
        EventKind::Holding {
            round,
            level,
            until,
        } => format!("#{tag} holding for level {level} (round {round}): on duty at {until}"),
        EventKind::LevelOffDuty {
            level, opens_at, ..
        } => match opens_at {
            Some(t) => format!("#{tag} level {level} passed over: off duty until {t}"),
            None => format!("#{tag} level {level} passed over: never on duty"),
        },
        EventKind::OptedOut { number, code } => match code {
            Some(c) => format!("#{tag} {number} opted out (error {c}): not texted until START"),
            None => format!("#{tag} {number} texted STOP: not texted until START"),
        },
        EventKind::OptedIn { number } => format!("#{tag} {number} opted back in"),
        EventKind::Deferred { leg, until } => {
            format!("#{tag} leg {leg} over the rate limit: sent at {until}")
        }
        EventKind::Skipped {
            leg, to, reason, ..
        } => {
            format!("#{tag} leg {leg} not sent: {to} {}", reason.describe())
        }
        EventKind::Merged { into, legs } => {
            format!("#{tag} legs {legs:?} merged into leg {into} (digest)")
        }
        EventKind::JobLinked { job } => format!("#{tag} linked to job {job}"),
        EventKind::JobSyncFailed {
            error,
            failures,
            retry_at,
        } => {
            format!("#{tag} job system failed ({failures} in a row, retry at {retry_at}): {error}")
        }
        EventKind::JobSyncRecovered { failures } => {
            format!("#{tag} job system caught up after {failures} failed attempts")
        }
        EventKind::JobSyncEnabled => format!("#{tag} kept in sync with the job system"),
        EventKind::JobSynced { recorded } => {
            format!("#{tag} job system took {recorded} texts and milestones")
        }
        EventKind::JobSyncPaused => format!("#{tag} job sync paused: no job system"),
    }
}

impl ProviderMessageId {
    /// For generated ids known to be valid.
    pub(crate) fn from_str_unchecked(s: &str) -> Self {
        s.parse()
            .unwrap_or_else(|_| unreachable!("generated id {s:?} is valid"))
    }
}
