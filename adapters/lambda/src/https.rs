//! The one HTTP client of the Lambda functions: hyper 1 with rustls, the
//! stack the AWS SDK itself is built on, so the binary links a single
//! HTTP/TLS stack. It carries the Twilio REST client
//! ([`qdn_relay_twilio::Transport`]) and the SSM / Secrets Manager reads
//! ([`crate::secrets::AwsSecretFetcher`]).
//!
//! - HTTP/1.1 only, `http://` or `https://`, connections pooled (90 s
//!   idle), no redirects, no proxy (as the AWS SDK's default client).
//! - TLS: rustls with the platform's root certificates
//!   (`rustls-native-certs`, as the AWS SDK), loaded once per process at
//!   the first HTTPS request, not at init; the same crypto provider as the
//!   SDK (aws-lc-rs).
//! - A connect timeout per client, an overall timeout per exchange
//!   (reading the body included).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use qdn_relay_twilio::transport::{
    Answer, AnswerBody, Request, Transport, TransportError, TransportErrorKind, error_chain,
};

type Hyper = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The rustls configuration, built once per process (the root store is
/// read from the system).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    static TLS: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some root certificates could not be read");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (valid, _invalid) = roots.add_parsable_certificates(found.certs);
        if valid == 0 {
            return Err("no root certificate found on this system".to_owned());
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| format!("TLS configuration: {e}"))
    })
    .clone()
}

/// An HTTPS client (see the [module docs](self)). Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct HttpsClient {
    connect_timeout: Duration,
    hyper: Arc<OnceLock<Result<Hyper, String>>>,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client whose connections must be made within `connect_timeout`
    /// (name resolution, TCP and the TLS handshake).
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            hyper: Arc::default(),
        }
    }

    fn hyper(&self) -> Result<&Hyper, TransportError> {
        self.hyper
            .get_or_init(|| {
                let tls = tls_config()?;
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_nodelay(true);
                http.set_connect_timeout(Some(self.connect_timeout));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Ok(Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(https))
            })
            .as_ref()
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e.clone()))
    }
}

#[async_trait]
impl Transport for HttpsClient {
    async fn send(&self, request: Request, timeout: Duration) -> Result<Answer, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let url = request.uri().to_string();
        let sending = || format!("error sending request for url ({url})");
        let hyper = self.hyper()?;
        let resp =
            match tokio::time::timeout_at(deadline, hyper.request(request.map(Full::new))).await {
                Err(_) => {
                    return Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        format!("{}: operation timed out", sending()),
                    ));
                }
                Ok(Err(e)) => {
                    let kind = if e.is_connect() {
                        TransportErrorKind::Connect
                    } else {
                        TransportErrorKind::Other
                    };
                    return Err(TransportError::new(
                        kind,
                        format!("{}: {}", sending(), error_chain(&e)),
                    ));
                }
                Ok(Ok(resp)) => resp,
            };
        let (head, body) = resp.into_parts();
        Ok(Answer::new(
            head.status,
            head.headers,
            Box::new(HyperBody { body, deadline }),
        ))
    }
}

struct HyperBody {
    body: hyper::body::Incoming,
    deadline: tokio::time::Instant,
}

#[async_trait]
impl AnswerBody for HyperBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            match tokio::time::timeout_at(self.deadline, self.body.frame()).await {
                Err(_) => {
                    return Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        "error decoding response body: operation timed out",
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(TransportError::new(
                        TransportErrorKind::Other,
                        format!("error decoding response body: {}", error_chain(&e)),
                    ));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }
}
