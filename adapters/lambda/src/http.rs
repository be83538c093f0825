//! The HTTP function: the relay's axum router behind API Gateway.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::{HeaderValue, Uri, header};
use lambda_http::request::RequestContext;
use lambda_http::{Adapter, RequestExt as _};
use qdn_relay_axum::{AppState, router};

use crate::public_url::{PublicBase, RequestFacts, rebuild};

/// The HTTP function's service: every request's URL is restored (see
/// [`restore`]) and handed to the same router the server serves.
///
/// Cheap to clone. Run it with `lambda_http::run(app)`, or call
/// [`HttpApp::handler`] for the Lambda-event handler `lambda_http::run`
/// would build.
#[derive(Clone)]
pub struct HttpApp {
    router: Router,
    base: Option<Arc<PublicBase>>,
}

impl HttpApp {
    /// Serves `state`'s router. `base` is `RELAY_PUBLIC_URL`; the state's
    /// own [`HttpConfig::public_url`](qdn_relay_app::HttpConfig) must be
    /// `None` (the URL is rebuilt here, per request).
    pub fn new(state: AppState, base: Option<PublicBase>) -> Self {
        Self {
            router: router(state),
            base: base.map(Arc::new),
        }
    }

    /// The handler of Lambda events (API Gateway payload 2.0) that
    /// `lambda_http::run(self)` runs: converts the event into a request,
    /// calls this service, converts the response for API Gateway.
    pub fn handler<'a>(self) -> Adapter<'a, axum::response::Response, Self> {
        Adapter::from(self)
    }
}

impl tower::Service<lambda_http::Request> for HttpApp {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: lambda_http::Request) -> Self::Future {
        let req = restore(req, self.base.as_deref());
        self.router.call(req)
    }
}

/// Makes a request converted from an API Gateway event look to the router
/// like the request the client sent (see [`crate::public_url`]):
///
/// - its URI becomes the route path and query (`/sms/inbound`, without the
///   stage, which `lambda_http` puts in front);
/// - [`OriginalUri`], `Host` and `X-Forwarded-Proto` become those of the
///   public URL, which the router checks Twilio's signature against.
///
/// A request without an API Gateway context is left as it is.
pub fn restore(mut req: lambda_http::Request, base: Option<&PublicBase>) -> lambda_http::Request {
    let rebuilt = {
        let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() else {
            return req;
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok());
        let raw_path = req.raw_http_path();
        let facts = RequestFacts {
            domain_name: ctx.domain_name.as_deref(),
            stage: ctx.stage.as_deref(),
            raw_path: if raw_path.is_empty() {
                req.uri().path()
            } else {
                raw_path
            },
            raw_query: req.uri().query(),
            host,
            forwarded_proto: proto,
        };
        rebuild(base, &facts)
    };
    match rebuilt.route.parse::<Uri>() {
        Ok(route) => *req.uri_mut() = route,
        Err(e) => tracing::warn!(route = %rebuilt.route, error = %e, "unusable request path"),
    }
    let Some(public) = rebuilt.public.and_then(|p| p.parse::<Uri>().ok()) else {
        return req;
    };
    if let (Some(authority), Some(scheme)) = (public.authority(), public.scheme_str())
        && let (Ok(host), Ok(proto)) = (
            HeaderValue::from_str(authority.as_str()),
            HeaderValue::from_str(scheme),
        )
    {
        req.headers_mut().insert(header::HOST, host);
        req.headers_mut().insert("x-forwarded-proto", proto);
    }
    req.extensions_mut().insert(OriginalUri(public));
    req
}
