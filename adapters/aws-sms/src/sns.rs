//! SNS messages: the envelope AWS SMS's two-way texts and delivery events
//! arrive in, and its signature.
//!
//! An HTTP(S) subscription receives each message as the JSON body of a
//! POST; a Lambda SNS event source gets the same fields in each record's
//! `Sns` object ([`SnsMessage::parse`] reads both). What a route does with
//! a body, in order:
//!
//! 1. [`SnsMessage::parse`]: the envelope (`Notification`,
//!    `SubscriptionConfirmation`, `UnsubscribeConfirmation`); a bad one is
//!    refused (400).
//! 2. [`SnsMessage::check_topic`]: only the topics the relay subscribed to
//!    (anyone can point a topic of their own at a public URL, and SNS signs
//!    their messages too).
//! 3. [`verify`]: the signature (`SignatureVersion` 1, SHA1withRSA, or 2,
//!    SHA256withRSA) over the [string to sign](SnsMessage::string_to_sign),
//!    with the certificate named by `SigningCertURL`, which must be an
//!    `https://sns.<region>.<partition's domain>/….pem` URL
//!    ([`check_cert_url`]); certificates are fetched through a
//!    [`CertFetcher`] (over a [`Transport`], [`TransportCertFetcher`]) and
//!    kept in a [`CertCache`]. A bad signature is refused (403).
//! 4. For a `SubscriptionConfirmation`, a GET of its `SubscribeURL`
//!    confirms the subscription; for a `Notification`, its `Message` is
//!    the JSON [`crate::SmsNotification::parse`] reads.
//!
//! The certificate is trusted because of where it comes from: an HTTPS
//! URL on SNS's own host in the region's partition, fetched over TLS with
//! the platform's roots (the AWS SDKs' message validators check the same);
//! its chain is not verified again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use qdn_relay_transport::aws::dns_suffix;
use qdn_relay_transport::{Transport, TransportError};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};
use serde::Deserialize;

/// How long a certificate fetch may take.
pub const CERT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest certificate file read.
pub const MAX_CERT_SIZE: usize = 64 * 1024;
/// How many certificates a [`CertCache`] keeps by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 16;

/// Why an SNS message was refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnsError {
    /// The body is not an SNS message.
    #[error("not an SNS message: {0}")]
    Parse(String),
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
    /// The message comes from a topic the relay did not subscribe to.
    #[error("message from topic {0}, which is not one of the relay's")]
    UnexpectedTopic(String),
    /// `SigningCertURL` is not an SNS certificate URL.
    #[error("refused certificate URL {url}: {reason}")]
    CertUrl {
        /// The URL.
        url: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The certificate could not be fetched.
    #[error("could not fetch the signing certificate: {0}")]
    Fetch(String),
    /// The fetched file is not a usable certificate.
    #[error("the signing certificate is not usable: {0}")]
    Certificate(String),
    /// The signature does not verify.
    #[error("the message's signature does not verify")]
    BadSignature,
}

/// The kind of an SNS message (`Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnsType {
    /// A message published to the topic.
    Notification,
    /// A new subscription to confirm (GET its `SubscribeURL`).
    SubscriptionConfirmation,
    /// A subscription was deleted.
    UnsubscribeConfirmation,
}

impl SnsType {
    /// The name SNS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SnsType::Notification => "Notification",
            SnsType::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// How the message is signed (`SignatureVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureVersion {
    /// `1`: SHA1withRSA.
    V1,
    /// `2`: SHA256withRSA.
    V2,
}

