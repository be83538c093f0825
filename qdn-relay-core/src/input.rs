//! What comes into the relay: texts, delivery reports, send outcomes,
//! dashboard actions and timeouts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::carrier::CarrierSkip;
use crate::ports::SendReceipt;
use crate::types::{JobId, PhoneNumber, ProviderMessageId, Timestamp};

/// The longest body the relay sends (Twilio's limit for one message), as
/// [`body_len`] counts it.
pub const MAX_BODY_CHARS: usize = 1600;

/// A text that reached a business line: from a customer, or from a
/// dispatcher replying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundText {
    /// The provider's id for this text (`MessageSid`); retried webhooks carry
    /// the same one, which is how duplicates are recognised.
    pub sid: ProviderMessageId,
    /// Who sent it.
    pub from: PhoneNumber,
    /// The business line it was sent to.
    pub to: PhoneNumber,
    /// The text. May be empty when the message only carries media.
    pub body: String,
    /// Media attached (MMS), as URLs with their content types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
}

/// One attachment of an inbound MMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Where the provider stores it.
    pub url: String,
    /// Its MIME type, if the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The delivery status of an outbound message. Statuses only move forward:
/// a report of an earlier status after a later one is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Saved in the outbox, not yet accepted by a provider.
    Pending,
    /// The provider's answer was lost (timeout or 5xx after the request went
    /// out): it may or may not have been sent. Never re-sent automatically.
    Unknown,
    /// Accepted or queued by the provider.
    Queued,
    /// Being handed to the carrier.
    Sending,
    /// Handed to the carrier.
    Sent,
    /// The carrier confirmed delivery to the handset.
    Delivered,
    /// The carrier could not deliver it.
    Undelivered,
    /// The provider could not send it, or the relay gave up on it.
    Failed,
    /// Read by the recipient (channels that report it).
    Read,
    /// The relay decided not to send it (the recipient opted out, was off
    /// duty, over a rate limit, ...): [`crate::Leg::skipped`] says why.
    Skipped,
}

impl DeliveryStatus {
    /// Whether this status is final for delivery.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Delivered
                | DeliveryStatus::Undelivered
                | DeliveryStatus::Failed
                | DeliveryStatus::Read
                | DeliveryStatus::Skipped
        )
    }

    /// Whether the message did not reach its recipient.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Undelivered | DeliveryStatus::Failed | DeliveryStatus::Skipped
        )
    }

    /// Progress rank: a report is applied only if it moves this forward.
    /// Every terminal status outranks every non-terminal one; among the
    /// terminal ones only `Delivered → Read` moves (a failed text never
    /// becomes read: see [`DeliveryStatus::is_failure`]).
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Unknown => 1,
            DeliveryStatus::Queued => 2,
            DeliveryStatus::Sending => 3,
            DeliveryStatus::Sent => 4,
            DeliveryStatus::Undelivered
            | DeliveryStatus::Failed
            | DeliveryStatus::Delivered
            | DeliveryStatus::Skipped => 5,
            DeliveryStatus::Read => 6,
        }
    }

    /// The name Twilio and the status JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Unknown => "unknown",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undelivered => "undelivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a provider error code should be treated. Adapters classify their own
/// codes (see `qdn-relay-twilio`); the core only acts on the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// Transient: the same number may work later (Twilio 30003, 20429).
    RetryLater,
    /// This number cannot receive texts from us: never text it again in this
    /// dispatch (Twilio 21211, 21614, 30005, 30006).
    Unreachable,
    /// The recipient opted out of texts from this sender (Twilio 21610:
    /// they texted `STOP`): unreachable in this dispatch, and recorded in
    /// the relay's [`crate::OptOuts`], so no dispatch texts them until
    /// they opt back in.
    OptedOut,
    /// The carrier filtered this content to this recipient.
    Filtered,
    /// The relay's configuration is wrong (credentials, sender): nothing
    /// will work through this carrier until an operator fixes it (Twilio
    /// 20003). Carrier-wide: never makes the recipient unreachable.
    Config,
    /// The carrier itself is the problem, not the recipient: an outage, or
    /// the sending number filtered or unregistered (Twilio 30007, 30034).
    /// Carrier-wide: the same text may go through another carrier, and it
    /// never makes the recipient unreachable.
    Carrier,
    /// A code the adapter does not know: treated like `RetryLater` for
    /// escalation (the next level is tried) but not retried to this number.
    Unknown,
}

