//! # qdn-relay-twilio
//!
//! Twilio for `qdn-relay`:
//!
//! - **Webhooks** ([`InboundWebhook`], [`StatusCallback`]): Twilio's
//!   form-encoded inbound-message and status-callback requests, parsed
//!   into the core's [`InboundText`](qdn_relay_core::InboundText) and
//!   [`DeliveryReport`](qdn_relay_core::DeliveryReport). Parsing is pure
//!   and a bad field is a [`WebhookError`] naming it.
//! - **Signatures** ([`SignatureValidator`]): `X-Twilio-Signature`,
//!   checked exactly as Twilio's helper libraries do, with a secondary
//!   token for rotation.
//! - **Error codes** ([`classify`], [`send_error_kind`]): one table for
//!   REST answers and status callbacks.
//! - **Message length** ([`segments`]) and **TwiML** ([`twiml_empty`],
//!   [`twiml_message`]).
//! - **REST client** (feature `client`): `TwilioClient`, an
//!   [`SmsProvider`](qdn_relay_core::SmsProvider) over Twilio's Messages
//!   API, with timeouts, careful retries and redacted secrets, over
//!   reqwest. Feature `rest` is the same client without reqwest: the
//!   caller provides the HTTP stack (a `Transport` of the
//!   `qdn-relay-transport` crate), as the Lambda adapter does to link a
//!   single one.
//!
//! - **Transport conformance** (feature `testing`): [`transport_conformance_tests!`]
//!   runs the REST client's scenarios over any `Transport`.
//!
//! Without the `rest` feature the crate has no HTTP client and no async
//! runtime: an HTTP layer (axum, Lambda) uses it to check and read
//! Twilio's webhooks.
//!
//! ## Handling a webhook
//!
//! ```
//! use qdn_relay_twilio::{Form, InboundWebhook, Secret, SignatureValidator, twiml_empty};
//! # let token = Secret::new("12345");
//! # let url = "https://relay.example.com/sms/inbound";
//! # let body = b"MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B16195550100&To=%2B18583354807&Body=help";
//! # let header = Some(SignatureValidator::new(token.clone()).sign_form(url, Form::parse(body).pairs()));
//! let validator = SignatureValidator::new(token);
//! let form = Form::parse(body);
//! // 403 on a bad signature, 400 on a bad field; nothing applied either way.
//! validator.validate_form(url, form.pairs(), header.as_deref())?;
//! let text = InboundWebhook::from_form(&form)?.into_inbound_text();
//! assert_eq!(text.body, "help");
//! let answer = twiml_empty();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Error classification
//!
//! [`classify`] maps a Twilio error code to the core's
//! [`ErrorClass`](qdn_relay_core::ErrorClass); the status-callback parser
//! and the REST client both use it.
//!
//! | class | codes | meaning for the relay |
//! |---|---|---|
//! | `RetryLater` | 20429 too many requests, 30001 queue overflow, 30003 unreachable handset, 30008 unknown error (Twilio: try again), 30009 missing segment, 30022 / 30023 10DLC rate or daily cap, 30036 validity period expired, 30410 provider timeout, 63017 account rate limit, 63038 account daily limit | transient: the same number may work later |
//! | `Unreachable` | 21211 invalid To, 21608 unverified To (trial), 21612 not reachable by SMS, 21614 not a mobile number, 30004 blocked, 30005 unknown or inactive handset, 30006 landline or unreachable carrier | never text this number again in this dispatch |
//! | `OptedOut` | 21610 unsubscribed (the recipient texted STOP) | never text this number again in this dispatch, and record the opt-out so no dispatch texts it until it texts START |
//! | `Carrier` | 30007 the sending number filtered, 30034 10DLC unregistered number, 21611 From queue full | carrier-wide: the same text goes through the line's next carrier; the recipient is not to blame |
//! | `Config` | 20003 authentication, 20005 account inactive, 20008 test credentials, 20404 not found (the account path), 21212 invalid From, 21408 the account's geo permissions exclude the region, 21603 From required, 21606 From not a message-capable number, 21609 invalid StatusCallback URL, 30002 account suspended, 30010 max price, 30032 toll-free unverified | carrier-wide: an operator must fix the configuration; meanwhile the line's next carrier sends, and the recipient is not to blame |
//! | `Unknown` | every other code | safe default: move on to the next level, do not retry this number |
//!
//! The REST client turns an error answer into a
//! [`SendErrorKind`](qdn_relay_core::SendErrorKind) with
//! [`send_error_kind`]: HTTP 429 or code 20429 is `Retryable` (and is
//! retried, honouring `Retry-After`); 503 is `CarrierDown` (Twilio is
//! unavailable and accepted nothing); any other 5xx is `MaybeSent` (never
//! retried, never sent through another carrier: the request got there); a
//! classified code keeps its class (`RetryLater` → `Retryable`, `Carrier`
//! → `CarrierDown`); 401, 403 and 404 without a classified code are
//! `Config`; any other 4xx is `Rejected`. A connection that could not be
//! made is retried, then `CarrierDown`; a timeout or a broken connection
//! after the request went out is `MaybeSent`.
//!
//! ## Message length
//!
//! Twilio accepts at most 1,600 characters per message. The client passes
//! every body through [`qdn_relay_core::fit_body`]: a longer body is cut on
//! a character boundary and ends with `...`, so that its length as Twilio
//! may count it ([`qdn_relay_core::body_len`]: UTF-16 code units, GSM-7
//! extension characters twice) is at most 1,600; the dots keep a GSM-7
//! body GSM-7. [`segments`] tells how many SMS segments a body costs.