/// An SNS message, every field as SNS sent it (the signature decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnsMessage {
    /// `Type`.
    pub kind: SnsType,
    /// `MessageId`: SNS repeats it when it redelivers.
    pub message_id: String,
    /// `TopicArn`.
    pub topic_arn: String,
    /// `Subject`, when the publisher gave one.
    pub subject: Option<String>,
    /// `Message`: for a notification, what was published.
    pub message: String,
    /// `Timestamp`, as sent (it is signed as is).
    pub timestamp: String,
    /// `SignatureVersion`.
    pub signature_version: SignatureVersion,
    /// `Signature`, base64-decoded.
    pub signature: Vec<u8>,
    /// `SigningCertURL`.
    pub signing_cert_url: String,
    /// `SubscribeURL` (confirmations).
    pub subscribe_url: Option<String>,
    /// `Token` (confirmations).
    pub token: Option<String>,
    /// `UnsubscribeURL` (notifications).
    pub unsubscribe_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawMessage {
    #[serde(rename = "Type")]
    kind: Option<String>,
    message_id: Option<String>,
    topic_arn: Option<String>,
    subject: Option<String>,
    message: Option<String>,
    timestamp: Option<String>,
    signature_version: Option<String>,
    signature: Option<String>,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    signing_cert_url: Option<String>,
    #[serde(rename = "SubscribeURL", alias = "SubscribeUrl")]
    subscribe_url: Option<String>,
    token: Option<String>,
    #[serde(rename = "UnsubscribeURL", alias = "UnsubscribeUrl")]
    unsubscribe_url: Option<String>,
}

