//! The driver: the one place that loops over the ports.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt as _};

use crate::dispatch::{Dispatch, InputError, JobItem};
use crate::event::{Effect, OutboundMessage};
use crate::input::{DashboardAction, DeliveryReport, InboundText, Input, RouteReason, SkipReason};
use crate::jobs::Jobs;
use crate::policy::Policy;
use crate::ports::{Clock, EventSink, InboundLookup, NullSink, SmsProvider, Store, StoreError};
use crate::safety::{
    Admission, Keyword, MemoryOptOuts, MemoryRateLimiter, OptOuts, RateKey, RateLimiter,
};
use crate::status::DispatchStatus;
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp, splitmix};
use crate::wake::{DeadlineWatch, Timers};

/// How many times a transition is re-run after a version conflict.
pub(crate) const MAX_CONFLICT_RETRIES: usize = 16;

/// How many tags a new dispatch tries (short ones first) before it takes
/// the last and lets the store's uniqueness rule decide.
const TAG_CANDIDATES: usize = 32;

/// Later than any deadline: the due query up to it finds the earliest.
const FAR_FUTURE: Timestamp = Timestamp::from_millis(253_402_300_799_000); // 9999-12-31

/// How many due dispatches a sweep handles at once by default.
pub const DEFAULT_SWEEP_CONCURRENCY: usize = 16;

/// How many sends one input may cause before the rest are left to the
/// outbox (a bound against runaway loops).
pub(crate) const MAX_SENDS_PER_INPUT: usize = 64;

/// What an input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A customer's text opened a new dispatch.
    Opened(DispatchId),
    /// The input changed the dispatch.
    Applied(DispatchId),
    /// Nothing to do: a duplicate webhook or callback, an early timeout.
    Unchanged(DispatchId),
    /// An opt-out or opt-in keyword (`STOP`, `START`): recorded for the
    /// number, and passed to its open dispatches (the first one touched, if
    /// any). It is not forwarded as a text.
    Keyword {
        /// Who texted it.
        from: PhoneNumber,
        /// Which.
        keyword: Keyword,
        /// The first open dispatch it changed.
        dispatch: Option<DispatchId>,
    },
}

impl Outcome {
    /// The dispatch it concerned; for a [`Outcome::Keyword`] that changed
    /// no dispatch, the nil id (see [`Outcome::dispatch_id`]).
    pub fn dispatch(self) -> DispatchId {
        self.dispatch_id().unwrap_or(DispatchId::from_u128(0))
    }

    /// The dispatch it concerned, if any.
    pub fn dispatch_id(self) -> Option<DispatchId> {
        match self {
            Outcome::Opened(d) | Outcome::Applied(d) | Outcome::Unchanged(d) => Some(d),
            Outcome::Keyword { dispatch, .. } => dispatch,
        }
    }
}

/// Why the driver refused or failed an input. A refused input changed
/// nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The text was sent to a number that is not a configured business line.
    #[error("{0} is not a business line of this relay")]
    UnknownLine(PhoneNumber),
    /// A text from a business line (a loop).
    #[error("text from business line {0} ignored (loop)")]
    Loop(PhoneNumber),
    /// No dispatch matches.
    #[error("no dispatch {0}")]
    NotFound(String),
    /// A dispatcher's text matched no open dispatch.
    #[error("no open dispatch for {from}{}", tag.map(|t| format!(" with tag #{t}")).unwrap_or_default())]
    NoOpenDispatch {
        /// The dispatcher.
        from: PhoneNumber,
        /// The tag they named, if any.
        tag: Option<Tag>,
    },
    /// A status callback for a message the relay did not send.
    #[error("no dispatch sent message {0}")]
    UnknownMessage(ProviderMessageId),
    /// The state machine refused the input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many concurrent writers on one dispatch.
    #[error("dispatch {0} is contended: gave up after {MAX_CONFLICT_RETRIES} conflicts")]
    Contended(DispatchId),
    /// Too many concurrent texts racing to open a dispatch for one customer.
    #[error(
        "opening a dispatch for {0} is contended: gave up after {MAX_CONFLICT_RETRIES} conflicts"
    )]
    ContendedOpen(PhoneNumber),
}

impl RelayError {
    /// Whether the input was refused for what it says or names (not a
    /// business line, a loop, no such dispatch or message, a state that
    /// does not take it): no retry of the same input can succeed, unlike
    /// a store's failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RelayError::UnknownLine(_)
                | RelayError::Loop(_)
                | RelayError::NotFound(_)
                | RelayError::NoOpenDispatch { .. }
                | RelayError::UnknownMessage(_)
                | RelayError::Input(_)
        )
    }

    /// Whether trying the same input again later may succeed (the store was
    /// busy or unreachable, or writers collided).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RelayError::Contended(_)
                | RelayError::ContendedOpen(_)
                | RelayError::Store(StoreError::Backend {
                    retryable: true,
                    ..
                })
        )
    }
}

/// What one transition did ([`Relay::transition`], or opening a dispatch).
struct Step {
    /// What the input did.
    outcome: Outcome,
    /// What to carry out (nothing when unchanged).
    effects: Vec<Effect>,
    /// The dispatch's policy snapshot (for the checks before each send).
    policy: Arc<Policy>,
    /// The dispatch as saved, when it was.
    saved: Option<Dispatch>,
}

/// An input taken and saved, with what follows the save (its sends, their
/// outcomes, its events, the inline job sync) not yet carried out: see
/// [`Relay::inbound_durable`]. [`Relay::finish`] carries it out. Dropped
/// unfinished, its sends are left in the dispatch's outbox, which the
/// sweep sends once [`crate::OUTBOX_GRACE`] has passed.
#[must_use = "finish it (Relay::finish), or its sends wait for the sweep"]
pub struct Taken {
    outcome: Outcome,
    rest: Option<(DispatchId, Step)>,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taken")
            .field("outcome", &self.outcome)
            .field("to_finish", &self.rest.is_some())
            .finish()
    }
}

