//! The relay inside an application's table (issue 7): a table shaped like a
//! host application's (`PK`/`SK`, its own overloaded `GSI1`, TTL on `ttl`),
//! the relay's due index added to it afterwards, a few hundred of the
//! host's items already in it, some of them close to the relay's keys. The
//! whole Store contract suite, the opt-outs and the rate limiter run on it,
//! each case under a key prefix of its own; then every host item must come
//! out exactly as it went in, and every other item must be the relay's,
//! under a relay prefix.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection,
    ProjectionType, PutRequest, ScalarAttributeType, TimeToLiveSpecification, WriteRequest,
};
use qdn_relay_core::{
    Admission, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter, OptOuts,
    PhoneNumber, ProviderMessageId, Rate, RateKey, RateLimiter, Store, StoreError, Tag, Timestamp,
};
use qdn_relay_dynamo::{DynamoConfig, DynamoStore, IndexNames, wait_until_active};

use crate::common::{client, unique_table};

type Item = HashMap<String, AttributeValue>;

/// The host's key attributes and its own index.
const PK: &str = "PK";
const SK: &str = "SK";
const HOST_GSI: &str = "GSI1";
const HOST_GSI_PK: &str = "GSI1PK";
const HOST_GSI_SK: &str = "GSI1SK";
/// The index the host adds for the relay's due query.
const DUE_GSI: &str = "RelayDue";
const DUE_GSI_PK: &str = "RelayDuePK";
const DUE_GSI_SK: &str = "RelayDueSK";
/// The host's time-to-live attribute, shared with the relay.
const TTL: &str = "ttl";

/// The relay's configuration in the host's table, with `prefix`: the list
/// index is the host's own overloaded `GSI1`, the due index the one added
/// for it.
fn relay_config(table: &str, prefix: &str) -> DynamoConfig {
    DynamoConfig::new(table)
        .keys(PK, SK)
        .key_prefix(prefix)
        .list_index(IndexNames::new(HOST_GSI, HOST_GSI_PK, HOST_GSI_SK))
        .due_index(IndexNames::new(DUE_GSI, DUE_GSI_PK, DUE_GSI_SK))
        .ttl_attribute(TTL)
        .shards(3)
}

