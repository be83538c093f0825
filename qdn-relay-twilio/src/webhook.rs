//! Twilio's inbound-message and status-callback webhooks, parsed into the
//! core's inputs.
//!
//! Parsing is pure: it reads a [`Form`] and returns a value or a
//! [`WebhookError`] naming the field at fault, so an HTTP layer can answer
//! a clear 4xx and change nothing.

use qdn_relay_core::{
    DeliveryError, DeliveryReport, DeliveryStatus, InboundText, Media, PhoneNumber,
    ProviderMessageId,
};

use crate::classify::classify;
use crate::form::Form;
use crate::sid::{AccountSid, MessagingServiceSid};

/// The most media Twilio attaches to one message.
pub const MAX_MEDIA: u32 = 10;

/// Why a webhook body could not be read. The message names the field and
/// why, for a 4xx answer: `missing field From`, `invalid From: phone number
/// must start with '+' …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required field is absent (or empty, for ids).
    #[error("missing field {field}")]
    Missing {
        /// The field's name, as Twilio spells it.
        field: String,
    },
    /// A field is present but its value is not valid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's name, as Twilio spells it.
        field: String,
        /// Why the value is not valid.
        reason: String,
    },
    /// A status callback reports an inbound status (`receiving`,
    /// `received`): it belongs to an inbound message, not to one the relay
    /// sent.
    #[error(
        "MessageStatus {status:?} is the status of an inbound message; status callbacks report outbound messages"
    )]
    InboundStatus {
        /// The status as Twilio sent it.
        status: String,
    },
}

impl WebhookError {
    /// The name of the field at fault.
    pub fn field(&self) -> &str {
        match self {
            WebhookError::Missing { field } | WebhookError::Invalid { field, .. } => field,
            WebhookError::InboundStatus { .. } => "MessageStatus",
        }
    }

    fn missing(field: &str) -> Self {
        WebhookError::Missing {
            field: field.to_owned(),
        }
    }

    fn invalid(field: &str, reason: impl ToString) -> Self {
        WebhookError::Invalid {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The single value of `name`, if present. A field given twice with
/// different values is ambiguous, and an error.
fn single<'a>(form: &'a Form, name: &str) -> Result<Option<&'a str>, WebhookError> {
    let mut values = form.get_all(name);
    let first = values.next();
    if let Some(f) = first
        && values.any(|v| v != f)
    {
        return Err(WebhookError::invalid(
            name,
            "given more than once with different values",
        ));
    }
    Ok(first)
}

/// The first non-empty one of `names` (Twilio's current name, then its
/// legacy ones), with the name it was found under.
fn first_of<'a>(
    form: &'a Form,
    names: &[&'static str],
) -> Result<Option<(&'static str, &'a str)>, WebhookError> {
    for &n in names {
        if let Some(v) = single(form, n)?
            && !v.is_empty()
        {
            return Ok(Some((n, v)));
        }
    }
    Ok(None)
}

fn required<'a>(form: &'a Form, name: &str) -> Result<&'a str, WebhookError> {
    single(form, name)?.ok_or_else(|| WebhookError::missing(name))
}

fn message_sid(form: &Form) -> Result<ProviderMessageId, WebhookError> {
    let (field, v) = first_of(form, &["MessageSid", "SmsMessageSid", "SmsSid"])?
        .ok_or_else(|| WebhookError::missing("MessageSid"))?;
    v.parse().map_err(|e| WebhookError::invalid(field, e))
}

fn account_sid(form: &Form) -> Result<AccountSid, WebhookError> {
    let v = required(form, "AccountSid")?;
    v.parse()
        .map_err(|e| WebhookError::invalid("AccountSid", e))
}

fn phone(form: &Form, name: &str) -> Result<PhoneNumber, WebhookError> {
    let v = required(form, name)?;
    v.parse().map_err(|e| WebhookError::invalid(name, e))
}

fn number<T: std::str::FromStr>(form: &Form, name: &str) -> Result<Option<T>, WebhookError> {
    match single(form, name)? {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| WebhookError::invalid(name, format!("{v:?} is not a whole number"))),
    }
}

