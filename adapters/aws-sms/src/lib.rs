//! # qdn-relay-aws-sms
//!
//! AWS End User Messaging SMS (API `pinpoint-sms-voice-v2`) for
//! `qdn-relay`, the second carrier beside Twilio. Its wire format and its
//! error codes are known here only, as Twilio's are in `qdn-relay-twilio`.
//!
//! - **Sending** ([`AwsSmsClient`], an
//!   [`SmsProvider`](qdn_relay_core::SmsProvider)): `SendTextMessage` as one
//!   SigV4-signed JSON 1.0 POST (`X-Amz-Target:
//!   PinpointSMSVoiceV2.SendTextMessage`, signing name `sms-voice`) over any
//!   [`Transport`](qdn_relay_transport::Transport), without the AWS SDK:
//!   the origination identity of the line, `MessageType: TRANSACTIONAL`,
//!   the configuration set (so delivery events are published), `Context`
//!   with the dispatch and the leg, `TimeToLive` from the message's
//!   validity. Settings from the environment as the Lambda functions read
//!   them ([`AwsSmsConfig::from_lookup`]: `AWS_REGION`,
//!   `AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2` / `AWS_ENDPOINT_URL`, the
//!   credentials), or any credentials provider.
//! - **Errors** ([`Failure`], [`Scope`]): one table from AWS's answer (the
//!   exception, its `Reason`, its `Fields`, the HTTP status, a transport
//!   failure) to the core's [`SendErrorKind`](qdn_relay_core::SendErrorKind)
//!   and a scope: does the failure concern this recipient, this text, or
//!   every send through this carrier ([`Failure::carrier_wide`])? The core
//!   acts on the kind: `Config` and `CarrierDown` are carrier-wide (the
//!   failover sends the text through the line's next carrier).
//! - **Inbound texts and delivery events** ([`events`]): the two-way text
//!   JSON ([`TwoWayMessage`] → [`InboundText`](qdn_relay_core::InboundText))
//!   and the configuration set's event JSON ([`DeliveryEvent`] →
//!   [`DeliveryReport`](qdn_relay_core::DeliveryReport), placed by the
//!   dispatch and leg of its `Context`).
//! - **SNS** ([`sns`]): both arrive through SNS. [`SnsMessage`] reads the
//!   envelope (`Notification`, `SubscriptionConfirmation`,
//!   `UnsubscribeConfirmation`), [`verify`] checks its signature
//!   (versions 1 and 2) with the certificate from SNS's own HTTPS host,
//!   fetched through a [`CertFetcher`] and kept in a [`CertCache`]. The
//!   HTTP route and the Lambda event source that call them are the
//!   adapters' (`qdn-relay-axum`, `qdn-relay-lambda`).
//!
//! ## Sending
//!
//! ```no_run
//! # async fn demo(http: std::sync::Arc<dyn qdn_relay_transport::Transport>) -> Result<(), Box<dyn std::error::Error>> {
//! use qdn_relay_aws_sms::{AwsSmsClient, AwsSmsConfig};
//! let mut config = AwsSmsConfig::from_lookup(|k| std::env::var(k).ok())?;
//! config.configuration_set = Some("relay-events".parse()?);
//! config.origination.insert("+18583354807".parse()?, "pool-0123456789abcdef".parse()?);
//! let client = AwsSmsClient::with_transport(config, http)?;
//! # Ok(()) }
//! ```
//!
//! ## Error classification
//!
//! The table is on [`Failure`]; in short:
//!
//! | AWS answer | kind | scope |
//! |---|---|---|
//! | throttling, HTTP 429 (retried with backoff) | `Retryable` | carrier |
//! | `ServiceQuotaExceededException`, no connection (after retries) | `CarrierDown` | carrier |
//! | `InternalServerException` and any 5xx; a timeout or a broken connection after the request was written | `MaybeSent` | carrier |
//! | opted out (`ConflictException` `DESTINATION_PHONE_NUMBER_OPTED_OUT`) | `OptedOut` | recipient |
//! | destination or its country blocked, not a valid number | `Unreachable` | recipient |
//! | the destination's country needs a registered sender or another identity | `Rejected` | recipient |
//! | `AccessDeniedException`, credential and signature errors, `ResourceNotFoundException`, `ConflictException` on the origination identity or configuration | `Config` | carrier |
//! | this text refused (its body, its parameters), any other 4xx | `Rejected` | message |
//!
//! ## Verifying an SNS message
//!
//! ```no_run
//! # async fn demo(http: std::sync::Arc<dyn qdn_relay_transport::Transport>, body: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use qdn_relay_aws_sms::{CertCache, SmsNotification, SnsMessage, SnsType, TransportCertFetcher, verify};
//! let certs = CertCache::new(Arc::new(TransportCertFetcher::new(http))); // once
//! let message = SnsMessage::parse(body)?;                  // 400 if bad
//! message.check_topic(&["arn:aws:sns:us-east-1:111122223333:relay-sms"])?; // 403
//! verify(&message, &certs).await?;                       // 403 if bad
//! if message.kind == SnsType::Notification {
//!     match SmsNotification::parse(&message.message)? {
//!         SmsNotification::Inbound(text) => { let _ = text.into_inbound_text(); }
//!         SmsNotification::Delivery(event) => { let _ = (event.report(), event.placement); }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod classify;
pub mod client;
pub mod events;
pub mod sns;

pub use classify::{Failure, Scope};
pub use client::{
    AwsSmsClient, AwsSmsConfig, ConfigError, ConfigurationSet, MessageType, OriginationIdentity,
    SendFailure,
};
pub use events::{
    DeliveryEvent, EventError, EventFailure, EventType, SmsNotification, TwoWayMessage,
};
pub use sns::{
    CertCache, CertFetcher, SignatureVersion, SnsError, SnsMessage, SnsType, SubscriptionConfirmer,
    TransportCertFetcher, TransportConfirmer, check_cert_url, check_subscribe_url,
    confirm_subscription, verify,
};

#[cfg(feature = "testing")]
pub mod testing;
