//! [`DynamoStore`]: the [`Store`] port on DynamoDB.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::AsyncSleep as _;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use futures_util::future::{try_join, try_join_all};
use futures_util::{StreamExt as _, stream};
use qdn_relay_core::{
    ConflictReason, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter,
    PhoneNumber, ProviderMessageId, Store, StoreError, Tag, Timestamp,
};

use crate::config::{ConfigError, DynamoConfig, IndexNames};
use crate::error::{Cancelled, Guard, SaveError, cancellation, map_sdk};
use crate::item::{self, Indexed, Keys};

/// DynamoDB's limit on the actions of one `TransactWriteItems`.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// How many times a transaction cancelled only by another transaction in
/// flight (`TransactionConflict`) is sent again before the save reports a
/// retryable backend error.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// How many times `BatchGetItem` is repeated for unprocessed keys.
const BATCH_ATTEMPTS: u32 = 8;

/// DynamoDB's limit on the keys of one `BatchGetItem`.
const BATCH_GET_KEYS: usize = 100;

/// How many dispatches' index facts are remembered between a load and the
/// save that follows it.
const CACHE_CAPACITY: usize = 4096;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Dispatch id → (version, what that version indexed).
type IndexCache = HashMap<DispatchId, (u64, Arc<Indexed>)>;

/// A [`Store`] in one DynamoDB table. Cheap to clone: clones share the
/// client and the cache.
///
/// See the [crate docs](crate) for the table design, the cost of each call
/// and the error mapping.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    config: Arc<DynamoConfig>,
    /// What each recently loaded or saved dispatch version has indexed (a
    /// version's lookup items never change once written), so a save right
    /// after a load needs no extra read.
    cache: Arc<Mutex<IndexCache>>,
    /// Why the configuration is unusable, if it is: every call fails with
    /// it before sending anything.
    invalid: Option<Arc<ConfigError>>,
    /// The shard this process's due query fills its answer from first
    /// ([`DynamoStore::due_start`]); `None`: the earliest of all shards.
    due_start: Option<u16>,
}

impl fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.config.table)
            .field("key_prefix", &self.config.key_prefix)
            .finish_non_exhaustive()
    }
}

/// One action of a transaction and what its condition guards.
type Action = (TransactWriteItem, Guard);

/// The transactions of one save: lookup items that did not fit the main
/// transaction are written first, in chunks.
struct Plan {
    early: Vec<Action>,
    main: Vec<Action>,
}

impl DynamoStore {
    /// A store over `client` (build it once per process and share it).
    ///
    /// The table must exist with the schema [`create_table`](crate::create_table)
    /// creates (or, in an application's table, the keys and indexes the
    /// [crate docs](crate#sharing-an-applications-table) list). If
    /// [`DynamoConfig::validate`] refuses `config`, every call of the store
    /// fails with that error (non-retryable) before sending anything; use
    /// [`DynamoStore::try_new`] to find out at once.
    pub fn new(client: Client, config: DynamoConfig) -> Self {
        let invalid = config.validate().err().map(Arc::new);
        if let Some(e) = &invalid {
            tracing::error!(table = %config.table, "invalid dynamodb store configuration: {e}");
        }
        Self {
            client,
            config: Arc::new(config),
            cache: Arc::default(),
            invalid,
            due_start: None,
        }
    }

    /// The same store, its due query filled from shard `start` (modulo
    /// [`DynamoConfig::shards`]) on: when more dispatches are due than
    /// the query's limit, it answers the earliest of shard `start`, then
    /// of the next shard, and so on, instead of the earliest of the whole
    /// table (still earliest first). Servers sharing a table each start
    /// at a shard of their own, so when a backlog is due their sweeps take
    /// different dispatches instead of all contending for the same
    /// earliest ones (the version-checked save would let only one of them
    /// fire each, but every other would have loaded it for nothing). Every
    /// shard is still read by every query, so nothing due waits for a
    /// particular process. When no more than the limit is due, every
    /// process gets all of it, and the conditional saves decide.
    pub fn due_start(mut self, start: u16) -> Self {
        self.due_start = Some(start % self.config.shard_count());
        self
    }

