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

    /// Checks that the configuration is usable, and safe in a shared
    /// table: DynamoDB's naming rules for the table and index names, a
    /// non-empty [`key_prefix`](DynamoConfig::key_prefix) of at most
    /// [`MAX_KEY_PREFIX_BYTES`], two distinct indexes, and every attribute
    /// the store writes distinct from every other (the table keys, the four
    /// index keys, the time-to-live attribute and the store's own
    /// attributes, [`RESERVED_ATTRIBUTES`]): an index key that is also a
    /// table key would move the item it is written on.
    ///
    /// [`DynamoStore::try_new`](crate::DynamoStore::try_new) and
    /// [`create_table`](crate::create_table) call it; a store built with
    /// [`DynamoStore::new`](crate::DynamoStore::new) on an invalid
    /// configuration fails every call with this error, before any request.
    ///
    /// ```
    /// use qdn_relay_dynamo::{DynamoConfig, IndexNames};
    /// assert!(DynamoConfig::new("app").validate().is_ok());
    /// let err = DynamoConfig::new("app")
    ///     .keys("PK", "SK")
    ///     .due_index(IndexNames::new("GSI1", "GSI1PK", "SK"))
    ///     .validate()
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("SK"), "{err}");
    /// assert!(DynamoConfig::new("app").key_prefix("").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_resource_name("table", &self.table)?;
        check_resource_name("due index", &self.due_index.name)?;
        check_resource_name("list index", &self.list_index.name)?;
        if self.due_index.name == self.list_index.name {
            return Err(ConfigError::SameIndex(self.due_index.name.clone()));
        }
        if self.key_prefix.is_empty() {
            return Err(ConfigError::EmptyPrefix);
        }
        if self.key_prefix.len() > MAX_KEY_PREFIX_BYTES {
            return Err(ConfigError::LongPrefix(self.key_prefix.len()));
        }
        let attributes = [
            ("partition key", &self.partition_key),
            ("sort key", &self.sort_key),
            ("due index partition key", &self.due_index.partition_key),
            ("due index sort key", &self.due_index.sort_key),
            ("list index partition key", &self.list_index.partition_key),
            ("list index sort key", &self.list_index.sort_key),
            ("time-to-live attribute", &self.ttl_attribute),
        ];
        for (i, (role, name)) in attributes.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_KEY_ATTRIBUTE_BYTES {
                return Err(ConfigError::AttributeName {
                    role,
                    name: (*name).clone(),
                });
            }
            if let Some(reserved) = RESERVED_ATTRIBUTES.iter().find(|r| **r == name.as_str()) {
                return Err(ConfigError::Reserved {
                    role,
                    name: (*reserved).to_owned(),
                });
            }
            if let Some((other, _)) = attributes[..i].iter().find(|(_, n)| n == name) {
                return Err(ConfigError::SameAttribute {
                    name: (*name).clone(),
                    first: other,
                    second: role,
                });
            }
        }
        Ok(())
    }
}

/// The longest [`DynamoConfig::key_prefix`], in bytes: the longest key the
/// store writes (a job's partition: the prefix, `JOB#` and a job id of up
/// to 512 bytes) stays well under DynamoDB's 2048-byte partition key and
/// 1024-byte sort key limits.
pub const MAX_KEY_PREFIX_BYTES: usize = 256;

/// DynamoDB's limit on the name of a key attribute, in bytes.
const MAX_KEY_ATTRIBUTE_BYTES: usize = 255;

/// The attribute names the store's items use besides the configured ones;
/// no configured name may be one of them.
pub const RESERVED_ATTRIBUTES: &[&str] = &[
    crate::item::ID,
    crate::item::VERSION,
    crate::item::STATE,
    crate::item::OPEN,
    crate::item::RECORD,
    crate::item::INBOUND_SIDS,
    crate::item::LEG_SIDS,
    crate::item::NOTIFIED,
    crate::item::JOB,
    crate::item::AT,
    crate::item::SENT,
    crate::item::CAP,
    crate::item::SPAN,
];

