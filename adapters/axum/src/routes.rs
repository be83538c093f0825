//! The handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use qdn_relay_app::take_sms_notification;
use qdn_relay_aws_sms::{
    SmsNotification, SnsError, SnsMessage, SnsType, confirm_subscription, verify,
};
use qdn_relay_core::{
    DashboardAction, Dispatch, DispatchId, JobId, JobIdError, JobSyncMode, Keyword, ListFilter,
    Outcome, RelayError, Taken,
};
use qdn_relay_twilio::{
    Form, InboundWebhook, OptOutType, StatusCallback, twiml_empty, twiml_message,
};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use crate::{ApiError, AppState};

type ApiResult<T = Response> = Result<T, ApiError>;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("")
}

fn twiml(xml: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response()
}

impl AppState {
    /// Runs a relay call, and again while it fails with an error that a
    /// later try may not meet (writers collided, the store was busy), with
    /// a growing pause between tries, until the state's retry budget is
    /// spent: a webhook is answered 503 only when the store stays down.
    /// Every relay call is idempotent for a webhook (message ids and
    /// callbacks are deduplicated), so a try that failed changed nothing
    /// a second one could repeat.
    async fn retrying<T, F, Fut>(&self, route: &str, call: F) -> Result<T, RelayError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RelayError>>,
    {
        let recorder = self.inner.recorder.as_ref();
        let on_retry = || {
            if let Some(m) = recorder {
                m.record(&qdn_relay_metrics::retry_observation(route));
            }
        };
        qdn_relay_app::retry_busy(self.inner.retry_budget, on_retry, call).await
    }

    /// A text Twilio posted, to the relay (retrying a busy store). A text
    /// Twilio's Advanced Opt-Out marked (`OptOutType`) is an opt-out or
    /// opt-in whatever its words (`ARRET`), never forwarded; a help
    /// keyword Twilio answered itself is taken and nothing more.
    /// `dispatcher`: it came to the dispatcher-facing route.
    async fn take_text(
        &self,
        hook: InboundWebhook,
        dispatcher: bool,
    ) -> Result<Outcome, RelayError> {
        let opt_out = hook.opt_out_type;
        let text = hook.into_inbound_text();
        let relay = &self.inner.relay;
        let keyword = match opt_out {
            Some(OptOutType::Stop) => Some(Keyword::OptOut),
            Some(OptOutType::Start) => Some(Keyword::OptIn),
            Some(OptOutType::Help) => Some(Keyword::Help),
            _ => None,
        };
        let route = if dispatcher { "reply" } else { "inbound" };
        let taken = self
            .retrying(route, || {
                let text = text.clone();
                async move {
                    match keyword {
                        Some(k) => relay.keyword(text, k).await.map(Taken::from),
                        None if dispatcher => relay.dispatcher_text_durable(text).await,
                        None => relay.inbound_durable(text).await,
                    }
                }
            })
            .await?;
        match &self.inner.background {
            // Answered now; the sends follow in the background.
            Some(tracker) if !taken.is_done() => {
                let outcome = taken.outcome();
                let relay = Arc::clone(relay);
                tracker.spawn(async move {
                    relay.finish(taken).await;
                });
                Ok(outcome)
            }
            _ => Ok(relay.finish(taken).await),
        }
    }

    /// In [`JobSyncMode::Background`], brings the job system up to date
    /// with the dispatch an input changed, in a task of its own, so the
    /// answer does not wait for it.
    fn sync_later(&self, r: &Result<Outcome, RelayError>) {
        let relay = &self.inner.relay;
        if relay.jobs().is_none() || relay.job_sync_mode() != JobSyncMode::Background {
            return;
        }
        if let Ok(outcome) = r
            && let Some(id) = outcome.dispatch_id()
        {
            let relay = Arc::clone(relay);
            tokio::spawn(async move { relay.sync_job(id).await });
        }
    }