impl ErrorClass {
    /// Whether the error is about the carrier (its account, configuration
    /// or sending number), not the recipient: a failed text of this class
    /// is sent again through another of the line's carriers, and the
    /// recipient is never marked unreachable for it.
    pub fn is_carrier_wide(self) -> bool {
        matches!(self, ErrorClass::Config | ErrorClass::Carrier)
    }
}

/// A provider's delivery error: its code and class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// The provider's numeric code (Twilio `ErrorCode`).
    pub code: u32,
    /// How the relay treats it.
    pub class: ErrorClass,
}

/// A status callback for an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The provider's id of the outbound message.
    pub sid: ProviderMessageId,
    /// Its new status.
    pub status: DeliveryStatus,
    /// The error, for `undelivered` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
}

/// Who did something to a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// A dispatcher, by phone.
    Phone(PhoneNumber),
    /// A dashboard user, by the name the dashboard gave.
    Operator(String),
    /// The relay itself.
    Relay,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Phone(p) => write!(f, "{p}"),
            Actor::Operator(o) => write!(f, "operator {o}"),
            Actor::Relay => f.write_str("relay"),
        }
    }
}

/// How a dispatcher's text was matched to its dispatch (behaviour B5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The text named the dispatch's tag (`#K7 on my way`).
    Tag,
    /// The dispatch was the dispatcher's only open one.
    Only,
    /// The dispatcher had several open dispatches and named none: the most
    /// recent was chosen and the dispatcher is told which.
    MostRecent,
}

/// A dispatcher command (a whole text, after an optional tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Acknowledge without texting the customer.
    Ack,
    /// Escalate to the next level now.
    Pass,
    /// Close the dispatch (acknowledging it first if nobody had).
    Done,
}

impl Command {
    /// Reads a command from a dispatcher's text (already stripped of its
    /// tag): `ACK`, `PASS` or `DONE`, in any case, with trailing
    /// punctuation allowed. Anything else is a reply.
    pub fn parse(body: &str) -> Option<Command> {
        let t = body.trim().trim_end_matches(['.', '!']);
        if t.eq_ignore_ascii_case("ack") {
            Some(Command::Ack)
        } else if t.eq_ignore_ascii_case("pass") {
            Some(Command::Pass)
        } else if t.eq_ignore_ascii_case("done") {
            Some(Command::Done)
        } else {
            None
        }
    }
}

/// The class of a failed send, as the provider port reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The provider guarantees nothing was sent and a later try may work
    /// (HTTP 429, Twilio 20429, connection refused). Retried with backoff;
    /// [`crate::Failover`] tries the next provider.
    Retryable,
    /// The request may have gone out (timeout or 5xx after sending). Never
    /// retried blindly: the level's timeout covers it.
    MaybeSent,
    /// This number cannot be texted (invalid, landline).
    Unreachable,
    /// The recipient opted out of texts from this sender (see
    /// [`ErrorClass::OptedOut`]).
    OptedOut,
    /// The content was refused.
    Filtered,
    /// Credentials, account or sender are wrong (Twilio 20003, 21606;
    /// AWS `AccessDenied`, `ResourceNotFound`): an operator must act.
    /// Carrier-wide (see [`SendErrorKind::is_carrier_wide`]).
    Config,
    /// Anything else the provider refused (a 4xx it did not explain).
    Rejected,
    /// The carrier cannot send now and nothing was sent: an outage, 5xx or
    /// timeouts after its own retries before the request was written,
    /// throttling past a bound, its sending number filtered or unregistered
    /// (Twilio 30007, 30034). Carrier-wide: [`crate::Failover`] sends the
    /// same leg through the next carrier at once.
    CarrierDown,
}

