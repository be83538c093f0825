//! What AWS publishes to SNS about texts, read into the core's inputs: a
//! two-way (inbound) text ([`TwoWayMessage`] → [`InboundText`]) and a
//! configuration set's delivery event ([`DeliveryEvent`] →
//! [`DeliveryReport`], placed by the `Context` the client sent).
//!
//! Parsing is pure; a bad field is an [`EventError`] naming it. An SNS
//! notification's `Message` is one of the two ([`SmsNotification::parse`]
//! tells them apart by shape).
//!
//! Delivery event types, from the model's `EventType` enum (the `TEXT_`
//! ones; media, voice and RCS events are refused as
//! [`EventError::NotText`]):
//!
//! | event type | status | class | scope | code |
//! |---|---|---|---|---|
//! | `TEXT_QUEUED` | `queued` | | | |
//! | `TEXT_PENDING` | `sending` | | | |
//! | `TEXT_SENT` | `sent` | | | |
//! | `TEXT_SUCCESSFUL` (accepted by the recipient's carrier; final in some countries) | `sent` | | | |
//! | `TEXT_DELIVERED` | `delivered` | | | |
//! | `TEXT_INVALID` (not a valid number) | `failed` | `unreachable` | recipient | 901 |
//! | `TEXT_INVALID_MESSAGE` (the body cannot be delivered) | `failed` | `filtered` | message | 902 |
//! | `TEXT_UNREACHABLE` (the handset is off or out of coverage) | `undelivered` | `retry_later` | recipient | 903 |
//! | `TEXT_CARRIER_UNREACHABLE` (a transient error in the recipient's network) | `undelivered` | `retry_later` | recipient | 904 |
//! | `TEXT_BLOCKED` (the handset or its carrier blocks texts to it) | `undelivered` | `unreachable` | recipient | 905 |
//! | `TEXT_CARRIER_BLOCKED` (the recipient's carrier refused it as malicious or abusive) | `undelivered` | `carrier` | carrier | 906 |
//! | `TEXT_SPAM` (the recipient's carrier refused it as unsolicited) | `undelivered` | `carrier` | carrier | 907 |
//! | `TEXT_UNKNOWN` (anything else, or no final event within 72 h) | `undelivered` | `unknown` | recipient | 908 |
//! | `TEXT_TTL_EXPIRED` (not handed off within its `TimeToLive`) | `failed` | `retry_later` | carrier | 909 |
//! | `TEXT_PROTECT_BLOCKED` (the account's protect configuration blocked it) | `failed` | `unreachable` | recipient | 910 |
//!
//! AWS events carry no numeric error code and the core's
//! [`DeliveryError`] needs one: the code is this crate's number for the
//! event type (the table's last column, never a Twilio code); the class
//! is what the relay acts on.

use std::collections::BTreeMap;

use qdn_relay_core::{
    DeliveryError, DeliveryReport, DeliveryStatus, DispatchId, ErrorClass, InboundText,
    PhoneNumber, ProviderMessageId, Timestamp,
};
use serde::Deserialize;

use crate::classify::Scope;
use crate::client::{CONTEXT_DISPATCH, CONTEXT_LEG};

/// Why an event could not be read. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The message is not JSON of the expected shape.
    #[error("not a two-way text or a delivery event: {0}")]
    Shape(String),
    /// A field is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A field's value is not valid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A media, voice or RCS event: not about a text.
    #[error("{0} is not a text message event")]
    NotText(String),
    /// A `TEXT_` event type this crate does not know (AWS added one).
    #[error("unknown text event type {0}")]
    UnknownEventType(String),
}

fn invalid(field: &'static str, e: impl std::fmt::Display) -> EventError {
    EventError::Invalid {
        field,
        reason: e.to_string(),
    }
}

/// A text sent to an AWS number with two-way messaging, as AWS publishes it
/// to the number's SNS topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwoWayMessage {
    /// `originationNumber`: who sent it (the customer or a dispatcher).
    pub origination_number: PhoneNumber,
    /// `destinationNumber`: the AWS number it was sent to.
    pub destination_number: PhoneNumber,
    /// `messageBody`.
    pub message_body: String,
    /// `messageKeyword`: the registered keyword the text matched, if any.
    pub message_keyword: Option<String>,
    /// `inboundMessageId`: unique per text; SNS redeliveries repeat it.
    pub inbound_message_id: ProviderMessageId,
    /// `previousPublishedMessageId`: the message the sender answered, if
    /// AWS knows it.
    pub previous_published_message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTwoWay {
    origination_number: Option<String>,
    destination_number: Option<String>,
    message_body: Option<String>,
    message_keyword: Option<String>,
    inbound_message_id: Option<String>,
    previous_published_message_id: Option<String>,
}