impl SnsMessage {
    /// Reads an SNS message: the JSON body SNS posts to an HTTP(S)
    /// subscription, or a Lambda SNS record's `Sns` object (which spells
    /// `SigningCertUrl` and `UnsubscribeUrl`).
    pub fn parse(body: &[u8]) -> Result<Self, SnsError> {
        let raw: RawMessage =
            serde_json::from_slice(body).map_err(|e| SnsError::Parse(e.to_string()))?;
        let req = |v: Option<String>, field| v.ok_or(SnsError::Missing(field));
        let kind = match req(raw.kind, "Type")?.as_str() {
            "Notification" => SnsType::Notification,
            "SubscriptionConfirmation" => SnsType::SubscriptionConfirmation,
            "UnsubscribeConfirmation" => SnsType::UnsubscribeConfirmation,
            other => {
                return Err(SnsError::Invalid {
                    field: "Type",
                    reason: format!("{other:?} is not an SNS message type"),
                });
            }
        };
        let signature_version = match req(raw.signature_version, "SignatureVersion")?.as_str() {
            "1" => SignatureVersion::V1,
            "2" => SignatureVersion::V2,
            other => {
                return Err(SnsError::Invalid {
                    field: "SignatureVersion",
                    reason: format!("{other:?} is not 1 or 2"),
                });
            }
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(req(raw.signature, "Signature")?)
            .map_err(|e| SnsError::Invalid {
                field: "Signature",
                reason: e.to_string(),
            })?;
        let confirmation = kind != SnsType::Notification;
        let (subscribe_url, token) = if confirmation {
            (
                Some(req(raw.subscribe_url, "SubscribeURL")?),
                Some(req(raw.token, "Token")?),
            )
        } else {
            (raw.subscribe_url, raw.token)
        };
        Ok(Self {
            kind,
            message_id: req(raw.message_id, "MessageId")?,
            topic_arn: req(raw.topic_arn, "TopicArn")?,
            subject: raw.subject,
            message: req(raw.message, "Message")?,
            timestamp: req(raw.timestamp, "Timestamp")?,
            signature_version,
            signature,
            signing_cert_url: req(raw.signing_cert_url, "SigningCertURL")?,
            subscribe_url,
            token,
            unsubscribe_url: raw.unsubscribe_url,
        })
    }

    /// What SNS signed: `Key\nvalue\n` for each key in its fixed order —
    /// `Message`, `MessageId`, `Subject` (when present), `Timestamp`,
    /// `TopicArn`, `Type` for a notification; `Message`, `MessageId`,
    /// `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type` for a
    /// confirmation.
    pub fn string_to_sign(&self) -> String {
        let mut pairs: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        if self.kind == SnsType::Notification {
            if let Some(s) = &self.subject {
                pairs.push(("Subject", s));
            }
            pairs.push(("Timestamp", &self.timestamp));
        } else {
            pairs.push(("SubscribeURL", self.subscribe_url.as_deref().unwrap_or("")));
            pairs.push(("Timestamp", &self.timestamp));
            pairs.push(("Token", self.token.as_deref().unwrap_or("")));
        }
        pairs.push(("TopicArn", &self.topic_arn));
        pairs.push(("Type", self.kind.as_str()));
        let mut s = String::new();
        for (k, v) in pairs {
            s.push_str(k);
            s.push('\n');
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// Refuses a message from a topic not in `topics` (ARNs, compared
    /// exactly).
    pub fn check_topic<S: AsRef<str>>(&self, topics: &[S]) -> Result<(), SnsError> {
        if topics.iter().any(|t| t.as_ref() == self.topic_arn) {
            Ok(())
        } else {
            Err(SnsError::UnexpectedTopic(self.topic_arn.clone()))
        }
    }
}

/// Checks a `SigningCertURL`: `https`, no user information, no port but
/// 443, no query, a host `sns.<region>.<domain>` where the region is shaped
/// like one (`us-east-1`, `cn-north-1`, `us-gov-west-1`: letters, then
/// a number, between dashes) and the domain is its partition's
/// (`amazonaws.com`, `amazonaws.com.cn`, …, see [`dns_suffix`]), and a
/// path ending in `.pem`. (A bare `[a-z0-9-]+` region would let
/// `sns.s3.amazonaws.com`, an S3 bucket's host, through.)
pub fn check_cert_url(url: &str) -> Result<(), SnsError> {
    check_sns_url(url, true)
}

/// Checks a `SubscribeURL` as [`check_cert_url`] checks a certificate's,
/// but for the path and query (`/?Action=ConfirmSubscription&...`): only
/// SNS's own HTTPS host is ever called to confirm a subscription.
pub fn check_subscribe_url(url: &str) -> Result<(), SnsError> {
    check_sns_url(url, false)
}

fn check_sns_url(url: &str, pem: bool) -> Result<(), SnsError> {
    let refuse = |reason| {
        Err(SnsError::CertUrl {
            url: url.chars().take(300).collect(),
            reason,
        })
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return refuse("not a URL");
    };
    if uri.scheme_str() != Some("https") {
        return refuse("not https");
    }
    let Some(authority) = uri.authority() else {
        return refuse("no host");
    };
    if authority.as_str().contains('@') {
        return refuse("user information in the URL");
    }
    if authority.port_u16().is_some_and(|p| p != 443) {
        return refuse("a port other than 443");
    }
    let host = authority.host().to_ascii_lowercase();
    let sns_host = host
        .strip_prefix("sns.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(region, domain)| is_region(region) && domain == dns_suffix(region));
    if !sns_host {
        return refuse("not an SNS host (sns.<region>.amazonaws.com or its partition's)");
    }
    if pem && (uri.query().is_some() || !uri.path().ends_with(".pem")) {
        return refuse("not a .pem file");
    }
    Ok(())
}

/// Confirms an SNS subscription: a GET of its `SubscribeURL`.
#[async_trait]
pub trait SubscriptionConfirmer: Send + Sync {
    /// GETs `url` (already checked by [`check_subscribe_url`]); `Ok` on
    /// HTTP 200.
    async fn confirm(&self, url: &str) -> Result<(), SnsError>;
}

/// [`SubscriptionConfirmer`] over a [`Transport`], within
/// [`CERT_FETCH_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct TransportConfirmer {
    http: Arc<dyn Transport>,
}

impl TransportConfirmer {
    /// A confirmer over `http`.
    pub fn new(http: Arc<dyn Transport>) -> Self {
        Self { http }
    }
}

#[async_trait]
impl SubscriptionConfirmer for TransportConfirmer {
    async fn confirm(&self, url: &str) -> Result<(), SnsError> {
        let request = http::Request::get(url)
            .body(bytes::Bytes::new())
            .map_err(|e| SnsError::Fetch(format!("{url}: {e}")))?;
        let answer = self
            .http
            .send(request, CERT_FETCH_TIMEOUT)
            .await
            .map_err(|e| SnsError::Fetch(e.message))?;
        if answer.status != http::StatusCode::OK {
            return Err(SnsError::Fetch(format!(
                "confirming the subscription answered HTTP {}",
                answer.status.as_u16()
            )));
        }
        Ok(())
    }
}

/// Confirms the subscription a verified `SubscriptionConfirmation` asks
/// for: its `SubscribeURL` must be SNS's ([`check_subscribe_url`]).
pub async fn confirm_subscription(
    message: &SnsMessage,
    confirmer: &dyn SubscriptionConfirmer,
) -> Result<(), SnsError> {
    let url = message
        .subscribe_url
        .as_deref()
        .ok_or(SnsError::Missing("SubscribeURL"))?;
    check_subscribe_url(url)?;
    confirmer.confirm(url).await
}

/// Whether `s` is shaped like an AWS region: two or more dash-separated
/// lowercase words, then a number (`us-east-1`, `eusc-de-east-1`).
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let Some((number, words)) = parts.split_last() else {
        return false;
    };
    words.len() >= 2
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Fetches a certificate file (PEM) by URL. [`CertCache`] only asks for
/// URLs [`check_cert_url`] accepts.
#[async_trait]
pub trait CertFetcher: Send + Sync {
    /// The file's bytes.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SnsError>;
}

/// [`CertFetcher`] over a [`Transport`]: a GET within
/// [`CERT_FETCH_TIMEOUT`], HTTP 200 only, at most [`MAX_CERT_SIZE`] bytes.
#[derive(Debug, Clone)]
pub struct TransportCertFetcher {
    http: Arc<dyn Transport>,
}

impl TransportCertFetcher {
    /// A fetcher over `http` (the HTTPS client the relay already has).
    pub fn new(http: Arc<dyn Transport>) -> Self {
        Self { http }
    }
}

#[async_trait]
impl CertFetcher for TransportCertFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SnsError> {
        let fetch = |e: TransportError| SnsError::Fetch(e.message);
        let request = http::Request::get(url)
            .header(
                http::header::USER_AGENT,
                concat!("qdn-relay-aws-sms/", env!("CARGO_PKG_VERSION")),
            )
            .body(bytes::Bytes::new())
            .map_err(|e| SnsError::Fetch(format!("{url}: {e}")))?;
        let mut answer = self
            .http
            .send(request, CERT_FETCH_TIMEOUT)
            .await
            .map_err(fetch)?;
        if answer.status != http::StatusCode::OK {
            return Err(SnsError::Fetch(format!(
                "{url} answered HTTP {}",
                answer.status.as_u16()
            )));
        }
        let (body, read) = answer.read_body(MAX_CERT_SIZE + 1, true).await;
        read.map_err(fetch)?;
        if body.len() > MAX_CERT_SIZE {
            return Err(SnsError::Fetch(format!(
                "{url} is larger than {MAX_CERT_SIZE} bytes"
            )));
        }
        Ok(body)
    }
}

/// SNS signing certificates by URL, fetched once through a
/// [`CertFetcher`] and kept (the most recent [`DEFAULT_CACHE_CAPACITY`] by
/// default: SNS publishes a rotated certificate under a new URL). Only
/// URLs [`check_cert_url`] accepts are fetched; a failed fetch is not
/// kept, so the next message tries again.
pub struct CertCache {
    fetcher: Arc<dyn CertFetcher>,
    capacity: usize,
    certs: Mutex<VecDeque<(String, Arc<CertificateDer<'static>>)>>,
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .certs
            .lock()
            .map(|c| c.iter().map(|(u, _)| u.clone()).collect())
            .unwrap_or_default();
        f.debug_struct("CertCache")
            .field("capacity", &self.capacity)
            .field("cached", &urls)
            .finish_non_exhaustive()
    }
}

impl CertCache {
    /// An empty cache fetching through `fetcher`.
    pub fn new(fetcher: Arc<dyn CertFetcher>) -> Self {
        Self::with_capacity(fetcher, DEFAULT_CACHE_CAPACITY)
    }

    /// An empty cache keeping at most `capacity` certificates (at least 1).
    pub fn with_capacity(fetcher: Arc<dyn CertFetcher>, capacity: usize) -> Self {
        Self {
            fetcher,
            capacity: capacity.max(1),
            certs: Mutex::new(VecDeque::new()),
        }
    }

    /// The certificate at `url`: from the cache, or fetched, read and kept.
    pub async fn certificate(&self, url: &str) -> Result<Arc<CertificateDer<'static>>, SnsError> {
        check_cert_url(url)?;
        if let Some(c) = self.cached(url) {
            return Ok(c);
        }
        let body = self.fetcher.fetch(url).await?;
        let der = CertificateDer::from_pem_slice(&body)
            .map_err(|e| SnsError::Certificate(format!("{url}: {e}")))?;
        webpki::EndEntityCert::try_from(&der)
            .map_err(|e| SnsError::Certificate(format!("{url}: {e}")))?;
        let der = Arc::new(der);
        let mut certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        if !certs.iter().any(|(u, _)| u == url) {
            if certs.len() >= self.capacity {
                certs.pop_front();
            }
            certs.push_back((url.to_owned(), der.clone()));
        }
        Ok(der)
    }

    fn cached(&self, url: &str) -> Option<Arc<CertificateDer<'static>>> {
        let certs = self.certs.lock().unwrap_or_else(|e| e.into_inner());
        certs.iter().find(|(u, _)| u == url).map(|(_, c)| c.clone())
    }
}

