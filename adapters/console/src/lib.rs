//! # qdn-relay-console
//!
//! The operator console: server-rendered pages at `/console` for people
//! (dispatchers on their phones, an office on a desktop), over the same
//! [`Relay`](qdn_relay_core::Relay) API the JSON routes use. It decides
//! nothing itself: an action is a `Relay::dashboard` call, "what happens
//! next" is [`Dispatch::next_step`](qdn_relay_core::Dispatch::next_step),
//! the on-call week is [`qdn_relay_core::first_step`].
//!
//! | route | |
//! |---|---|
//! | `GET /console` | the dispatches: open first, filter by state, search by number, tag or job id |
//! | `GET /console/dispatches/{id}` | one dispatch: timeline, policy, actions |
//! | `POST /console/dispatches/{id}/{action}` | `ack`, `reply` (field `body`), `escalate`, `close` |
//! | `GET /console/on-call` | the week: who a text would reach each hour |
//! | `GET`/`POST /console/sign-in` | the dashboard token (field `token`) becomes a session cookie |
//! | `POST /console/sign-out` | ends the session |
//! | `GET /console/events` | server-sent events that refresh the pages (not behind API Gateway: the pages poll there) |
//! | `GET /console/console.css`, `/console/console.js` | the style sheet and the one small script |
//!
//! **Sign-in.** The token is posted once and checked in constant time; the
//! answer is a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//! unless the host is loopback, expiring after 12 hours) signed with a
//! key derived from the token, so any instance that knows the token
//! accepts it and none keeps sessions. The token is never put in a URL
//! or a log. Every POST but the sign-in carries the session's CSRF token.
//! Without a dashboard token the console is off.
//!
//! [`router`] never binds a port; `qdn-relay-axum` merges it into the
//! relay's router (its feature `console`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use qdn_relay_app::DynRelay;
use qdn_relay_core::{
    DashboardAction, Dispatch, JobSyncMode, ListFilter, RelayError, RelayEvent, State as DState,
};
use qdn_relay_twilio::Secret;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

mod assets;
mod session;
mod view;
mod words;

use session::{COOKIE, Keys, SESSION_TTL, Session};
use view::Frame;

/// A new subscription to the relay's live events.
pub type Subscribe = Arc<dyn Fn() -> broadcast::Receiver<Arc<RelayEvent>> + Send + Sync>;

/// The console's routes (method and path, axum's `{param}` syntax).
pub fn routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/console"),
        (Method::GET, "/console/sign-in"),
        (Method::POST, "/console/sign-in"),
        (Method::POST, "/console/sign-out"),
        (Method::GET, "/console/on-call"),
        (Method::GET, "/console/dispatches/{id}"),
        (Method::POST, "/console/dispatches/{id}/{action}"),
        (Method::GET, EVENTS),
        (Method::GET, "/console/console.css"),
        (Method::GET, "/console/console.js"),
    ]
}

/// The live-update stream: not routed by API Gateway (it would buffer
/// it), where the pages refresh themselves instead.
pub const EVENTS: &str = "/console/events";

/// How many dispatches the list reads.
const LIST_LIMIT: usize = 200;

/// The console's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    relay: Arc<DynRelay>,
    keys: Option<Keys>,
    subscribe: Option<Subscribe>,
}

impl Console {
    /// A console over `relay`, signed in with `dashboard_token` (without
    /// one the console is off: the sign-in page says so).
    pub fn new(relay: Arc<DynRelay>, dashboard_token: Option<&Secret>) -> Self {
        Self {
            inner: Arc::new(Inner {
                relay,
                keys: dashboard_token.map(|t| Keys::new(t.expose())),
                subscribe: None,
            }),
        }
    }

    /// Live updates: `subscribe` gives a new subscription to the relay's
    /// events (the event hub that is one of the relay's sinks). Call
    /// before the console is shared.
    pub fn with_events(
        mut self,
        subscribe: impl Fn() -> broadcast::Receiver<Arc<RelayEvent>> + Send + Sync + 'static,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.subscribe = Some(Arc::new(subscribe));
        }
        self
    }

    fn now(&self) -> qdn_relay_core::Timestamp {
        self.inner.relay.clock().now()
    }

    /// The session the request's cookie carries, if valid now.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let keys = self.inner.keys.as_ref()?;
        let now = self.now();
        cookies(headers)
            .filter(|(k, _)| *k == COOKIE)
            .find_map(|(_, v)| keys.open(v, now))
    }
}

/// The cookies of a request.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