/// Creates the host's table as the host would have it, before the relay:
/// its keys, its own overloaded index (all attributes projected) and time
/// to live on its own attribute.
async fn create_host_table(c: &Client, table: &str) {
    let s = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let k = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    c.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(s(PK))
        .attribute_definitions(s(SK))
        .attribute_definitions(s(HOST_GSI_PK))
        .attribute_definitions(s(HOST_GSI_SK))
        .key_schema(k(PK, KeyType::Hash))
        .key_schema(k(SK, KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(HOST_GSI)
                .key_schema(k(HOST_GSI_PK, KeyType::Hash))
                .key_schema(k(HOST_GSI_SK, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create host table: {e:?}"));
    wait_until_active(c, table, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL)
                .enabled(true)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("ttl: {e:?}"));
}

/// What the host adds for the relay: the due index (keys only), on a table
/// already full of the host's items.
async fn add_relay_due_index(c: &Client, table: &str) {
    let s = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let k = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    c.update_table()
        .table_name(table)
        .attribute_definitions(s(DUE_GSI_PK))
        .attribute_definitions(s(DUE_GSI_SK))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .create(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name(DUE_GSI)
                        .key_schema(k(DUE_GSI_PK, KeyType::Hash))
                        .key_schema(k(DUE_GSI_SK, KeyType::Range))
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()
                        .unwrap_or_else(|e| panic!("{e}")),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("add the due index: {e:?}"));
    wait_until_active(c, table, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn num(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A few hundred of the host's items, of every shape: plain records, every
/// attribute type, large ones, keys that look like the relay's (without
/// its prefix, or with near misses of it), items in the host's index under
/// values shaped like the relay's index keys, items carrying the due
/// index's attributes without the prefix, items named with the relay's own
/// attribute names.
fn host_items() -> Vec<Item> {
    let ulid = |i: u32| {
        DispatchId::new(Timestamp::from_millis(1_767_603_600_000 + i64::from(i)), 7).to_string()
    };
    let mut items = Vec::new();
    for i in 0..320u32 {
        let mut it: Item = HashMap::new();
        let (pk, sk) = match i % 16 {
            0 => (format!("USER#{i}"), "PROFILE".to_owned()),
            1 => (format!("USER#{}", i - 1), format!("ORDER#{i:05}")),
            // The relay's key shapes without any prefix.
            2 => (format!("D#{}", ulid(i)), "D".to_owned()),
            3 => (
                format!("OPEN#+1619555{:04}#+1619555{:04}", i, i + 1),
                "OPEN".to_owned(),
            ),
            4 => ("TAG#K7".to_owned(), format!("TAG#{i}")),
            5 => (
                format!("N#+1619555{i:04}"),
                format!("N#{:020}#{}", i, ulid(i)),
            ),
            6 => ("JOB#dumpster #1042".to_owned(), format!("JOB#{}", ulid(i))),
            7 => (format!("OPTOUT#+1619555{i:04}"), "OPTOUT".to_owned()),
            // Near misses of the relay's prefix, in either key.
            8 => (format!("qdn-relay-D#{}", ulid(i)), "qdn-relay-D".to_owned()),
            9 => (format!("qdn-relay:IN#SM{i}"), format!("qdn-relay#IN{i}")),
            10 => ("qdn-relay".to_owned(), format!("qdn-relay#D#{i}")),
            11 => (format!("QDN-RELAY#D#{}", ulid(i)), "QDN-RELAY#D".to_owned()),
            12 => (format!("qdn_relay#TAG#K{i}"), "qdn_relay#TAG".to_owned()),
            13 => (format!("USER#{i}"), format!("qdn-relay#{i}")),
            14 => (format!(" qdn-relay#D#{i}"), "qdn-relay#D".to_owned()),
            _ => (format!("É#{i}#日本"), format!("Ünïcode#{i}")),
        };
        it.insert(PK.into(), s(pk));
        it.insert(SK.into(), s(sk));
        match i % 5 {
            0 => {
                // In the host's index, under values shaped like the relay's
                // list entries.
                let shard = i % 3;
                let gpk = match i % 4 {
                    0 => format!("LIST#ALL#{shard}"),
                    1 => format!("LIST#OPEN#{shard}"),
                    2 => format!("qdn-relayLIST#ALL#{shard}"),
                    _ => format!("TENANT#{i}"),
                };
                it.insert(HOST_GSI_PK.into(), s(gpk));
                it.insert(HOST_GSI_SK.into(), s(ulid(i)));
            }
            1 => {
                // The due index's attributes, without the prefix, due long
                // ago.
                let shard = i % 3;
                let dpk = if i % 2 == 0 {
                    format!("DUE#{shard}")
                } else {
                    format!("qdn-relay-DUE#{shard}")
                };
                it.insert(DUE_GSI_PK.into(), s(dpk));
                it.insert(DUE_GSI_SK.into(), s(format!("{:020}#{}", i, ulid(i))));
            }
            2 => {
                // The relay's own attribute names, with nonsense in them.
                it.insert("id".into(), s(format!("not-an-id-{i}")));
                it.insert("version".into(), s("seven"));
                it.insert("rec".into(), s("{not json"));
                it.insert("open".into(), s("yes"));
                it.insert("job".into(), num(i));
                it.insert("notified".into(), s("nobody"));
                it.insert("at".into(), s("noon"));
                it.insert("sent".into(), AttributeValue::Bool(false));
            }
            3 => {
                // Every attribute type.
                it.insert("n".into(), num(i));
                it.insert("neg".into(), num(-3.5));
                it.insert("b".into(), AttributeValue::B(Blob::new(vec![0, 1, 2, 255])));
                it.insert("bool".into(), AttributeValue::Bool(i % 2 == 0));
                it.insert("null".into(), AttributeValue::Null(true));
                it.insert(
                    "ss".into(),
                    AttributeValue::Ss(vec!["b".into(), "a".into(), format!("c{i}")]),
                );
                it.insert(
                    "ns".into(),
                    AttributeValue::Ns(vec!["1".into(), "20".into()]),
                );
                it.insert(
                    "bs".into(),
                    AttributeValue::Bs(vec![Blob::new(vec![9]), Blob::new(vec![1, 2])]),
                );
                it.insert(
                    "l".into(),
                    AttributeValue::L(vec![s("x"), num(1), AttributeValue::Bool(true)]),
                );
                it.insert(
                    "m".into(),
                    AttributeValue::M(HashMap::from([
                        ("inner".to_owned(), s("v")),
                        (
                            "deep".to_owned(),
                            AttributeValue::M(HashMap::from([("k".to_owned(), num(2))])),
                        ),
                    ])),
                );
                it.insert(TTL.into(), num(4_102_444_800u64)); // 2100
            }
            _ => {
                // A large one.
                it.insert(
                    "body".into(),
                    s("lorem ipsum ".repeat(600 + (i as usize % 7) * 100)),
                );
            }
        }
        items.push(it);
    }
    items
}

/// Writes items with `BatchWriteItem`, 25 at a time.
async fn put_all(c: &Client, table: &str, items: &[Item]) {
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|it| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(it.clone()))
                            .build()
                            .unwrap_or_else(|e| panic!("{e}")),
                    )
                    .build()
            })
            .collect();
        for _ in 0..10 {
            if requests.is_empty() {
                break;
            }
            let out = c
                .batch_write_item()
                .request_items(table, std::mem::take(&mut requests))
                .send()
                .await
                .unwrap_or_else(|e| panic!("batch write: {e:?}"));
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
        }
        assert!(requests.is_empty(), "unprocessed host items");
    }
}

/// Every item of the table (a scan: the test's own check, never the
/// relay's).
async fn scan_all(c: &Client, table: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let resp = c
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("scan: {e:?}"));
        out.extend(resp.items.unwrap_or_default());
        match resp.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return out,
        }
    }
}

