//! `maintenance.json`: a JSON snapshot of live relay status for the QDN
//! dashboard, written atomically, readable by its owner only and with
//! phone numbers masked unless configured otherwise.

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

/// The file mode `maintenance.json` gets by default: its owner reads and
/// writes it, nobody else reads it (it names the customers).
pub const DEFAULT_MODE: u32 = 0o600;

/// An [`EventSink`] that keeps `maintenance.json` up to date: the open
/// dispatches (tag, customer, level, dashboard status) and the most recent
/// events.
///
/// Every write goes to a temporary file created exclusively in the same
/// directory (a file or symlink planted at its name makes the write fail
/// instead of being followed), with the sink's mode ([`DEFAULT_MODE`]
/// unless [`MaintenanceSink::mode`] says otherwise), is flushed, then
/// renamed over the target, so a reader sees the old file or the new one,
/// never half of one. Phone numbers are masked (`+1619•••0100`) unless
/// [`MaintenanceSink::full_numbers`] asks for them whole. Seed it with the
/// store's open dispatches at start ([`MaintenanceSink::seed`]) so a
/// restart does not forget them.
pub struct MaintenanceSink {
    path: PathBuf,
    mode: u32,
    full_numbers: bool,
    state: Mutex<Snapshot>,
}

#[derive(Serialize, Default, Clone)]
struct Snapshot {
    updated_at: Option<Timestamp>,
    open_dispatches: BTreeMap<DispatchId, OpenEntry>,
    recent_events: VecDeque<serde_json::Value>,
}

#[derive(Serialize, Clone)]
struct OpenEntry {
    dispatch_id: DispatchId,
    tag: Tag,
    customer_phone: Option<String>,
    state: State,
    final_status: FinalStatus,
    round: u32,
    level: u32,
    opened_at: Timestamp,
    updated_at: Timestamp,
}

impl MaintenanceSink {
    /// A sink writing to `path` with [`DEFAULT_MODE`] and numbers masked.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: DEFAULT_MODE,
            full_numbers: false,
            state: Mutex::new(Snapshot::default()),
        }
    }

    /// The file's mode bits (Unix permissions, e.g. `0o640` to let a
    /// dashboard's group read it); only the permission bits are kept.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Writes phone numbers whole instead of masked (`+1619•••0100`).
    pub fn full_numbers(mut self, full: bool) -> Self {
        self.full_numbers = full;
        self
    }

    fn number(&self, n: PhoneNumber) -> String {
        if self.full_numbers {
            n.to_string()
        } else {
            mask_number(&n.to_string())
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
                    customer_phone: Some(self.number(d.customer())),
                    state: d.state(),
                    final_status: d.final_status(),
                    round: d.round(),
                    level: d.level(),
                    opened_at: d.opened_at(),
                    updated_at: d.updated_at(),
                },
            );
        }
        self.write(&g).await
    }

    async fn write(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        write_atomic(&self.path, snapshot, self.mode).await
    }

    fn apply(&self, s: &mut Snapshot, e: &RelayEvent) {
        // The job sync's routine bookkeeping (kept out of the dispatch's
        // own history too) says nothing about the relay's live state, and
        // follows a close as often as not.
        if matches!(
            e.kind,
            EventKind::JobSynced { .. } | EventKind::JobSyncPaused
        ) {
            return;
        }
        s.updated_at = Some(e.at);
        let mut event = serde_json::to_value(e).unwrap_or(serde_json::Value::Null);
        if !self.full_numbers {
            mask_numbers_in(&mut event);
        }
        s.recent_events.push_back(event);
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
            EventKind::Opened { customer, .. } => {
                entry.customer_phone = Some(self.number(*customer));
            }
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

/// `+16195550100` → `+1619•••0100`: the country and area code and the last
/// four digits, enough to tell customers apart on a dashboard. Shorter
/// numbers keep two digits at each end. Anything that is not `+` and
/// digits comes back as it was.
pub fn mask_number(n: &str) -> String {
    let Some(digits) = n.strip_prefix('+') else {
        return n.to_owned();
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return n.to_owned();
    }
    let keep = if digits.len() > 8 { 4 } else { 2 };
    if digits.len() <= 2 * keep {
        return format!("+{}•••", &digits[..digits.len().min(keep)]);
    }
    format!("+{}•••{}", &digits[..keep], &digits[digits.len() - keep..])
}

/// Masks every string in a JSON value that is a phone number.
fn mask_numbers_in(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.parse::<PhoneNumber>().is_ok() => {
            *s = mask_number(s);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_numbers_in),
        serde_json::Value::Object(map) => map.values_mut().for_each(mask_numbers_in),
        _ => {}
    }
}

async fn write_atomic<T: Serialize>(path: &Path, value: &T, mode: u32) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = dir.join(format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut opts = std::fs::OpenOptions::new();
        // create_new: fails on anything already at the name, a symlink
        // included, instead of following it.
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        let written = (|| {
            #[cfg(unix)]
            {
                // The mode given at creation is cut by the umask: set it.
                use std::os::unix::fs::PermissionsExt as _;
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait]
impl EventSink for MaintenanceSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        let mut g = self.state.lock().await;
        self.apply(&mut g, event);
        self.write(&g).await.map_err(|e| SinkError(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdn_relay_core::{DispatchId, Timestamp};

    fn opened(customer: &str) -> RelayEvent {
        RelayEvent {
            at: Timestamp::from_millis(1_000),
            dispatch: DispatchId::from_u128(7),
            tag: "K7".parse().expect("tag"),
            kind: EventKind::Opened {
                customer: customer.parse().expect("number"),
                line: "+16195550000".parse().expect("number"),
                sid: "SM00000000000000000000000000000001".parse().expect("sid"),
            },
        }
    }

    #[test]
    fn numbers_are_masked_to_area_code_and_last_four() {
        assert_eq!(mask_number("+16195550100"), "+1619•••0100");
        assert_eq!(mask_number("+442071838750"), "+4420•••8750");
        assert_eq!(mask_number("+4930123"), "+49•••23");
        assert_eq!(mask_number("not a number"), "not a number");
        assert_eq!(mask_number("+1"), "+1•••");
    }

    #[tokio::test]
    async fn events_and_entries_are_masked_unless_asked_for_whole_numbers() {
        let dir = tempfile::tempdir().expect("dir");
        let masked = MaintenanceSink::new(dir.path().join("m.json"));
        masked
            .publish(&opened("+16195550100"))
            .await
            .expect("write");
        let text = std::fs::read_to_string(dir.path().join("m.json")).expect("read");
        assert!(text.contains("+1619•••0100"), "{text}");
        assert!(!text.contains("+16195550100"), "{text}");
        assert!(!text.contains("+16195550000"), "{text}");

        let whole = MaintenanceSink::new(dir.path().join("w.json")).full_numbers(true);
        whole.publish(&opened("+16195550100")).await.expect("write");
        let text = std::fs::read_to_string(dir.path().join("w.json")).expect("read");
        assert!(text.contains("+16195550100"), "{text}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_file_gets_its_mode_and_a_planted_symlink_is_replaced_not_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("maintenance.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").expect("victim");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");

        let sink = MaintenanceSink::new(&path);
        sink.publish(&opened("+16195550100")).await.expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep me");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file(), "the symlink was followed");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let group = MaintenanceSink::new(&path).mode(0o640);
        group.publish(&opened("+16195550100")).await.expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