/// Where the console is as the browser sees it: `/console`, with whatever
/// the request's original path had in front (an API Gateway stage).
fn base(original: &Uri, uri: &Uri) -> String {
    let (o, p) = (original.path(), uri.path());
    let prefix = o.strip_suffix(p).unwrap_or("");
    format!("{}/console", prefix.trim_end_matches('/'))
}

/// Whether the request came to a loopback host (the session cookie is
/// `Secure` everywhere else).
fn loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn cookie(base: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let s = format!(
        "{COOKIE}={value}; Path={base}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn html(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        m.into_string(),
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, to), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

/// Security headers on every console answer.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn harden_answer(r: Response) -> Response {
    harden(r)
}

fn form(b: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(b).into_owned().collect()
}

/// The console's routes (see the crate docs). Never binds a port.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/console", get(list))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/on-call", get(on_call))
        .route("/console/dispatches/{id}", get(detail))
        .route("/console/dispatches/{id}/{action}", post(act))
        .route(EVENTS, get(events))
        .route("/console/console.css", get(assets::css))
        .route("/console/console.js", get(assets::js))
        .layer(axum::middleware::map_response(harden_answer))
        .with_state(console)
}

struct Ctx {
    base: String,
    session: Option<Session>,
    csrf: String,
}

impl Console {
    fn ctx(&self, original: &Uri, uri: &Uri, headers: &HeaderMap) -> Ctx {
        let session = self.session(headers);
        let csrf = match (&session, &self.inner.keys) {
            (Some(s), Some(k)) => k.csrf(s),
            _ => String::new(),
        };
        Ctx {
            base: base(original, uri),
            session,
            csrf,
        }
    }

    fn frame<'a>(&self, c: &'a Ctx) -> Frame<'a> {
        Frame {
            base: &c.base,
            session: c
                .session
                .as_ref()
                .map(|s| (s.name.as_str(), c.csrf.as_str())),
            now: self.now(),
            zone: None,
            dispatch: None,
            live: false,
            stream: false,
        }
    }

    fn stream(&self) -> bool {
        self.inner.subscribe.is_some()
    }

    fn sign_in_required(&self, c: &Ctx) -> Response {
        see_other(&format!("{}/sign-in", c.base))
    }

    /// After a relay call changed a dispatch: in
    /// [`JobSyncMode::Background`], bring its job up to date in a task
    /// of its own (as the JSON routes do).
    fn sync_later(&self, d: &Dispatch) {
        let relay = &self.inner.relay;
        if relay.jobs().is_some() && relay.job_sync_mode() == JobSyncMode::Background {
            let relay = Arc::clone(relay);
            let id = d.id();
            tokio::spawn(async move { relay.sync_job(id).await });
        }
    }
}

// ----- sign-in -----------------------------------------------------------------

async fn sign_in_page(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    if c.session.is_some() {
        return see_other(&c.base);
    }
    let f = s.frame(&c);
    html(
        StatusCode::OK,
        view::sign_in(&f, None, s.inner.keys.is_some()),
    )
}

async fn sign_in(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    let f = s.frame(&c);
    let Some(keys) = &s.inner.keys else {
        return html(StatusCode::UNAUTHORIZED, view::sign_in(&f, None, false));
    };
    let fields = form(&body);
    let token = fields.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() || !keys.is_token(token) {
        tracing::warn!("console sign-in refused: wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            view::sign_in(&f, Some("That is not the dashboard token."), true),
        );
    }
    let name = match session::operator_name(fields.get("name").map(String::as_str)) {
        Ok(n) => n,
        Err(e) => return html(StatusCode::BAD_REQUEST, view::sign_in(&f, Some(e), true)),
    };
    let session = keys.issue(s.now(), &name);
    let value = keys.cookie_value(&session);
    let mut r = see_other(&c.base);
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&c.base, &value, SESSION_TTL.as_secs(), !loopback(&headers)),
    );
    r
}

async fn sign_out(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    if let Err(r) = s.check_post(&c, &body) {
        return *r;
    }
    let mut r = see_other(&format!("{}/sign-in", c.base));
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&c.base, "", 0, !loopback(&headers)),
    );
    r
}