/// An item with its sets sorted (a set has no order).
fn normalized(item: &Item) -> Item {
    fn norm(v: &AttributeValue) -> AttributeValue {
        match v {
            AttributeValue::Ss(x) => {
                let mut x = x.clone();
                x.sort();
                AttributeValue::Ss(x)
            }
            AttributeValue::Ns(x) => {
                let mut x = x.clone();
                x.sort();
                AttributeValue::Ns(x)
            }
            AttributeValue::Bs(x) => {
                let mut x = x.clone();
                x.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
                AttributeValue::Bs(x)
            }
            AttributeValue::M(m) => {
                AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            AttributeValue::L(l) => AttributeValue::L(l.iter().map(norm).collect()),
            other => other.clone(),
        }
    }
    item.iter().map(|(k, v)| (k.clone(), norm(v))).collect()
}

fn key_of(item: &Item) -> (String, String) {
    let get = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        other => panic!("{name} is {other:?}"),
    };
    (get(PK), get(SK))
}

/// A store that fails the test if any query returns a dispatch it never
/// saved (a host item read as the relay's would be one).
struct Watched {
    inner: DynamoStore,
    saved: Mutex<HashSet<DispatchId>>,
}

impl Watched {
    fn new(inner: DynamoStore) -> Self {
        Self {
            inner,
            saved: Mutex::default(),
        }
    }

    fn check(&self, what: &str, ids: impl IntoIterator<Item = DispatchId>) {
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            assert!(
                saved.contains(&id),
                "{what} returned dispatch {id}, which this store never saved (a host item?)"
            );
        }
    }

    fn one(&self, what: &str, r: &Result<Option<Dispatch>, StoreError>) {
        if let Ok(Some(d)) = r {
            self.check(what, [d.id()]);
        }
    }

    fn many(&self, what: &str, r: &Result<Vec<Dispatch>, StoreError>) {
        if let Ok(v) = r {
            self.check(what, v.iter().map(Dispatch::id));
        }
    }
}

#[async_trait::async_trait]
impl Store for Watched {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        let r = self.inner.get(id).await;
        self.one("get", &r);
        r
    }
    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let r = self.inner.save(d, expected).await;
        if r.is_ok() {
            self.saved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(d.id());
        }
        r
    }
    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        let r = self.inner.by_inbound_sid(sid).await;
        self.one("by_inbound_sid", &r);
        r
    }
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        let r = self.inner.by_leg_sid(sid).await;
        self.one("by_leg_sid", &r);
        r
    }
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        let r = self.inner.open_for_customer(line, customer).await;
        self.one("open_for_customer", &r);
        r
    }
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        let r = self.inner.open_by_tag(tag).await;
        self.one("open_by_tag", &r);
        r
    }
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.inner.first_free_tag(candidates).await
    }
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        let r = self.inner.inbound_lookup(line, from, sid).await;
        if let Ok(l) = &r {
            self.one("inbound_lookup (repeated)", &Ok(l.repeated.clone()));
            self.one("inbound_lookup (open)", &Ok(l.open.clone()));
        }
        r
    }
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        let r = self.inner.open_for_dispatcher(dispatcher, limit).await;
        self.many("open_for_dispatcher", &r);
        r
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        let r = self.inner.due(now, limit).await;
        if let Ok(v) = &r {
            self.check("due", v.iter().map(|d| d.id));
        }
        r
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let r = self.inner.list(filter, limit).await;
        self.many("list", &r);
        r
    }
    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let r = self.inner.by_job(job, limit).await;
        self.many("by_job", &r);
        r
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        self.inner.history(id).await
    }
}