impl TwoWayMessage {
    /// Reads the JSON of a two-way text (an SNS notification's `Message`).
    pub fn parse(json: &str) -> Result<Self, EventError> {
        let raw: RawTwoWay =
            serde_json::from_str(json).map_err(|e| EventError::Shape(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawTwoWay) -> Result<Self, EventError> {
        let number = |v: Option<String>, field| {
            v.ok_or(EventError::Missing(field))?
                .parse::<PhoneNumber>()
                .map_err(|e| invalid(field, e))
        };
        Ok(Self {
            origination_number: number(raw.origination_number, "originationNumber")?,
            destination_number: number(raw.destination_number, "destinationNumber")?,
            message_body: raw.message_body.unwrap_or_default(),
            message_keyword: raw.message_keyword.filter(|k| !k.is_empty()),
            inbound_message_id: raw
                .inbound_message_id
                .ok_or(EventError::Missing("inboundMessageId"))?
                .parse()
                .map_err(|e| invalid("inboundMessageId", e))?,
            previous_published_message_id: raw
                .previous_published_message_id
                .filter(|p| !p.is_empty()),
        })
    }

    /// The core's inbound text: `inboundMessageId` is its message id, so a
    /// redelivered notification is recognised as the same text.
    pub fn into_inbound_text(self) -> InboundText {
        InboundText {
            sid: self.inbound_message_id,
            from: self.origination_number,
            to: self.destination_number,
            body: self.message_body,
            media: Vec::new(),
        }
    }
}

/// A text event type of a configuration set's event destination (see the
/// [module docs](self) for what each means to the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// `TEXT_QUEUED`.
    Queued,
    /// `TEXT_PENDING`.
    Pending,
    /// `TEXT_SENT`.
    Sent,
    /// `TEXT_SUCCESSFUL`.
    Successful,
    /// `TEXT_DELIVERED`.
    Delivered,
    /// `TEXT_INVALID`.
    Invalid,
    /// `TEXT_INVALID_MESSAGE`.
    InvalidMessage,
    /// `TEXT_UNREACHABLE`.
    Unreachable,
    /// `TEXT_CARRIER_UNREACHABLE`.
    CarrierUnreachable,
    /// `TEXT_BLOCKED`.
    Blocked,
    /// `TEXT_CARRIER_BLOCKED`.
    CarrierBlocked,
    /// `TEXT_SPAM`.
    Spam,
    /// `TEXT_UNKNOWN`.
    Unknown,
    /// `TEXT_TTL_EXPIRED`.
    TtlExpired,
    /// `TEXT_PROTECT_BLOCKED`.
    ProtectBlocked,
}

/// What a failed delivery means: the core's class, the scope, and this
/// crate's code for the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct EventFailure {
    /// How the relay treats it.
    pub class: ErrorClass,
    /// Whose problem it is.
    pub scope: Scope,
    /// The event type's number (see the [module docs](self)).
    pub code: u32,
}

impl EventType {
    /// Every text event type, in the model's order.
    pub const ALL: [EventType; 15] = [
        EventType::Sent,
        EventType::Pending,
        EventType::Queued,
        EventType::Successful,
        EventType::Delivered,
        EventType::Invalid,
        EventType::InvalidMessage,
        EventType::Unreachable,
        EventType::CarrierUnreachable,
        EventType::Blocked,
        EventType::CarrierBlocked,
        EventType::Spam,
        EventType::Unknown,
        EventType::TtlExpired,
        EventType::ProtectBlocked,
    ];

    /// The name AWS uses (`TEXT_DELIVERED`).
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The type of a name, if it is a text event type this crate knows.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The delivery status it reports.
    pub fn status(self) -> DeliveryStatus {
        self.row().1
    }

    /// For a failure, its class, scope and code.
    pub fn failure(self) -> Option<EventFailure> {
        self.row()
            .2
            .map(|(class, scope, code)| EventFailure { class, scope, code })
    }