impl Console {
    /// A POST needs a session and its CSRF token; anything else changes
    /// nothing and is answered 401 or 403.
    fn check_post(&self, c: &Ctx, body: &[u8]) -> Result<HashMap<String, String>, Box<Response>> {
        let f = self.frame(c);
        let (Some(session), Some(keys)) = (&c.session, &self.inner.keys) else {
            return Err(Box::new(html(
                StatusCode::UNAUTHORIZED,
                view::message(
                    &f,
                    "Signed out",
                    "You are not signed in (or the session ended). Sign in and try again: nothing was changed.",
                ),
            )));
        };
        let fields = form(body);
        let given = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !keys.check_csrf(session, given) {
            tracing::warn!("console action refused: missing or wrong CSRF token");
            return Err(Box::new(html(
                StatusCode::FORBIDDEN,
                view::message(
                    &f,
                    "Refused",
                    "The form was not the console's own (missing or wrong CSRF token): nothing was changed. Reload the page and try again.",
                ),
            )));
        }
        Ok(fields)
    }
}

// ----- pages -------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

async fn list(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    if c.session.is_none() {
        return s.sign_in_required(&c);
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let mut f = s.frame(&c);
    f.live = true;
    f.stream = s.stream();
    let state = q.state.as_deref().filter(|st| words::STATES.contains(st));
    let search = q.q.as_deref().map(str::trim).unwrap_or("");
    let relay = &s.inner.relay;
    let mut error = None;
    // Every open dispatch (up to the limit), however old, and the most
    // recent of the rest.
    let listed = async {
        let mut ds = relay.store().list(ListFilter::Open, LIST_LIMIT).await?;
        for d in relay.store().list(ListFilter::All, LIST_LIMIT).await? {
            if !ds.iter().any(|o| o.id() == d.id()) {
                ds.push(d);
            }
        }
        Ok::<_, qdn_relay_core::StoreError>(ds)
    };
    let mut ds = match listed.await {
        Ok(ds) => ds,
        Err(e) => {
            tracing::error!(error = %e, "console: listing dispatches failed");
            error = Some("The dispatches could not be read; try again shortly.".to_owned());
            Vec::new()
        }
    };
    if !search.is_empty() {
        // The relay's own lookup first (id, job, tag, number, MessageSid);
        // else any part of a number, tag or job id.
        match relay.find(search).await {
            Ok(Some(d)) => ds = vec![d],
            _ => {
                let needle = search.to_ascii_lowercase();
                let digits: String = search.chars().filter(char::is_ascii_digit).collect();
                ds.retain(|d| {
                    d.tag().to_string().to_ascii_lowercase().contains(&needle)
                        || d.job_id()
                            .is_some_and(|j| j.to_string().to_ascii_lowercase().contains(&needle))
                        || (!digits.is_empty() && d.customer().to_string().contains(&digits))
                });
            }
        }
    }
    if let Some(st) = state {
        ds.retain(|d| words::state_word(d) == st);
    }
    // Open (and holding) first, newest first; then the rest, most recently
    // changed first.
    ds.sort_by_key(|d| {
        let waiting = d.state() == DState::Open;
        (
            !waiting,
            std::cmp::Reverse(if waiting {
                d.opened_at()
            } else {
                d.updated_at()
            }),
        )
    });
    let zone = ds
        .first()
        .map(|d| d.policy().time_zone().clone())
        .or_else(|| {
            relay
                .lines()
                .next()
                .and_then(|l| relay.policy(l))
                .map(|p| p.time_zone().clone())
        });
    f.zone = zone.as_ref();
    let v = view::ListView {
        dispatches: &ds,
        state,
        q: search,
        error,
    };
    html(StatusCode::OK, view::list(&f, &v))
}

#[derive(Deserialize, Default)]
struct DetailQuery {
    #[serde(default)]
    done: Option<String>,
    /// `all`: the whole timeline, with what moved out of the record.
    #[serde(default)]
    history: Option<String>,
}

async fn detail(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<DetailQuery>, QueryRejection>,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    if c.session.is_none() {
        return s.sign_in_required(&c);
    }
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let whole = q.history.as_deref() == Some("all");
    let done = q.done.and_then(|d| match d.as_str() {
        "ack" => Some("Acknowledged: escalation stopped."),
        "reply" => Some("Reply sent to the customer."),
        "escalate" => Some("Escalated: the next level was texted."),
        "close" => Some("Closed."),
        _ => None,
    });
    s.render_detail(&c, &id, StatusCode::OK, done, None, whole)
        .await
}

impl Console {
    async fn render_detail(
        &self,
        c: &Ctx,
        key: &str,
        status: StatusCode,
        done: Option<&str>,
        error: Option<&str>,
        whole: bool,
    ) -> Response {
        let mut f = self.frame(c);
        let d = match self.inner.relay.find(key).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return html(
                    StatusCode::NOT_FOUND,
                    view::message(&f, "Not found", &format!("No dispatch {key:?}.")),
                );
            }
            Err(e) => return self.relay_failed(&f, &e),
        };
        f.zone = Some(d.policy().time_zone());
        f.live = true;
        f.stream = self.stream();
        f.dispatch = Some(d.id().to_string());
        // The record's own entries, or all of them when asked (one more
        // store read, only when some moved out).
        let st = if whole {
            match self.inner.relay.status(&d).await {
                Ok(st) => st,
                Err(e) => return self.relay_failed(&f, &e),
            }
        } else {
            d.status()
        };
        let title = format!("#{}", d.tag());
        html(
            status,
            view::page(&f, &title, view::detail(&f, &d, &st, done, error)),
        )
    }

    fn relay_failed(&self, f: &Frame<'_>, e: &RelayError) -> Response {
        tracing::error!(error = %e, "console: the relay failed");
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            view::message(
                f,
                "Try again",
                "The relay could not do that just now (its store is busy or down). Try again shortly.",
            ),
        )
    }
}

