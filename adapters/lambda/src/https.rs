//! The one HTTP client of the Lambda functions: hyper 1 with rustls, so
//! the binary links a single HTTP/TLS stack. It carries the Twilio REST
//! client (as a [`qdn_relay_transport::Transport`]), the SSM / Secrets Manager
//! reads ([`crate::secrets::AwsSecretFetcher`]) and the AWS SDK's DynamoDB
//! calls ([`sdk::SdkHttpClient`], in place of the SDK's own client).
//!
//! - HTTP/1.1 only, `http://` or `https://`, connections pooled (90 s
//!   idle), no redirects, no proxy (as the AWS SDK's default client; unlike
//!   reqwest, `HTTPS_PROXY` is not read).
//! - TLS: rustls with aws-lc-rs (post-quantum key exchange preferred, as
//!   the SDK's client) and the platform's root certificates
//!   (`rustls-native-certs`, as the SDK), read once per process: when the
//!   DynamoDB client is built at init (as the SDK's own client does), else
//!   at the first request.
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
use qdn_relay_transport::{
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

/// The AWS SDK's HTTP client ([`aws_smithy_runtime_api::client::http::HttpClient`])
/// over [`HttpsClient`]: the DynamoDB client sends through the same hyper /
/// rustls stack as everything else, so the SDK's own client (and its
/// HTTP/2 implementation, unused by DynamoDB) stays out of the binary.
///
/// Connect and read timeouts come from the SDK's settings (per operation
/// configuration, one pool per distinct connect timeout); transport
/// failures map to the SDK's error classes as its own client maps them
/// (connection failures and dropped connections are I/O errors, which its
/// retry strategy retries).
#[cfg(feature = "dynamo")]
pub mod sdk {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::{
        RuntimeComponents, RuntimeComponentsBuilder,
    };
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::config_bag::ConfigBag;
    use bytes::Bytes;
    use http_body_util::Full;

    use super::HttpsClient;

    /// The connect timeout when the SDK's settings give none.
    const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

    /// See the [module docs](self).
    #[derive(Debug, Default, Clone)]
    pub struct SdkHttpClient {
        /// One client per connect timeout seen (in practice one).
        pools: Arc<Mutex<Vec<(Duration, HttpsClient)>>>,
    }

    impl SdkHttpClient {
        /// A client with no connection made yet.
        pub fn new() -> Self {
            Self::default()
        }

        fn pool(&self, connect_timeout: Duration) -> HttpsClient {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, c)) = pools.iter().find(|(t, _)| *t == connect_timeout) {
                return c.clone();
            }
            let c = HttpsClient::new(connect_timeout);
            pools.push((connect_timeout, c.clone()));
            c
        }
    }

    impl HttpClient for SdkHttpClient {
        /// Called when an SDK client is built: as the SDK's own client
        /// does, the root certificates are read now, at init, rather than
        /// by the first request.
        fn validate_base_client_config(
            &self,
            _: &RuntimeComponentsBuilder,
            _: &ConfigBag,
        ) -> Result<(), BoxError> {
            let _ = super::tls_config();
            Ok(())
        }

        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            _components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(Connector {
                http: self.pool(
                    settings
                        .connect_timeout()
                        .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                ),
                read_timeout: settings.read_timeout(),
            })
        }
    }

    #[derive(Debug)]
    struct Connector {
        http: HttpsClient,
        read_timeout: Option<Duration>,
    }

    impl HttpConnector for Connector {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let http = self.http.clone();
            let read_timeout = self.read_timeout;
            HttpConnectorFuture::new(async move {
                let request = request
                    .try_into_http1x()
                    .map_err(|e| ConnectorError::user(e.into()))?;
                let (head, body) = request.into_parts();
                // DynamoDB's requests are JSON in memory; a streaming body
                // is not something this client sends.
                let body = body.bytes().map(Bytes::copy_from_slice).ok_or_else(|| {
                    ConnectorError::user("a streaming request body is not supported".into())
                })?;
                let request = http::Request::from_parts(head, Full::new(body));
                let hyper = http
                    .hyper()
                    .map_err(|e| ConnectorError::io(e.message.into()))?;
                let sent = hyper.request(request);
                let resp = match read_timeout {
                    Some(t) => tokio::time::timeout(t, sent).await.map_err(|_| {
                        ConnectorError::timeout(
                            format!("no answer within the read timeout ({t:?})").into(),
                        )
                    })?,
                    None => sent.await,
                }
                .map_err(to_connector_error)?;
                let resp = resp.map(SdkBody::from_body_1_x);
                HttpResponse::try_from(resp).map_err(|e| ConnectorError::other(e.into(), None))
            })
        }
    }

    /// The SDK's classes, as its own hyper client assigns them.
    fn to_connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
        if e.is_connect() {
            return ConnectorError::io(e.into());
        }
        let hyper = {
            let mut src = std::error::Error::source(&e);
            let mut found = None;
            while let Some(s) = src {
                if let Some(h) = s.downcast_ref::<hyper::Error>() {
                    found = Some((
                        h.is_timeout(),
                        h.is_user(),
                        h.is_closed() || h.is_canceled() || h.is_incomplete_message(),
                    ));
                    break;
                }
                src = s.source();
            }
            found
        };
        match hyper {
            Some((true, _, _)) => ConnectorError::timeout(e.into()),
            Some((_, true, _)) => ConnectorError::user(e.into()),
            Some((_, _, true)) => ConnectorError::io(e.into()),
            _ => ConnectorError::other(e.into(), None),
        }
    }
}