/// Twilio's inbound-message webhook (`POST` to the number's "A message
/// comes in" URL).
///
/// Required: `MessageSid` (or the legacy `SmsMessageSid` / `SmsSid`),
/// `AccountSid`, `From` and `To` (E.164 phone numbers). `Body` may be
/// absent (read as empty: a media-only message). `NumMedia` (default 0)
/// says how many `MediaUrlN` (required) and `MediaContentTypeN` (optional)
/// follow. Every other field (`FromCity`, `SmsStatus`, `ApiVersion`, …) is
/// ignored.
///
/// ```
/// use qdn_relay_twilio::{Form, InboundWebhook};
/// let form = Form::parse(
///     b"MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
///       &From=%2B16195550100&To=%2B18583354807&Body=Flat+tire+on+I-5&NumMedia=0",
/// );
/// let hook = InboundWebhook::from_form(&form).unwrap();
/// let text = hook.into_inbound_text();
/// assert_eq!(text.body, "Flat tire on I-5");
/// assert_eq!(text.from.to_string(), "+16195550100");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundWebhook {
    /// `MessageSid`: Twilio's id of the text; retried webhooks repeat it.
    pub message_sid: ProviderMessageId,
    /// `AccountSid`: the account the number belongs to.
    pub account_sid: AccountSid,
    /// `MessagingServiceSid`, when the number is in a Messaging Service.
    pub messaging_service_sid: Option<MessagingServiceSid>,
    /// `From`: the sender.
    pub from: PhoneNumber,
    /// `To`: the business line.
    pub to: PhoneNumber,
    /// `Body`: the text (empty for a media-only message).
    pub body: String,
    /// `MediaUrlN` / `MediaContentTypeN` for N below `NumMedia`.
    pub media: Vec<Media>,
    /// `NumSegments`: how many SMS segments the text arrived in.
    pub num_segments: Option<u32>,
    /// `OptOutType`: with Advanced Opt-Out (a Messaging Service), Twilio
    /// says the text was one of the service's opt-out, opt-in or help
    /// keywords, custom and localized ones included (`ARRET`, `AIDE`).
    pub opt_out_type: Option<OptOutType>,
}

/// What Twilio's Advanced Opt-Out made of a text (`OptOutType`). Twilio
/// has already answered it and, for `Stop`, blocks further texts to the
/// sender from the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OptOutType {
    /// An opt-out keyword (`STOP`, or a custom or localized one).
    Stop,
    /// An opt-in keyword (`START`, ...).
    Start,
    /// A help keyword (`HELP`, ...): Twilio answered it.
    Help,
}

impl OptOutType {
    /// Reads Twilio's value (`STOP`, `START`, `HELP`; case ignored). An
    /// unknown value is `None`: the text is then an ordinary one.
    pub fn parse(value: &str) -> Option<OptOutType> {
        match value.trim().to_ascii_uppercase().as_str() {
            "STOP" => Some(OptOutType::Stop),
            "START" => Some(OptOutType::Start),
            "HELP" => Some(OptOutType::Help),
            _ => None,
        }
    }
}

impl InboundWebhook {
    /// Parses a form-encoded webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(&Form::parse(body))
    }

    /// Reads the webhook from an already decoded form (the one whose
    /// signature was checked).
    pub fn from_form(form: &Form) -> Result<Self, WebhookError> {
        let message_sid = message_sid(form)?;
        let account_sid = account_sid(form)?;
        let messaging_service_sid = match single(form, "MessagingServiceSid")? {
            None | Some("") => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|e| WebhookError::invalid("MessagingServiceSid", e))?,
            ),
        };
        let from = phone(form, "From")?;
        let to = phone(form, "To")?;
        let body = single(form, "Body")?.unwrap_or_default().to_owned();
        let num_media: u32 = number(form, "NumMedia")?.unwrap_or(0);
        if num_media > MAX_MEDIA {
            return Err(WebhookError::invalid(
                "NumMedia",
                format!("{num_media} is more than Twilio's {MAX_MEDIA} media per message"),
            ));
        }
        let mut media = Vec::with_capacity(num_media as usize);
        for i in 0..num_media {
            let url_field = format!("MediaUrl{i}");
            let url = match single(form, &url_field)? {
                None | Some("") => return Err(WebhookError::missing(&url_field)),
                Some(u) => u.to_owned(),
            };
            let content_type = match single(form, &format!("MediaContentType{i}"))? {
                None | Some("") => None,
                Some(t) => Some(t.to_owned()),
            };
            media.push(Media { url, content_type });
        }
        let num_segments = number(form, "NumSegments")?;
        let opt_out_type = match single(form, "OptOutType")? {
            None | Some("") => None,
            Some(v) => {
                let t = OptOutType::parse(v);
                if t.is_none() {
                    tracing::warn!(value = %v, "unknown OptOutType: the text is taken as an ordinary one");
                }
                t
            }
        };
        Ok(Self {
            message_sid,
            account_sid,
            messaging_service_sid,
            from,
            to,
            body,
            media,
            num_segments,
            opt_out_type,
        })
    }

    /// The core's view of the text.
    pub fn into_inbound_text(self) -> InboundText {
        InboundText {
            sid: self.message_sid,
            from: self.from,
            to: self.to,
            body: self.body,
            media: self.media,
        }
    }
}

