//! [`DynamoConfig`]: the table, its key and index names, and the knobs of the
//! design (shards, retention, compression).

use std::time::Duration;

/// The name of a global secondary index and of its two key attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexNames {
    /// The index's name.
    pub name: String,
    /// Its partition key attribute (a string).
    pub partition_key: String,
    /// Its sort key attribute (a string).
    pub sort_key: String,
}

impl IndexNames {
    /// An index `name` keyed by the attributes `partition_key` and
    /// `sort_key`.
    pub fn new(
        name: impl Into<String>,
        partition_key: impl Into<String>,
        sort_key: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            partition_key: partition_key.into(),
            sort_key: sort_key.into(),
        }
    }
}

/// Where and how a [`DynamoStore`](crate::DynamoStore) keeps its items.
///
/// Every name is configurable so the relay can live in a table of its own
/// (the defaults) or inside an existing application table whose key and
/// index attributes are called something else; every key the store writes
/// starts with [`DynamoConfig::key_prefix`], so its items never collide
/// with the application's.
///
/// ```
/// use std::time::Duration;
/// use qdn_relay_dynamo::DynamoConfig;
/// let config = DynamoConfig::new("qdn-relay")
///     .shards(16)
///     .retention(Some(Duration::from_secs(30 * 24 * 3600)));
/// assert_eq!(config.table, "qdn-relay");
/// assert_eq!(config.key_prefix, "qdn-relay#");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamoConfig {
    /// The table's name.
    pub table: String,
    /// The table's partition key attribute (a string; default `pk`).
    pub partition_key: String,
    /// The table's sort key attribute (a string; default `sk`).
    pub sort_key: String,
    /// What every partition and sort key value the store writes starts with
    /// (default `qdn-relay#`).
    pub key_prefix: String,
    /// The sparse, sharded index of deadlines read by the due query
    /// (default `due` on `due_pk`, `due_sk`).
    pub due_index: IndexNames,
    /// The sharded index of dispatch ids read by `list` (default `list` on
    /// `list_pk`, `list_sk`).
    pub list_index: IndexNames,
    /// How many partition key values the due and list indexes spread their
    /// entries over (default 8, at least 1). It may be raised later, never
    /// lowered: entries keep the shard they were written with until their
    /// dispatch is saved again, and queries read shards `0..shards`.
    pub shards: u16,
    /// How long a closed or failed dispatch and its lookup items are kept
    /// before DynamoDB's time to live deletes them (default 90 days; `None`
    /// keeps them forever).
    pub retention: Option<Duration>,
    /// The time-to-live attribute (epoch seconds; default `expires_at`).
    pub ttl_attribute: String,
    /// Records whose JSON is longer than this many bytes are stored
    /// LZ4-compressed (default 32 KiB).
    pub compress_above: usize,
}

/// The default number of shards of the due and list indexes.
pub const DEFAULT_SHARDS: u16 = 8;

/// The default retention of closed dispatches: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl DynamoConfig {
    /// The defaults for a table called `table`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            partition_key: "pk".into(),
            sort_key: "sk".into(),
            key_prefix: "qdn-relay#".into(),
            due_index: IndexNames::new("due", "due_pk", "due_sk"),
            list_index: IndexNames::new("list", "list_pk", "list_sk"),
            shards: DEFAULT_SHARDS,
            retention: Some(DEFAULT_RETENTION),
            ttl_attribute: "expires_at".into(),
            compress_above: 32 * 1024,
        }
    }

    /// Sets the table's key attributes.
    pub fn keys(mut self, partition_key: impl Into<String>, sort_key: impl Into<String>) -> Self {
        self.partition_key = partition_key.into();
        self.sort_key = sort_key.into();
        self
    }

    /// Sets [`DynamoConfig::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`DynamoConfig::due_index`].
    pub fn due_index(mut self, names: IndexNames) -> Self {
        self.due_index = names;
        self
    }

    /// Sets [`DynamoConfig::list_index`].
    pub fn list_index(mut self, names: IndexNames) -> Self {
        self.list_index = names;
        self
    }

    /// Sets [`DynamoConfig::shards`] (at least 1).
    pub fn shards(mut self, n: u16) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Sets [`DynamoConfig::retention`].
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`DynamoConfig::ttl_attribute`].
    pub fn ttl_attribute(mut self, name: impl Into<String>) -> Self {
        self.ttl_attribute = name.into();
        self
    }

    /// Sets [`DynamoConfig::compress_above`].
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = bytes;
        self
    }

    /// The number of shards actually used (never 0).
    pub(crate) fn shard_count(&self) -> u16 {
        self.shards.max(1)
    }
}