async fn act(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    let fields = match s.check_post(&c, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(by) = c.session.as_ref().map(|s| s.name.clone()) else {
        return s.sign_in_required(&c);
    };
    let a = match action.as_str() {
        "ack" => DashboardAction::Ack { by },
        "escalate" => DashboardAction::Escalate { by },
        "close" => DashboardAction::Close { by },
        "reply" => {
            let body = fields.get("body").cloned().unwrap_or_default();
            DashboardAction::Reply { by, body }
        }
        _ => {
            let f = s.frame(&c);
            return html(
                StatusCode::NOT_FOUND,
                view::message(&f, "Not found", "No such action."),
            );
        }
    };
    let relay = &s.inner.relay;
    let d = match relay.find(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let f = s.frame(&c);
            return html(
                StatusCode::NOT_FOUND,
                view::message(&f, "Not found", &format!("No dispatch {id:?}.")),
            );
        }
        Err(e) => return s.relay_failed(&s.frame(&c), &e),
    };
    match relay.dashboard(d.id(), a).await {
        Ok(_) => {
            s.sync_later(&d);
            see_other(&format!("{}/dispatches/{}?done={action}", c.base, d.id()))
        }
        Err(RelayError::Input(e)) => {
            let text = format!("Not done: {e}.");
            s.render_detail(
                &c,
                &d.id().to_string(),
                StatusCode::CONFLICT,
                None,
                Some(&text),
                false,
            )
            .await
        }
        Err(e) => s.relay_failed(&s.frame(&c), &e),
    }
}

async fn on_call(
    State(s): State<Console>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = s.ctx(&original, &uri, &headers);
    if c.session.is_none() {
        return s.sign_in_required(&c);
    }
    let relay = &s.inner.relay;
    let policies: Vec<(String, Arc<qdn_relay_core::Policy>)> = relay
        .lines()
        .filter_map(|l| relay.policy(l).map(|p| (l.to_string(), Arc::clone(p))))
        .collect();
    let mut f = s.frame(&c);
    f.zone = policies.first().map(|(_, p)| p.time_zone());
    html(StatusCode::OK, view::on_call(&f, &policies))
}

/// Server-sent events for the pages: `relay` events carrying only the
/// dispatch id and the event's type (the page reloads what changed).
async fn events(State(s): State<Console>, headers: HeaderMap) -> Response {
    if s.session(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let Some(subscribe) = &s.inner.subscribe else {
        return (StatusCode::NOT_FOUND, "no live events here").into_response();
    };
    let stream = BroadcastStream::new(subscribe()).map(|item| {
        let data = match item {
            Ok(ev) => serde_json::json!({"dispatch": ev.dispatch, "type": ev.kind.name()}),
            Err(_) => serde_json::json!({"lagged": true}),
        };
        Ok::<_, Infallible>(Event::default().event("relay").data(data.to_string()))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_keeps_an_api_gateway_stage_and_loopback_is_recognised() {
        let u = |s: &str| s.parse::<Uri>().expect("uri");
        // The Lambda function routes /console/... and keeps the path the
        // browser used (with its stage) as the original URI.
        assert_eq!(
            base(
                &u("/prod/console/dispatches/X"),
                &u("/console/dispatches/X")
            ),
            "/prod/console"
        );
        assert_eq!(base(&u("/console"), &u("/console")), "/console");
        assert_eq!(base(&u("/elsewhere"), &u("/console")), "/console");
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(h).expect("header"));
            loopback(&m)
        };
        assert!(host("127.0.0.1:8080") && host("localhost") && host("[::1]:80"));
        assert!(!host("relay.example.com") && !host("127.example.com:80") && !host("10.0.0.1"));
        assert!(!loopback(&HeaderMap::new()));
    }
}
