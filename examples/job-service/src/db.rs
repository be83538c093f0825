//! The service's own storage: a SQLite file with its `jobs` and their
//! message logs, and the relay's [`Jobs`] port implemented over it.
//!
//! rusqlite is blocking, so every call runs on Tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) over one connection behind a mutex
//! (plenty for a job tracker; the relay's own store keeps a pool).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::{
    JobId, JobMessage, Jobs, JobsError, Milestone, MilestoneKind, PhoneNumber, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_phone          TEXT    NOT NULL,
    line                    TEXT    NOT NULL,
    description             TEXT    NOT NULL,
    status                  TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at              INTEGER NOT NULL,
    forwarded_to_primary_at INTEGER,
    forwarded_to_backup_at  INTEGER,
    primary_ack_at          INTEGER,
    acked_at                INTEGER,
    acked_by                TEXT,
    failed_at               INTEGER,
    closed_at               INTEGER
);
-- resolve: the customer's most recent open job on a line
CREATE INDEX IF NOT EXISTS jobs_open_by_customer
    ON jobs (line, customer_phone, created_at) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    key         TEXT    NOT NULL,
    dispatch_id TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    direction   TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    author      TEXT,
    from_phone  TEXT    NOT NULL,
    to_phone    TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    media       TEXT,
    sid         TEXT,
    purpose     TEXT,
    at          INTEGER NOT NULL,
    UNIQUE (job_id, key)
);

CREATE TABLE IF NOT EXISTS milestones (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    key         TEXT    NOT NULL,
    dispatch_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    round       INTEGER,
    level       INTEGER,
    to_phone    TEXT,
    by          TEXT,
    via         TEXT,
    UNIQUE (job_id, key)
);
";

/// How long a call waits for another writer's lock before it fails (the
/// relay retries a failed [`Jobs`] call later).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A job's number. Its [`JobId`] for the relay is `job-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobNumber(pub i64);

impl JobNumber {
    /// The id the relay keeps on the job's dispatches.
    pub fn job_id(self) -> JobId {
        JobId::from_str(&self.to_string()).expect("job-<n> is a valid job id")
    }
}

impl fmt::Display for JobNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

impl FromStr for JobNumber {
    type Err = ();
    /// `job-12` (or just `12`).
    fn from_str(s: &str) -> Result<Self, ()> {
        let digits = s.strip_prefix("job-").unwrap_or(s);
        match digits.parse::<i64>() {
            Ok(n) if n > 0 && !digits.starts_with('+') => Ok(Self(n)),
            _ => Err(()),
        }
    }
}

impl Serialize for JobNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Texts from its customer on its line belong to it.
    Open,
    /// Done.
    Closed,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Open => "open",
            JobStatus::Closed => "closed",
        }
    }
}

/// A job record: what the dashboard lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// `job-<n>`.
    pub id: JobNumber,
    /// The customer.
    pub customer_phone: PhoneNumber,
    /// The business line the customer texts.
    pub line: PhoneNumber,
    /// What the job is.
    pub description: String,
    /// Open or closed.
    pub status: JobStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// When the customer's text first went to the primary (level 0).
    pub forwarded_to_primary_at: Option<Timestamp>,
    /// When it first escalated past the primary.
    pub forwarded_to_backup_at: Option<Timestamp>,
    /// When the primary acknowledged (only if the ack came from level 0).
    pub primary_ack_at: Option<Timestamp>,
    /// When someone acknowledged.
    pub acked_at: Option<Timestamp>,
    /// Who acknowledged: a phone number, or `operator <name>`.
    pub acked_by: Option<String>,
    /// When every level was tried without an ack.
    pub failed_at: Option<Timestamp>,
    /// When it was closed.
    pub closed_at: Option<Timestamp>,
}

/// One text in a job's message log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedMessage {
    /// The relay's idempotency key.
    pub key: String,
    /// The relay's dispatch.
    pub dispatch_id: String,
    /// The dispatch's tag (`K7`).
    pub tag: String,
    /// `inbound` (received by the line) or `outbound` (sent from it).
    pub direction: String,
    /// `customer`, `dispatcher` or `relay`.
    pub origin: String,
    /// A dashboard operator, for replies written on the dashboard.
    pub author: Option<String>,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The text.
    pub body: String,
    /// Attached media (received texts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<serde_json::Value>,
    /// The provider's message id (`MessageSid`).
    pub sid: Option<String>,
    /// Why the relay sent it (sent texts).
    pub purpose: Option<serde_json::Value>,
    /// When it was received, or accepted by the provider.
    pub at: Timestamp,
}