    /// [`DynamoStore::new`], refusing a configuration that
    /// [`DynamoConfig::validate`] refuses.
    pub fn try_new(client: Client, config: DynamoConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::new(client, config))
    }

    /// Fails if the configuration is unusable (see [`DynamoStore::new`]).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &self.invalid {
            None => Ok(()),
            Some(e) => Err(StoreError::backend(false, ConfigError::clone(e))),
        }
    }

    /// A store with a client configured from the environment (the standard
    /// AWS variables and files: region, credentials, and endpoint
    /// overrides such as `AWS_ENDPOINT_URL_DYNAMODB`).
    pub async fn from_env(config: DynamoConfig) -> Self {
        Self::new(crate::client_from_env().await, config)
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &DynamoConfig {
        &self.config
    }

    pub(crate) fn keys(&self) -> Keys<'_> {
        Keys(&self.config)
    }

    // ----- the cache -------------------------------------------------------

    fn remember(&self, id: DispatchId, version: u64, indexed: Indexed) {
        let mut g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= CACHE_CAPACITY && !g.contains_key(&id) {
            g.clear();
        }
        g.insert(id, (version, Arc::new(indexed)));
    }

    fn recall(&self, id: DispatchId, version: u64) -> Option<Arc<Indexed>> {
        let g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&id)
            .filter(|(v, _)| *v == version)
            .map(|(_, i)| Arc::clone(i))
    }

    // ----- reads -----------------------------------------------------------

    /// A strongly consistent `GetItem`.
    pub(crate) async fn get_item(
        &self,
        (pk, sk): (String, String),
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(self.keys().key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(map_sdk)?;
        Ok(out.item)
    }

    /// Decodes a dispatch item, checking it against its own attributes, and
    /// remembers what it indexed.
    fn read_dispatch(
        &self,
        expect: Option<DispatchId>,
        item: &Item,
    ) -> Result<Dispatch, StoreError> {
        let key = item::string(item, &self.config.partition_key).unwrap_or("?");
        let corrupt = |what: String| {
            tracing::warn!(item = key, "corrupt dynamodb record: {what}");
            StoreError::Corrupt(format!("item {key}: {what}"))
        };
        let record = item
            .get(item::RECORD)
            .ok_or_else(|| corrupt(format!("attribute {} is missing", item::RECORD)))?;
        let d: Dispatch = item::decode(record).map_err(corrupt)?;
        if let Some(id) = expect
            && d.id() != id
        {
            return Err(corrupt(format!("record holds dispatch {}", d.id())));
        }
        if item::string(item, item::ID) != Some(d.id().to_string().as_str()) {
            return Err(corrupt(format!(
                "attribute {} disagrees with the record",
                item::ID
            )));
        }
        let version = item::number(item, item::VERSION)
            .ok_or_else(|| corrupt(format!("attribute {} is missing", item::VERSION)))?;
        if version != d.version() {
            return Err(corrupt(format!(
                "record has version {}, item has {version}",
                d.version()
            )));
        }
        let indexed = Indexed::read(item).map_err(corrupt)?;
        self.remember(d.id(), version, indexed);
        Ok(d)
    }

    /// Loads a dispatch by id (one consistent `GetItem`).
    async fn load(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        match self.get_item(self.keys().dispatch(id)).await? {
            Some(item) => self.read_dispatch(Some(id), &item).map(Some),
            None => Ok(None),
        }
    }

    /// The dispatch id a lookup item points to, and the position it
    /// records (one consistent `GetItem`).
    async fn lookup(
        &self,
        key: (String, String),
    ) -> Result<Option<(DispatchId, Option<u64>)>, StoreError> {
        let Some(item) = self.get_item(key).await? else {
            return Ok(None);
        };
        Ok(Some((lookup_id(&item)?, item::number(&item, item::POS))))
    }

    /// Follows a lookup item to its dispatch, keeping it only if `holds`
    /// it (given the position the item records: a lookup item may briefly
    /// outlive what it indexes; see the crate docs).
    async fn follow(
        &self,
        key: (String, String),
        holds: impl FnOnce(&Dispatch, Option<u64>) -> bool,
    ) -> Result<Option<Dispatch>, StoreError> {
        let Some((id, pos)) = self.lookup(key).await? else {
            return Ok(None);
        };
        Ok(self.load(id).await?.filter(|d| holds(d, pos)))
    }

    /// Loads many dispatches with consistent `BatchGetItem`s.
    async fn load_many(
        &self,
        ids: &[DispatchId],
    ) -> Result<HashMap<DispatchId, Dispatch>, StoreError> {
        let keys: Vec<Item> = ids
            .iter()
            .map(|&id| {
                let (pk, sk) = self.keys().dispatch(id);
                self.keys().key(pk, sk)
            })
            .collect();
        let mut out = HashMap::with_capacity(ids.len());
        for item in self.batch_get(keys).await? {
            let d = self.read_dispatch(None, &item)?;
            out.insert(d.id(), d);
        }
        Ok(out)
    }

    /// Reads many items by key with consistent `BatchGetItem`s (in chunks
    /// of 100, retrying unprocessed keys), in no particular order. The keys
    /// must be distinct.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut keys = keys.into_iter();
        loop {
            let mut keys: Vec<Item> = keys.by_ref().take(BATCH_GET_KEYS).collect();
            if keys.is_empty() {
                return Ok(out);
            }
            let mut attempt = 0;
            while !keys.is_empty() {
                attempt += 1;
                if attempt > BATCH_ATTEMPTS {
                    return Err(StoreError::backend(
                        true,
                        format!(
                            "BatchGetItem left {} keys unprocessed after {BATCH_ATTEMPTS} attempts",
                            keys.len()
                        ),
                    ));
                }
                if attempt > 1 {
                    self.backoff(attempt).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::backend(false, e))?;
                let resp = self
                    .client
                    .batch_get_item()
                    .request_items(&self.config.table, request)
                    .send()
                    .await
                    .map_err(map_sdk)?;
                out.extend(
                    resp.responses
                        .and_then(|mut r| r.remove(&self.config.table))
                        .unwrap_or_default(),
                );
                keys = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.config.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
    }

    /// Runs one query to the end or to `limit` items.
    async fn query(&self, q: Query<'_>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        while out.len() < q.limit {
            let mut req = self
                .client
                .query()
                .table_name(&self.config.table)
                .expression_attribute_names("#p", q.pk_attr)
                .expression_attribute_values(":p", AttributeValue::S(q.pk.clone()))
                .scan_index_forward(q.forward)
                .limit(i32::try_from(q.limit - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            req = match &q.below {
                Some(below) => req
                    .key_condition_expression("#p = :p AND #s < :s")
                    .expression_attribute_names("#s", q.sk_attr)
                    .expression_attribute_values(":s", AttributeValue::S(below.clone())),
                None => req.key_condition_expression("#p = :p"),
            };
            req = match q.index {
                Some(index) => req.index_name(index),
                None => req.consistent_read(true),
            };
            let resp = req.send().await.map_err(map_sdk)?;
            out.extend(resp.items.unwrap_or_default());
            match resp.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.truncate(q.limit);
        Ok(out)
    }

    /// Queries every shard of an index at once and returns their sort keys.
    async fn query_shards(
        &self,
        index: &IndexNames,
        pk: impl Fn(u16) -> String,
        below: Option<String>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .query_each_shard(index, pk, below, forward, limit)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Queries every shard of an index at once and returns each shard's
    /// sort keys, shard 0 first.
    async fn query_each_shard(
        &self,
        index: &IndexNames,
        pk: impl Fn(u16) -> String,
        below: Option<String>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let queries = (0..self.config.shard_count()).map(|shard| {
            self.query(Query {
                index: Some(&index.name),
                pk_attr: &index.partition_key,
                pk: pk(shard),
                sk_attr: &index.sort_key,
                below: below.clone(),
                forward,
                limit,
            })
        });
        let mut out = Vec::new();
        for items in try_join_all(queries).await? {
            let mut shard = Vec::with_capacity(items.len());
            for item in items {
                let sk = item::string(&item, &index.sort_key).ok_or_else(|| {
                    StoreError::Corrupt(format!("index entry without {}", index.sort_key))
                })?;
                shard.push(sk.to_owned());
            }
            out.push(shard);
        }
        Ok(out)
    }

    /// Sleeps before another attempt: 10 ms, 20 ms, 40 ms, … plus jitter,
    /// on the client's own sleep implementation.
    pub(crate) async fn backoff(&self, attempt: u32) {
        let base = 10u64 << attempt.saturating_sub(1).min(6);
        let jitter = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        ) % (base + 1);
        if let Some(sleep) = self.client.config().sleep_impl() {
            sleep.sleep(Duration::from_millis(base + jitter)).await;
        }
    }

    // ----- saves -----------------------------------------------------------

    /// What the stored version `expected` of `id` has indexed: remembered
    /// from the load that preceded this save, else read (one consistent
    /// `GetItem` of the dispatch item's small attributes, every one that
    /// [`Indexed::read`] reads). A version that
    /// is not `expected` is a conflict, found before anything is written.
    async fn indexed_at(&self, id: DispatchId, expected: u64) -> Result<Arc<Indexed>, StoreError> {
        if let Some(hit) = self.recall(id, expected) {
            return Ok(hit);
        }
        let (pk, sk) = self.keys().dispatch(id);
        let item = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(self.keys().key(pk, sk)))
            .consistent_read(true)
            .projection_expression("#v, #o, #i, #l, #n, #j")
            .expression_attribute_names("#v", item::VERSION)
            .expression_attribute_names("#o", item::OPEN)
            .expression_attribute_names("#i", item::INBOUND_SIDS)
            .expression_attribute_names("#l", item::LEG_SIDS)
            .expression_attribute_names("#n", item::NOTIFIED)
            .expression_attribute_names("#j", item::JOB)
            .send()
            .await
            .map_err(map_sdk)?
            .item;
        let found = item.as_ref().and_then(|i| item::number(i, item::VERSION));
        let Some(item) = item.filter(|_| found == Some(expected)) else {
            return Err(StoreError::Conflict {
                id,
                reason: ConflictReason::Version { expected, found },
            });
        };
        let indexed =
            Indexed::read(&item).map_err(|e| StoreError::Corrupt(format!("dispatch {id}: {e}")))?;
        Ok(Arc::new(indexed))
    }

    /// When a dispatch that is no longer open expires (epoch seconds).
    fn expiry(&self, d: &Dispatch) -> Option<i64> {
        let retention = self.config.retention?;
        if d.state().is_open() {
            return None;
        }
        let since = d.closed_at().unwrap_or_else(|| d.updated_at());
        let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        Some((since.as_millis() / 1000).saturating_add(secs))
    }

    /// Builds the transactions of a save of `d` over the stored version
    /// `expected`, which indexed `old`.
    fn plan(&self, d: &Dispatch, expected: u64, old: &Indexed) -> Result<Plan, StoreError> {
        let cfg = &*self.config;
        let k = self.keys();
        let id = d.id();
        let id_s = id.to_string();
        let new = Indexed::of(d);
        let ttl = self.expiry(d);
        let invalid = |e: SaveError| StoreError::backend(false, e);
        let mut main: Vec<Action> = Vec::new();

        // The dispatch item, conditional on the version.
        let (pk, sk) = k.dispatch(id);
        let mut it = k.key(pk, sk);
        it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
        it.insert(
            item::VERSION.into(),
            AttributeValue::N(d.version().to_string()),
        );
        it.insert(
            item::STATE.into(),
            AttributeValue::S(d.state().as_str().into()),
        );
        let record = item::encode(d, cfg.compress_above)
            .map_err(|message| StoreError::Invalid { id, message })?;
        it.insert(item::RECORD.into(), record);
        new.write(&mut it);
        let shard = k.shard(id);
        if let Some(deadline) = d.next_deadline() {
            it.insert(
                cfg.due_index.partition_key.clone(),
                AttributeValue::S(k.due_pk(shard)),
            );
            it.insert(
                cfg.due_index.sort_key.clone(),
                AttributeValue::S(item::due_sk(deadline, id)),
            );
        }
        it.insert(
            cfg.list_index.partition_key.clone(),
            AttributeValue::S(k.list_all_pk(shard)),
        );
        it.insert(
            cfg.list_index.sort_key.clone(),
            AttributeValue::S(id_s.clone()),
        );
        if let Some(t) = ttl {
            it.insert(cfg.ttl_attribute.clone(), AttributeValue::N(t.to_string()));
        }
        let size = item::item_size(&it);
        if !item::fits(size) {
            return Err(invalid(SaveError::ItemTooLarge { size }));
        }
        let put = Put::builder()
            .table_name(&cfg.table)
            .set_item(Some(it))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = if expected == 0 {
            put.condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &cfg.partition_key)
        } else {
            put.condition_expression("#v = :v")
                .expression_attribute_names("#v", item::VERSION)
                .expression_attribute_values(":v", AttributeValue::N(expected.to_string()))
        };
        let put = put.build().map_err(|e| invalid(e.into()))?;
        main.push((
            TransactWriteItem::builder().put(put).build(),
            Guard::Version,
        ));

        // The open and tag items exist while the dispatch is open; the
        // conditions are the uniqueness rules.
        let open_key = k.open(d.line(), d.customer());
        let tag_key = k.tag(d.tag());
        if new.open && !old.open {
            let mut open_item = Item::from([
                (item::ID.into(), AttributeValue::S(id_s.clone())),
                (
                    cfg.list_index.partition_key.clone(),
                    AttributeValue::S(k.list_open_pk(shard)),
                ),
                (
                    cfg.list_index.sort_key.clone(),
                    AttributeValue::S(id_s.clone()),
                ),
            ]);
            open_item.extend(k.key(open_key.0, open_key.1));
            main.push((self.claim(open_item, &id_s)?, Guard::OpenCustomer));
            let mut tag_item = Item::from([(item::ID.into(), AttributeValue::S(id_s.clone()))]);
            tag_item.extend(k.key(tag_key.0, tag_key.1));
            main.push((self.claim(tag_item, &id_s)?, Guard::Tag(d.tag())));
        } else if old.open && !new.open {
            main.push((self.release(open_key, &id_s)?, Guard::OpenCustomer));
            main.push((self.release(tag_key, &id_s)?, Guard::Tag(d.tag())));
        }

        // Notified items: one per (dispatcher, open dispatch), sorted by the
        // last time the dispatcher was texted about it.
        for (n, at) in &new.notified {
            match old.notified.get(n) {
                Some(was) if was == at => {}
                was => {
                    if let Some(was) = was {
                        let key = (k.notified_pk(n), k.notified_sk(*was, &id_s));
                        main.push((self.delete(key)?, Guard::Index));
                    }
                    let mut it = k.key(k.notified_pk(n), k.notified_sk(*at, &id_s));
                    it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
                    main.push((self.put(it, None)?, Guard::Index));
                }
            }
        }
        for (n, was) in &old.notified {
            if !new.notified.contains_key(n) {
                let key = (k.notified_pk(n), k.notified_sk(*was, &id_s));
                main.push((self.delete(key)?, Guard::Index));
            }
        }

        // The job item: one per (job, dispatch), moved when the job id
        // appears or changes. While the dispatch is not open it is written
        // again on every save, so it carries the same time to live as the
        // dispatch item.
        let ttl_attr = ttl.map(|t| (cfg.ttl_attribute.clone(), AttributeValue::N(t.to_string())));
        if old.job != new.job
            && let Some(was) = &old.job
        {
            main.push((self.delete(k.job(was, &id_s))?, Guard::Index));
        }
        if let Some(job) = &new.job
            && (old.job != new.job || ttl.is_some())
        {
            let (pk, sk) = k.job(job, &id_s);
            let mut it = k.key(pk, sk);
            it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
            it.extend(ttl_attr.clone());
            main.push((self.put(it, None)?, Guard::Index));
        }
        // What moved out of the record in this change: its pages, in the
        // dispatch's partition, written with the record (a page never
        // changes, so writing one again is harmless).
        for p in d.unsaved_pages() {
            let (pk, sk) = k.page(id, p.seq);
            let mut it = k.key(pk, sk);
            it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
            let record = item::encode(p, cfg.compress_above)
                .map_err(|message| StoreError::Invalid { id, message })?;
            it.insert(item::RECORD.into(), record);
            it.extend(ttl_attr.clone());
            let size = item::item_size(&it);
            if !item::fits(size) {
                return Err(invalid(SaveError::ItemTooLarge { size }));
            }
            main.push((self.put(it, None)?, Guard::Index));
        }
        if main.len() > MAX_TRANSACTION_ACTIONS {
            return Err(invalid(SaveError::TooManyActions {
                actions: main.len(),
            }));
        }

        // Lookup items for sids: only those new since the stored version,
        // or all of them when the dispatch stops being open (to stamp the
        // time to live on them). Each records the text's position or the
        // leg's index, so it still holds once the entry moves out.
        let stamp = ttl.is_some() && old.open && !new.open;
        // Every text and leg with an id, and where it sits: those moving out
        // in this save (a batch of changes may never have saved them), then
        // the record's.
        let pages = d.unsaved_pages();
        let inbound = pages
            .iter()
            .map(|p| (p.thread_from, p.thread.as_slice()))
            .chain(std::iter::once((d.history().thread, d.thread())))
            .flat_map(|(from, entries)| {
                entries
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, e)| Some((e.sid.as_ref()?.as_str(), from + i as u32)))
            });
        let legs = pages
            .iter()
            .flat_map(|p| &p.legs)
            .chain(d.legs())
            .filter_map(|l| Some((l.sid.as_ref()?.as_str(), l.index)));
        // A transaction names an item once.
        let (mut inbound_seen, mut legs_seen) = (HashSet::new(), HashSet::new());
        let mut lookups: Vec<Action> = Vec::new();
        for (sid, at) in inbound {
            if (stamp || !old.inbound.contains(sid)) && inbound_seen.insert(sid) {
                let (pk, sk) = k.inbound(sid);
                let mut it = k.key(pk, sk);
                it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
                it.insert(item::POS.into(), AttributeValue::N(at.to_string()));
                it.extend(ttl_attr.clone());
                let guard = Guard::InboundSid(sid.parse().map_err(|e| StoreError::Invalid {
                    id,
                    message: format!("inbound sid: {e}"),
                })?);
                lookups.push((self.claim(it, &id_s)?, guard));
            }
        }
        for (sid, at) in legs {
            if (stamp || !old.legs.contains(sid)) && legs_seen.insert(sid) {
                let (pk, sk) = k.leg(sid);
                let mut it = k.key(pk, sk);
                it.insert(item::ID.into(), AttributeValue::S(id_s.clone()));
                it.insert(item::POS.into(), AttributeValue::N(at.to_string()));
                it.extend(ttl_attr.clone());
                lookups.push((self.put(it, None)?, Guard::Index));
            }
        }
        // The pages written before it stopped being open get its time to
        // live too (those of this save carry it already).
        if stamp && let Some(t) = ttl {
            let before = d.history().pages - d.unsaved_pages().len() as u32;
            for seq in 0..before {
                let (pk, sk) = k.page(id, seq);
                let update = Update::builder()
                    .table_name(&cfg.table)
                    .set_key(Some(k.key(pk, sk)))
                    .update_expression("SET #t = :t")
                    .expression_attribute_names("#t", &cfg.ttl_attribute)
                    .expression_attribute_values(":t", AttributeValue::N(t.to_string()))
                    .build()
                    .map_err(|e| invalid(e.into()))?;
                lookups.push((
                    TransactWriteItem::builder().update(update).build(),
                    Guard::Index,
                ));
            }
        }
        let room = MAX_TRANSACTION_ACTIONS - main.len();
        let early = if lookups.len() > room {
            lookups.split_off(room)
        } else {
            Vec::new()
        };
        main.extend(lookups);
        Ok(Plan { early, main })
    }

    /// Once a dispatch stopped being open: its time to live on the lookup
    /// items of the entries it moved out of its record in earlier saves
    /// (the save stamped those of its record and of its pages itself). They
    /// are read from its pages, and updated in transactions of up to 100,
    /// a few at once, each item only while it is still this dispatch's.
    /// Best effort: the save is committed already, so a failure is logged
    /// and leaves those items without an expiry.
    async fn stamp_moved(&self, d: &Dispatch, expires: i64) {
        let id = d.id();
        let written_now = d.unsaved_pages().len();
        let pages = match self.history(id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(dispatch = %id, error = %e, "could not read the history to stamp its lookups' expiry");
                return;
            }
        };
        let k = self.keys();
        let keep = pages.len().saturating_sub(written_now);
        let mut keys = Vec::new();
        for p in &pages[..keep] {
            keys.extend(p.inbound_sids().map(|s| k.inbound(item::sid_str(s))));
            keys.extend(p.leg_sids().map(|s| k.leg(item::sid_str(s))));
        }
        let id_s = id.to_string();
        let mut actions = Vec::with_capacity(keys.len());
        for (pk, sk) in keys {
            let update = Update::builder()
                .table_name(&self.config.table)
                .set_key(Some(k.key(pk, sk)))
                .update_expression("SET #t = :t")
                .condition_expression("#id = :id")
                .expression_attribute_names("#t", &self.config.ttl_attribute)
                .expression_attribute_names("#id", item::ID)
                .expression_attribute_values(":t", AttributeValue::N(expires.to_string()))
                .expression_attribute_values(":id", AttributeValue::S(id_s.clone()))
                .build();
            match update {
                Ok(u) => {
                    actions.push((TransactWriteItem::builder().update(u).build(), Guard::Index))
                }
                Err(e) => {
                    tracing::warn!(dispatch = %id, error = %e, "could not build an expiry update");
                    return;
                }
            }
        }
        let chunks: Vec<Vec<Action>> = actions
            .chunks(MAX_TRANSACTION_ACTIONS)
            .map(<[Action]>::to_vec)
            .collect();
        let version = d.version();
        stream::iter(chunks)
            .map(|chunk| self.stamp_chunk(id, version, chunk))
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    }

    /// One transaction of [`DynamoStore::stamp_moved`]. A chunk holding a
    /// leg id another dispatch took since is cancelled as a whole: its
    /// items are then left as they are.
    async fn stamp_chunk(&self, id: DispatchId, version: u64, chunk: Vec<Action>) {
        if let Err(e) = self.transact(id, version, &chunk).await {
            tracing::warn!(dispatch = %id, error = %e, "could not stamp the expiry of moved entries' lookups");
        }
    }

    /// A put that must not take an item of another dispatch.
    fn claim(&self, item: Item, id: &str) -> Result<TransactWriteItem, StoreError> {
        self.put(item, Some(id))
    }

    /// A put; with `owner`, conditional on the item being absent or already
    /// the owner's.
    fn put(&self, item: Item, owner: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.config.table)
            .set_item(Some(item));
        if let Some(id) = owner {
            put = put
                .condition_expression("attribute_not_exists(#pk) OR #id = :id")
                .expression_attribute_names("#pk", &self.config.partition_key)
                .expression_attribute_names("#id", item::ID)
                .expression_attribute_values(":id", AttributeValue::S(id.to_owned()));
        }
        let put = put
            .build()
            .map_err(|e| StoreError::backend(false, SaveError::from(e)))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Deletes an item if it is absent or the dispatch's own.
    fn release(&self, key: (String, String), id: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.config.table)
            .set_key(Some(self.keys().key(key.0, key.1)))
            .condition_expression("attribute_not_exists(#pk) OR #id = :id")
            .expression_attribute_names("#pk", &self.config.partition_key)
            .expression_attribute_names("#id", item::ID)
            .expression_attribute_values(":id", AttributeValue::S(id.to_owned()))
            .build()
            .map_err(|e| StoreError::backend(false, SaveError::from(e)))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Deletes an item unconditionally.
    fn delete(&self, key: (String, String)) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.config.table)
            .set_key(Some(self.keys().key(key.0, key.1)))
            .build()
            .map_err(|e| StoreError::backend(false, SaveError::from(e)))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Runs one `TransactWriteItems`, turning a cancellation into the
    /// port's error by the position of the failed condition.
    async fn transact(
        &self,
        id: DispatchId,
        expected: u64,
        actions: &[Action],
    ) -> Result<(), StoreError> {
        let items: Vec<TransactWriteItem> = actions.iter().map(|(i, _)| i.clone()).collect();
        let guards: Vec<Guard> = actions.iter().map(|(_, g)| g.clone()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let cancelled = cancellation(&err, &guards);
            let Some(cancelled) = cancelled else {
                return Err(map_sdk(err));
            };
            return Err(match cancelled {
                Cancelled::Condition { guard, found } => {
                    let reason = match guard {
                        Guard::OpenCustomer => ConflictReason::OpenCustomer,
                        Guard::Tag(t) => ConflictReason::Tag(t),
                        Guard::InboundSid(s) => ConflictReason::InboundSid(s),
                        Guard::Version | Guard::Index => {
                            let found = match found.flatten() {
                                Some(v) => Some(v),
                                None => self.stored_version(id).await,
                            };
                            ConflictReason::Version { expected, found }
                        }
                    };
                    StoreError::Conflict { id, reason }
                }
                Cancelled::Conflict if attempt < TRANSACTION_ATTEMPTS => {
                    tracing::debug!(dispatch = %id, attempt, "transaction conflict; trying again");
                    self.backoff(attempt).await;
                    continue;
                }
                Cancelled::Conflict | Cancelled::Throttled => StoreError::backend(true, err),
                Cancelled::Other => StoreError::backend(false, err),
            });
        }
    }

    /// The stored version of a dispatch, for a conflict's message (a
    /// failed read just leaves it out).
    async fn stored_version(&self, id: DispatchId) -> Option<u64> {
        let (pk, sk) = self.keys().dispatch(id);
        let out = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(self.keys().key(pk, sk)))
            .consistent_read(true)
            .projection_expression("#v")
            .expression_attribute_names("#v", item::VERSION)
            .send()
            .await
            .ok()?;
        out.item.and_then(|i| item::number(&i, item::VERSION))
    }
}