/// RSA PKCS#1 v1.5 verification with aws-lc-rs, as webpki calls it.
#[derive(Debug)]
struct RsaPkcs1 {
    params: &'static aws_lc_rs::signature::RsaParameters,
    signature_alg: AlgorithmIdentifier,
}

impl SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        aws_lc_rs::signature::UnparsedPublicKey::new(self.params, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg
    }
}

/// `sha1WithRSAEncryption` (1.2.840.113549.1.1.5) with NULL parameters.
const SHA1_WITH_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
];

static RSA_SHA1: RsaPkcs1 = RsaPkcs1 {
    params: &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
    signature_alg: AlgorithmIdentifier::from_slice(SHA1_WITH_RSA),
};

static RSA_SHA256: RsaPkcs1 = RsaPkcs1 {
    params: &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
    signature_alg: alg_id::RSA_PKCS1_SHA256,
};

/// Verifies `message`'s signature with the certificate its
/// `SigningCertURL` names (checked by [`check_cert_url`], fetched or found
/// in `certs`). `Ok` only if the signature, by a 2048- to 8192-bit RSA key,
/// is over the [string to sign](SnsMessage::string_to_sign) with the hash
/// its `SignatureVersion` names.
pub async fn verify(message: &SnsMessage, certs: &CertCache) -> Result<(), SnsError> {
    let der = certs.certificate(&message.signing_cert_url).await?;
    let cert = webpki::EndEntityCert::try_from(der.as_ref())
        .map_err(|e| SnsError::Certificate(e.to_string()))?;
    let alg: &RsaPkcs1 = match message.signature_version {
        SignatureVersion::V1 => &RSA_SHA1,
        SignatureVersion::V2 => &RSA_SHA256,
    };
    cert.verify_signature(alg, message.string_to_sign().as_bytes(), &message.signature)
        .map_err(|_| SnsError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_over_https_confirm_subscriptions() {
        check_subscribe_url("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37")
            .unwrap_or_else(|e| panic!("{e}"));
        for u in [
            "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
            "https://evil.example/?Action=ConfirmSubscription",
            "https://sns.us-west-2.amazonaws.com.evil.example/?Action=ConfirmSubscription",
            "https://sns.us-west-2.amazonaws.com:8443/?Action=ConfirmSubscription",
        ] {
            assert!(check_subscribe_url(u).is_err(), "{u}");
        }
    }

    #[test]
    fn only_sns_hosts_over_https_serve_certificates() {
        let ok = [
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3250158c6b4c4c1f.pem",
            "https://SNS.eu-west-1.AMAZONAWS.com:443/SimpleNotificationService-x.pem",
            "https://sns.us-iso-east-1.c2s.ic.gov/SimpleNotificationService-x.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        ];
        for u in ok {
            check_cert_url(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        }
        let refused = [
            ("http://sns.us-west-2.amazonaws.com/a.pem", "not https"),
            (
                "https://sns.us-west-2.amazonaws.com.evil.example/a.pem",
                "not an SNS host",
            ),
            (
                "https://evil.example/sns.us-west-2.amazonaws.com/a.pem",
                "not an SNS host",
            ),
            ("https://sns.amazonaws.com/a.pem", "not an SNS host"),
            (
                "https://sqs.us-west-2.amazonaws.com/a.pem",
                "not an SNS host",
            ),
            (
                "https://sns.us-west-2.amazonaws.com@evil.example/a.pem",
                "user information",
            ),
            ("https://sns.us_west.amazonaws.com/a.pem", "not an SNS host"),
            // An S3 bucket named "sns", a region in the wrong partition.
            ("https://sns.s3.amazonaws.com/a.pem", "not an SNS host"),
            (
                "https://sns.s3-external-1.amazonaws.com/a.pem",
                "not an SNS host",
            ),
            (
                "https://sns.us-east-1.amazonaws.com.cn/a.pem",
                "not an SNS host",
            ),
            (
                "https://sns.cn-north-1.amazonaws.com/a.pem",
                "not an SNS host",
            ),
            (
                "https://sns.us-west-2.amazonaws.com:8443/a.pem",
                "a port other than 443",
            ),
            (
                "https://sns.us-west-2.amazonaws.com/a.txt",
                "not a .pem file",
            ),
            (
                "https://sns.us-west-2.amazonaws.com/a.pem?x=1",
                "not a .pem file",
            ),
            ("sns.us-west-2.amazonaws.com/a.pem", "not a URL"),
        ];
        for (u, why) in refused {
            match check_cert_url(u) {
                Err(SnsError::CertUrl { reason, .. }) => {
                    assert!(reason.starts_with(why), "{u}: {reason}")
                }
                other => panic!("{u}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_key_order() {
        let mut m = SnsMessage {
            kind: SnsType::Notification,
            message_id: "id".into(),
            topic_arn: "arn".into(),
            subject: Some("subj".into()),
            message: "msg".into(),
            timestamp: "ts".into(),
            signature_version: SignatureVersion::V1,
            signature: Vec::new(),
            signing_cert_url: String::new(),
            subscribe_url: None,
            token: None,
            unsubscribe_url: Some("https://unsub".into()),
        };
        assert_eq!(
            m.string_to_sign(),
            "Message\nmsg\nMessageId\nid\nSubject\nsubj\nTimestamp\nts\nTopicArn\narn\nType\nNotification\n"
        );
        m.subject = None;
        assert_eq!(
            m.string_to_sign(),
            "Message\nmsg\nMessageId\nid\nTimestamp\nts\nTopicArn\narn\nType\nNotification\n"
        );
        m.kind = SnsType::SubscriptionConfirmation;
        m.subscribe_url = Some("https://sub".into());
        m.token = Some("tok".into());
        m.subject = Some("ignored for confirmations".into());
        assert_eq!(
            m.string_to_sign(),
            "Message\nmsg\nMessageId\nid\nSubscribeURL\nhttps://sub\nTimestamp\nts\nToken\ntok\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
    }
}