/// One milestone of a job's dispatches, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedMilestone {
    /// The relay's idempotency key.
    pub key: String,
    /// The relay's dispatch.
    pub dispatch_id: String,
    /// `forwarded`, `escalated`, `acked`, `failed` or `closed`.
    pub kind: String,
    /// When.
    pub at: Timestamp,
    /// The round (forwards, escalations).
    pub round: Option<u32>,
    /// The level reached, or the acker's.
    pub level: Option<u32>,
    /// Who was texted (forwards, escalations).
    pub to: Option<String>,
    /// Who acknowledged or closed.
    pub by: Option<String>,
    /// How the ack came (`reply`, `command`, `dashboard`).
    pub via: Option<String>,
}

/// A job with its message log and milestones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    /// The record.
    #[serde(flatten)]
    pub job: Job,
    /// Every text, in the order the relay recorded them.
    pub messages: Vec<LoggedMessage>,
    /// Every milestone, in order.
    pub milestones: Vec<LoggedMilestone>,
}

/// The jobs database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error("jobs database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking task died.
    #[error("jobs database: the worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl DbError {
    /// A short, secret-free description for the relay's status (the full
    /// error goes to the log).
    fn public(&self) -> String {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                format!("jobs database unavailable ({:?})", e.code)
            }
            DbError::Sqlite(_) => "jobs database error".to_owned(),
            DbError::Task(_) => "jobs database worker failed".to_owned(),
        }
    }
}

fn jobs_error(e: DbError) -> JobsError {
    tracing::warn!(error = %e, "jobs database call failed; the relay will retry");
    JobsError::new(e.public())
}

/// The service's SQLite jobs database. Cheap to clone.
#[derive(Clone)]
pub struct JobsDb {
    conn: Arc<Mutex<Connection>>,
}

impl JobsDb {
    /// Opens (or creates) the database file, waiting up to
    /// [`DEFAULT_BUSY_TIMEOUT`] for another writer's lock.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        Self::open_with(path, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Opens (or creates) the database file with a lock wait of
    /// `busy_timeout`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<Self, DbError> {
        let path = path.as_ref().to_owned();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(busy_timeout)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", true)?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = Arc::clone(&self.conn);
        let r = tokio::task::spawn_blocking(move || {
            let mut g = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut g)
        })
        .await?;
        Ok(r?)
    }

    /// Creates an open job.
    pub async fn create(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        description: String,
        at: Timestamp,
    ) -> Result<Job, DbError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO jobs (customer_phone, line, description, status, created_at)
                 VALUES (?1, ?2, ?3, 'open', ?4)",
                params![
                    customer.to_string(),
                    line.to_string(),
                    description,
                    at.as_millis()
                ],
            )?;
            let id = c.last_insert_rowid();
            get_job(c, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
        .await
    }

    /// A job with its message log and milestones.
    pub async fn get(&self, id: JobNumber) -> Result<Option<JobDetail>, DbError> {
        self.call(move |c| {
            let Some(job) = get_job(c, id.0)? else {
                return Ok(None);
            };
            let messages = c
                .prepare(
                    "SELECT key, dispatch_id, tag, direction, origin, author, from_phone, to_phone,
                            body, media, sid, purpose, at
                     FROM messages WHERE job_id = ?1 ORDER BY seq",
                )?
                .query_map([id.0], |r| {
                    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
                        Ok(r.get::<_, Option<String>>(i)?
                            .and_then(|s| serde_json::from_str(&s).ok()))
                    };
                    Ok(LoggedMessage {
                        key: r.get(0)?,
                        dispatch_id: r.get(1)?,
                        tag: r.get(2)?,
                        direction: r.get(3)?,
                        origin: r.get(4)?,
                        author: r.get(5)?,
                        from: r.get(6)?,
                        to: r.get(7)?,
                        body: r.get(8)?,
                        media: json(9)?,
                        sid: r.get(10)?,
                        purpose: json(11)?,
                        at: Timestamp::from_millis(r.get(12)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let milestones = c
                .prepare(
                    "SELECT key, dispatch_id, kind, at, round, level, to_phone, by, via
                     FROM milestones WHERE job_id = ?1 ORDER BY seq",
                )?
                .query_map([id.0], |r| {
                    Ok(LoggedMilestone {
                        key: r.get(0)?,
                        dispatch_id: r.get(1)?,
                        kind: r.get(2)?,
                        at: Timestamp::from_millis(r.get(3)?),
                        round: r.get(4)?,
                        level: r.get(5)?,
                        to: r.get(6)?,
                        by: r.get(7)?,
                        via: r.get(8)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(JobDetail {
                job,
                messages,
                milestones,
            }))
        })
        .await
    }

    /// Jobs, newest first, optionally only those with `status`.
    pub async fn list(&self, status: Option<JobStatus>, limit: u32) -> Result<Vec<Job>, DbError> {
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE ?1 IS NULL OR status = ?1
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![status.map(JobStatus::as_str), limit], job_row)?;
            rows.collect()
        })
        .await
    }

    /// Closes a job (closing a closed job changes nothing). `None` if
    /// there is no such job.
    pub async fn close(&self, id: JobNumber, at: Timestamp) -> Result<Option<Job>, DbError> {
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET status = 'closed', closed_at = COALESCE(closed_at, ?2)
                 WHERE id = ?1",
                params![id.0, at.as_millis()],
            )?;
            get_job(c, id.0)
        })
        .await
    }
}