#![warn(missing_docs)]

mod classify;
#[cfg(feature = "rest")]
pub mod client;
mod form;
mod secret;
mod segments;
mod sid;
pub mod signature;
#[cfg(feature = "testing")]
pub mod testing;
mod twiml;
pub mod webhook;

pub use classify::{classify, describe, send_error_kind};

/// Twilio's webhook connection overrides the relay asks for on its webhook
/// URLs, as a URL fragment (`<url>#rc=3&rp=ct,5xx`): up to three more
/// tries when the connection fails or the relay answers 5xx (which it does
/// only when its store is down: it retries contention itself within the
/// request). Twilio's default is one retry on a connection failure only,
/// so a 5xx would lose the text. The fragment is never sent to the relay
/// and is not part of what Twilio signs.
pub const WEBHOOK_OVERRIDES: &str = "rc=3&rp=ct,5xx";

/// `url` with [`WEBHOOK_OVERRIDES`] as its fragment (replacing any).
///
/// ```
/// assert_eq!(
///     qdn_relay_twilio::with_webhook_overrides("https://relay.example/sms/inbound"),
///     "https://relay.example/sms/inbound#rc=3&rp=ct,5xx"
/// );
/// ```
pub fn with_webhook_overrides(url: &str) -> String {
    let base = url.split_once('#').map_or(url, |(b, _)| b);
    format!("{base}#{WEBHOOK_OVERRIDES}")
}
#[cfg(feature = "rest")]
pub use client::{ConfigError, Credentials, Message, TwilioClient, TwilioConfig, callback_url};
// The retry policy of the REST client (`TwilioConfig::retry`).
pub use form::Form;
#[cfg(feature = "rest")]
pub use qdn_relay_transport::RetryPolicy;
pub use secret::Secret;
pub use segments::{Encoding, SegmentInfo, gsm7_septets, segments};
pub use sid::{AccountSid, ApiKeySid, MessagingServiceSid, SidError};
pub use signature::{
    Algorithm, Payload, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, SignatureError,
    SignatureValidator, body_sha256_hex,
};
// The HTTP stack under the REST client; its other types are in
// qdn-relay-transport.
#[cfg(feature = "client")]
pub use qdn_relay_transport::ReqwestTransport;
#[cfg(feature = "rest")]
pub use qdn_relay_transport::Transport;
pub use twiml::{twiml_empty, twiml_message};
pub use webhook::{
    InboundWebhook, MAX_MEDIA, OptOutType, StatusCallback, WebhookError, parse_status,
};