/// Reads Twilio's `MessageStatus` into the core's [`DeliveryStatus`].
///
/// `accepted`, `scheduled` and `queued` are [`DeliveryStatus::Queued`];
/// `canceled` is [`DeliveryStatus::Failed`] (it will never be sent);
/// `partially_delivered` is [`DeliveryStatus::Sent`] (neither a delivery
/// nor a failure: the level's timeout decides); `receiving` and `received`
/// are inbound statuses, an error here. Case is ignored.
pub fn parse_status(status: &str) -> Result<DeliveryStatus, WebhookError> {
    let s = status.trim().to_ascii_lowercase();
    Ok(match s.as_str() {
        "accepted" | "scheduled" | "queued" => DeliveryStatus::Queued,
        "sending" => DeliveryStatus::Sending,
        "sent" | "partially_delivered" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "undelivered" => DeliveryStatus::Undelivered,
        "failed" | "canceled" => DeliveryStatus::Failed,
        "read" => DeliveryStatus::Read,
        "receiving" | "received" => {
            return Err(WebhookError::InboundStatus {
                status: status.to_owned(),
            });
        }
        _ => {
            return Err(WebhookError::invalid(
                "MessageStatus",
                format!("unknown status {status:?}"),
            ));
        }
    })
}

/// Twilio's status callback for an outbound message (`POST` to the
/// `StatusCallback` URL given when the message was created).
///
/// Required: `MessageSid` (or `SmsSid`), `MessageStatus` (or `SmsStatus`),
/// `AccountSid`. Optional: `ErrorCode` (a whole number), `From`, `To`.
/// `From` and `To` are kept as Twilio sent them: a status callback may
/// name an alphanumeric sender or a channel address, and the relay finds
/// the message by its sid alone.
///
/// ```
/// use qdn_relay_core::{DeliveryStatus, ErrorClass};
/// use qdn_relay_twilio::StatusCallback;
/// let cb = StatusCallback::parse(
///     b"MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=undelivered\
///       &ErrorCode=30006&AccountSid=AC0123456789abcdef0123456789abcdef",
/// )
/// .unwrap();
/// let report = cb.into_delivery_report();
/// assert_eq!(report.status, DeliveryStatus::Undelivered);
/// assert_eq!(report.error.unwrap().class, ErrorClass::Unreachable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `MessageSid`: the outbound message.
    pub message_sid: ProviderMessageId,
    /// `MessageStatus`, read by [`parse_status`].
    pub status: DeliveryStatus,
    /// `MessageStatus` as Twilio wrote it (`canceled`, `accepted`, …).
    pub raw_status: String,
    /// `ErrorCode`, for failures.
    pub error_code: Option<u32>,
    /// `AccountSid`.
    pub account_sid: AccountSid,
    /// `From`, as sent.
    pub from: Option<String>,
    /// `To`, as sent.
    pub to: Option<String>,
}