/// Whether `d` holds inbound id `sid`, whose lookup item records position
/// `pos`: in its record, or moved out of it (see [`item::POS`]).
fn holds_inbound(d: &Dispatch, sid: &ProviderMessageId, pos: Option<u64>) -> bool {
    d.inbound_sids().any(|s| s == sid) || pos.is_some_and(|p| p < u64::from(d.history().thread))
}

/// The dispatch id a lookup item (inbound sid, leg sid, open customer,
/// tag) points to.
fn lookup_id(item: &Item) -> Result<DispatchId, StoreError> {
    let id = item::string(item, item::ID)
        .ok_or_else(|| StoreError::Corrupt("lookup item without an id".into()))?;
    id.parse()
        .map_err(|e| StoreError::Corrupt(format!("lookup item: {e}")))
}

/// The dispatch id a notified item points to.
fn notified_id(item: &Item) -> Result<DispatchId, StoreError> {
    item::string(item, item::ID)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("notified item without an id".into()))
}

/// One query: a partition, optionally the sort keys below a bound, in one
/// direction, at most `limit` items.
struct Query<'a> {
    index: Option<&'a str>,
    pk_attr: &'a str,
    pk: String,
    sk_attr: &'a str,
    below: Option<String>,
    forward: bool,
    limit: usize,
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.check()?;
        self.load(id).await
    }

    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.check()?;
        let id = d.id();
        if expected.checked_add(1) != Some(d.version()) {
            return Err(StoreError::Invalid {
                id,
                message: format!(
                    "dispatch version {} is not expected version {expected} + 1",
                    d.version()
                ),
            });
        }
        let old = if expected == 0 {
            Arc::new(Indexed::default())
        } else {
            self.indexed_at(id, expected).await?
        };
        let plan = self.plan(d, expected, &old)?;
        for chunk in plan.early.chunks(MAX_TRANSACTION_ACTIONS) {
            self.transact(id, expected, chunk).await?;
        }
        self.transact(id, expected, &plan.main).await?;
        self.remember(id, d.version(), Indexed::of(d));
        if old.open
            && !d.state().is_open()
            && let Some(t) = self.expiry(d)
        {
            self.stamp_moved(d, t).await;
        }
        Ok(())
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.check()?;
        self.follow(self.keys().inbound(item::sid_str(sid)), |d, pos| {
            holds_inbound(d, sid, pos)
        })
        .await
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.check()?;
        self.follow(self.keys().leg(item::sid_str(sid)), |d, pos| {
            d.leg_sids().any(|s| s == sid) || pos.is_some_and(|p| p < u64::from(d.history().legs))
        })
        .await
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.check()?;
        self.follow(self.keys().open(line, customer), |d, _| {
            d.state().is_open() && d.line() == line && d.customer() == customer
        })
        .await
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.check()?;
        self.follow(self.keys().tag(tag), |d, _| {
            d.state().is_open() && d.tag() == tag
        })
        .await
    }

    /// One `BatchGetItem` of the candidates' tag items (consistent reads,
    /// unprocessed keys retried): a tag item exists exactly while an open
    /// dispatch holds the tag (it is put and deleted in the transaction that
    /// opens or closes the dispatch), so the first candidate without one is
    /// the first that `open_by_tag` finds free, and no dispatch is read.
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.check()?;
        let k = self.keys();
        // BatchGetItem refuses a key asked twice.
        let mut distinct = HashSet::with_capacity(candidates.len());
        let keys: Vec<Item> = candidates
            .iter()
            .filter(|t| distinct.insert(**t))
            .map(|&t| {
                let (pk, sk) = k.tag(t);
                k.key(pk, sk)
            })
            .collect();
        // One request per 100 distinct candidates (the driver asks 32),
        // stopping at the first batch with a free one: the batches follow
        // the order given, so its first free candidate is the answer.
        let mut held = HashSet::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let items = self.batch_get(chunk.to_vec()).await?;
            let all_held = items.len() == chunk.len();
            held.extend(
                items
                    .iter()
                    .filter_map(|it| item::string(it, &self.config.partition_key))
                    .map(str::to_owned),
            );
            if !all_held {
                break;
            }
        }
        Ok(candidates
            .iter()
            .copied()
            .find(|&t| !held.contains(&k.tag(t).0)))
    }

    /// One round trip for the lookups, then one for the dispatches they
    /// lead to (none when they lead nowhere, as for a first text): a
    /// `BatchGetItem` of the inbound-sid and open-customer items and the
    /// `Query` of the sender's newest notified item, concurrently; then one
    /// `BatchGetItem` of the distinct dispatches found, each checked as the
    /// single lookups check it. See the crate docs for the counts.
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        self.check()?;
        let k = self.keys();
        let (in_pk, in_sk) = k.inbound(item::sid_str(sid));
        let (open_pk, open_sk) = k.open(line, from);
        let gets = self.batch_get(vec![
            k.key(in_pk.clone(), in_sk),
            k.key(open_pk.clone(), open_sk),
        ]);
        // `open_for_dispatcher(from, 1)`: the most recently notified item.
        let newest = self.query(Query {
            index: None,
            pk_attr: &self.config.partition_key,
            pk: k.notified_pk(&from.to_string()),
            sk_attr: &self.config.sort_key,
            below: None,
            forward: false,
            limit: 1,
        });
        let (lookups, newest) = try_join(gets, newest).await?;
        let (mut repeated, mut open) = (None, None);
        let mut repeated_pos = None;
        for it in &lookups {
            match item::string(it, &self.config.partition_key) {
                Some(pk) if pk == in_pk => {
                    repeated = Some(lookup_id(it)?);
                    repeated_pos = item::number(it, item::POS);
                }
                Some(pk) if pk == open_pk => open = Some(lookup_id(it)?),
                _ => {
                    return Err(StoreError::Corrupt(
                        "BatchGetItem returned an item that was not asked for".into(),
                    ));
                }
            }
        }
        let notified = newest.first().map(notified_id).transpose()?;
        let mut ids = Vec::with_capacity(3);
        for id in [notified, repeated, open].into_iter().flatten() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let found = self.load_many(&ids).await?;
        let get = |id: Option<DispatchId>| id.and_then(|id| found.get(&id));
        Ok(InboundLookup {
            notified: get(notified)
                .is_some_and(|d| d.state().is_open() && d.notified().contains(&from)),
            repeated: get(repeated)
                .filter(|d| holds_inbound(d, sid, repeated_pos))
                .cloned(),
            open: get(open)
                .filter(|d| d.state().is_open() && d.line() == line && d.customer() == from)
                .cloned(),
        })
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let n = dispatcher.to_string();
        let items = self
            .query(Query {
                index: None,
                pk_attr: &self.config.partition_key,
                pk: self.keys().notified_pk(&n),
                sk_attr: &self.config.sort_key,
                below: None,
                forward: false,
                limit,
            })
            .await?;
        let mut ids = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for it in &items {
            let id = notified_id(it)?;
            if seen.insert(id) {
                ids.push(id);
            }
        }
        let mut found = self.load_many(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id))
            .filter(|d| d.state().is_open() && d.notified().contains(&dispatcher))
            .collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let below = item::millis_key(now.as_millis().saturating_add(1));
        let mut shards = self
            .query_each_shard(
                &self.config.due_index,
                |s| k.due_pk(s),
                Some(below),
                true,
                limit,
            )
            .await?;
        let keys: Vec<String> = match self.due_start {
            None => shards.into_iter().flatten().collect(),
            Some(start) => {
                // This process's shard first, then the next ones, until
                // the limit: the earliest of each, in that order.
                let first = usize::from(start).min(shards.len());
                shards.rotate_left(first);
                shards.into_iter().flatten().take(limit).collect()
            }
        };
        let mut due = keys
            .iter()
            .map(|sk| {
                item::parse_due_sk(sk)
                    .map(|(deadline, id)| Due { deadline, id })
                    .ok_or_else(|| StoreError::Corrupt(format!("due index entry {sk:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        due.sort();
        due.truncate(limit);
        Ok(due)
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let keys = match filter {
            ListFilter::Open => {
                self.query_shards(
                    &self.config.list_index,
                    |s| k.list_open_pk(s),
                    None,
                    false,
                    limit,
                )
                .await?
            }
            ListFilter::All => {
                self.query_shards(
                    &self.config.list_index,
                    |s| k.list_all_pk(s),
                    None,
                    false,
                    limit,
                )
                .await?
            }
        };
        let mut ids = keys
            .iter()
            .map(|sk| {
                sk.parse::<DispatchId>()
                    .map_err(|e| StoreError::Corrupt(format!("list index entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit);
        let mut found = self.load_many(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id))
            .filter(|d| filter == ListFilter::All || d.state().is_open())
            .collect())
    }

    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.check()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(Query {
                index: None,
                pk_attr: &self.config.partition_key,
                pk: self.keys().job_pk(job.as_str()),
                sk_attr: &self.config.sort_key,
                below: None,
                forward: false,
                limit,
            })
            .await?;
        let ids = items
            .iter()
            .map(|it| {
                item::string(it, item::ID)
                    .and_then(|s| s.parse::<DispatchId>().ok())
                    .ok_or_else(|| StoreError::Corrupt("job item without an id".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut found = self.load_many(&ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id))
            .filter(|d| d.job_id() == Some(job))
            .collect())
    }

    /// One consistent `Query` of the dispatch's partition for its pages
    /// (more when they pass 1 MB), in `seq` order.
    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        self.check()?;
        let k = self.keys();
        let (pk, _) = k.dispatch(id);
        let mut out: Vec<HistoryPage> = Vec::new();
        let mut start = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("#p = :p AND begins_with(#s, :s)")
                .expression_attribute_names("#p", &self.config.partition_key)
                .expression_attribute_names("#s", &self.config.sort_key)
                .expression_attribute_values(":p", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":s", AttributeValue::S(k.page_prefix()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(map_sdk)?;
            for it in resp.items.unwrap_or_default() {
                let page: HistoryPage = it
                    .get(item::RECORD)
                    .ok_or_else(|| "no record".to_owned())
                    .and_then(item::decode)
                    .map_err(|e| StoreError::Corrupt(format!("a history page of {id}: {e}")))?;
                out.push(page);
            }
            match resp.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}
