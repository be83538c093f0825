//! # qdn-relay-transport
//!
//! The HTTP exchange under qdn-relay's outbound clients: the Twilio REST
//! client (`qdn-relay-twilio`), the AWS JSON calls (SMS, SSM, Secrets
//! Manager). [`Transport`] makes one exchange; [`ReqwestTransport`]
//! (feature `reqwest`) is the server's. The Lambda functions bring their
//! own, over the hyper/rustls client the AWS SDK already links, so their
//! binary holds one HTTP stack. No client depends on another client's
//! crate to get it.
//!
//! A client decides what an error means from its [`TransportErrorKind`]
//! alone: whether the request may have reached the peer decides whether a
//! send is retried, so a transport must only say
//! [`TransportErrorKind::Connect`] or [`TransportErrorKind::Request`] when
//! nothing was sent.
//!
//! Feature `aws` adds [`aws`]: AWS JSON-protocol calls (endpoints,
//! credentials from the environment, SigV4 signing, error answers) for the
//! clients that call AWS without the SDK.
//!
//! Every implementation must behave alike where a client can tell:
//! `qdn-relay-twilio`'s `transport_conformance_tests!` (feature `testing`)
//! runs the same scenarios over any of them.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "aws")]
pub mod aws;
mod retry;

pub use retry::{Failed, InvalidSetting, RetryPolicy};

use async_trait::async_trait;
use bytes::Bytes;

/// A request as a client builds it: method, absolute URL, headers
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

/// The HTTP stack a client sends through.
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

/// An HTTP client that could not be built (its TLS configuration, most
/// likely). The message names the causes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct BuildError {
    /// What happened, causes included.
    pub message: String,
}

/// [`Transport`] over a `reqwest` client with rustls (feature `reqwest`):
/// no redirects, the connect timeout it was built with, proxies from the
/// environment as reqwest reads them.
#[cfg(feature = "reqwest")]
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

#[cfg(feature = "reqwest")]
impl ReqwestTransport {
    /// A client with this connect timeout.
    pub fn new(connect_timeout: Duration) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError {
                message: error_chain(&e),
            })?;
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

#[cfg(feature = "reqwest")]
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

#[cfg(feature = "reqwest")]
struct ReqwestBody(reqwest::Response);

#[cfg(feature = "reqwest")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of fixed chunks, then an error if `fail`.
    struct Chunks(Vec<&'static [u8]>, bool);

    #[async_trait]
    impl AnswerBody for Chunks {
        async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
            if self.0.is_empty() {
                return if self.1 {
                    Err(TransportError::new(TransportErrorKind::Timeout, "cut"))
                } else {
                    Ok(None)
                };
            }
            Ok(Some(Bytes::from_static(self.0.remove(0))))
        }
    }

    fn answer(chunks: Vec<&'static [u8]>, fail: bool) -> Answer {
        Answer::new(
            http::StatusCode::OK,
            http::HeaderMap::new(),
            Box::new(Chunks(chunks, fail)),
        )
    }

    #[tokio::test]
    async fn read_body_keeps_at_most_the_limit() {
        let (body, read) = answer(vec![b"abc", b"def", b"gh"], false)
            .read_body(5, false)
            .await;
        assert_eq!((body.as_slice(), read), (&b"abcde"[..], Ok(())));
        let (body, read) = answer(vec![b"abc"], false).read_body(64, true).await;
        assert_eq!((body.as_slice(), read), (&b"abc"[..], Ok(())));
    }

    #[tokio::test]
    async fn read_body_stops_at_the_limit_when_asked() {
        // The failing end is never reached: reading stopped at the limit.
        let (body, read) = answer(vec![b"abc", b"def"], true).read_body(3, true).await;
        assert_eq!((body.as_slice(), read), (&b"abc"[..], Ok(())));
        let (body, read) = answer(vec![b"abc", b"def"], true).read_body(3, false).await;
        assert_eq!(body, b"abc");
        assert_eq!(read.map_err(|e| e.kind), Err(TransportErrorKind::Timeout));
    }

    #[test]
    fn error_chain_joins_the_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
