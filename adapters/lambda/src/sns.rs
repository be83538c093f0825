//! AWS SMS's two-way texts and delivery events with SNS as the function's
//! event source: the topic invokes the function with each message (one
//! record per invocation, asynchronously) instead of posting it to the
//! HTTP function's `POST /sms/aws/sns` route.
//!
//! Each record is read as that route reads a message
//! ([`SnsMessage::parse`] takes the record's `Sns` object, which spells
//! `SigningCertUrl`): from the configured topics only
//! (`QDN_AWS_SMS_SNS_TOPICS`), its signature verified against SNS's
//! certificate, fetched from SNS's own HTTPS host and cached per instance.
//! Lambda's resource policy already admits only the topic; the signature
//! is checked as well, so a message that reached the function any other
//! way (an invoke by another principal of the account) is refused the
//! same. A notification is then taken as the route takes it
//! ([`take_sms_notification`]).
//!
//! What happens to each record:
//!
//! - taken, or a duplicate (SNS delivers at least once; the core keeps
//!   inbound ids and moves a leg's status only forward): done;
//! - refused (another topic, a bad signature, not an SNS message) or one
//!   the relay cannot use (an unknown line, a dispatch closed since, not
//!   AWS SMS's): logged and dropped, as no retry can change it;
//! - the store busy: tried again within the invocation (for at most
//!   [`RETRY_BUDGET`]), then the invocation fails, so Lambda retries it
//!   (its asynchronous retries, then the function's on-failure
//!   destination keeps it). Without topics configured every invocation
//!   fails the same way, so nothing SNS delivered is dropped unread.

use std::sync::Arc;
use std::time::Duration;

use qdn_relay_app::{DynRelay, RelaySettings, retry_busy, take_sms_notification};
use qdn_relay_aws_sms::{CertCache, SmsNotification, SnsMessage, SnsType, TransportCertFetcher};
use qdn_relay_core::RelayError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::HttpsClient;

/// How long a record waits for a busy store within one invocation.
pub const RETRY_BUDGET: Duration = Duration::from_secs(5);

/// Where SNS messages may come from and how their signatures are checked.
pub struct SnsSource {
    topics: Vec<String>,
    certs: CertCache,
}

impl std::fmt::Debug for SnsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsSource")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl SnsSource {
    /// From the topics to accept and the certificate cache to verify with.
    pub fn new(topics: Vec<String>, certs: CertCache) -> Self {
        Self { topics, certs }
    }

    /// From the settings: `None` unless AWS SMS is configured with SNS
    /// topics (`QDN_AWS_SMS_NUMBER`, `QDN_AWS_SMS_SNS_TOPICS`).
    /// Certificates are fetched over HTTPS with the platform's roots.
    pub fn from_settings(settings: &RelaySettings) -> Option<Self> {
        let aws = settings.aws_sms_over_sns()?;
        let https = Arc::new(HttpsClient::new(aws.config.connect_timeout));
        let certs = CertCache::new(Arc::new(TransportCertFetcher::new(https)));
        Some(Self::new(aws.sns_topics.clone(), certs))
    }
}

/// An SNS event, as Lambda delivers it to a subscribed function.
#[derive(Debug, Clone, Deserialize)]
pub struct SnsEvent {
    /// The records (SNS sends one per invocation).
    #[serde(rename = "Records")]
    pub records: Vec<SnsRecord>,
}

/// One record of an [`SnsEvent`].
#[derive(Debug, Clone, Deserialize)]
pub struct SnsRecord {
    /// `aws:sns`.
    #[serde(rename = "EventSource", default)]
    pub event_source: String,
    /// The subscription that delivered it.
    #[serde(rename = "EventSubscriptionArn", default)]
    pub subscription: String,
    /// The message: SNS's envelope, signed.
    #[serde(rename = "Sns")]
    pub sns: Value,
}

/// Whether an event is SNS's (its records come from `aws:sns`), not an SQS
/// batch or a schedule's.
pub fn is_sns_event(payload: &Value) -> bool {
    payload["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["EventSource"] == "aws:sns")
}

/// What an invocation did with its records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnsReport {
    /// Records the relay took (a duplicate included: it changed nothing).
    pub taken: usize,
    /// Records refused: another topic, a bad signature, not an SNS message.
    pub refused: usize,
    /// Records the relay cannot use (an unknown line, a dispatch closed
    /// since, a notification that is not AWS SMS's, a confirmation).
    pub ignored: usize,
}

/// Why an invocation failed; Lambda retries it.
#[derive(Debug, thiserror::Error)]
pub enum SnsSourceError {
    /// No topics are configured: the message cannot be checked.
    #[error(
        "an SNS message arrived but QDN_AWS_SMS_NUMBER and QDN_AWS_SMS_SNS_TOPICS do not name its topic source; it is kept for Lambda's retries"
    )]
    NotConfigured,
    /// The store failed or stayed busy.
    #[error("the relay could not take SNS message {message_id}: {error}")]
    Relay {
        /// The SNS message id.
        message_id: String,
        /// What failed.
        error: RelayError,
    },
}

impl From<SnsSourceError> for lambda_runtime::Diagnostic {
    fn from(e: SnsSourceError) -> Self {
        let error_type = match e {
            SnsSourceError::NotConfigured => "SnsNotConfigured",
            SnsSourceError::Relay { .. } => "SnsMessageFailed",
        };
        tracing::error!(error = %e, "SNS message not taken; Lambda delivers it again");
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// Takes an SNS event's records (see the module docs).
///
/// # Errors
///
/// [`SnsSourceError`] when a record must be delivered again: the store is
/// down or stayed busy, or no topics are configured. Records before it
/// were taken; taking them again changes nothing.
pub async fn handle_sns(
    relay: &DynRelay,
    source: Option<&SnsSource>,
    event: SnsEvent,
) -> Result<SnsReport, SnsSourceError> {
    let source = source.ok_or(SnsSourceError::NotConfigured)?;
    let mut report = SnsReport::default();
    for record in event.records {
        let raw = serde_json::to_vec(&record.sns).unwrap_or_default();
        let m = match SnsMessage::parse(&raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(subscription = %record.subscription, error = %e, "not an SNS message; dropped");
                report.refused += 1;
                continue;
            }
        };
        let checked = match m.check_topic(&source.topics) {
            Ok(()) => qdn_relay_aws_sms::verify(&m, &source.certs).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            tracing::warn!(message_id = %m.message_id, topic = %m.topic_arn, error = %e, "SNS message refused");
            report.refused += 1;
            continue;
        }
        if m.kind != SnsType::Notification {
            tracing::info!(message_id = %m.message_id, kind = m.kind.as_str(), "an SNS message that is not a notification; nothing to take");
            report.ignored += 1;
            continue;
        }
        let n = match SmsNotification::parse(&m.message) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(message_id = %m.message_id, error = %e, "an SNS notification that is not AWS SMS's");
                report.ignored += 1;
                continue;
            }
        };
        match retry_busy(
            RETRY_BUDGET,
            || {},
            || take_sms_notification(relay, n.clone()),
        )
        .await
        {
            Ok(Some(_)) => report.taken += 1,
            Ok(None) => report.ignored += 1,
            Err(e) if e.is_refusal() => {
                tracing::warn!(message_id = %m.message_id, error = %e, "an AWS SMS message the relay cannot use");
                report.ignored += 1;
            }
            Err(error) => {
                return Err(SnsSourceError::Relay {
                    message_id: m.message_id,
                    error,
                });
            }
        }
    }
    Ok(report)
}
