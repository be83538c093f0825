//! `maintenance.json`: a JSON snapshot of live relay status for the QDN
//! dashboard, written atomically.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use qdn_relay_core::{
    Dispatch, DispatchId, EventKind, EventSink, FinalStatus, PhoneNumber, RelayEvent, SinkError,
    State, Tag, Timestamp,
};
use serde::Serialize;
use tokio::sync::Mutex;

/// How many recent events the snapshot keeps.
pub const RECENT_EVENTS: usize = 50;

/// An [`EventSink`] that keeps `maintenance.json` up to date: the open
/// dispatches (tag, customer, level, dashboard status) and the most recent
/// events.
///
/// Every write goes to a temporary file in the same directory, is flushed,
/// then renamed over the target, so a reader sees the old file or the new
/// one, never half of one. Seed it with the store's open dispatches at start
/// ([`MaintenanceSink::seed`]) so a restart does not forget them.
pub struct MaintenanceSink {
    path: PathBuf,
    state: Mutex<Snapshot>,
}

#[derive(Serialize, Default, Clone)]
struct Snapshot {
    updated_at: Option<Timestamp>,
    open_dispatches: BTreeMap<DispatchId, OpenEntry>,
    recent_events: VecDeque<RelayEvent>,
}

#[derive(Serialize, Clone)]
struct OpenEntry {
    dispatch_id: DispatchId,
    tag: Tag,
    customer_phone: Option<PhoneNumber>,
    state: State,
    final_status: FinalStatus,
    round: u32,
    level: u32,
    opened_at: Timestamp,
    updated_at: Timestamp,
}

impl MaintenanceSink {
    /// A sink writing to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            state: Mutex::new(Snapshot::default()),
        }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts from these open dispatches (the store's, at start) and writes
    /// the file once.
    pub async fn seed(&self, open: &[Dispatch]) -> std::io::Result<()> {
        let mut g = self.state.lock().await;
        for d in open.iter().filter(|d| d.state().is_open()) {
            g.open_dispatches.insert(
                d.id(),
                OpenEntry {
                    dispatch_id: d.id(),
                    tag: d.tag(),
                    customer_phone: Some(d.customer()),
                    state: d.state(),
                    final_status: d.final_status(),
                    round: d.round(),
                    level: d.level(),
                    opened_at: d.opened_at(),
                    updated_at: d.updated_at(),
                },
            );
        }
        write_atomic(&self.path, &*g).await
    }

    fn apply(s: &mut Snapshot, e: &RelayEvent) {
        s.updated_at = Some(e.at);
        s.recent_events.push_back(e.clone());
        while s.recent_events.len() > RECENT_EVENTS {
            s.recent_events.pop_front();
        }
        let entry = s
            .open_dispatches
            .entry(e.dispatch)
            .or_insert_with(|| OpenEntry {
                dispatch_id: e.dispatch,
                tag: e.tag,
                customer_phone: None,
                state: State::Open,
                final_status: FinalStatus::Delivered,
                round: 0,
                level: 0,
                opened_at: e.at,
                updated_at: e.at,
            });
        entry.updated_at = e.at;
        match &e.kind {
            EventKind::Opened { customer, .. } => entry.customer_phone = Some(*customer),
            EventKind::Forwarded { round, level, .. } => {
                entry.round = *round;
                entry.level = *level;
                if (*round, *level) != (0, 0) && entry.final_status == FinalStatus::Delivered {
                    entry.final_status = FinalStatus::BackupTriggered;
                }
            }
            EventKind::Acked { .. } => {
                entry.state = State::Acked;
                entry.final_status = FinalStatus::Acked;
            }
            EventKind::Closed { .. } | EventKind::Exhausted => {
                s.open_dispatches.remove(&e.dispatch);
            }
            _ => {}
        }
    }
}

async fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let tmp2 = tmp.clone();
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp2)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp2, &target)
    })
    .await
    .map_err(std::io::Error::other)?
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[async_trait]
impl EventSink for MaintenanceSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        let mut g = self.state.lock().await;
        Self::apply(&mut g, event);
        write_atomic(&self.path, &*g)
            .await
            .map_err(|e| SinkError(Box::new(e)))
    }
}