impl From<Outcome> for Taken {
    /// An input carried out whole: nothing left to finish.
    fn from(outcome: Outcome) -> Self {
        Self::done(outcome)
    }
}

impl Taken {
    /// Nothing left to do.
    fn done(outcome: Outcome) -> Self {
        Self {
            outcome,
            rest: None,
        }
    }

    /// What the input did (already durable).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Whether nothing is left to carry out.
    pub fn is_done(&self) -> bool {
        self.rest.is_none()
    }
}

/// Where a transition's input comes from.
enum Source<'a> {
    /// An input known up front (cloned for each attempt).
    Input(&'a Input),
    /// The job sync: the calls the dispatch owes are made against the copy
    /// loaded, and what the job system took is the input.
    JobSync(&'a mut JobCalls),
}

/// A job sync's calls that succeeded, kept across conflict retries so a
/// reload does not ask the job system twice.
struct JobCalls {
    jobs: Arc<dyn Jobs>,
    /// The idempotency keys recorded in this sync.
    done: HashSet<String>,
    /// What `resolve` answered, once it did.
    answer: Option<Option<JobId>>,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Dispatches whose due work was handled.
    pub fired: usize,
    /// Dispatches that were due but had nothing to do by the time they
    /// were loaded (another sweeper or input got there first).
    pub unchanged: usize,
    /// Dispatches whose handling failed, with the error.
    pub errors: Vec<(DispatchId, RelayError)>,
    /// The due query itself failed (the sweep stopped there).
    pub query_error: Option<StoreError>,
    /// How late each fired deadline was handled: the clock when its
    /// handling began minus the deadline (one entry per dispatch in
    /// `fired`).
    pub lateness: Vec<std::time::Duration>,
}

impl SweepReport {
    /// Whether anything failed.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.query_error.is_none()
    }
}

/// The relay: routes inputs to dispatches, saves transitions with
/// optimistic concurrency, sends through the outbox, fires deadlines.
///
/// Generic over its ports so a binary wires concrete adapters once; every
/// port may also be a trait object (`Relay<dyn Store, dyn SmsProvider,
/// dyn Clock>`).
///
/// # Run loop
///
/// For every input: load → [`Dispatch::handle`] → save with the expected
/// version (on conflict: reload and re-run, at most
/// 16 times) → publish events → send (each send's
/// outcome is fed back as another input). Call [`Relay::sweep`] when the
/// earliest deadline comes ([`Relay::next_deadline`]; a save that sets an
/// earlier one wakes a sleeping sweeper through [`Relay::deadline_watch`]),
/// and now and then as a safety net: it fires every due deadline and
/// finishes sends left pending by a crash. Where no process can sleep (a
/// scheduler, Lambda), a [`Timers`] port is told of every new deadline and
/// [`Relay::fire`] fires one dispatch when its timer comes.
///
/// # Safety checks before every send (B8)
///
/// Just before a text goes to the provider the driver checks, in order:
/// that it is not to one of the relay's own lines (a loop); that its
/// recipient has not opted out ([`OptOuts`]); that the dispatch's policy's
/// rate limits allow it ([`RateLimiter`]). A refused text is fed back as
/// [`Input::SendBlocked`] or [`Input::SendDeferred`], so it is recorded on
/// the dispatch, never silently lost. Texts of `STOP` / `START` update
/// [`OptOuts`] and the sender's open dispatches; a send that fails with an
/// opt-out error ([`crate::ErrorClass::OptedOut`]) does too.
pub struct Relay<S: ?Sized, P: ?Sized, C: ?Sized> {
    store: Arc<S>,
    provider: Arc<P>,
    clock: Arc<C>,
    sink: Arc<dyn EventSink>,
    opt_outs: Arc<dyn OptOuts>,
    limiter: Arc<dyn RateLimiter>,
    jobs: Option<Arc<dyn Jobs>>,
    lines: HashMap<PhoneNumber, Arc<Policy>>,
    /// A line's numbers on its other carriers → the line.
    aliases: HashMap<PhoneNumber, PhoneNumber>,
    rng: Mutex<u64>,
    watch: Arc<DeadlineWatch>,
    timers: Option<Arc<dyn Timers>>,
    sweep_batch: usize,
    sweep_concurrency: usize,
    job_sync_mode: JobSyncMode,
}

/// When the driver brings the host's job system up to date after an input
/// (see [`Jobs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSyncMode {
    /// Right after the input's texts are sent, before the call returns:
    /// the job's log is up to date when a webhook is answered. A slow job
    /// system makes the answer slower (never the texts). Right for Lambda,
    /// which freezes a function between invocations.
    #[default]
    Inline,
    /// Not in the call: the host calls [`Relay::sync_job`] off the request
    /// path (the axum router spawns it after answering); the sweep catches
    /// up with anything a crash left.
    Background,
}

/// Builds a [`Relay`].
pub struct RelayBuilder<S: ?Sized, P: ?Sized, C: ?Sized> {
    relay: Relay<S, P, C>,
}

