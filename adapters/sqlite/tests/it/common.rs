//! Helpers: stores in temporary files, and dispatches to save.

use async_trait::async_trait;
use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{
    Dispatch, DispatchId, Due, Input, ListFilter, PhoneNumber, ProviderMessageId, Store,
    StoreError, Tag, Timestamp,
};
use qdn_relay_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

/// A store in a file of its own temporary directory, removed on drop.
pub struct FileStore<S = SqliteStore> {
    pub store: S,
    pub dir: TempDir,
}

impl FileStore<qdn_relay_sqlite::MirroredStore> {
    /// A fresh, empty file owned by a mirror.
    pub async fn mirrored() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store = qdn_relay_sqlite::MirroredStore::open(dir.path().join("relay.db"))
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        Self { store, dir }
    }
}

impl<S> FileStore<S> {
    /// The database file.
    pub fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("relay.db")
    }
}

impl FileStore {
    /// A fresh, empty store in a new temporary directory.
    pub async fn fresh() -> Self {
        Self::fresh_with(SqliteOptions::default()).await
    }

    /// [`FileStore::fresh`] with options.
    pub async fn fresh_with(options: SqliteOptions) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store = SqliteStore::open_with(dir.path().join("relay.db"), options)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        Self { store, dir }
    }

    /// The database file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("relay.db")
    }
}

#[async_trait]
impl<S: Store> Store for FileStore<S> {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.store.get(id).await
    }
    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.store.save(d, expected).await
    }
    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.store.by_inbound_sid(sid).await
    }
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.store.by_leg_sid(sid).await
    }
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<qdn_relay_core::InboundLookup, StoreError> {
        self.store.inbound_lookup(line, from, sid).await
    }
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.store.open_for_customer(line, customer).await
    }
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.store.open_by_tag(tag).await
    }
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.store.first_free_tag(candidates).await
    }
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.store.open_for_dispatcher(dispatcher, limit).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.store.due(now, limit).await
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.store.list(filter, limit).await
    }

    async fn by_job(
        &self,
        job: &qdn_relay_core::JobId,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.store.by_job(job, limit).await
    }

    async fn history(
        &self,
        id: qdn_relay_core::DispatchId,
    ) -> Result<Vec<qdn_relay_core::HistoryPage>, StoreError> {
        self.store.history(id).await
    }
}

/// Far in the future: every deadline is due.
pub const LATER: Timestamp = Timestamp::from_millis(4_000_000_000_000);

pub fn sid(s: &str) -> ProviderMessageId {
    s.parse().unwrap_or_else(|e| panic!("sid {s}: {e}"))
}

/// A dispatch at version 2 whose forward was accepted by the provider with
/// sid `leg_sid`: it has an inbound sid, a leg sid, a notified dispatcher
/// and a deadline.
pub fn sent(n_id: u128, tag: &str, customer: &str, in_sid: &str, leg_sid: &str) -> Dispatch {
    let mut d = fixture(n_id, tag, customer, in_sid, 0);
    let leg = d
        .legs()
        .first()
        .map_or_else(|| panic!("the fixture forwards"), |l| l.index);
    d.handle(
        d.opened_at().plus(std::time::Duration::from_secs(1)),
        Input::SendOutcome {
            leg,
            result: Ok(sid(leg_sid).into()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.set_version(2);
    d
}

/// Saves `d` as a new dispatch at version 1, then at its own version.
pub async fn save_new(s: &impl Store, d: &Dispatch) {
    let mut first = d.clone();
    first.set_version(1);
    // The first save holds the same indexes minus the leg sid.
    s.save(&first, 0)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    if d.version() > 1 {
        s.save(d, d.version() - 1)
            .await
            .unwrap_or_else(|e| panic!("update: {e}"));
    }
}

/// Reads `PRAGMA user_version` straight from the file.
pub fn user_version(path: &std::path::Path) -> i64 {
    raw(path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A plain connection to the file, beside the store's.
pub fn raw(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    c.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    c
}