/// Why a [`DynamoConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A table or index name breaks DynamoDB's rules (3 to 255 characters
    /// of `A-Z a-z 0-9 _ - .`).
    #[error(
        "invalid {role} name {name:?}: DynamoDB names are 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'"
    )]
    ResourceName {
        /// What the name is for.
        role: &'static str,
        /// The name.
        name: String,
    },
    /// The due and list indexes are the same index.
    #[error("the due and list indexes must be two indexes, both are {0:?}")]
    SameIndex(String),
    /// The key prefix is empty: the store's keys could collide with an
    /// application's in a shared table.
    #[error(
        "the key prefix is empty: every key the store writes must start with a prefix no other item's key starts with"
    )]
    EmptyPrefix,
    /// The key prefix is too long.
    #[error("the key prefix is {0} bytes long; at most {MAX_KEY_PREFIX_BYTES}")]
    LongPrefix(usize),
    /// An attribute name is empty or too long.
    #[error("invalid {role} name {name:?}: 1 to 255 bytes")]
    AttributeName {
        /// What the attribute is for.
        role: &'static str,
        /// The name.
        name: String,
    },
    /// A configured attribute is one the store's items already use.
    #[error("the {role} may not be {name:?}: the store's items use that attribute themselves")]
    Reserved {
        /// What the attribute is for.
        role: &'static str,
        /// The name.
        name: String,
    },
    /// Two roles were given the same attribute.
    #[error("the {first} and the {second} are both attribute {name:?}; each needs its own")]
    SameAttribute {
        /// The attribute.
        name: String,
        /// The first role.
        first: &'static str,
        /// The second role.
        second: &'static str,
    },
}

/// Checks a table or index name against DynamoDB's rules.
fn check_resource_name(role: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::ResourceName {
            role,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_and_an_application_table_are_valid() {
        assert_eq!(DynamoConfig::new("qdn-relay").validate(), Ok(()));
        let app = DynamoConfig::new("app.Main_table-1")
            .keys("PK", "SK")
            .key_prefix("app#relay#")
            .due_index(IndexNames::new("GSI3", "GSI3PK", "GSI3SK"))
            .list_index(IndexNames::new("GSI1", "GSI1PK", "GSI1SK"))
            .ttl_attribute("ttl");
        assert_eq!(app.validate(), Ok(()));
    }

    #[test]
    fn every_bad_configuration_is_named() {
        let base = || DynamoConfig::new("qdn-relay");
        let cases: Vec<(DynamoConfig, &str)> = vec![
            (DynamoConfig::new("ab"), "invalid table name \"ab\""),
            (DynamoConfig::new("has space"), "invalid table name"),
            (DynamoConfig::new("x".repeat(256)), "invalid table name"),
            (
                base().due_index(IndexNames::new("d", "a", "b")),
                "invalid due index name",
            ),
            (
                base().list_index(IndexNames::new("due", "a", "b")),
                "both are \"due\"",
            ),
            (base().key_prefix(""), "the key prefix is empty"),
            (base().key_prefix("p".repeat(257)), "257 bytes"),
            (base().keys("", "sk"), "invalid partition key name \"\""),
            (base().keys("pk", "k".repeat(256)), "invalid sort key name"),
            (
                base().keys("pk", "pk"),
                "the partition key and the sort key",
            ),
            (
                base().due_index(IndexNames::new("due", "due_pk", "sk")),
                "the sort key and the due index sort key are both attribute \"sk\"",
            ),
            (
                base().list_index(IndexNames::new("list", "due_pk", "x")),
                "due index partition key and the list index partition key",
            ),
            (base().ttl_attribute("sk"), "time-to-live attribute"),
            (
                base().ttl_attribute("rec"),
                "the time-to-live attribute may not be \"rec\"",
            ),
            (
                base().keys("id", "sk"),
                "the partition key may not be \"id\"",
            ),
        ];
        for (config, want) in cases {
            let err = config.validate().expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