    /// The table of the [module docs](self).
    fn row(
        self,
    ) -> (
        &'static str,
        DeliveryStatus,
        Option<(ErrorClass, Scope, u32)>,
    ) {
        use DeliveryStatus as S;
        use ErrorClass as C;
        match self {
            EventType::Queued => ("TEXT_QUEUED", S::Queued, None),
            EventType::Pending => ("TEXT_PENDING", S::Sending, None),
            EventType::Sent => ("TEXT_SENT", S::Sent, None),
            EventType::Successful => ("TEXT_SUCCESSFUL", S::Sent, None),
            EventType::Delivered => ("TEXT_DELIVERED", S::Delivered, None),
            EventType::Invalid => (
                "TEXT_INVALID",
                S::Failed,
                Some((C::Unreachable, Scope::Recipient, 901)),
            ),
            EventType::InvalidMessage => (
                "TEXT_INVALID_MESSAGE",
                S::Failed,
                Some((C::Filtered, Scope::Message, 902)),
            ),
            EventType::Unreachable => (
                "TEXT_UNREACHABLE",
                S::Undelivered,
                Some((C::RetryLater, Scope::Recipient, 903)),
            ),
            EventType::CarrierUnreachable => (
                "TEXT_CARRIER_UNREACHABLE",
                S::Undelivered,
                Some((C::RetryLater, Scope::Recipient, 904)),
            ),
            EventType::Blocked => (
                "TEXT_BLOCKED",
                S::Undelivered,
                Some((C::Unreachable, Scope::Recipient, 905)),
            ),
            EventType::CarrierBlocked => (
                "TEXT_CARRIER_BLOCKED",
                S::Undelivered,
                Some((C::Carrier, Scope::Carrier, 906)),
            ),
            EventType::Spam => (
                "TEXT_SPAM",
                S::Undelivered,
                Some((C::Carrier, Scope::Carrier, 907)),
            ),
            EventType::Unknown => (
                "TEXT_UNKNOWN",
                S::Undelivered,
                Some((C::Unknown, Scope::Recipient, 908)),
            ),
            EventType::TtlExpired => (
                "TEXT_TTL_EXPIRED",
                S::Failed,
                Some((C::RetryLater, Scope::Carrier, 909)),
            ),
            EventType::ProtectBlocked => (
                "TEXT_PROTECT_BLOCKED",
                S::Failed,
                Some((C::Unreachable, Scope::Recipient, 910)),
            ),
        }
    }
}

/// A configuration set's event about a text the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryEvent {
    /// `eventType`.
    pub event_type: EventType,
    /// `messageId`: the id `SendTextMessage` answered.
    pub message_id: ProviderMessageId,
    /// `isFinal`: no later event is expected.
    pub is_final: bool,
    /// `messageStatus` as AWS wrote it (`DELIVERED`, `TTL_EXPIRED`, …).
    pub message_status: Option<String>,
    /// `messageStatusDescription`.
    pub description: Option<String>,
    /// `destinationPhoneNumber`, when it is a phone number.
    pub destination: Option<PhoneNumber>,
    /// `originationPhoneNumber` (a number or another identity).
    pub origination: Option<String>,
    /// `eventTimestamp`.
    pub at: Option<Timestamp>,
    /// The dispatch and leg from `context` (what the client sent), when
    /// both are there.
    pub placement: Option<(DispatchId, u32)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    event_type: Option<String>,
    message_id: Option<String>,
    #[serde(default)]
    is_final: bool,
    message_status: Option<String>,
    message_status_description: Option<String>,
    destination_phone_number: Option<String>,
    origination_phone_number: Option<String>,
    event_timestamp: Option<i64>,
    #[serde(default)]
    context: BTreeMap<String, String>,
}