impl<S, P, C> Relay<S, P, C>
where
    S: Store + ?Sized,
    P: SmsProvider + ?Sized,
    C: Clock + ?Sized,
{
    /// Starts building a relay over these ports. Add at least one business
    /// line with [`RelayBuilder::line`].
    pub fn builder(store: Arc<S>, provider: Arc<P>, clock: Arc<C>) -> RelayBuilder<S, P, C> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        RelayBuilder {
            relay: Relay {
                store,
                provider,
                clock,
                sink: Arc::new(NullSink),
                opt_outs: Arc::new(MemoryOptOuts::new()),
                limiter: Arc::new(MemoryRateLimiter::new()),
                jobs: None,
                lines: HashMap::new(),
                aliases: HashMap::new(),
                rng: Mutex::new(seed),
                watch: Arc::new(DeadlineWatch::new()),
                timers: None,
                sweep_batch: 256,
                sweep_concurrency: DEFAULT_SWEEP_CONCURRENCY,
                job_sync_mode: JobSyncMode::Inline,
            },
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<C> {
        &self.clock
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<P> {
        &self.provider
    }

    /// The policy of a business line.
    pub fn policy(&self, line: PhoneNumber) -> Option<&Arc<Policy>> {
        self.lines.get(&line)
    }

    /// The configured business lines.
    pub fn lines(&self) -> impl Iterator<Item = PhoneNumber> + '_ {
        self.lines.keys().copied()
    }

    /// Who opted out.
    pub fn opt_outs(&self) -> &Arc<dyn OptOuts> {
        &self.opt_outs
    }

    /// The host's job system, if one is wired in.
    pub fn jobs(&self) -> Option<&Arc<dyn Jobs>> {
        self.jobs.as_ref()
    }

    /// When the job system is synced after an input.
    pub fn job_sync_mode(&self) -> JobSyncMode {
        self.job_sync_mode
    }

    /// What a sweeper sleeps on: woken when a save sets a deadline earlier
    /// than the one it sleeps until (see [`DeadlineWatch`] for the call
    /// order).
    pub fn deadline_watch(&self) -> &Arc<DeadlineWatch> {
        &self.watch
    }

    /// The earliest deadline in the store (due or not), if any: when the
    /// next sweep has work. One due query of one entry.
    pub async fn next_deadline(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .store
            .due(FAR_FUTURE, 1)
            .await?
            .first()
            .map(|d| d.deadline))
    }

    /// Fires one dispatch's due work now, as a sweep would (a timer of the
    /// host's [`Timers`] came due). A dispatch whose deadline moved on, or
    /// is not due yet, is left unchanged ([`Outcome::Unchanged`]), so a
    /// timer that is early, stale or repeated does nothing.
    pub async fn fire(&self, id: DispatchId) -> Result<Outcome, RelayError> {
        self.apply(id, None, None, Input::Timeout).await
    }

    /// A text to a business line: an opt-out or opt-in keyword (see
    /// [`Relay::keyword`]); a dispatcher's if the sender is a target of the
    /// line's policy or was texted about an open dispatch; else a
    /// customer's.
    pub async fn inbound(&self, text: InboundText) -> Result<Outcome, RelayError> {
        let taken = self.inbound_durable(text).await?;
        Ok(self.finish(taken).await)
    }

    /// [`Relay::inbound`] up to the save: returns once the text's
    /// transition (the dispatch with its pending sends, the outbox) is
    /// durable, leaving the sends for [`Relay::finish`]. A server answers
    /// the webhook then and finishes in the background; a crash in between
    /// is what the outbox covers. A keyword text is carried out whole.
    pub async fn inbound_durable(&self, text: InboundText) -> Result<Taken, RelayError> {
        let text = self.to_line(text);
        let policy = self.line_policy(&text)?;
        match Keyword::parse(&text.body) {
            Some(Keyword::OptOut) => {
                return self.keyword(text, Keyword::OptOut).await.map(Taken::done);
            }
            Some(Keyword::OptIn) if self.is_opted_out(text.from).await => {
                return self.keyword(text, Keyword::OptIn).await.map(Taken::done);
            }
            _ => {}
        }
        if policy.is_target(text.from) {
            return self.dispatcher_text_after(text, None).await;
        }
        // One store call: dispatcher? repeated? an open dispatch to join?
        let found = self
            .store
            .inbound_lookup(text.to, text.from, &text.sid)
            .await?;
        if found.notified {
            self.dispatcher_text_after(text, Some(found)).await
        } else {
            self.customer_text_after(text, Some(found)).await
        }
    }

    /// An opt-out (`STOP`) or opt-in (`START`) text (behaviour B8). It is
    /// recorded in [`OptOuts`] and passed to the sender's open dispatches on
    /// the line, as customer or as dispatcher, but never forwarded as a
    /// text: after `STOP` nothing is sent to the number until `START`. A
    /// customer's `STOP` tells whoever holds their dispatch that replies
    /// will not reach them; a dispatcher's `STOP` escalates the dispatches
    /// that were waiting on them alone. Twilio answers the keyword itself.
    pub async fn keyword(
        &self,
        text: InboundText,
        keyword: Keyword,
    ) -> Result<Outcome, RelayError> {
        let text = self.to_line(text);
        self.line_policy(&text)?;
        let from = text.from;
        let now = self.clock.now();
        if keyword != Keyword::Help {
            match self.opt_outs.keyword_taken(&text.sid).await {
                Ok(true) => {
                    // A replay or a retry of a keyword already applied: a
                    // captured STOP replayed after a START changes nothing.
                    tracing::info!(number = %from, sid = %text.sid, "keyword text already taken");
                    return Ok(Outcome::Keyword {
                        from,
                        keyword,
                        dispatch: None,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    // Applying it again is harmless (the same keyword twice
                    // is the same state); losing it is not.
                    tracing::warn!(error = %e, "could not check whether a keyword text was taken");
                }
            }
        }
        let (recorded, input) = match keyword {
            Keyword::OptOut => (self.opt_outs.opt_out(from, now).await, Input::OptOut(from)),
            Keyword::OptIn => (self.opt_outs.opt_in(from).await, Input::OptIn(from)),
            Keyword::Help => {
                return Ok(Outcome::Keyword {
                    from,
                    keyword,
                    dispatch: None,
                });
            }
        };
        let recorded_ok = recorded.is_ok();
        if let Err(e) = recorded {
            // Twilio keeps its own opt-out list; the dispatches below still
            // learn it. Retrying the webhook is the caller's choice.
            tracing::error!(number = %from, error = %e, "could not record an opt-out keyword");
        }
        // Its open dispatches, as customer and as dispatcher: each starts
        // from the copy found.
        let mut found: Vec<Dispatch> = Vec::new();
        if let Some(d) = self.store.open_for_customer(text.to, from).await? {
            found.push(d);
        }
        for d in self.store.open_for_dispatcher(from, 64).await? {
            if d.line() == text.to && !found.iter().any(|f| f.id() == d.id()) {
                found.push(d);
            }
        }
        let mut first = None;
        for d in found {
            match self.apply(d.id(), Some(d), None, input.clone()).await {
                Ok(Outcome::Applied(id)) => {
                    first.get_or_insert(id);
                }
                Ok(_) | Err(RelayError::Input(InputError::NotOpen(_))) => {}
                Err(e) => return Err(e),
            }
        }
        // Taken only once it is recorded everywhere: a retry of a try that
        // failed part way runs again.
        if recorded_ok && let Err(e) = self.opt_outs.take_keyword(&text.sid, now).await {
            tracing::warn!(error = %e, "could not remember a keyword text as taken");
        }
        Ok(Outcome::Keyword {
            from,
            keyword,
            dispatch: first,
        })
    }

    async fn is_opted_out(&self, n: PhoneNumber) -> bool {
        self.opt_outs.is_opted_out(n).await.unwrap_or_else(|e| {
            tracing::warn!(number = %n, error = %e, "opt-out lookup failed");
            false
        })
    }

    /// A customer's text: joins their open dispatch on the line, or opens
    /// one (behaviour B1). The same message id twice does nothing (B2).
    pub async fn customer_text(&self, text: InboundText) -> Result<Outcome, RelayError> {
        let taken = self.customer_text_after(self.to_line(text), None).await?;
        Ok(self.finish(taken).await)
    }

    /// Carries out what follows a durable input ([`Relay::inbound_durable`],
    /// [`Relay::dispatcher_text_durable`]): its events, its sends and their
    /// outcomes, the inline job sync. Returns what the input did.
    pub async fn finish(&self, taken: Taken) -> Outcome {
        match taken.rest {
            Some((id, step)) => self.follow(id, step).await,
            None => taken.outcome,
        }
    }

    /// A transition of dispatch `id` by `input`, saved, its effects not yet
    /// carried out.
    async fn take(
        &self,
        id: DispatchId,
        start: Option<Dispatch>,
        input: Input,
    ) -> Result<Taken, RelayError> {
        let step = self
            .transition(id, start, None, Source::Input(&input))
            .await?;
        Ok(Taken {
            outcome: step.outcome,
            rest: Some((id, step)),
        })
    }

    /// [`Relay::customer_text`], starting from what
    /// [`Store::inbound_lookup`] found if the caller asked already (a
    /// conflict looks again).
    async fn customer_text_after(
        &self,
        text: InboundText,
        mut found: Option<InboundLookup>,
    ) -> Result<Taken, RelayError> {
        let policy = Arc::clone(self.line_policy(&text)?);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (repeated, open) = match found.take() {
                Some(f) => (f.repeated, f.open),
                None => match self.store.by_inbound_sid(&text.sid).await? {
                    Some(d) => (Some(d), None),
                    None => (
                        None,
                        self.store.open_for_customer(text.to, text.from).await?,
                    ),
                },
            };
            if let Some(d) = repeated {
                return Ok(Taken::done(Outcome::Unchanged(d.id())));
            }
            if let Some(d) = open {
                // Joins it, starting from the copy found.
                match self
                    .take(d.id(), Some(d), Input::CustomerText(text.clone()))
                    .await
                {
                    Err(RelayError::Input(InputError::NotOpen(_))) => continue,
                    other => return other,
                }
            }
            let now = self.clock.now();
            let (id, seed) = self.fresh_id(now);
            let tag = self.free_tag(seed).await?;
            let (mut d, mut effects) =
                Dispatch::open(id, tag, Arc::clone(&policy), text.clone(), now)?;
            if self.jobs.is_some() {
                effects.extend(d.handle(now, Input::EnableJobSync)?);
            }
            if self.commit(&mut d, 0, None).await? {
                let step = Step {
                    outcome: Outcome::Opened(id),
                    effects,
                    policy: Arc::clone(&policy),
                    saved: Some(d),
                };
                return Ok(Taken {
                    outcome: step.outcome,
                    rest: Some((id, step)),
                });
            }
        }
        Err(RelayError::ContendedOpen(text.from))
    }

    /// A dispatcher's text, routed by tag, else to their only open dispatch,
    /// else to their most recent one (behaviour B5).
    pub async fn dispatcher_text(&self, text: InboundText) -> Result<Outcome, RelayError> {
        let taken = self.dispatcher_text_durable(text).await?;
        Ok(self.finish(taken).await)
    }

    /// [`Relay::dispatcher_text`] up to the save, as
    /// [`Relay::inbound_durable`].
    pub async fn dispatcher_text_durable(&self, text: InboundText) -> Result<Taken, RelayError> {
        self.dispatcher_text_after(self.to_line(text), None).await
    }

    /// [`Relay::dispatcher_text`], knowing from what
    /// [`Store::inbound_lookup`] found whether the text is a repeat if the
    /// caller asked already. The dispatch it is routed to starts from the
    /// copy the routing lookup found.
    async fn dispatcher_text_after(
        &self,
        text: InboundText,
        found: Option<InboundLookup>,
    ) -> Result<Taken, RelayError> {
        self.line_policy(&text)?;
        let repeated = match found {
            Some(f) => f.repeated,
            None => self.store.by_inbound_sid(&text.sid).await?,
        };
        if let Some(d) = repeated {
            return Ok(Taken::done(Outcome::Unchanged(d.id())));
        }
        let from = text.from;
        let (target, route) = match Tag::strip_prefix(&text.body) {
            Some((tag, _)) => match self.store.open_by_tag(tag).await? {
                Some(d) if d.line() == text.to => (d, RouteReason::Tag),
                _ => {
                    return Err(RelayError::NoOpenDispatch {
                        from,
                        tag: Some(tag),
                    });
                }
            },
            None => {
                let mut open = self
                    .store
                    .open_for_dispatcher(from, 32)
                    .await?
                    .into_iter()
                    .filter(|d| d.line() == text.to);
                match (open.next(), open.next()) {
                    (None, _) => return Err(RelayError::NoOpenDispatch { from, tag: None }),
                    (Some(only), None) => (only, RouteReason::Only),
                    (Some(latest), Some(_)) => (latest, RouteReason::MostRecent),
                }
            }
        };
        let input = Input::DispatcherText { text, route };
        self.take(target.id(), Some(target), input).await
    }

    /// A status callback (behaviours B2, B6).
    pub async fn delivery(&self, report: DeliveryReport) -> Result<Outcome, RelayError> {
        let d = self
            .store
            .by_leg_sid(&report.sid)
            .await?
            .ok_or_else(|| RelayError::UnknownMessage(report.sid.clone()))?;
        self.apply(d.id(), Some(d), None, Input::Delivery(report))
            .await
    }

    /// A status callback whose URL named the dispatch and leg it is about
    /// (the relay's Twilio client puts them there). Unlike
    /// [`Relay::delivery`] it is applied even when the provider's answer to
    /// the send is not recorded yet (a callback can overtake it) or was
    /// lost (a timeout after the request went out): the leg gets its
    /// message id from the callback. A report whose message id belongs to
    /// another leg is refused.
    pub async fn leg_delivery(
        &self,
        report: DeliveryReport,
        dispatch: DispatchId,
        leg: u32,
    ) -> Result<Outcome, RelayError> {
        if let Some(d) = self.store.by_leg_sid(&report.sid).await? {
            if d.id() != dispatch {
                return Err(RelayError::UnknownMessage(report.sid));
            }
            return self
                .apply(d.id(), Some(d), None, Input::Delivery(report))
                .await;
        }
        let sid = report.sid.clone();
        match self
            .apply(dispatch, None, None, Input::LegDelivery { leg, report })
            .await
        {
            Err(RelayError::NotFound(_))
            | Err(RelayError::Input(InputError::UnknownLeg(_) | InputError::UnknownMessage(_))) => {
                Err(RelayError::UnknownMessage(sid))
            }
            other => other,
        }
    }

    /// A dashboard action on a dispatch (behaviour B4).
    pub async fn dashboard(
        &self,
        id: DispatchId,
        action: DashboardAction,
    ) -> Result<Outcome, RelayError> {
        self.apply(id, None, None, Input::Dashboard(action)).await
    }

    /// Links a dispatch to a host job (replacing any earlier link). With a
    /// job system wired in, the whole conversation so far is synced to the
    /// job; without one, the link is recorded for lookups by job.
    pub async fn link_job(&self, id: DispatchId, job: JobId) -> Result<Outcome, RelayError> {
        let sync = self.jobs.is_some();
        self.apply(id, None, None, Input::LinkJob { job, sync })
            .await
    }

    /// The dispatches of a host job, newest first, at most `limit`.
    pub async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, RelayError> {
        Ok(self.store.by_job(job, limit).await?)
    }

    /// The status JSON of `d`, whole: with the entries that moved out of
    /// its record (one more store call, only when some did).
    pub async fn status(&self, d: &Dispatch) -> Result<DispatchStatus, RelayError> {
        if d.history().pages == 0 {
            return Ok(d.status());
        }
        let pages = self.store.history(d.id()).await?;
        Ok(d.status_with(&pages))
    }

    /// Finds a dispatch by id; by a host job id (its most recent dispatch);
    /// by its tag (open dispatches); by a customer's number (their open
    /// dispatch); or by the message id of any inbound text in it.
    pub async fn find(&self, key: &str) -> Result<Option<Dispatch>, RelayError> {
        let key = key.trim();
        if let Ok(id) = key.parse::<DispatchId>()
            && let Some(d) = self.store.get(id).await?
        {
            return Ok(Some(d));
        }
        if let Ok(job) = key.parse::<JobId>()
            && let Some(d) = self.store.by_job(&job, 1).await?.into_iter().next()
        {
            return Ok(Some(d));
        }
        if let Ok(tag) = key.parse::<Tag>()
            && let Some(d) = self.store.open_by_tag(tag).await?
        {
            return Ok(Some(d));
        }
        if let Ok(customer) = key.parse::<PhoneNumber>() {
            for line in self.lines.keys() {
                if let Some(d) = self.store.open_for_customer(*line, customer).await? {
                    return Ok(Some(d));
                }
            }
            return Ok(None);
        }
        if let Ok(sid) = key.parse::<ProviderMessageId>() {
            return Ok(self.store.by_inbound_sid(&sid).await?);
        }
        Ok(None)
    }

    /// Fires everything due now (see [`Relay::sweep_at`]).
    pub async fn sweep(&self) -> SweepReport {
        self.sweep_at(self.clock.now()).await
    }

    /// Fires every deadline due at `now`: level timeouts (B3) and sends
    /// left pending by a crash or waiting for a retry. Each due dispatch is
    /// handled at most once per sweep, so a bug can never spin it.
    pub async fn sweep_at(&self, now: Timestamp) -> SweepReport {
        let mut report = SweepReport::default();
        let mut seen = HashSet::new();
        loop {
            let due = match self.store.due(now, self.sweep_batch).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "sweep: due query failed");
                    report.query_error = Some(e);
                    return report;
                }
            };
            let full = due.len() == self.sweep_batch;
            let fresh: Vec<_> = due.into_iter().filter(|d| seen.insert(d.id)).collect();
            if fresh.is_empty() {
                break;
            }
            // Each dispatch is handled by one future; up to
            // `sweep_concurrency` of them wait on the provider at once.
            let mut handled = stream::iter(fresh)
                .map(|d| async move {
                    let late = self.clock.now().since(d.deadline);
                    // Everything awaited for one dispatch happens in its
                    // own future: the loop below never awaits, so it never
                    // stops the other futures in flight.
                    let result = self.apply(d.id, None, Some(now), Input::Timeout).await;
                    match &result {
                        Ok(Outcome::Unchanged(_)) if self.jobs.is_none() => {
                            // Due only for a job sync, with no job system
                            // wired in any more: stop it coming back.
                            let pause = self.apply(d.id, None, None, Input::PauseJobSync).await;
                            if let Err(e) = pause {
                                tracing::warn!(dispatch = %d.id, error = %e, "could not pause a job sync");
                            }
                        }
                        Ok(_) if self.job_sync_mode == JobSyncMode::Background => {
                            self.sync_job(d.id).await; // inline syncs ran in apply
                        }
                        _ => {}
                    }
                    (d.id, late, result)
                })
                .buffer_unordered(self.sweep_concurrency);
            while let Some((id, late, result)) = handled.next().await {
                match result {
                    Ok(Outcome::Unchanged(_)) => report.unchanged += 1,
                    Ok(_) => {
                        report.fired += 1;
                        report.lateness.push(late);
                    }
                    Err(e) => {
                        tracing::warn!(dispatch = %id, error = %e, "sweep: dispatch failed");
                        report.errors.push((id, e));
                    }
                }
            }
            if !full {
                break;
            }
        }
        report
    }

    // ----- internals ------------------------------------------------------

    /// The business line a number belongs to: itself for a line, the line
    /// for one of a line's numbers on another carrier
    /// ([`Policy::carriers`]); `None` for any other number.
    pub fn line_of(&self, n: PhoneNumber) -> Option<PhoneNumber> {
        if self.lines.contains_key(&n) {
            Some(n)
        } else {
            self.aliases.get(&n).copied()
        }
    }

    /// A text to one of a line's numbers on another carrier is a text to
    /// the line.
    fn to_line(&self, mut text: InboundText) -> InboundText {
        if let Some(&line) = self.aliases.get(&text.to) {
            text.to = line;
        }
        text
    }

    fn line_policy(&self, text: &InboundText) -> Result<&Arc<Policy>, RelayError> {
        if self.line_of(text.from).is_some() {
            return Err(RelayError::Loop(text.from));
        }
        let policy = self
            .lines
            .get(&text.to)
            .ok_or(RelayError::UnknownLine(text.to))?;
        if policy.relay_lines().contains(&text.from) {
            return Err(RelayError::Loop(text.from));
        }
        Ok(policy)
    }

    fn next_random(&self) -> u64 {
        let mut g = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *g = splitmix(*g);
        *g
    }

    fn fresh_id(&self, now: Timestamp) -> (DispatchId, u64) {
        let a = self.next_random();
        let b = self.next_random();
        let id = DispatchId::new(now, (u128::from(a) << 64) | u128::from(b));
        (id, a ^ b.rotate_left(17))
    }

    /// The first free tag among the seed's candidates (short ones first),
    /// asked of the store in one call.
    async fn free_tag(&self, seed: u64) -> Result<Tag, RelayError> {
        let candidates: [Tag; TAG_CANDIDATES] =
            std::array::from_fn(|attempt| Tag::candidate(seed, attempt as u32));
        Ok(self
            .store
            .first_free_tag(&candidates)
            .await?
            // All taken: the store's uniqueness check turns a clash into a
            // retry with a new seed.
            .unwrap_or(candidates[TAG_CANDIDATES - 1]))
    }

    /// One input to one dispatch: [`Relay::transition`], then its effects
    /// and the job sync ([`Relay::follow`]).
    async fn apply(
        &self,
        id: DispatchId,
        start: Option<Dispatch>,
        at: Option<Timestamp>,
        input: Input,
    ) -> Result<Outcome, RelayError> {
        let step = self
            .transition(id, start, at, Source::Input(&input))
            .await?;
        Ok(self.follow(id, step).await)
    }

    /// Brings the host's job system up to date with a dispatch (see
    /// [`crate::Jobs`]): resolve its job once, append every text not yet
    /// appended, record new milestones, save the cursor. A failure is
    /// recorded on the dispatch (status, event) and retried by the sweep;
    /// it never fails anything. Without a job system it does nothing.
    ///
    /// The driver calls it after every input in [`JobSyncMode::Inline`]
    /// (the default) and on every sweep; in [`JobSyncMode::Background`] the
    /// host calls it off the request path (the HTTP router spawns it after
    /// answering).
    pub async fn sync_job(&self, id: DispatchId) {
        self.sync_job_from(id, None).await;
    }

    /// [`Relay::sync_job`], starting from the copy this driver saved last,
    /// if it has one. The calls run inside the one transition loop
    /// ([`Source::JobSync`]); what the job system took is saved as
    /// [`Input::JobSynced`].
    async fn sync_job_from(&self, id: DispatchId, start: Option<Dispatch>) {
        let Some(jobs) = &self.jobs else { return };
        let mut calls = JobCalls {
            jobs: Arc::clone(jobs),
            done: HashSet::new(),
            answer: None,
        };
        match self
            .transition(id, start, None, Source::JobSync(&mut calls))
            .await
        {
            Ok(step) => {
                // Events only: what the job system took sends nothing.
                let mut sends = VecDeque::new();
                self.enqueue(id, &mut sends, step.effects).await;
                debug_assert!(sends.is_empty(), "a job sync sends nothing");
            }
            Err(RelayError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(dispatch = %id, error = %e, "job sync failed; the sweep will retry");
            }
        }
    }

    /// The job system's calls a dispatch owes, made against `d`; the input
    /// that records what they did, or `None` when nothing is owed.
    async fn job_input(&self, d: &Dispatch, calls: &mut JobCalls) -> Option<Input> {
        let owed = d.job_sync().is_none_or(|j| j.retry_at.is_some());
        let work = d.job_work();
        if work.is_empty() && !owed {
            return None;
        }
        let mut failure = None;
        let mut resolved = None;
        if work.resolve {
            let answer = match &calls.answer {
                Some(a) => Ok(a.clone()),
                None => {
                    calls
                        .jobs
                        .resolve(d.line(), d.customer(), d.opened_at())
                        .await
                }
            };
            match answer {
                Ok(job) => {
                    calls.answer = Some(job.clone());
                    resolved = Some(job);
                }
                Err(e) => failure = Some(format!("resolve: {e}")),
            }
        }
        let mut recorded = 0;
        let job = d.job_id().cloned().or_else(|| resolved.clone().flatten());
        if failure.is_none()
            && let Some(job) = job
        {
            for item in d.job_work_after(resolved.as_ref()).items {
                if !calls.done.contains(item.key()) {
                    let r = match &item {
                        JobItem::Message(m) => calls.jobs.append_message(&job, m).await,
                        JobItem::Milestone(m) => calls.jobs.milestone(&job, m).await,
                    };
                    if let Err(e) = r {
                        failure = Some(format!("{}: {e}", item.key()));
                        break;
                    }
                    calls.done.insert(item.key().to_owned());
                }
                recorded += 1;
            }
        }
        if let Some(e) = &failure {
            tracing::warn!(dispatch = %d.id(), error = %e, "job system call failed; the sweep will retry");
        }
        Some(Input::JobSynced {
            resolved,
            recorded,
            result: failure.map_or(Ok(()), Err),
        })
    }

    /// The one way a dispatch changes: load → [`Dispatch::handle`] → save
    /// with the expected version, re-run on a conflict (at most
    /// [`MAX_CONFLICT_RETRIES`] times). Returns what it did; the caller
    /// carries out the effects ([`Relay::follow`]).
    ///
    /// `start` is a copy of the dispatch the caller has in hand (just found
    /// by a lookup, or saved by this driver): it skips the load. It is
    /// trusted only through the version-checked save: if it is stale the
    /// save conflicts and the loop reloads; if the input does nothing or is
    /// refused on it, the answer comes from a fresh load instead, so a
    /// stale copy never decides anything.
    async fn transition(
        &self,
        id: DispatchId,
        mut start: Option<Dispatch>,
        at: Option<Timestamp>,
        mut source: Source<'_>,
    ) -> Result<Step, RelayError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let cached = start.take().filter(|d| d.id() == id);
            let from_cache = cached.is_some();
            let mut d = match cached {
                Some(d) => d,
                None => self
                    .store
                    .get(id)
                    .await?
                    .ok_or_else(|| RelayError::NotFound(id.to_string()))?,
            };
            let now = at.unwrap_or_else(|| self.clock.now());
            let unchanged = |d: &Dispatch| Step {
                outcome: Outcome::Unchanged(id),
                effects: Vec::new(),
                policy: Arc::clone(d.policy()),
                saved: None,
            };
            let input = match &mut source {
                Source::Input(input) => (*input).clone(),
                // Boxed: the job calls' state stays out of every other
                // transition's future.
                Source::JobSync(calls) => match Box::pin(self.job_input(&d, calls)).await {
                    Some(input) => input,
                    None if from_cache => continue,
                    None => return Ok(unchanged(&d)),
                },
            };
            let expected = d.version();
            let before = d.next_deadline();
            let effects = match d.handle(now, input) {
                Ok(fx) if !fx.is_empty() => fx,
                Ok(_) | Err(_) if from_cache => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => return Ok(unchanged(&d)),
            };
            if self.commit(&mut d, expected, before).await? {
                return Ok(Step {
                    outcome: Outcome::Applied(id),
                    effects,
                    policy: Arc::clone(d.policy()),
                    saved: Some(d),
                });
            }
        }
        Err(RelayError::Contended(id))
    }

    /// Saves a dispatch changed from version `expected` (0: a new one) as
    /// `expected + 1`: `false` on a conflict (reload and re-run). When the
    /// save gave it another deadline than `before`, the sweeper's watch
    /// and the host's timers are told.
    async fn commit(
        &self,
        d: &mut Dispatch,
        expected: u64,
        before: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        d.set_version(expected + 1);
        match self.store.save(d, expected).await {
            Ok(()) => {
                d.pages_saved();
                if let Some(at) = d.next_deadline().filter(|&at| Some(at) != before) {
                    self.watch.saved(at);
                    if let Some(timers) = &self.timers
                        && let Err(e) = timers.scheduled(d.id(), at).await
                    {
                        tracing::warn!(dispatch = %d.id(), error = %e, "could not schedule a timer; the safety-net sweep will fire it");
                    }
                }
                Ok(true)
            }
            Err(e) if e.is_conflict() => {
                tracing::debug!(dispatch = %d.id(), error = %e, "conflict; reloading");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes a transition's events at once, records opt-outs, and
    /// queues its sends.
    async fn enqueue(&self, id: DispatchId, queue: &mut VecDeque<Effect>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Publish(ev) => {
                    if let Err(e) = self.sink.publish(&ev).await {
                        tracing::warn!(dispatch = %id, error = %e, "event sink failed");
                    }
                }
                Effect::OptOut { number, at } => {
                    if let Err(e) = self.opt_outs.opt_out(number, at).await {
                        tracing::error!(dispatch = %id, number = %number, error = %e, "could not record an opt-out");
                    }
                }
                send => queue.push_back(send),
            }
        }
    }

    /// After a saved (or unchanged) transition: publishes its events and
    /// sends its texts, feeding each send's outcome back; then syncs the
    /// job system if it is synced inline. Failures here never undo a saved
    /// transition: a send whose outcome could not be saved stays pending
    /// and the sweep finishes it.
    ///
    /// Each send outcome starts from the copy saved before it (the
    /// transition's, then the previous outcome's) instead of loading the
    /// dispatch again (see [`Relay::transition`]); so does the sync.
    ///
    /// (Not an `async fn`: its future holds the step's parts, not the step
    /// as well, which would copy the saved dispatch into every input's
    /// future twice.)
    fn follow(&self, id: DispatchId, step: Step) -> impl Future<Output = Outcome> + '_ {
        let Step {
            outcome,
            effects,
            policy,
            saved: mut latest,
        } = step;
        async move {
            let mut queue: VecDeque<Effect> = VecDeque::with_capacity(effects.len());
            self.enqueue(id, &mut queue, effects).await;
            let mut sends = 0usize;
            while let Some(effect) = queue.pop_front() {
                match effect {
                    Effect::Publish(_) | Effect::OptOut { .. } => {}
                    Effect::Send(msg) => {
                        sends += 1;
                        if sends > MAX_SENDS_PER_INPUT {
                            tracing::warn!(dispatch = %id, "send budget spent; the outbox will finish");
                            break;
                        }
                        let input = match self.check(&policy, &msg).await {
                            Some(refused) => refused,
                            None => {
                                let result = self.provider.send(&msg).await;
                                if let Err(e) = &result {
                                    tracing::warn!(dispatch = %id, leg = msg.leg, to = %msg.to, error = %e, "send failed");
                                }
                                Input::SendOutcome {
                                    leg: msg.leg,
                                    result,
                                }
                            }
                        };
                        match self
                            .transition(id, latest.take(), None, Source::Input(&input))
                            .await
                        {
                            Ok(step) => {
                                latest = step.saved;
                                self.enqueue(id, &mut queue, step.effects).await;
                            }
                            Err(e) => tracing::error!(
                                dispatch = %id, leg = msg.leg, error = %e,
                                "could not record a send outcome; the sweep will retry the leg"
                            ),
                        }
                    }
                }
            }
            if self.jobs.is_some() && self.job_sync_mode == JobSyncMode::Inline {
                // Boxed: a relay without a job system does not carry the
                // sync's state in every input's future.
                Box::pin(self.sync_job_from(id, latest)).await;
            }
            outcome
        }
    }
}