impl SendErrorKind {
    /// Whether the error is about the carrier (its account, configuration,
    /// availability or sending number), not about the recipient: another
    /// carrier may send the same text, and the recipient is never marked
    /// unreachable for it. When the relay's last carrier answers so, the
    /// leg waits (with backoff, without a limit on attempts) and the
    /// dispatch holds: see [`crate::Dispatch::carrier_hold`].
    pub fn is_carrier_wide(self) -> bool {
        matches!(self, SendErrorKind::Config | SendErrorKind::CarrierDown)
    }
}

/// A failed send: its kind, the provider's code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?} send error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
pub struct SendError {
    /// How the relay should treat it.
    pub kind: SendErrorKind,
    /// The provider's error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    /// A human-readable message (never containing credentials).
    pub message: String,
    /// When the provider said to retry (HTTP `Retry-After`), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The carriers passed over before this answer (filled by
    /// [`crate::Failover`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<CarrierSkip>,
}

impl SendError {
    /// A send error of `kind` with a message.
    pub fn new(kind: SendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            retry_after_ms: None,
            skipped: Vec::new(),
        }
    }

    /// The same error with a provider code.
    pub fn with_code(mut self, code: u32) -> Self {
        self.code = Some(code);
        self
    }
}

/// A dashboard or host action on one dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DashboardAction {
    /// Acknowledge: stop escalating.
    Ack {
        /// The operator's name.
        by: String,
    },
    /// Text the customer from the business line (and acknowledge).
    Reply {
        /// The operator's name.
        by: String,
        /// The text.
        body: String,
    },
    /// Close the dispatch.
    Close {
        /// The operator's name.
        by: String,
    },
    /// Escalate now: leave the current level for the next one at once, as
    /// if its timeout had passed (the next level is texted, or the next
    /// round, a hold or `failed`, as the policy says). Refused on a
    /// dispatch someone acknowledged ([`crate::InputError::Acknowledged`])
    /// and on a closed or failed one.
    Escalate {
        /// The operator's name.
        by: String,
    },
}