const JOB_COLUMNS: &str = "id, customer_phone, line, description, status, created_at,
    forwarded_to_primary_at, forwarded_to_backup_at, primary_ack_at, acked_at, acked_by,
    failed_at, closed_at";

fn get_job(c: &Connection, id: i64) -> rusqlite::Result<Option<Job>> {
    c.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        [id],
        job_row,
    )
    .optional()
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(Timestamp::from_millis))
    };
    let phone = |i: usize| -> rusqlite::Result<PhoneNumber> {
        let s: String = r.get(i)?;
        s.parse().map_err(|e: qdn_relay_core::PhoneNumberError| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let status: String = r.get(4)?;
    Ok(Job {
        id: JobNumber(r.get(0)?),
        customer_phone: phone(1)?,
        line: phone(2)?,
        description: r.get(3)?,
        status: if status == "closed" {
            JobStatus::Closed
        } else {
            JobStatus::Open
        },
        created_at: Timestamp::from_millis(r.get(5)?),
        forwarded_to_primary_at: ts(6)?,
        forwarded_to_backup_at: ts(7)?,
        primary_ack_at: ts(8)?,
        acked_at: ts(9)?,
        acked_by: r.get(10)?,
        failed_at: ts(11)?,
        closed_at: ts(12)?,
    })
}

/// A serde enum's name (`inbound`, `customer`, `acked`, ...).
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn job_number(job: &JobId) -> Result<JobNumber, JobsError> {
    job.as_str()
        .parse()
        .map_err(|()| JobsError::new(format!("{job} is not a job of this service")))
}

/// Whether the job exists (inside a transaction).
fn job_exists(tx: &rusqlite::Transaction<'_>, id: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether a write found its job.
enum Found {
    Yes,
    NoJob,
}

fn found(job: &JobId, f: Found) -> Result<(), JobsError> {
    match f {
        Found::Yes => Ok(()),
        Found::NoJob => Err(JobsError::new(format!("no job {job}"))),
    }
}

#[async_trait]
impl Jobs for JobsDb {
    /// The customer's most recent open job on the line created at or
    /// before `at` (when the dispatch opened).
    async fn resolve(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        at: Timestamp,
    ) -> Result<Option<JobId>, JobsError> {
        let id = self
            .call(move |c| {
                c.query_row(
                    "SELECT id FROM jobs
                     WHERE line = ?1 AND customer_phone = ?2 AND status = 'open' AND created_at <= ?3
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                    params![line.to_string(), customer.to_string(), at.as_millis()],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
            })
            .await
            .map_err(jobs_error)?;
        Ok(id.map(|n| JobNumber(n).job_id()))
    }

    /// Appends to the job's message log; a key already there changes
    /// nothing.
    async fn append_message(&self, job: &JobId, m: &JobMessage) -> Result<(), JobsError> {
        let id = job_number(job)?;
        let m = m.clone();
        let f = self
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !job_exists(&tx, id.0)? {
                    return Ok(Found::NoJob);
                }
                let media = if m.media.is_empty() {
                    None
                } else {
                    serde_json::to_string(&m.media).ok()
                };
                tx.execute(
                    "INSERT INTO messages (job_id, key, dispatch_id, tag, direction, origin, author,
                        from_phone, to_phone, body, media, sid, purpose, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (job_id, key) DO NOTHING",
                    params![
                        id.0,
                        m.key,
                        m.dispatch.to_string(),
                        m.tag.to_string(),
                        name(&m.direction),
                        name(&m.origin),
                        m.author.as_ref().map(ToString::to_string),
                        m.from.to_string(),
                        m.to.to_string(),
                        m.body,
                        media,
                        m.sid.as_ref().map(ToString::to_string),
                        m.purpose.and_then(|p| serde_json::to_string(&p).ok()),
                        m.at.as_millis(),
                    ],
                )?;
                tx.commit()?;
                Ok(Found::Yes)
            })
            .await
            .map_err(jobs_error)?;
        found(job, f)
    }

    /// Records the milestone and, the first time its key is seen, sets the
    /// job's matching column (the first value wins).
    async fn milestone(&self, job: &JobId, m: &Milestone) -> Result<(), JobsError> {
        let id = job_number(job)?;
        let m = m.clone();
        let f = self
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !job_exists(&tx, id.0)? {
                    return Ok(Found::NoJob);
                }
                let by = m.by.as_ref().map(ToString::to_string);
                let inserted = tx.execute(
                    "INSERT INTO milestones (job_id, key, dispatch_id, kind, at, round, level,
                        to_phone, by, via)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (job_id, key) DO NOTHING",
                    params![
                        id.0,
                        m.key,
                        m.dispatch.to_string(),
                        name(&m.kind),
                        m.at.as_millis(),
                        m.round,
                        m.level,
                        m.to.map(|t| t.to_string()),
                        by,
                        m.via.as_ref().map(name),
                    ],
                )?;
                if inserted == 1 {
                    let at = m.at.as_millis();
                    let sql = match m.kind {
                        MilestoneKind::Forwarded => {
                            "UPDATE jobs SET forwarded_to_primary_at = COALESCE(forwarded_to_primary_at, ?2) WHERE id = ?1"
                        }
                        MilestoneKind::Escalated => {
                            "UPDATE jobs SET forwarded_to_backup_at = COALESCE(forwarded_to_backup_at, ?2) WHERE id = ?1"
                        }
                        MilestoneKind::Acked => {
                            "UPDATE jobs SET acked_by = CASE WHEN acked_at IS NULL THEN ?3 ELSE acked_by END,
                                             primary_ack_at = CASE WHEN acked_at IS NULL AND ?4 = 0 THEN ?2 ELSE primary_ack_at END,
                                             acked_at = COALESCE(acked_at, ?2)
                             WHERE id = ?1"
                        }
                        MilestoneKind::Failed => {
                            "UPDATE jobs SET failed_at = COALESCE(failed_at, ?2) WHERE id = ?1"
                        }
                        // A dispatch closed (a dispatcher's DONE, the relay's
                        // dashboard): the conversation is over, so is the job.
                        MilestoneKind::Closed => {
                            "UPDATE jobs SET status = 'closed', closed_at = COALESCE(closed_at, ?2) WHERE id = ?1"
                        }
                    };
                    match m.kind {
                        MilestoneKind::Acked => tx.execute(sql, params![id.0, at, by, m.level])?,
                        _ => tx.execute(sql, params![id.0, at])?,
                    };
                }
                tx.commit()?;
                Ok(Found::Yes)
            })
            .await
            .map_err(jobs_error)?;
        found(job, f)
    }
}