impl<S, P, C> Relay<S, P, C>
where
    S: Store + ?Sized,
    P: SmsProvider + ?Sized,
    C: Clock + ?Sized,
{
    /// The safety checks before a send: `Some(input)` to feed back instead
    /// of sending. A failing port is logged and lets the text go.
    async fn check(&self, policy: &Policy, msg: &OutboundMessage) -> Option<Input> {
        let leg = msg.leg;
        if self.line_of(msg.to).is_some() || policy.relay_lines().contains(&msg.to) {
            return Some(Input::SendBlocked {
                leg,
                reason: SkipReason::Loop,
            });
        }
        if self.is_opted_out(msg.to).await {
            return Some(Input::SendBlocked {
                leg,
                reason: SkipReason::OptedOut,
            });
        }
        let throttle = policy.throttle();
        if throttle.is_off() {
            return None;
        }
        let mut claims = Vec::with_capacity(2);
        if !throttle.per_destination.is_empty() {
            claims.push((
                RateKey::Destination(msg.to),
                throttle.per_destination.clone(),
            ));
        }
        if !throttle.line.is_empty() {
            claims.push((RateKey::Line(msg.from), throttle.line.clone()));
        }
        match self.limiter.acquire(self.clock.now(), &claims).await {
            Ok(Admission::Admitted) => None,
            Ok(Admission::NotBefore(until)) => Some(Input::SendDeferred { leg, until }),
            Err(e) => {
                tracing::warn!(to = %msg.to, error = %e, "rate limiter failed; sending anyway");
                None
            }
        }
    }
}