/// One input to [`crate::Dispatch::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A customer's text joins this dispatch.
    CustomerText(InboundText),
    /// A dispatcher's text routed to this dispatch.
    DispatcherText {
        /// The text.
        text: InboundText,
        /// How it was routed here.
        route: RouteReason,
    },
    /// A status callback for one of this dispatch's outbound messages.
    Delivery(DeliveryReport),
    /// A status callback that names its leg (the relay put the dispatch and
    /// leg in the callback URL): it is accepted even before the provider's
    /// answer to the send was recorded, or when that answer was lost (the
    /// leg is then `pending` or `unknown` with no message id yet), and gives
    /// the leg its message id.
    LegDelivery {
        /// The leg the callback URL named.
        leg: u32,
        /// The report.
        report: DeliveryReport,
    },
    /// What the provider answered to a send.
    SendOutcome {
        /// The leg that was sent.
        leg: u32,
        /// The provider's receipt (its id; with [`crate::Failover`], the
        /// carrier and number it went through), or the error.
        result: Result<SendReceipt, SendError>,
    },
    /// A dashboard action.
    Dashboard(DashboardAction),
    /// Time passed: act on whatever is due at `now`. Safe to call early,
    /// late or twice.
    Timeout,
    /// The driver's rate limiter refused a pending leg until `until`: it
    /// stays pending and is sent then (or merged or dropped, by policy).
    SendDeferred {
        /// The leg.
        leg: u32,
        /// When the limits allow it.
        until: Timestamp,
    },
    /// The driver refused to send a pending leg (its recipient opted out,
    /// or it is a relay line): the leg is skipped, never sent.
    SendBlocked {
        /// The leg.
        leg: u32,
        /// Why.
        reason: SkipReason,
    },
    /// A number opted out of texts (it texted `STOP`): it is not texted
    /// again by this dispatch; if it was the current level's last
    /// reachable dispatcher, the dispatch escalates.
    OptOut(PhoneNumber),
    /// A number opted back in (`START`).
    OptIn(PhoneNumber),
    /// Link the dispatch to a job of the host's job system, replacing any
    /// earlier link ([`crate::Relay::link_job`]). With `sync` (the relay
    /// has a [`crate::Jobs`] port) the whole conversation so far is owed to
    /// that job; without, the link is recorded for lookups by job only.
    /// Linking it to the job it already has changes nothing.
    LinkJob {
        /// The job.
        job: JobId,
        /// Whether the conversation is owed to the job's system.
        sync: bool,
    },
    /// Start keeping the host's job system in sync with the dispatch: a
    /// sync is owed from now on (a relay with a [`crate::Jobs`] port opens
    /// every dispatch with it). Changes nothing if it was already on.
    EnableJobSync,
    /// The driver synced the dispatch with the host's job system (see
    /// [`crate::Jobs`]): asked `resolve` if it had to, then made, in order,
    /// the calls the dispatch owed ([`crate::JobSync`] is how far they
    /// got). Applied to the same version the calls were worked out from
    /// (the driver's version-checked save makes sure of it).
    JobSynced {
        /// What `resolve` answered, if it was asked: the job, or none.
        resolved: Option<Option<JobId>>,
        /// How many of the calls owed were recorded, from the first.
        recorded: u32,
        /// `Ok` when every call owed was recorded; else the failure's
        /// message (shown in the status, so without secrets): the sync is
        /// retried with backoff.
        result: Result<(), String>,
    },
    /// No job system is wired in any more: stop retrying the sync owed (it
    /// resumes when a relay with one syncs the dispatch again).
    PauseJobSync,
}

/// Why the relay did not send a text it had queued (behaviours B7, B8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The recipient opted out (texted `STOP`, or a send failed with an
    /// opt-out error); nothing is sent to them until they text `START`.
    OptedOut,
    /// The recipient cannot receive texts (an earlier failure said so).
    Unreachable,
    /// A forward held back or re-sent after its level went off duty.
    OffDuty,
    /// Over a rate limit with the policy's `over_limit = "drop"`.
    OverLimit,
    /// An identical text went to the same number within the policy's
    /// repeat-suppression window (an auto-reply loop).
    Repeat,
    /// Merged into another delayed text to the same number (digest).
    Merged {
        /// The leg that carried it.
        into: u32,
    },
    /// The recipient is a business or relay line (a loop).
    Loop,
    /// Held back by a rate limit until the dispatch had moved on (acked,
    /// closed, or escalated past the step it was for).
    Stale,
}

impl SkipReason {
    /// A phrase for notices and events: "{number} {phrase}".
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::OptedOut => {
                "opted out (texted STOP): nothing reaches them until they text START"
            }
            SkipReason::Unreachable => "cannot receive texts",
            SkipReason::OffDuty => "is off duty",
            SkipReason::OverLimit => "is over the rate limit",
            SkipReason::Repeat => "was sent the same text moments ago (repeat suppressed)",
            SkipReason::Merged { .. } => "gets it merged into another text",
            SkipReason::Loop => "is a relay line (a loop)",
            SkipReason::Stale => "no longer needs it",
        }
    }
}

/// GSM-7's extension characters: one character, two septets.
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// A body's length as Twilio's 1,600-character limit may count it, taken
/// conservatively: UTF-16 code units (an emoji outside the Basic
/// Multilingual Plane is two), with GSM-7's extension characters (`^ { } \
/// [ ~ ] | €`, form feed), which take two septets, counted twice too.
///
/// ```
/// use qdn_relay_core::body_len;
/// assert_eq!(body_len("hello"), 5);
/// assert_eq!(body_len("😀"), 2);
/// assert_eq!(body_len("{€}"), 6);
/// ```
pub fn body_len(s: &str) -> usize {
    s.chars().map(char_cost).sum()
}