    /// The URL Twilio signed: the configured public base URL, else the Host
    /// header, plus the path and query as the client sent them.
    fn signed_url(&self, uri: &Uri, headers: &HeaderMap) -> ApiResult<String> {
        let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        if let Some(base) = &self.inner.public_url {
            return Ok(format!("{base}{pq}"));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .ok_or_else(|| {
                ApiError::bad_request("no Host header to check the signature against")
            })?;
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .map(|p| p.split(',').next().unwrap_or("").trim())
            .filter(|p| *p == "http" || *p == "https")
            .unwrap_or("http");
        Ok(format!("{proto}://{host}{pq}"))
    }

    /// A form posted by Twilio, its signature checked.
    fn twilio_form(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> ApiResult<Form> {
        if content_type(headers) != FORM {
            return Err(ApiError::media_type(FORM));
        }
        let form = Form::parse(body);
        let url = self.signed_url(uri, headers)?;
        let sig = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        self.inner
            .validator
            .validate_form(&url, form.pairs(), sig)
            .map_err(|e| {
                tracing::warn!(url = %url, error = %e, "webhook signature rejected");
                ApiError::signature(&e)
            })?;
        Ok(form)
    }

    fn check_bearer(&self, headers: &HeaderMap, query_token: Option<&str>) -> ApiResult<()> {
        let Some(expected) = &self.inner.dashboard_token else {
            return Err(ApiError::unauthorized(
                "dashboard routes are disabled: the server has no RELAY_DASHBOARD_TOKEN",
            ));
        };
        crate::error::check_bearer(headers, expected, query_token)
    }

    async fn find(&self, key: &str) -> ApiResult<Dispatch> {
        self.inner.relay.find(key).await?.ok_or_else(|| {
            ApiError::not_found(format!(
                "no dispatch {key:?} (a dispatch id, a job id, an open tag, a customer number with an open dispatch, or an inbound MessageSid)"
            ))
        })
    }
}

/// What a dispatcher is told, in TwiML, when their text could not be used.
fn dispatcher_notice(e: &RelayError) -> Option<String> {
    match e {
        RelayError::NoOpenDispatch { tag: Some(t), .. } => {
            Some(format!("No open dispatch #{t}. Your text was not sent."))
        }
        RelayError::NoOpenDispatch { tag: None, .. } => {
            Some("You have no open dispatch. Your text was not sent.".to_owned())
        }
        RelayError::Input(e) => Some(format!("Not sent: {e}.")),
        _ => None,
    }
}

// ----- AWS SMS through SNS ----------------------------------------------------

/// `POST /sms/aws/sns`: an SNS message from one of the configured topics,
/// its signature verified (403 otherwise, nothing changed). A subscription
/// confirmation is confirmed (200); a notification carries a two-way text
/// or a delivery event, taken as a Twilio webhook's would be (204); one the
/// relay cannot use (an unknown line, a dispatch closed since) is logged
/// and answered 204, so SNS does not redeliver it; a busy store is 503, so
/// it does.
pub(crate) async fn aws_sns(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let started = std::time::Instant::now();
    let r = take_aws_sns(&s, b).await;
    s.observe_webhook("aws_sns", started, &r, false);
    r
}

async fn take_aws_sns(s: &AppState, b: Result<Bytes, BytesRejection>) -> ApiResult {
    let b = b?;
    let Some(sns) = &s.inner.sns else {
        return Err(ApiError::not_found(
            "AWS SMS's SNS messages are not taken here: set QDN_AWS_SMS_NUMBER and QDN_AWS_SMS_SNS_TOPICS",
        ));
    };
    let forbidden = |e: SnsError| {
        tracing::warn!(error = %e, "SNS message refused");
        ApiError::new(StatusCode::FORBIDDEN, "invalid_sns_message", e.to_string())
    };
    let m = SnsMessage::parse(&b).map_err(|e| ApiError::bad_request(e.to_string()))?;
    m.check_topic(&sns.topics).map_err(forbidden)?;
    verify(&m, &sns.certs).await.map_err(forbidden)?;
    match m.kind {
        SnsType::SubscriptionConfirmation => {
            confirm_subscription(&m, sns.confirmer.as_ref())
                .await
                .map_err(|e| {
                    tracing::warn!(topic = %m.topic_arn, error = %e, "could not confirm the subscription");
                    ApiError::new(StatusCode::BAD_GATEWAY, "not_confirmed", e.to_string())
                })?;
            tracing::info!(topic = %m.topic_arn, "SNS subscription confirmed");
            Ok(Json(json!({"confirmed": m.topic_arn})).into_response())
        }
        SnsType::UnsubscribeConfirmation => {
            tracing::warn!(topic = %m.topic_arn, "SNS unsubscribed this endpoint");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        SnsType::Notification => {
            let n = match SmsNotification::parse(&m.message) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(message_id = %m.message_id, error = %e, "an SNS notification that is not AWS SMS's");
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            };
            let relay = &s.inner.relay;
            let r = s
                .retrying("aws_sns", || take_sms_notification(relay, n.clone()))
                .await;
            match r {
                Ok(outcome) => {
                    if let Some(o) = outcome {
                        s.sync_later(&Ok(o));
                    }
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(message_id = %m.message_id, error = %e, "an AWS SMS message the relay cannot use");
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                Err(e) => Err(e.into()),
            }
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

// ----- Twilio ----------------------------------------------------------------

pub(crate) async fn inbound(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let started = std::time::Instant::now();
    let mut duplicate = false;
    let r = async {
        let b = b?;
        let form = s.twilio_form(&uri, &headers, &b)?;
        let hook = InboundWebhook::from_form(&form).map_err(|e| ApiError::webhook(&e))?;
        let r = s.take_text(hook, false).await;
        duplicate = matches!(r, Ok(Outcome::Unchanged(_)));
        s.sync_later(&r);
        twilio_answer(r)
    }
    .await;
    s.observe_webhook("inbound", started, &r, duplicate);
    r
}

impl AppState {
    /// Counts a webhook's answer and latency, when metrics are on.
    fn observe_webhook(
        &self,
        route: &str,
        started: std::time::Instant,
        r: &ApiResult,
        duplicate: bool,
    ) {
        let Some(m) = &self.inner.recorder else {
            return;
        };
        let reason = match r {
            Ok(_) if duplicate => "duplicate",
            Ok(_) => "ok",
            Err(e) if e.code == "invalid_signature" || e.code == "invalid_sns_message" => {
                "signature"
            }
            Err(e)
                if matches!(
                    e.status,
                    StatusCode::BAD_REQUEST
                        | StatusCode::UNSUPPORTED_MEDIA_TYPE
                        | StatusCode::PAYLOAD_TOO_LARGE
                ) =>
            {
                "malformed"
            }
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => "busy",
            Err(_) => "error",
        };
        m.record_all(&qdn_relay_metrics::webhook_observations(
            route,
            r.is_ok(),
            reason,
            started.elapsed(),
        ));
    }
}

/// TwiML for a text Twilio posted: empty when it was taken, a message to
/// its sender when a dispatcher's text could not be used, else the error.
fn twilio_answer(r: Result<qdn_relay_core::Outcome, RelayError>) -> ApiResult {
    match r {
        Ok(_) => Ok(twiml(twiml_empty())),
        Err(e) => match dispatcher_notice(&e) {
            Some(notice) => Ok(twiml(twiml_message(&notice))),
            None => Err(e.into()),
        },
    }
}

pub(crate) async fn status(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let started = std::time::Instant::now();
    let mut duplicate = false;
    let r = async {
        let b = b?;
        let r = status_callback(&s, &uri, &headers, &b).await?;
        duplicate = matches!(r, Ok(Outcome::Unchanged(_)));
        s.sync_later(&r);
        r?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    s.observe_webhook("status", started, &r, duplicate);
    r
}

async fn status_callback(
    s: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    b: &Bytes,
) -> ApiResult<Result<Outcome, RelayError>> {
    let form = s.twilio_form(uri, headers, b)?;
    let cb = StatusCallback::from_form(&form).map_err(|e| ApiError::webhook(&e))?;
    let report = cb.into_delivery_report();
    let leg = callback_leg(uri)?;
    let relay = &s.inner.relay;
    let r = s
        .retrying("status", || {
            let report = report.clone();
            async move {
                match leg {
                    Some((dispatch, leg)) => relay.leg_delivery(report, dispatch, leg).await,
                    None => relay.delivery(report).await,
                }
            }
        })
        .await;
    Ok(r)
}

/// The dispatch and leg the relay put in a status callback's URL
/// (`?dispatch=<id>&leg=<n>`; covered by the signature). Other parameters
/// are left alone.
fn callback_leg(uri: &Uri) -> ApiResult<Option<(DispatchId, u32)>> {
    let query = Form::parse(uri.query().unwrap_or("").as_bytes());
    match (query.get("dispatch"), query.get("leg")) {
        (None, None) => Ok(None),
        (Some(d), Some(l)) => {
            let d = d.parse::<DispatchId>().map_err(|e| {
                ApiError::bad_request(format!("invalid dispatch in the callback URL: {e}"))
            })?;
            let l = l.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!("invalid leg {l:?} in the callback URL"))
            })?;
            Ok(Some((d, l)))
        }
        _ => Err(ApiError::bad_request(
            "the callback URL must carry both dispatch and leg, or neither",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyJson {
    job_id: String,
    body: String,
    #[serde(default)]
    by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionJson {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

fn operator(by: Option<String>) -> ApiResult<String> {
    let by = by.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
    let by = by.unwrap_or_else(|| "dashboard".to_owned());
    if by.chars().count() > 64 || by.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "\"by\" must be 1 to 64 printable characters",
        ));
    }
    Ok(by)
}

fn parse_json<T: for<'de> Deserialize<'de> + Default>(
    headers: &HeaderMap,
    b: &[u8],
) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if content_type(headers) != JSON {
        return Err(ApiError::media_type(JSON));
    }
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A dispatcher's text (Twilio form, signed) or a dashboard reply (JSON,
/// bearer).
pub(crate) async fn reply(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let b = b?;
    match content_type(&headers) {
        FORM => {
            let started = std::time::Instant::now();
            let mut duplicate = false;
            let r = async {
                let form = s.twilio_form(&uri, &headers, &b)?;
                let hook = InboundWebhook::from_form(&form).map_err(|e| ApiError::webhook(&e))?;
                let r = s.take_text(hook, true).await;
                duplicate = matches!(r, Ok(Outcome::Unchanged(_)));
                s.sync_later(&r);
                twilio_answer(r)
            }
            .await;
            s.observe_webhook("reply", started, &r, duplicate);
            r
        }
        JSON => {
            s.check_bearer(&headers, None)?;
            let r: ReplyJson = serde_json::from_slice(&b)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let by = operator(r.by)?;
            let d = s.find(&r.job_id).await?;
            let r = s
                .inner
                .relay
                .dashboard(d.id(), DashboardAction::Reply { by, body: r.body })
                .await;
            s.sync_later(&r);
            r?;
            status_of(&s, d.id().to_string()).await
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type {FORM} (Twilio) or {JSON} (dashboard)"),
        )),
    }
}

// ----- dashboard ---------------------------------------------------------------

/// How many of a job's other dispatches a status links to.
const JOB_LINKS: usize = 50;

async fn status_of(s: &AppState, key: String) -> ApiResult {
    let d = s.find(&key).await?;
    let mut status = s.inner.relay.status(&d).await?;
    if let Some(job) = d.job_id() {
        let others = s.inner.relay.by_job(job, JOB_LINKS + 1).await?;
        status = status.with_job_dispatches(&others);
    }
    Ok(Json(status).into_response())
}

pub(crate) async fn dispatch_status(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> ApiResult {
    s.check_bearer(&headers, None)?;
    status_of(&s, job_id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    job_id: Option<String>,
}

pub(crate) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    s.check_bearer(&headers, None)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    // A job's dispatches are listed whatever their state unless asked.
    let filter = match q.status.as_deref() {
        None if q.job_id.is_some() => ListFilter::All,
        None | Some("open") => ListFilter::Open,
        Some("all") => ListFilter::All,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status must be \"open\" or \"all\", got {other:?}"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let ds = match q.job_id {
        Some(job) => {
            let job: JobId = job
                .parse()
                .map_err(|e: JobIdError| ApiError::bad_request(e.to_string()))?;
            let mut ds = s.inner.relay.by_job(&job, limit).await?;
            if filter == ListFilter::Open {
                ds.retain(|d| d.state().is_open());
            }
            ds
        }
        None => s
            .inner
            .relay
            .store()
            .list(filter, limit)
            .await
            .map_err(|e| ApiError::relay(&e.into()))?,
    };
    let items: Vec<_> = ds.iter().map(Dispatch::status).collect();
    Ok(Json(json!({ "dispatches": items })).into_response())
}

async fn action(
    s: AppState,
    headers: HeaderMap,
    job_id: String,
    b: Result<Bytes, BytesRejection>,
    make: impl FnOnce(String, Option<String>) -> ApiResult<DashboardAction>,
) -> ApiResult {
    s.check_bearer(&headers, None)?;
    let b = b?;
    let a: ActionJson = parse_json(&headers, &b)?;
    let by = operator(a.by)?;
    let d = s.find(&job_id).await?;
    let r = s.inner.relay.dashboard(d.id(), make(by, a.body)?).await;
    s.sync_later(&r);
    r?;
    status_of(&s, d.id().to_string()).await
}

pub(crate) async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    action(s, headers, job_id, b, |by, _| {
        Ok(DashboardAction::Ack { by })
    })
    .await
}

pub(crate) async fn dashboard_reply(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    action(s, headers, job_id, b, |by, body| {
        let body = body.ok_or_else(|| ApiError::bad_request("missing \"body\""))?;
        Ok(DashboardAction::Reply { by, body })
    })
    .await
}

pub(crate) async fn close(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    action(s, headers, job_id, b, |by, _| {
        Ok(DashboardAction::Close { by })
    })
    .await
}

/// Escalate now: the next level is texted at once (refused once someone
/// acknowledged, 409, and on a closed or failed dispatch, 409).
pub(crate) async fn escalate(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    action(s, headers, job_id, b, |by, _| {
        Ok(DashboardAction::Escalate { by })
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LinkJson {
    #[serde(default)]
    job_id: Option<String>,
}

/// Links a dispatch to a host job: the job gets the whole conversation.
pub(crate) async fn link(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    s.check_bearer(&headers, None)?;
    let b = b?;
    let l: LinkJson = parse_json(&headers, &b)?;
    let job: JobId = l
        .job_id
        .ok_or_else(|| ApiError::bad_request("missing \"job_id\""))?
        .parse()
        .map_err(|e: JobIdError| ApiError::bad_request(e.to_string()))?;
    let d = s.find(&key).await?;
    let r = s.inner.relay.link_job(d.id(), job).await;
    s.sync_later(&r);
    r?;
    status_of(&s, d.id().to_string()).await
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    access_token: Option<String>,
}

/// Server-sent events: one `event:` per relay event, its JSON as `data:`.
pub(crate) async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    s.check_bearer(&headers, q.access_token.as_deref())?;
    let stream = BroadcastStream::new(s.inner.events.subscribe()).map(|item| {
        Ok(match item {
            Ok(ev) => Event::default()
                .event(ev.kind.name())
                .json_data(&*ev)
                .unwrap_or_else(|_| Event::default().comment("unserialisable event")),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How long `/health` waits for the store before answering 503: a load
/// balancer's check must get an answer before its own timeout.
pub(crate) const HEALTH_STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let relay = s.inner.relay.clone();
    let now = relay.clock().now();
    let checked = tokio::time::timeout(HEALTH_STORE_TIMEOUT, relay.store().due(now, 1)).await;
    match checked {
        Ok(Ok(_)) => Json(json!({"status": "ok"})).into_response(),
        Err(_) => {
            tracing::error!("health check: the store did not answer in {HEALTH_STORE_TIMEOUT:?}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check: store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics` behind the dashboard bearer.
pub(crate) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    s.check_bearer(&headers, None)?;
    metrics_open(State(s)).await
}

/// `GET /metrics` on a listener of its own (no authentication): the
/// gauges read from the store, then everything in the text format.
pub(crate) async fn metrics_open(State(s): State<AppState>) -> ApiResult {
    let Some(m) = s.inner.metrics.clone() else {
        return Err(ApiError::not_found("metrics are off"));
    };
    if let Err(e) = m.refresh_gauges(s.inner.relay.store().as_ref()).await {
        tracing::warn!(error = %e, "metrics: the gauges could not be read");
    }
    Ok((
        [(header::CONTENT_TYPE, qdn_relay_metrics::CONTENT_TYPE)],
        m.render(),
    )
        .into_response())
}

pub(crate) async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::ALLOW, "GET, POST, OPTIONS")],
    )
        .into_response()
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}