impl<S, P, C> RelayBuilder<S, P, C>
where
    S: Store + ?Sized,
    P: SmsProvider + ?Sized,
    C: Clock + ?Sized,
{
    /// Adds a business line and its policy. The line's numbers on other
    /// carriers ([`Policy::carriers`]) are the line's too: texts to them
    /// are texts to the line. (A number that is already another line's
    /// stays that line's; the wiring checks for such clashes.)
    pub fn line(mut self, line: PhoneNumber, policy: Policy) -> Self {
        for c in policy.carriers() {
            if c.number != line && !self.relay.lines.contains_key(&c.number) {
                self.relay.aliases.entry(c.number).or_insert(line);
            }
        }
        self.relay.aliases.remove(&line);
        self.relay.lines.insert(line, Arc::new(policy));
        self
    }

    /// Where events go (default: nowhere).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.relay.sink = sink;
        self
    }

    /// Where opt-outs are kept (default: in memory, lost on restart; use a
    /// durable one in production).
    pub fn opt_outs(mut self, opt_outs: Arc<dyn OptOuts>) -> Self {
        self.relay.opt_outs = opt_outs;
        self
    }

    /// The host's job system (default: none). With one, every dispatch is
    /// linked to a job, its texts are appended to the job's message log and
    /// its milestones recorded (see [`Jobs`]).
    pub fn jobs(mut self, jobs: Arc<dyn Jobs>) -> Self {
        self.relay.jobs = Some(jobs);
        self
    }

    /// When the job system is synced after an input (default
    /// [`JobSyncMode::Inline`]).
    pub fn job_sync_mode(mut self, mode: JobSyncMode) -> Self {
        self.relay.job_sync_mode = mode;
        self
    }

    /// The host's timer service, told of every new deadline (default:
    /// none; a server's sweeper sleeps on [`Relay::deadline_watch`]
    /// instead).
    pub fn timers(mut self, timers: Arc<dyn Timers>) -> Self {
        self.relay.timers = Some(timers);
        self
    }

    /// Where rate-limit history is kept (default: in memory, per process).
    pub fn rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.relay.limiter = limiter;
        self
    }

    /// Seeds ids and tags (for reproducible simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.relay.rng = Mutex::new(seed);
        self
    }

    /// How many due dispatches a sweep handles at once (default
    /// [`DEFAULT_SWEEP_CONCURRENCY`]; 1 handles them one after another).
    /// Each dispatch is still handled by one future at a time; this bounds
    /// how many wait on the store and the provider together, so a sweep of
    /// many due dispatches takes the provider's latency times
    /// `due / concurrency`, not times `due`.
    pub fn sweep_concurrency(mut self, n: usize) -> Self {
        self.relay.sweep_concurrency = n.max(1);
        self
    }

    /// How many due dispatches one store query returns during a sweep.
    pub fn sweep_batch(mut self, n: usize) -> Self {
        self.relay.sweep_batch = n.max(1);
        self
    }

    /// The relay.
    pub fn build(self) -> Relay<S, P, C> {
        self.relay
    }
}
