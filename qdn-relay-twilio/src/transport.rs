//! The HTTP stack under the REST client (feature `rest`): [`Transport`]
//! makes one exchange; [`ReqwestTransport`] (feature `client`) is the
//! server's. The Lambda adapter brings its own, over the hyper/rustls
//! client the AWS SDK already links, so its binary holds one HTTP stack.
//!
//! The client decides what an error means from its [`TransportErrorKind`]
//! alone: whether the request may have reached Twilio decides whether a
//! send is retried, so a transport must only say
//! [`TransportErrorKind::Connect`] or [`TransportErrorKind::Request`] when
//! nothing was sent.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// A request as the client builds it: method, absolute URL, headers
/// (authentication included) and the whole body.
pub type Request = http::Request<Bytes>;

/// An answer: its head, and its body to read chunk by chunk.
#[non_exhaustive]
pub struct Answer {
    /// The HTTP status.
    pub status: http::StatusCode,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body, still to read (within the call's timeout).
    pub body: Box<dyn AnswerBody>,
}

impl Answer {
    /// An answer from its parts.
    pub fn new(
        status: http::StatusCode,
        headers: http::HeaderMap,
        body: Box<dyn AnswerBody>,
    ) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// Reads the body to its end, keeping at most `limit` bytes; stops
    /// early once `limit` is reached if `stop_at_limit`. A failed read
    /// ends it and is returned beside what was read.
    pub async fn read_body(
        &mut self,
        limit: usize,
        stop_at_limit: bool,
    ) -> (Vec<u8>, Result<(), TransportError>) {
        let mut body = Vec::new();
        loop {
            match self.body.chunk().await {
                Ok(Some(chunk)) => {
                    let room = limit.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= limit && stop_at_limit {
                        return (body, Ok(()));
                    }
                }
                Ok(None) => return (body, Ok(())),
                Err(e) => return (body, Err(e)),
            }
        }
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// An answer's body, read chunk by chunk.
#[async_trait]
pub trait AnswerBody: Send {
    /// The next chunk; `None` at the end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError>;
}

/// What kind of failure, as far as whether the request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (name resolution, TCP, TLS, the
    /// connect timeout): nothing was sent.
    Connect,
    /// The request could not be built (an invalid URL or header): nothing
    /// was sent.
    Request,
    /// The call's timeout passed once connected: the request may have been
    /// received.
    Timeout,
    /// Any other failure after the connection was made: the request may
    /// have been received.
    Other,
}

/// A failed exchange. The message names the URL and the causes; it holds
/// no header value (credentials travel in headers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// What happened, causes included.
    pub message: String,
}

impl TransportError {
    /// An error of `kind`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The HTTP stack the REST client sends through.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends `request` and returns the answer's head once it has come;
    /// the whole exchange, reading the body included, must end within
    /// `timeout`. Redirects are not followed; connections may be pooled.
    async fn send(&self, request: Request, timeout: Duration) -> Result<Answer, TransportError>;
}

/// `e` and its sources, joined by `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    detail
}

/// [`Transport`] over a `reqwest` client with rustls (feature `client`):
/// no redirects, the connect timeout it was built with, proxies from the
/// environment as reqwest reads them.
#[cfg(feature = "client")]
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

#[cfg(feature = "client")]
impl ReqwestTransport {
    /// A client with this connect timeout.
    pub fn new(connect_timeout: Duration) -> Result<Self, crate::ConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::ConfigError::Http(e.to_string()))?;
        Ok(Self { http })
    }

    fn error(e: &reqwest::Error) -> TransportError {
        let kind = if e.is_connect() {
            TransportErrorKind::Connect
        } else if e.is_builder() {
            TransportErrorKind::Request
        } else if e.is_timeout() {
            TransportErrorKind::Timeout
        } else {
            TransportErrorKind::Other
        };
        TransportError::new(kind, error_chain(e))
    }
}

#[cfg(feature = "client")]
#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: Request, timeout: Duration) -> Result<Answer, TransportError> {
        let mut request = reqwest::Request::try_from(request).map_err(|e| Self::error(&e))?;
        *request.timeout_mut() = Some(timeout);
        let resp = self
            .http
            .execute(request)
            .await
            .map_err(|e| Self::error(&e))?;
        Ok(Answer::new(
            resp.status(),
            resp.headers().clone(),
            Box::new(ReqwestBody(resp)),
        ))
    }
}

#[cfg(feature = "client")]
struct ReqwestBody(reqwest::Response);

#[cfg(feature = "client")]
#[async_trait]
impl AnswerBody for ReqwestBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.0.chunk().await.map_err(|e| {
            let kind = if e.is_timeout() {
                TransportErrorKind::Timeout
            } else {
                TransportErrorKind::Other
            };
            TransportError::new(kind, e.to_string())
        })
    }
}
