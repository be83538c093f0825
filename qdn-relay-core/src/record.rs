//! What a dispatch records, in the words its ports share: its [`State`],
//! the conversation ([`ThreadEntry`], [`Direction`]), every outbound text
//! ([`Leg`], [`Purpose`]) and the ack ([`Ack`], [`AckVia`]). Plain data:
//! the state machine that writes them is [`crate::Dispatch`].

use serde::{Deserialize, Serialize};

use crate::carrier::Via;
use crate::input::{Actor, DeliveryStatus, ErrorClass, Media, SkipReason};
use crate::types::{PhoneNumber, ProviderMessageId, Timestamp};

/// Where a dispatch is in its life. It only moves forward:
/// `open → acked → closed`, or `open → failed`, or `open → closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Escalating: nobody has acknowledged yet.
    Open,
    /// Someone acknowledged; escalation stopped. Replies still flow.
    Acked,
    /// Closed by a dispatcher (`DONE`) or the dashboard.
    Closed,
    /// Every level of every round was tried without an ack.
    Failed,
}

impl State {
    /// Open for texts: `Open` or `Acked`.
    pub fn is_open(self) -> bool {
        matches!(self, State::Open | State::Acked)
    }

    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acked => "acked",
            State::Closed => "closed",
            State::Failed => "failed",
        }
    }
}

/// Why an outbound text was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Purpose {
    /// An escalation step: the dispatch reached `level` in `round`.
    Forward {
        /// The round (0-based).
        round: u32,
        /// The level (0-based).
        level: u32,
    },
    /// A later customer text passed on to whoever has the dispatch.
    FollowUp,
    /// A reply to the customer.
    Reply,
    /// A note to a dispatcher (where their text went, why a command was
    /// ignored).
    Notice,
}

/// One outbound text and its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Its index in the dispatch.
    pub index: u32,
    /// The recipient.
    pub to: PhoneNumber,
    /// Why it was sent.
    pub purpose: Purpose,
    /// The text.
    pub body: String,
    /// When the relay decided to send it.
    pub created_at: Timestamp,
    /// How many times it was handed to a provider.
    pub attempts: u32,
    /// Its delivery status.
    pub status: DeliveryStatus,
    /// While pending: when the outbox (re)sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The provider's id once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<ProviderMessageId>,
    /// When the provider accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// The last status change.
    pub updated_at: Timestamp,
    /// The provider's error code, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The error's class, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Why the relay did not send it (status [`DeliveryStatus::Skipped`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkipReason>,
    /// How many times a rate limit held it back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// How many thread entries existed when it was created: its place in
    /// the conversation (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_thread: Option<u32>,
    /// The carrier it went through and the number it was sent from, once
    /// accepted (when the provider said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// How many times every carrier was down for it (see
    /// [`crate::CarrierHold`]); these tries do not count in `attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub carrier_waits: u32,
    /// Whether it waits for a carrier: every carrier that may send it was
    /// down at its last try (see [`crate::CarrierHold`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// Carriers that must not send it: the same text failed through them
    /// carrier-wide (this leg replaces the failed one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Direction of a thread entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received by the relay.
    Inbound,
    /// Sent by the relay.
    Outbound,
}

/// One message of the conversation: customer texts, dispatcher texts, and
/// replies to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadEntry {
    /// When.
    pub at: Timestamp,
    /// In or out.
    pub direction: Direction,
    /// Who wrote it.
    pub from: Actor,
    /// The text.
    pub body: String,
    /// The inbound message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<ProviderMessageId>,
    /// The leg that carries it to the customer (replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<u32>,
    /// Attached media.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
}

/// How an ack came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckVia {
    /// A dispatcher replied to the customer.
    Reply,
    /// A dispatcher texted `ACK` (or `DONE`).
    Command,
    /// The dashboard.
    Dashboard,
}

/// Who acknowledged, when and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who.
    pub by: Actor,
    /// When.
    pub at: Timestamp,
    /// How.
    pub via: AckVia,
    /// The policy level of the dispatcher who acked (none for the dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
}
