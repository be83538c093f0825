//! The service's own routes: `/jobs`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use qdn_relay_app::DynRelay;
use qdn_relay_axum::ApiError;
use qdn_relay_core::{DashboardAction, JobId, PhoneNumber};
use qdn_relay_twilio::Secret;
use serde::Deserialize;

use crate::db::{DbError, JobNumber, JobStatus, JobsDb};

/// The longest job description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

type ApiResult<T = Response> = Result<T, ApiError>;

/// What the `/jobs` handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) db: JobsDb,
    pub(crate) relay: Arc<DynRelay>,
    pub(crate) line: PhoneNumber,
    pub(crate) token: Arc<Secret>,
}

fn unavailable(e: DbError) -> ApiError {
    tracing::error!(error = %e, "jobs database failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the jobs database is unavailable; retry",
    )
}

impl Api {
    /// The same bearer token as the relay's dashboard routes.
    fn check_bearer(&self, headers: &HeaderMap) -> ApiResult<()> {
        qdn_relay_axum::check_bearer(headers, &self.token, None)
    }
}

fn job_number(id: &str) -> ApiResult<JobNumber> {
    id.parse()
        .map_err(|()| ApiError::not_found(format!("no job {id:?} (ids look like job-12)")))
}

/// `POST /jobs`.
#[derive(Deserialize)]
struct NewJob {
    customer_phone: Option<String>,
    description: Option<String>,
    /// One of the relay's lines (default: the service's line).
    line: Option<String>,
}

/// `POST /jobs/{id}/close`.
#[derive(Deserialize, Default)]
struct CloseJob {
    by: Option<String>,
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Validates a new job: every problem is a 400 that says what to fix.
fn validate(api: &Api, raw: &[u8]) -> ApiResult<(PhoneNumber, PhoneNumber, String)> {
    let not_an_object = |why: String| {
        ApiError::bad_request(format!(
            "the body must be a JSON object {{\"customer_phone\": \"+16195550100\", \"description\": \"...\"}}: {why}"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| not_an_object(e.to_string()))?;
    if !value.is_object() {
        return Err(not_an_object(format!("got {}", json_kind(&value))));
    }
    let new: NewJob = serde_json::from_value(value).map_err(|e| not_an_object(e.to_string()))?;
    let phone = new.customer_phone.unwrap_or_default();
    if phone.trim().is_empty() {
        return Err(ApiError::bad_request(
            "customer_phone is required: an E.164 number like +16195550100",
        ));
    }
    let customer: PhoneNumber = phone.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "customer_phone {phone:?} is not an E.164 number like +16195550100: {e}"
        ))
    })?;
    let line = match new.line.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => api.line,
        Some(l) => l
            .parse::<PhoneNumber>()
            .ok()
            .filter(|l| api.relay.policy(*l).is_some())
            .ok_or_else(|| {
                ApiError::bad_request(format!("line {l:?} is not one of the relay's lines"))
            })?,
    };
    let policy = api.relay.policy(line).ok_or_else(|| {
        ApiError::bad_request(format!("line {line} is not one of the relay's lines"))
    })?;
    if customer == line || policy.is_target(customer) || api.relay.policy(customer).is_some() {
        return Err(ApiError::bad_request(format!(
            "customer_phone {customer} is a business line or a dispatcher on {line}, not a customer"
        )));
    }
    let description = new.description.unwrap_or_default().trim().to_owned();
    if description.is_empty() {
        return Err(ApiError::bad_request("description must not be empty"));
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "description is over {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok((line, customer, description))
}

/// `POST /jobs`: creates an open job. A conversation the customer already
/// has open on the line, not yet linked to a job, is linked to it.
pub(crate) async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    api.check_bearer(&headers)?;
    let raw = raw?;
    let (line, customer, description) = validate(&api, &raw)?;
    let now = api.relay.clock().now();
    let job = api
        .db
        .create(line, customer, description, now)
        .await
        .map_err(unavailable)?;
    // The customer texted before the job existed: that dispatch resolved
    // to no job; link it now (the relay syncs the whole conversation).
    match api.relay.find(&customer.to_string()).await {
        Ok(Some(d)) if d.line() == line && d.job_id().is_none() => {
            if let Err(e) = api.relay.link_job(d.id(), job.id.job_id()).await {
                tracing::warn!(job = %job.id, dispatch = %d.id(), error = %e, "could not link the open dispatch");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not look for an open dispatch"),
    }
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

/// `GET /jobs/{id}`: the job, its message log and milestones.
pub(crate) async fn show(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    api.check_bearer(&headers)?;
    let n = job_number(&id)?;
    let job = api.db.get(n).await.map_err(unavailable)?;
    let job = job.ok_or_else(|| ApiError::not_found(format!("no job {n}")))?;
    Ok(Json(job).into_response())
}

/// `GET /jobs?status=open|closed|all&limit=N`.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /jobs`: newest first.
pub(crate) async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    api.check_bearer(&headers)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some("open") => Some(JobStatus::Open),
        Some("closed") => Some(JobStatus::Closed),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status {other:?}: expected open, closed or all"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
    let jobs = api.db.list(status, limit).await.map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

/// `POST /jobs/{id}/close` (JSON `{"by": "..."}` optional): closes the job
/// and the relay's open dispatches for it, so the customer's next text
/// starts a new conversation.
pub(crate) async fn close(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    api.check_bearer(&headers)?;
    let n = job_number(&id)?;
    let raw = raw?;
    let req: CloseJob = if raw.iter().all(u8::is_ascii_whitespace) {
        CloseJob::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("expected JSON {{\"by\": \"...\"}}: {e}")))?
    };
    let by = req
        .by
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "job-service".to_owned());
    let now = api.relay.clock().now();
    let job = api.db.close(n, now).await.map_err(unavailable)?;
    let job = job.ok_or_else(|| ApiError::not_found(format!("no job {n}")))?;
    let job_id: JobId = n.job_id();
    for d in api.relay.by_job(&job_id, 32).await? {
        if d.state().is_open() {
            api.relay
                .dashboard(d.id(), DashboardAction::Close { by: by.clone() })
                .await?;
        }
    }
    Ok(Json(job).into_response())
}
