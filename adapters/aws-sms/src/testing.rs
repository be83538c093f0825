//! Test doubles for the adapters' tests (feature `testing`): an SNS signer
//! with a certificate it makes ([`SnsSigner`]), a certificate fetcher
//! serving it ([`FixedCerts`]), a subscription confirmer that records
//! ([`RecordingConfirmer`]), and AWS's documented payloads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::Value;

use crate::sns::{CertFetcher, SnsError, SubscriptionConfirmer};

/// AWS's documented HTTP(S) notification (Amazon SNS Developer Guide),
/// its signature a placeholder.
pub const SNS_NOTIFICATION: &str = include_str!("../tests/fixtures/sns-notification.json");
/// AWS's documented subscription confirmation.
pub const SNS_SUBSCRIPTION_CONFIRMATION: &str =
    include_str!("../tests/fixtures/sns-subscription-confirmation.json");
/// AWS's documented two-way SMS payload (AWS End User Messaging SMS User
/// Guide).
pub const TWO_WAY_SMS: &str = include_str!("../tests/fixtures/two-way-sms.json");
/// AWS's documented SMS event (AWS End User Messaging SMS User Guide).
pub const SMS_EVENT: &str = include_str!("../tests/fixtures/sms-event.json");

/// An RSA 2048 key and a self-signed certificate for it, standing in for
/// SNS's signing certificate.
pub struct SnsSigner {
    key: rsa::RsaPrivateKey,
    /// The certificate, PEM.
    pub cert_pem: String,
}

impl Default for SnsSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl SnsSigner {
    /// A new key and certificate.
    ///
    /// # Panics
    ///
    /// If the key or certificate cannot be made (a test fails).
    pub fn new() -> Self {
        use aws_lc_rs::encoding::AsDer as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .unwrap_or_else(|e| panic!("an RSA key: {e}"));
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'_> =
            pair.as_der().unwrap_or_else(|e| panic!("PKCS#8: {e}"));
        let pkcs8 = pkcs8.as_ref().to_vec();
        let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap_or_else(|e| panic!("rcgen key: {e}"));
        let cert = rcgen::CertificateParams::new(vec!["sns.us-west-2.amazonaws.com".to_owned()])
            .and_then(|p| p.self_signed(&rc_key))
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        Self {
            key: rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8)
                .unwrap_or_else(|e| panic!("rsa key: {e}")),
            cert_pem: cert.pem(),
        }
    }

    /// Signs an SNS message's JSON in place, as SNS does, with its
    /// `SignatureVersion` (`1`: SHA1withRSA, `2`: SHA256withRSA): the
    /// string to sign is built here from the documented key order,
    /// independently of the crate.
    ///
    /// # Panics
    ///
    /// On a message without `Type` or `SignatureVersion`.
    pub fn sign_message(&self, m: &mut Value) {
        let kind = m["Type"]
            .as_str()
            .unwrap_or_else(|| panic!("Type"))
            .to_owned();
        let keys: &[&str] = if kind == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut text = String::new();
        for k in keys {
            if let Some(v) = m.get(*k).and_then(Value::as_str) {
                text.push_str(&format!("{k}\n{v}\n"));
            }
        }
        let sig = match m["SignatureVersion"].as_str() {
            Some("1") => rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec(),
            Some("2") => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec(),
            v => panic!("no signature version {v:?}"),
        };
        m["Signature"] = base64::engine::general_purpose::STANDARD.encode(sig).into();
    }
}

/// A certificate fetcher serving fixed files by URL, recording fetches.
#[derive(Default)]
pub struct FixedCerts {
    files: BTreeMap<String, Vec<u8>>,
    fetched: Mutex<Vec<String>>,
}

impl FixedCerts {
    /// Serves `pem` at `url` only.
    pub fn serving(url: &str, pem: &str) -> Arc<Self> {
        let mut f = Self::default();
        f.files.insert(url.to_owned(), pem.as_bytes().to_vec());
        Arc::new(f)
    }

    /// The URLs fetched, in order.
    pub fn fetches(&self) -> Vec<String> {
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl CertFetcher for FixedCerts {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SnsError> {
        self.fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(url.to_owned());
        self.files
            .get(url)
            .cloned()
            .ok_or_else(|| SnsError::Fetch(format!("{url} answered HTTP 404")))
    }
}

/// A confirmer that records each URL and answers 200.
#[derive(Default)]
pub struct RecordingConfirmer {
    confirmed: Mutex<Vec<String>>,
}

impl RecordingConfirmer {
    /// The URLs confirmed, in order.
    pub fn confirmed(&self) -> Vec<String> {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl SubscriptionConfirmer for RecordingConfirmer {
    async fn confirm(&self, url: &str) -> Result<(), SnsError> {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(url.to_owned());
        Ok(())
    }
}
