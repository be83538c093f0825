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
//!   caller provides the HTTP stack (`Transport`), as the Lambda adapter
//!   does to link a single one.
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
//! | `RetryLater` | 20429 too many requests, 30001 queue overflow, 30003 unreachable handset, 30008 unknown error (Twilio: try again), 30009 missing segment, 30022 / 30023 10DLC rate or daily cap, 30410 provider timeout | transient: the same number may work later |
//! | `Unreachable` | 21211 invalid To, 21408 region not enabled, 21608 unverified To (trial), 21610 unsubscribed (STOP), 21612 not reachable by SMS, 21614 not a mobile number, 30004 blocked, 30005 unknown or inactive handset, 30006 landline or unreachable carrier | never text this number again in this dispatch |
//! | `Filtered` | 30007 carrier filtering | the content was refused |
//! | `Config` | 20003 authentication, 20005 account inactive, 20008 test credentials, 20404 not found (the account path), 21212 invalid From, 21603 From required, 21606 From not a message-capable number, 30002 account suspended, 30010 max price, 30032 toll-free unverified, 30034 10DLC unregistered | an operator must fix the configuration |
//! | `Unknown` | every other code | safe default: move on to the next level, do not retry this number |
//!
//! The REST client turns an error answer into a
//! [`SendErrorKind`](qdn_relay_core::SendErrorKind) with
//! [`send_error_kind`]: HTTP 429 or code 20429 is `Retryable` (and is
//! retried, honouring `Retry-After`); any 5xx is `MaybeSent` (never
//! retried: the request got there); a classified code keeps its class
//! (`RetryLater` → `Retryable`); 401, 403 and 404 without a classified
//! code are `Config`; any other 4xx is `Rejected`. A connection that could
//! not be made is `Retryable` (retried); a timeout or a broken connection
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
mod twiml;
pub mod webhook;

pub use classify::{classify, send_error_kind};
#[cfg(feature = "rest")]
pub mod transport;
#[cfg(feature = "rest")]
pub use client::{
    ConfigError, Credentials, Message, RetryPolicy, TwilioClient, TwilioConfig, callback_url,
};
pub use form::Form;
pub use secret::Secret;
pub use segments::{Encoding, SegmentInfo, gsm7_septets, segments};
pub use sid::{AccountSid, ApiKeySid, MessagingServiceSid, SidError};
pub use signature::{
    Algorithm, Payload, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, SignatureError,
    SignatureValidator, body_sha256_hex,
};
#[cfg(feature = "client")]
pub use transport::ReqwestTransport;
#[cfg(feature = "rest")]
pub use transport::{Answer, AnswerBody, Transport, TransportError, TransportErrorKind};
pub use twiml::{twiml_empty, twiml_message};
pub use webhook::{InboundWebhook, MAX_MEDIA, StatusCallback, WebhookError, parse_status};