fn n(v: &str) -> PhoneNumber {
    v.parse().unwrap_or_else(|e| panic!("{v}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_in_an_application_table_and_host_items_are_untouched() {
    let c = client().await;
    let table = unique_table();
    create_host_table(&c, &table).await;
    let host = host_items();
    put_all(&c, &table, &host).await;
    add_relay_due_index(&c, &table).await;

    // Every case on a store of its own: the default prefix first, then one
    // prefix per case, so no case sees another's items.
    let prefixes: Arc<Mutex<Vec<String>>> = Arc::default();
    let make = {
        let (c, table, prefixes) = (c.clone(), table.clone(), Arc::clone(&prefixes));
        move || {
            let (c, table, prefixes) = (c.clone(), table.clone(), Arc::clone(&prefixes));
            async move {
                let prefix = {
                    let mut g = prefixes.lock().unwrap_or_else(|e| e.into_inner());
                    let p = if g.is_empty() {
                        "qdn-relay#".to_owned()
                    } else {
                        format!("qdn-relay#case{}#", g.len())
                    };
                    g.push(p.clone());
                    p
                };
                let store = DynamoStore::try_new(c, relay_config(&table, &prefix))
                    .unwrap_or_else(|e| panic!("{e}"));
                Watched::new(store)
            }
        }
    };
    qdn_relay_core::testing::contract::run_all(&make).await;
    let cases = prefixes.lock().unwrap_or_else(|e| e.into_inner()).len();
    assert_eq!(cases, qdn_relay_core::testing::contract::CASES.len());

    // The opt-outs and the rate limiter on the same table, and the due and
    // list queries over the whole range once more (the host's entries in
    // both indexes are due and listable if anything is).
    let store = make().await;
    let s = &store.inner;
    let t = Timestamp::from_millis(1_767_603_600_000);
    s.opt_out(n("+16195550101"), t).await.expect("opt out");
    assert_eq!(
        s.opted_out_among(&[n("+16195550101"), n("+16195550102")])
            .await
            .expect("batch"),
        vec![n("+16195550101")]
    );
    let key = RateKey::Line(n("+16195550000"));
    let one = vec![Rate {
        count: 1,
        per: Duration::from_secs(60),
    }];
    assert_eq!(
        s.acquire(t, &[(key, one.clone())]).await.expect("acquire"),
        Admission::Admitted
    );
    assert!(matches!(
        s.acquire(t, &[(key, one)]).await.expect("acquire"),
        Admission::NotBefore(_)
    ));
    assert!(
        store
            .due(Timestamp::from_millis(i64::MAX), 1000)
            .await
            .expect("due")
            .is_empty()
    );
    assert!(
        store
            .list(ListFilter::All, 1000)
            .await
            .expect("list")
            .is_empty()
    );
    let prefixes = prefixes.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // Every host item exactly as written; everything else the relay's,
    // wholly under one of its prefixes.
    let written: HashMap<(String, String), Item> =
        host.iter().map(|it| (key_of(it), normalized(it))).collect();
    assert_eq!(written.len(), host.len(), "host keys are distinct");
    let mut seen = HashSet::new();
    let mut relay_items = 0;
    for item in scan_all(&c, &table).await {
        let key = key_of(&item);
        if let Some(before) = written.get(&key) {
            assert_eq!(&normalized(&item), before, "host item {key:?} changed");
            seen.insert(key);
            continue;
        }
        relay_items += 1;
        let prefix = prefixes
            .iter()
            .filter(|p| key.0.starts_with(p.as_str()))
            .max_by_key(|p| p.len())
            .unwrap_or_else(|| {
                panic!("item {key:?} is neither the host's nor under a relay prefix")
            });
        assert!(
            key.1.starts_with(prefix.as_str()),
            "sort key of {key:?} outside {prefix}"
        );
        for index_pk in [HOST_GSI_PK, DUE_GSI_PK] {
            if let Some(v) = item.get(index_pk) {
                assert!(
                    matches!(v, AttributeValue::S(v) if v.starts_with(prefix.as_str())),
                    "{index_pk} of {key:?} is {v:?}, outside {prefix}"
                );
            }
        }
    }
    assert_eq!(seen.len(), host.len(), "a host item disappeared");
    assert!(
        relay_items > 50,
        "the relay wrote its items ({relay_items})"
    );
}
