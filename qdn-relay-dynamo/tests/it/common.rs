//! Helpers: a client for the emulator, fresh stores on tables of their own,
//! raw item access.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use qdn_relay_dynamo::{DynamoConfig, DynamoStore, create_table};

/// The emulator's address. Missing is a failure, never a skip.
pub fn endpoint() -> String {
    std::env::var("QDN_TEST_DYNAMO_URL").unwrap_or_else(|_| {
        panic!(
            "QDN_TEST_DYNAMO_URL is not set: these tests need a DynamoDB emulator. \
             Run ./scripts/test, which installs and starts one (moto) and exports its address."
        )
    })
}

/// A client for the emulator (test credentials, us-east-1).
pub async fn client() -> Client {
    client_for(&endpoint()).await
}

/// A client for any endpoint.
pub async fn client_for(url: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "qdn-tests"))
        .load()
        .await;
    Client::new(&config)
}

/// A table name no other test uses.
pub fn unique_table() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "qdn-it-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh, empty store on a new table with the default design.
pub async fn fresh() -> DynamoStore {
    fresh_with(|c| c).await
}

/// [`fresh`] with a changed configuration.
pub async fn fresh_with(f: impl FnOnce(DynamoConfig) -> DynamoConfig) -> DynamoStore {
    let client = client().await;
    let config = f(DynamoConfig::new(unique_table()));
    create_table(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("create table {}: {e}", config.table));
    DynamoStore::new(client, config)
}

/// Another store (another process, as far as the cache goes) on the same
/// table.
pub async fn twin(s: &DynamoStore) -> DynamoStore {
    DynamoStore::new(client().await, s.config().clone())
}

/// An item by its raw key.
pub async fn raw_item(
    s: &DynamoStore,
    pk: &str,
    sk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    let c = s.config();
    s.client()
        .get_item()
        .table_name(&c.table)
        .key(&c.partition_key, AttributeValue::S(pk.into()))
        .key(&c.sort_key, AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("raw get {pk}: {e:?}"))
        .item
}

/// The dispatch item of `id`.
pub async fn dispatch_item(
    s: &DynamoStore,
    id: qdn_relay_core::DispatchId,
) -> HashMap<String, AttributeValue> {
    let p = &s.config().key_prefix;
    raw_item(s, &format!("{p}D#{id}"), &format!("{p}D"))
        .await
        .unwrap_or_else(|| panic!("no item for dispatch {id}"))
}

pub fn sid(s: &str) -> qdn_relay_core::ProviderMessageId {
    s.parse().unwrap_or_else(|e| panic!("sid {s}: {e}"))
}