impl StatusCallback {
    /// Parses a form-encoded status callback body.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(&Form::parse(body))
    }

    /// Reads the callback from an already decoded form.
    pub fn from_form(form: &Form) -> Result<Self, WebhookError> {
        let message_sid = message_sid(form)?;
        let (_, raw_status) = first_of(form, &["MessageStatus", "SmsStatus"])?
            .ok_or_else(|| WebhookError::missing("MessageStatus"))?;
        let status = parse_status(raw_status)?;
        let error_code = number(form, "ErrorCode")?;
        let account_sid = account_sid(form)?;
        let text = |name| -> Result<Option<String>, WebhookError> {
            Ok(single(form, name)?
                .filter(|v| !v.is_empty())
                .map(str::to_owned))
        };
        Ok(Self {
            message_sid,
            status,
            raw_status: raw_status.to_owned(),
            error_code,
            account_sid,
            from: text("From")?,
            to: text("To")?,
        })
    }

    /// The core's view of the callback: the error code, if any, classified
    /// by [`classify`].
    pub fn into_delivery_report(self) -> DeliveryReport {
        DeliveryReport {
            sid: self.message_sid,
            status: self.status,
            error: self.error_code.map(|code| DeliveryError {
                code,
                class: classify(code),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdn_relay_core::ErrorClass;

    const SM: &str = "SM0123456789abcdef0123456789abcdef";
    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    fn inbound(extra: &[(&str, &str)], drop: &[&str]) -> Form {
        let mut pairs = vec![
            ("MessageSid", SM),
            ("SmsMessageSid", SM),
            ("AccountSid", AC),
            ("From", "+16195550100"),
            ("To", "+18583354807"),
            ("Body", "hello"),
            ("NumMedia", "0"),
            ("NumSegments", "1"),
            ("FromCity", "SAN DIEGO"),
            ("ApiVersion", "2010-04-01"),
        ];
        pairs.retain(|(k, _)| !drop.contains(k));
        pairs.extend_from_slice(extra);
        Form::from_pairs(pairs)
    }

    #[test]
    fn inbound_reads_every_field() {
        let f = inbound(
            &[
                ("NumMedia", "2"),
                ("MediaUrl0", "https://api.twilio.com/m/0"),
                ("MediaContentType0", "image/jpeg"),
                ("MediaUrl1", "https://api.twilio.com/m/1"),
                ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"),
            ],
            &["NumMedia"],
        );
        let h = InboundWebhook::from_form(&f).unwrap();
        assert_eq!(h.message_sid.as_str(), SM);
        assert_eq!(h.account_sid.as_str(), AC);
        assert_eq!(
            h.messaging_service_sid.as_ref().map(|s| s.as_str()),
            Some("MG0123456789abcdef0123456789abcdef")
        );
        assert_eq!(h.num_segments, Some(1));
        let t = h.into_inbound_text();
        assert_eq!(t.from.to_string(), "+16195550100");
        assert_eq!(t.to.to_string(), "+18583354807");
        assert_eq!(t.body, "hello");
        assert_eq!(
            t.media,
            vec![
                Media {
                    url: "https://api.twilio.com/m/0".into(),
                    content_type: Some("image/jpeg".into())
                },
                Media {
                    url: "https://api.twilio.com/m/1".into(),
                    content_type: None
                },
            ]
        );
    }

    #[test]
    fn inbound_sid_falls_back_to_legacy_names() {
        let f = inbound(&[], &["MessageSid"]);
        assert_eq!(
            InboundWebhook::from_form(&f).unwrap().message_sid.as_str(),
            SM
        );
        let f = inbound(
            &[("SmsSid", "SMffffffffffffffffffffffffffffffff")],
            &["MessageSid", "SmsMessageSid"],
        );
        assert_eq!(
            InboundWebhook::from_form(&f).unwrap().message_sid.as_str(),
            "SMffffffffffffffffffffffffffffffff"
        );
        let f = inbound(&[], &["MessageSid", "SmsMessageSid"]);
        assert_eq!(
            InboundWebhook::from_form(&f).unwrap_err().to_string(),
            "missing field MessageSid"
        );
    }

    #[test]
    fn inbound_errors_name_the_field() {
        let e = |f: Form| InboundWebhook::from_form(&f).unwrap_err();
        assert_eq!(e(inbound(&[], &["From"])).to_string(), "missing field From");
        let err = e(inbound(&[("From", "6195550100")], &["From"]));
        assert_eq!(err.field(), "From");
        assert!(
            err.to_string()
                .starts_with("invalid From: phone number must start with '+'"),
            "{err}"
        );
        assert_eq!(e(inbound(&[], &["To"])).to_string(), "missing field To");
        assert_eq!(
            e(inbound(&[], &["AccountSid"])).to_string(),
            "missing field AccountSid"
        );
        assert_eq!(
            e(inbound(&[("AccountSid", "nope")], &["AccountSid"])).field(),
            "AccountSid"
        );
        assert_eq!(
            e(inbound(&[("NumMedia", "x")], &["NumMedia"])).to_string(),
            "invalid NumMedia: \"x\" is not a whole number"
        );
        assert_eq!(
            e(inbound(&[("NumMedia", "11")], &["NumMedia"])).field(),
            "NumMedia"
        );
        assert_eq!(
            e(inbound(&[("NumMedia", "1")], &["NumMedia"])).to_string(),
            "missing field MediaUrl0"
        );
        assert_eq!(
            e(inbound(&[("From", "+15555550100")], &[])).to_string(),
            "invalid From: given more than once with different values"
        );
        assert_eq!(
            e(inbound(&[("MessageSid", "has space")], &["MessageSid"])).field(),
            "MessageSid"
        );
        assert_eq!(
            e(inbound(&[("NumSegments", "-1")], &[])).field(),
            "NumSegments"
        );
    }

    #[test]
    fn inbound_tolerates_unknown_fields_and_missing_body() {
        let f = inbound(&[("SomethingNew", "x"), ("NumMedia", "0")], &["Body"]);
        let h = InboundWebhook::from_form(&f).unwrap();
        assert_eq!(h.body, "");
        assert!(h.media.is_empty());
    }

    fn status(pairs: &[(&str, &str)]) -> Result<StatusCallback, WebhookError> {
        let mut base = vec![("MessageSid", SM), ("AccountSid", AC)];
        base.extend_from_slice(pairs);
        StatusCallback::from_form(&Form::from_pairs(base))
    }

    #[test]
    fn statuses_map_as_documented() {
        use DeliveryStatus::*;
        for (s, want) in [
            ("accepted", Queued),
            ("scheduled", Queued),
            ("queued", Queued),
            ("sending", Sending),
            ("sent", Sent),
            ("delivered", Delivered),
            ("undelivered", Undelivered),
            ("failed", Failed),
            ("canceled", Failed),
            ("read", Read),
            ("partially_delivered", Sent),
            ("DELIVERED", Delivered),
        ] {
            let cb = status(&[("MessageStatus", s)]).unwrap();
            assert_eq!(cb.status, want, "{s}");
            assert_eq!(cb.raw_status, s);
        }
        for s in ["receiving", "received"] {
            assert_eq!(
                status(&[("MessageStatus", s)]).unwrap_err(),
                WebhookError::InboundStatus { status: s.into() }
            );
        }
        assert_eq!(
            status(&[("MessageStatus", "exploded")])
                .unwrap_err()
                .to_string(),
            "invalid MessageStatus: unknown status \"exploded\""
        );
        assert_eq!(
            status(&[]).unwrap_err().to_string(),
            "missing field MessageStatus"
        );
        assert_eq!(
            status(&[("SmsStatus", "sent")]).unwrap().status,
            DeliveryStatus::Sent
        );
    }

    #[test]
    fn error_codes_are_classified_once() {
        let r = status(&[
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("From", "+18583354807"),
            ("To", "+16195550100"),
        ])
        .unwrap();
        assert_eq!(r.from.as_deref(), Some("+18583354807"));
        assert_eq!(r.to.as_deref(), Some("+16195550100"));
        let report = r.into_delivery_report();
        assert_eq!(report.sid.as_str(), SM);
        assert_eq!(
            report.error,
            Some(DeliveryError {
                code: 30003,
                class: ErrorClass::RetryLater
            })
        );
        for (code, class) in [
            ("30006", ErrorClass::Unreachable),
            ("21610", ErrorClass::OptedOut),
            ("30007", ErrorClass::Carrier),
            ("20003", ErrorClass::Config),
            ("39999", ErrorClass::Unknown),
        ] {
            let r = status(&[("MessageStatus", "failed"), ("ErrorCode", code)])
                .unwrap()
                .into_delivery_report();
            assert_eq!(r.error.map(|e| e.class), Some(class), "{code}");
        }
        let ok = status(&[("MessageStatus", "delivered"), ("ErrorCode", "")]).unwrap();
        assert_eq!(ok.into_delivery_report().error, None);
        assert_eq!(
            status(&[("MessageStatus", "failed"), ("ErrorCode", "abc")])
                .unwrap_err()
                .field(),
            "ErrorCode"
        );
        let no_account = StatusCallback::from_form(&Form::from_pairs([
            ("MessageSid", SM),
            ("MessageStatus", "sent"),
        ]));
        assert_eq!(
            no_account.unwrap_err().to_string(),
            "missing field AccountSid"
        );
    }
}
