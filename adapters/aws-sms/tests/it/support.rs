//! Shared pieces: the fixtures, and a test SNS signer with a certificate it
//! makes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use qdn_relay_aws_sms::{CertFetcher, SnsError};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::Value;

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture file's JSON.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An RSA 2048 key and a self-signed certificate for it, standing in for
/// SNS's signing certificate.
pub struct Signer {
    key: rsa::RsaPrivateKey,
    /// The certificate, PEM.
    pub cert_pem: String,
}

impl Signer {
    pub fn new() -> Self {
        use aws_lc_rs::encoding::AsDer as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("an RSA key");
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().expect("PKCS#8");
        let pkcs8 = pkcs8.as_ref().to_vec();
        let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .expect("rcgen key");
        let cert = rcgen::CertificateParams::new(vec!["sns.us-west-2.amazonaws.com".to_owned()])
            .expect("params")
            .self_signed(&rc_key)
            .expect("certificate");
        Self {
            key: rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).expect("rsa key"),
            cert_pem: cert.pem(),
        }
    }

    /// The signature of `text` for a `SignatureVersion`: SHA1withRSA (1)
    /// or SHA256withRSA (2), base64.
    pub fn sign(&self, version: &str, text: &str) -> String {
        let sig = match version {
            "1" => rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec(),
            "2" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.key.clone())
                .sign(text.as_bytes())
                .to_vec(),
            v => panic!("no signature version {v}"),
        };
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// Signs an SNS message's JSON in place, as SNS does: the string to
    /// sign is built here independently of the crate, from the documented
    /// key order.
    pub fn sign_message(&self, m: &mut Value) {
        let kind = m["Type"].as_str().expect("Type").to_owned();
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
        let version = m["SignatureVersion"].as_str().expect("version").to_owned();
        m["Signature"] = self.sign(&version, &text).into();
    }
}

/// A certificate fetcher serving fixed files by URL, counting fetches.
#[derive(Default)]
pub struct FakeCerts {
    pub files: BTreeMap<String, Vec<u8>>,
    pub fetched: Mutex<Vec<String>>,
}

impl FakeCerts {
    pub fn serving(url: &str, pem: &str) -> Arc<Self> {
        let mut f = Self::default();
        f.files.insert(url.to_owned(), pem.as_bytes().to_vec());
        Arc::new(f)
    }

    pub fn fetches(&self) -> Vec<String> {
        self.fetched.lock().expect("not poisoned").clone()
    }
}

#[async_trait]
impl CertFetcher for FakeCerts {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, SnsError> {
        self.fetched
            .lock()
            .expect("not poisoned")
            .push(url.to_owned());
        self.files
            .get(url)
            .cloned()
            .ok_or_else(|| SnsError::Fetch(format!("{url} answered HTTP 404")))
    }
}
