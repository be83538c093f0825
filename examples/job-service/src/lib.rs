//! # A job-tracking service that embeds qdn-relay
//!
//! The way to put the relay inside your own application: this service
//! keeps its own jobs (a dumpster delivery, a repair) in its own SQLite
//! file, and the relay, running in the same process and behind the same
//! HTTP server, writes every text of a job's conversation into the job's
//! message log and its milestones onto the job record.
//!
//! ## The flow
//!
//! 1. Someone creates a job for a customer: `POST /jobs`
//!    `{"customer_phone": "+16195550100", "description": "10-yard dumpster"}`.
//! 2. The customer texts the business line; Twilio posts to `/sms/inbound`
//!    (the relay's router, merged into this one). The relay opens a
//!    dispatch, forwards the text to the primary dispatcher, and asks this
//!    service's [`Jobs`](qdn_relay_core::Jobs) implementation ([`JobsDb`])
//!    which job the conversation belongs to: the customer's most recent
//!    open job on that line.
//! 3. Every text in and out (the customer's, the forwards, the
//!    dispatchers' replies) is appended to the job's `messages` table, once
//!    each even though Twilio retries webhooks and the relay retries calls:
//!    the relay gives every text an idempotency key, unique per job here.
//! 4. Milestones land on the job: `forwarded_to_primary_at`,
//!    `forwarded_to_backup_at` (the primary did not answer in time),
//!    `acked_at` / `acked_by` (and `primary_ack_at` when the primary
//!    acked), `failed_at`, `closed_at`.
//! 5. `GET /jobs/{id}` shows the job with its log; the relay's own view is
//!    at `GET /sms/dispatch-status/{id}` (a job id finds its dispatch).
//!
//! The jobs database being down never delays a text: the relay records
//! the failure on the dispatch and its sweep retries until everything has
//! landed.
//!
//! ## Routes
//!
//! | route | |
//! |---|---|
//! | `POST /jobs` | `{"customer_phone", "description"[, "line"]}` → 201 and the job; 400 with a JSON error for bad input |
//! | `GET /jobs?status=open\|closed\|all&limit=N` | `{"jobs": [...]}`, newest first |
//! | `GET /jobs/{id}` | the job, its `messages` and `milestones` |
//! | `POST /jobs/{id}/close` | closes the job and its open dispatches (`{"by"}` optional) |
//! | `/sms/...`, `/health` | the relay's router ([`qdn_relay_axum::router`]) |
//!
//! `/jobs` routes take the relay's dashboard token (`RELAY_DASHBOARD_TOKEN`)
//! as `Authorization: Bearer ...` when one is configured.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use qdn_relay_axum::AppState;
use qdn_relay_core::PhoneNumber;
use qdn_relay_twilio::Secret;

mod api;
pub mod db;

pub use api::MAX_DESCRIPTION_CHARS;
pub use db::{Job, JobDetail, JobNumber, JobStatus, JobsDb};

/// The `/jobs` routes' settings.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The business line new jobs are on unless `POST /jobs` names another
    /// of the relay's lines.
    pub line: PhoneNumber,
    /// The bearer token `/jobs` routes require (they list customers'
    /// numbers and texts, so there is no open mode). Give it the relay's
    /// dashboard token.
    pub dashboard_token: Secret,
}

/// The whole service: the `/jobs` routes over `jobs`, merged with the
/// relay's router (`/sms/...`, `/health`) over `relay`. The relay must
/// have been built with `.jobs(Arc::new(jobs.clone()))`.
pub fn app(relay: AppState, jobs: JobsDb, config: JobsConfig) -> Router {
    let api = api::Api {
        db: jobs,
        relay: Arc::clone(relay.relay()),
        line: config.line,
        token: Arc::new(config.dashboard_token),
    };
    Router::new()
        .route("/jobs", get(api::list).post(api::create))
        .route("/jobs/{id}", get(api::show))
        .route("/jobs/{id}/close", post(api::close))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(api)
        .merge(qdn_relay_axum::router(relay))
}