impl DeliveryEvent {
    /// Reads the JSON of a delivery event (an SNS notification's
    /// `Message`).
    pub fn parse(json: &str) -> Result<Self, EventError> {
        let raw: RawEvent =
            serde_json::from_str(json).map_err(|e| EventError::Shape(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawEvent) -> Result<Self, EventError> {
        let name = raw.event_type.ok_or(EventError::Missing("eventType"))?;
        let event_type = match EventType::from_name(&name) {
            Some(t) => t,
            None if name.starts_with("TEXT_") => return Err(EventError::UnknownEventType(name)),
            None => return Err(EventError::NotText(name)),
        };
        let message_id = raw
            .message_id
            .ok_or(EventError::Missing("messageId"))?
            .parse()
            .map_err(|e| invalid("messageId", e))?;
        let placement = match (
            raw.context.get(CONTEXT_DISPATCH),
            raw.context.get(CONTEXT_LEG),
        ) {
            (Some(d), Some(l)) => Some((
                d.parse().map_err(|e| invalid("context.dispatch", e))?,
                l.parse().map_err(|e| invalid("context.leg", e))?,
            )),
            _ => None,
        };
        Ok(Self {
            event_type,
            message_id,
            is_final: raw.is_final,
            message_status: raw.message_status,
            description: raw.message_status_description,
            destination: raw.destination_phone_number.and_then(|n| n.parse().ok()),
            origination: raw.origination_phone_number,
            at: raw.event_timestamp.map(Timestamp::from_millis),
            placement,
        })
    }

    /// The core's delivery report: the message id, the event type's
    /// status, and for a failure its class and code.
    pub fn report(&self) -> DeliveryReport {
        DeliveryReport {
            sid: self.message_id.clone(),
            status: self.event_type.status(),
            error: self.event_type.failure().map(|f| DeliveryError {
                code: f.code,
                class: f.class,
            }),
        }
    }
}

/// What an SNS notification from AWS SMS carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmsNotification {
    /// A two-way text.
    Inbound(TwoWayMessage),
    /// A delivery event.
    Delivery(DeliveryEvent),
}

impl SmsNotification {
    /// Reads a notification's `Message`: a delivery event when it has an
    /// `eventType`, a two-way text when it has an `inboundMessageId`.
    pub fn parse(json: &str) -> Result<Self, EventError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| EventError::Shape(e.to_string()))?;
        let shape = |e: serde_json::Error| EventError::Shape(e.to_string());
        if v.get("eventType").is_some() {
            DeliveryEvent::from_raw(serde_json::from_value(v).map_err(shape)?)
                .map(SmsNotification::Delivery)
        } else if v.get("inboundMessageId").is_some() {
            TwoWayMessage::from_raw(serde_json::from_value(v).map_err(shape)?)
                .map(SmsNotification::Inbound)
        } else {
            Err(EventError::Shape(
                "neither an eventType nor an inboundMessageId".to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_round_trips_and_failures_are_failures() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.as_str()), Some(t));
            let status = t.status();
            assert_eq!(t.failure().is_some(), status.is_failure(), "{t:?}");
            if let Some(f) = t.failure() {
                // Delivery events never say the recipient opted out
                // (that comes back from the send).
                assert_ne!(f.class, ErrorClass::OptedOut, "{t:?}");
                // A carrier-wide failure never blames the number.
                if f.scope == Scope::Carrier {
                    assert_ne!(f.class, ErrorClass::Unreachable, "{t:?}");
                }
                // The core fails over only on what is the carrier's.
                if f.class.is_carrier_wide() {
                    assert_eq!(f.scope, Scope::Carrier, "{t:?}");
                }
            }
        }
        let mut codes: Vec<u32> = EventType::ALL
            .iter()
            .filter_map(|t| t.failure().map(|f| f.code))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 10, "one code per failure type");
    }

    #[test]
    fn bad_fields_are_named() {
        let e = DeliveryEvent::parse(r#"{"messageId":"m-1"}"#).expect_err("no type");
        assert_eq!(e, EventError::Missing("eventType"));
        let e = DeliveryEvent::parse(r#"{"eventType":"VOICE_COMPLETED","messageId":"m"}"#)
            .expect_err("voice");
        assert!(matches!(e, EventError::NotText(_)), "{e}");
        let e = DeliveryEvent::parse(r#"{"eventType":"TEXT_TELEPATHY","messageId":"m"}"#)
            .expect_err("new type");
        assert!(matches!(e, EventError::UnknownEventType(_)), "{e}");
        let e = DeliveryEvent::parse(
            r#"{"eventType":"TEXT_DELIVERED","messageId":"m","context":{"dispatch":"x","leg":"1"}}"#,
        )
        .expect_err("bad dispatch");
        assert!(
            matches!(
                e,
                EventError::Invalid {
                    field: "context.dispatch",
                    ..
                }
            ),
            "{e}"
        );
        let e = TwoWayMessage::parse(r#"{"originationNumber":"+14255550182"}"#)
            .expect_err("no destination");
        assert_eq!(e, EventError::Missing("destinationNumber"));
        let e = TwoWayMessage::parse(
            r#"{"originationNumber":"425","destinationNumber":"+12125550101","inboundMessageId":"i"}"#,
        )
        .expect_err("bad number");
        assert!(
            matches!(
                e,
                EventError::Invalid {
                    field: "originationNumber",
                    ..
                }
            ),
            "{e}"
        );
        let e = SmsNotification::parse(r#"{"hello":"world"}"#).expect_err("neither");
        assert!(matches!(e, EventError::Shape(_)), "{e}");
    }
}