fn char_cost(c: char) -> usize {
    if c.len_utf16() > 1 || GSM7_EXTENSION.contains(c) {
        2
    } else {
        1
    }
}

/// Builds a body that fits [`MAX_BODY_CHARS`] as [`body_len`] counts it:
/// a longer body is cut on a character boundary and ends with `...`
/// (three GSM-7 dots, not `…`, which would force a GSM-7 text into UCS-2
/// and more than double its segments).
pub fn fit_body(s: &str) -> String {
    // A character costs at most two per byte of UTF-8 (`{` is one byte
    // and two septets), so a short body fits without counting.
    if s.len() * 2 <= MAX_BODY_CHARS || body_len(s) <= MAX_BODY_CHARS {
        return s.to_owned();
    }
    const MORE: &str = "...";
    let budget = MAX_BODY_CHARS - MORE.len();
    let mut used = 0;
    let mut cut = 0;
    for (i, c) in s.char_indices() {
        used += char_cost(c);
        if used > budget {
            break;
        }
        cut = i + c.len_utf8();
    }
    let mut out = String::with_capacity(cut + MORE.len());
    out.push_str(&s[..cut]);
    out.push_str(MORE);
    out
}

pub(crate) fn fit_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned(); // bytes ≥ characters: it fits
    }
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let cut = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            let mut out = String::with_capacity(cut + 3);
            out.push_str(&s[..cut]);
            out.push('…');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse(" ack "), Some(Command::Ack));
        assert_eq!(Command::parse("PASS."), Some(Command::Pass));
        assert_eq!(Command::parse("Done!"), Some(Command::Done));
        assert_eq!(Command::parse("acknowledged"), None);
        assert_eq!(Command::parse("on my way"), None);
    }

    #[test]
    fn bodies_fit_the_limit() {
        assert_eq!(fit_body("short"), "short");
        // é is GSM-7: one each.
        let long = "é".repeat(2000);
        let fitted = fit_body(&long);
        assert_eq!(fitted.chars().count(), MAX_BODY_CHARS);
        assert!(fitted.ends_with("..."));
        let exact = "é".repeat(MAX_BODY_CHARS);
        assert_eq!(fit_body(&exact), exact);
        // Emoji are two UTF-16 units: 1,600 of them are too long.
        let emoji = "😀".repeat(MAX_BODY_CHARS);
        let fitted = fit_body(&emoji);
        assert!(body_len(&fitted) <= MAX_BODY_CHARS, "{}", body_len(&fitted));
        assert!(fitted.encode_utf16().count() <= MAX_BODY_CHARS);
        assert_eq!(fitted.chars().filter(|c| *c == '😀').count(), 798);
        assert_eq!(fit_body(&"😀".repeat(800)), "😀".repeat(800));
        // GSM-7 extension characters take two septets.
        let braces = "{".repeat(900);
        assert_eq!(body_len(&fit_body(&braces)), MAX_BODY_CHARS - 1);
        // Never cut inside a character; the dots keep GSM-7 texts GSM-7.
        let mixed = format!("{}😀😀", "a".repeat(1597));
        let fitted = fit_body(&mixed);
        assert_eq!(fitted, format!("{}...", "a".repeat(1597)));
    }

    #[test]
    fn statuses_rank_forward() {
        assert!(DeliveryStatus::Queued.rank() < DeliveryStatus::Sent.rank());
        assert!(DeliveryStatus::Sent.rank() < DeliveryStatus::Failed.rank());
        assert_eq!(
            DeliveryStatus::Delivered.rank(),
            DeliveryStatus::Undelivered.rank()
        );
    }
}
