//! # qdn-relay-dynamo
//!
//! The [`Store`](qdn_relay_core::Store) port of qdn-relay on Amazon
//! DynamoDB: for the Lambda deployment, or many servers sharing one table.
//! Conditional transactions make any number of concurrent relay instances
//! safe.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qdn_relay_dynamo::TableError> {
//! use qdn_relay_dynamo::{DynamoConfig, DynamoStore, client_from_env, create_table};
//! let client = client_from_env().await; // region, credentials, AWS_ENDPOINT_URL_DYNAMODB, ...
//! let config = DynamoConfig::new("qdn-relay");
//! create_table(&client, &config).await?; // once, at deploy time
//! let store = DynamoStore::new(client, config);
//! # let _ = store; Ok(()) }
//! ```
//!
//! ## Table design
//!
//! One table (single-table design), keyed by two string attributes,
//! [`DynamoConfig::partition_key`] (`pk`) and [`DynamoConfig::sort_key`]
//! (`sk`). Every key value starts with [`DynamoConfig::key_prefix`]
//! (`qdn-relay#`, written `P` below), so the relay can share a table with
//! an application. Items (`id` is the dispatch id, 26 Crockford base-32
//! characters):
//!
//! | item | `pk` | `sk` | other attributes | exists |
//! |---|---|---|---|---|
//! | dispatch | `P` `D#<id>` | `P` `D` | `id`, `version`, `state`, `open`, `rec`, `in_sids`, `leg_sids`, `notified`, `job`, due and list index keys, `expires_at` | always |
//! | history page | `P` `D#<id>` | `P` `H#<seq>` | `id`, `rec`, `expires_at` | once the dispatch moved entries out of its record |
//! | inbound sid | `P` `IN#<MessageSid>` | `P` `IN` | `id`, `pos`, `expires_at` | once the text is saved |
//! | leg sid | `P` `LEG#<MessageSid>` | `P` `LEG` | `id`, `pos`, `expires_at` | once the provider accepted the leg |
//! | open customer | `P` `OPEN#<line>#<customer>` | `P` `OPEN` | `id`, list index keys | while the dispatch is open |
//! | tag | `P` `TAG#<tag>` | `P` `TAG` | `id` | while the dispatch is open |
//! | notified | `P` `N#<dispatcher>` | `P` `N#<millis>#<id>` | `id` | while open, one per dispatcher texted about it |
//! | job | `P` `JOB#<job id>` | `P` `JOB#<id>` | `id`, `expires_at` once closed | while the dispatch has a [job id](qdn_relay_core::Dispatch::job_id), under its current one |
//! | opt-out | `P` `OPTOUT#<number>` | `P` `OPTOUT` | `at` (millis of the first opt-out) | while the number is opted out |
//! | keyword text | `P` `KEYWORD#<MessageSid>` | `P` `KEYWORD` | `at` (millis it was taken) | once a `STOP` / `START` text was applied (a replay finds it and changes nothing) |
//! | rate history | `P` `RATE#TO#<number>` or `P` `RATE#LINE#<line>` | `P` `RATE` | `sent` (millis, oldest first, as many as `cap`), `cap` (the largest count ever claimed on the key), `span` (the longest period ever claimed, millis), `version`, `expires_at` | until `span` has passed since its last text |
//!
//! (`<millis>` is the last time the dispatcher was texted about the
//! dispatch, as 20 zero-padded digits, so string order is time order.
//! `<job id>` is the host's job id as it is, `#` and spaces included: it is
//! the whole rest of the key, so no two job ids share a partition. A
//! dispatch saved with a job id before job items existed gets its job item
//! on its next save.)
//!
//! (`<seq>` is the page's number, 10 zero-padded digits.)
//!
//! The dispatch item holds the dispatch's record in `rec`: its JSON as a
//! string, or, when the JSON is longer than
//! [`DynamoConfig::compress_above`] (32 KiB), the LZ4 block of it (length
//! first) as binary; the attribute's type says which. The record stays
//! small: as a conversation grows, its oldest entries move out into
//! [`HistoryPage`](qdn_relay_core::HistoryPage)s, each an item of its own
//! beside the dispatch item (same partition, encoded as `rec` is), written
//! in the save that moved them and never changed. A lookup item's `pos` is
//! the text's position in the thread (inbound) or the leg's index: once the
//! dispatch has moved past it, the lookup holds without the record holding
//! the id. `version` is the
//! dispatch's version (the condition of every update); `state` is there for
//! people reading the table. `open`, `in_sids`, `leg_sids` and `notified`
//! (dispatcher → millis) record which lookup items this version wrote, so
//! the next save writes only what changed; `job` is the job id its job
//! item is filed under.
//!
//! ### Global secondary indexes (both project keys only)
//!
//! - **`due`** (`due_pk`, `due_sk`): only dispatch items with a
//!   [`next_deadline`](qdn_relay_core::Dispatch::next_deadline) carry its
//!   keys (a sparse index: closed dispatches are not in it). `due_pk` is
//!   `P` `DUE#<shard>`, `due_sk` is `<deadline millis>#<id>`. The shard is a
//!   fixed hash of the id modulo [`DynamoConfig::shards`] (8), so the open
//!   dispatches do not all sit under one hot partition key. The due query
//!   asks every shard at once for sort keys below `now + 1 ms`, at most
//!   `limit` each, and merges the earliest `limit`: it never reads a
//!   dispatch that is not due, and the deadline and id come from the index
//!   key itself (no further read).
//! - **`list`** (`list_pk`, `list_sk`): the dispatch item carries
//!   `P` `LIST#ALL#<shard>` and the open-customer item (which exists only
//!   while open) carries `P` `LIST#OPEN#<shard>`, both with the id as sort
//!   key. `list` queries every shard backwards and merges the newest.
//!
//! ### Every query, and what it costs
//!
//! | port call | reads |
//! |---|---|
//! | `get` | `GetItem` of the dispatch item |
//! | `by_inbound_sid`, `by_leg_sid`, `open_for_customer`, `open_by_tag` | `GetItem` of the lookup item, then `GetItem` of the dispatch |
//! | `first_free_tag` | one `BatchGetItem` of the candidates' tag items (per 100 distinct candidates, stopping at the first hundred with a free one); no dispatch is read |
//! | `inbound_lookup` | a `BatchGetItem` of the inbound-sid and open-customer items and the `Query` of `open_for_dispatcher(from, 1)`, concurrently; then, if they lead anywhere, one `BatchGetItem` of the dispatches |
//! | `open_for_dispatcher` | `Query` of the dispatcher's notified partition, newest first, `limit`; then `BatchGetItem` |
//! | `by_job` | `Query` of the job's partition, backwards (ids sort by time, so newest first), `limit`; then `BatchGetItem` |
//! | `due` | one `Query` per shard of `due`, concurrently |
//! | `history` | one consistent `Query` of the dispatch's partition, sort keys beginning `P` `H#` (more pages of results past 1 MB) |
//! | `list` | one `Query` per shard of `list`, concurrently; then `BatchGetItem` |
//! | `save` | `TransactWriteItems` (plus one `GetItem`, unless this store just loaded that version) |
//! | [`OptOuts`](qdn_relay_core::OptOuts): `is_opted_out`, `opt_out`, `opt_in` | one `GetItem`, conditional `PutItem` (absent: the first time stays) or `DeleteItem` |
//! | `opted_out_among` | `BatchGetItem` of the opt-out items |
//! | [`RateLimiter`](qdn_relay_core::RateLimiter): `acquire` | a `GetItem` per claimed key, then, to admit, one `TransactWriteItems` of their histories, each conditional on the version read |
//!
//! No call ever scans. Reads of the table are strongly consistent
//! (`by_job` too: its job items are in the table, not in an index); the two
//! index queries (`due`, `list`) are eventually consistent, as every GSI
//! is: a sweep may see a deadline a moment late or a fired one a moment
//! longer, which the relay tolerates (a timeout handled early or twice is a
//! no-op). A lookup item is followed only if the dispatch it leads to still
//! matches (holds the sid, is open, has the tag), so a lookup never returns
//! a dispatch that does not qualify.
//!
//! ### An inbound text
//!
//! On Lambda every request is a network round trip, so the two calls every
//! text makes are answered in as few as possible. `inbound_lookup` sends
//! its two independent reads at once and reads the dispatches they lead
//! to (at most three, one `BatchGetItem`, none for a first text), each
//! checked as the single lookups check theirs: the same answer as the
//! three calls of the trait's default. `first_free_tag` reads every
//! candidate's tag item in one `BatchGetItem`: a tag item exists exactly
//! while an open dispatch holds the tag (it is put and deleted in the
//! transaction that opens or closes the dispatch), so the first candidate
//! without one is the first `open_by_tag` finds free. Requests (round
//! trips), before the store overrode the two (the trait's defaults) and
//! now:
//!
//! | text | the trait's defaults | now |
//! |---|---|---|
//! | a customer's first text: `inbound_lookup` | 3 (3): `Query`, `GetItem`, `GetItem` | 2 (1): `BatchGetItem` ‖ `Query` |
//! | the new dispatch's tag: `first_free_tag`, `h` candidates held before the first free one | 1 + 2`h` (1 + 2`h`): `GetItem` of a tag item, and of its dispatch when held | 1 (1): `BatchGetItem` |
//! | a customer's first text through the relay (tag free at once; the in-memory opt-outs and rate limits): lookups, tag, the new dispatch, the forward's outcome | 6 (6) | 5 (4) |
//! | a customer's next text: `inbound_lookup` | 4 (4) | 3 (2) |
//! | a repeated webhook: `inbound_lookup` | 5 (5) | 3 (2) |
//! | a text from someone texted about an open dispatch (not in the line's policy, which the driver asks first): `inbound_lookup` | 4 (4) | 3 (2) |
//!
//! The integration test `calls` counts these requests at the HTTP client
//! and pins every number. The price is read units: the tag read asks for
//! all of the driver's 32 candidates, each billed as a consistent read of
//! a small item, found or not (a few dollars per million new dispatches
//! at on-demand rates), where the defaults usually read one. What it buys
//! is latency: Twilio waits for the webhook's answer, and a round trip
//! saved is one less wait on it.
//!
//! ## Saves
//!
//! A save is one `TransactWriteItems`: the dispatch item with the condition
//! `attribute_not_exists(pk)` (create) or `version = :expected` (update),
//! and every lookup item that changes, with the uniqueness rules as
//! conditions: the open-customer, tag and inbound-sid items are put with
//! `attribute_not_exists(pk) OR id = :id`; the open-customer and tag items
//! are deleted (same condition) when the dispatch stops being open, with
//! its notified items. The job item is put when the job id appears and
//! moved (old one deleted, new one put) when it changes. The dispatch and
//! its lookup items change together or not at all.
//!
//! Before the transaction, the save reads the stored version's `open`,
//! `in_sids`, `leg_sids`, `notified` and `job` (or takes them from the load that
//! just preceded it in this process: a version's contents never change),
//! so the transaction holds only what is new: a dispatch with hundreds of
//! texts still saves in a few actions. A stored version other than the
//! expected one is reported as a conflict right there.
//!
//! ### Limits
//!
//! - **100 actions per transaction.** A save that needs more (a dispatch
//!   saved for the first time with very many texts, or one whose time to
//!   live is stamped on many lookup items as it closes) writes the
//!   surplus inbound-sid claims and leg items first, in transactions of up
//!   to 100, each claim still conditional on the sid being free; then the
//!   main transaction. If the main transaction then loses (a conflict), the
//!   claims it wrote stay, pointing at a dispatch that does not hold them
//!   yet: lookups ignore them (see above), and the retry of the same
//!   transition, which holds the same texts, takes them over.
//! - **400 KB per item.** The record is bounded: past 96 entries or 96 KiB
//!   of text (thread, legs) or 256 events, the oldest move out into history
//!   pages (see [`qdn_relay_core::HIGH_ENTRIES`]), so a dispatch with
//!   10,000 texts keeps an item of tens of kilobytes (the integration test
//!   `ten_thousand_texts_then_closed`). Records and pages are compressed
//!   past 32 KiB, and an item that would still be larger is refused with a
//!   non-retryable backend error ([`SaveError::ItemTooLarge`]) before
//!   anything is sent. Legs move out only once settled, so a dispatch that
//!   keeps a leg waiting in its outbox (or an open dispatch's current
//!   escalation step) keeps what comes after it too.
//!
//! ## Time to live
//!
//! [`create_table`] turns on DynamoDB's time to live on
//! [`DynamoConfig::ttl_attribute`] (`expires_at`, epoch seconds). When a
//! dispatch stops being open (closed, or failed after every level), its
//! item, its history pages and every inbound-sid and leg lookup item get
//! `expires_at` = closing time + [`DynamoConfig::retention`] (90 days)
//! (the lookups of entries moved out in earlier saves are found through
//! the pages and stamped after the closing save commits, a hundred per
//! transaction, best effort), and DynamoDB
//! deletes them some time after that; so does its job item, which every
//! save of a closed dispatch writes again with the dispatch's expiry. The
//! open-customer, tag and notified items are deleted at once when the
//! dispatch stops being open. With `retention: None` no dispatch expires.
//! Opt-outs never expire; a rate history expires once its longest period
//! has passed since its last text (it no longer limits anything).
//!
//! ## Opt-outs and rate limits
//!
//! [`DynamoStore`] is also the relay's durable
//! [`OptOuts`](qdn_relay_core::OptOuts) (pass the same store to the relay
//! builder's `opt_outs`) and, optionally, its shared
//! [`RateLimiter`](qdn_relay_core::RateLimiter) (`rate_limiter`), in the
//! same table: a `STOP` is seen by every process on the table at once, and
//! no rate limit is exceeded however many processes send. An admission
//! reads the histories of its keys and writes them back in one
//! transaction conditional on the versions it read; when another process
//! counted a text in between, nothing is counted and it reads again (at
//! most [`RATE_ATTEMPTS`] times, then a retryable error, on which the
//! driver sends anyway, as with every safety port failure).
//!
//! ## Sharing an application's table
//!
//! The store can live inside an existing application table. Name the
//! table's key attributes, the two indexes and the time-to-live attribute
//! as the table has them, and choose a key prefix none of the
//! application's keys starts with:
//!
//! ```
//! use qdn_relay_dynamo::{DynamoConfig, IndexNames};
//! let config = DynamoConfig::new("app-main")
//!     .keys("PK", "SK")
//!     .key_prefix("qdn-relay#")
//!     .list_index(IndexNames::new("GSI1", "GSI1PK", "GSI1SK")) // the application's own
//!     .due_index(IndexNames::new("RelayDue", "RelayDuePK", "RelayDueSK")) // added for the relay
//!     .ttl_attribute("ttl");
//! assert!(config.validate().is_ok());
//! ```
//!
//! What the table needs:
//!
//! - **Keys**: a partition key and a sort key, both strings (any names).
//! - **Two global secondary indexes**, one for `due` and one for `list`,
//!   each keyed by two string attributes (four distinct attributes, none
//!   of them a table key). Keys-only projection is enough; any projection
//!   works. They may be indexes the application already has and overloads
//!   (its own items stay in them under their own partition values), or
//!   new ones: add them with `UpdateTable` (one index per call), e.g.
//!   `RelayDue` on `RelayDuePK`/`RelayDueSK`, keys only.
//! - **Time to live**: a table has at most one time-to-live attribute. If
//!   the application's table has one, set
//!   [`DynamoConfig::ttl_attribute`] to it (epoch seconds, as the store
//!   writes); if it has none, turn it on for the store's attribute
//!   (`expires_at`), or set [`DynamoConfig::retention`] to `None` and keep
//!   closed dispatches forever (rate histories still carry the attribute;
//!   without time to live they stay, a few hundred bytes per number
//!   texted).
//! - **Access**: `GetItem`, `BatchGetItem`, `Query`, `PutItem` and
//!   `DeleteItem` on the table and its indexes (`TransactWriteItems` needs
//!   only the permissions of its actions). Never `Scan`.
//!
//! What the store guarantees in a shared table: every item it writes has
//! a partition key and a sort key that start with the prefix, and every
//! index partition key value it writes starts with it too; it reads only
//! by exact key (`GetItem`, `BatchGetItem`) or by exact partition (`Query`
//! of one of its own partitions, on the table or an index); it never
//! scans. So no application item is ever read, written, deleted or
//! returned by it, including items that carry the same attribute names as
//! its index keys, and every access pattern and its cost is the one the
//! tables above list. [`DynamoConfig::validate`] refuses the
//! configurations that would break this (an empty prefix, an index key
//! that is also a table key or another index's key, an attribute the
//! store's own items use). Several relays can share one table, each
//! under a prefix of its own. The integration test `shared` runs the
//! whole Store contract suite, the opt-outs and the rate limiter in a
//! table shaped like an application's, pre-filled with a few hundred of
//! its items (some with keys close to the prefix, some in the indexes
//! under values shaped like the store's), and checks that every one of
//! them comes out unchanged.
//!
//! ## Error mapping
//!
//! | DynamoDB | [`StoreError`](qdn_relay_core::StoreError) |
//! |---|---|
//! | `TransactionCanceledException`, `ConditionalCheckFailed` on the dispatch item | `Conflict { reason: Version { expected, found } }` (`found` from the item DynamoDB returns with the failure) |
//! | the same on the open-customer item | `Conflict { reason: OpenCustomer }` |
//! | the same on the tag item | `Conflict { reason: Tag }` |
//! | the same on an inbound-sid item | `Conflict { reason: InboundSid }` |
//! | `TransactionConflict` (another transaction on an item) | sent again up to 3 times, then `Backend { retryable: true }` |
//! | `ThrottlingError` / `ProvisionedThroughputExceeded` reasons; `ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`, `TransactionConflictException`, `TransactionInProgressException`, `InternalServerError`, any HTTP 5xx or 429 | `Backend { retryable: true }` (after the SDK's own retries) |
//! | timeouts, connection failures, unreadable responses | `Backend { retryable: true }` |
//! | anything else (validation, missing table, credentials) | `Backend { retryable: false }` |
//! | an item whose record does not decode or disagrees with its attributes | `Corrupt` |
//!
//! The opt-out and rate-limit calls fail with a
//! [`SafetyError`](qdn_relay_core::SafetyError) holding the
//! [`StoreError`](qdn_relay_core::StoreError) of the same mapping; a rate
//! limit that counts 0 texts is refused as one before any request.
//!
//! When several conditions fail at once, the reason is chosen in the order
//! the reference store checks them: version, open customer, tag, inbound
//! sid. Errors are told apart by the SDK's error variants and
//! DynamoDB's cancellation codes, never by their messages.
//!
//! ## Testing
//!
//! The integration tests run the core's contract suite and the relay
//! itself against a DynamoDB emulator (moto in server mode, started by
//! `scripts/test`, which exports `QDN_TEST_DYNAMO_URL`). Each test creates a
//! table of its own with a unique name: the tests run in parallel
//! processes, and moto's global reset would wipe the other tests' tables,
//! so it is never called from a test; a fresh emulator per test run gives
//! the clean start.

#[cfg(feature = "changes")]
mod changes;
mod config;
mod error;
mod item;
mod safety;
mod store;
mod table;

#[cfg(feature = "changes")]
pub use changes::{ChangeFeed, ChangeFeedError, POLL_INTERVAL};
pub use config::{
    ConfigError, DEFAULT_RETENTION, DEFAULT_SHARDS, DynamoConfig, IndexNames, MAX_KEY_PREFIX_BYTES,
    RESERVED_ATTRIBUTES,
};
pub use error::{SaveError, TableError};
pub use safety::RATE_ATTEMPTS;
pub use store::{DynamoStore, MAX_TRANSACTION_ACTIONS};
pub use table::{CREATE_TIMEOUT, create_table, wait_until_active};

/// The AWS SDK for DynamoDB this crate is built on, for hosts that
/// configure their own client (endpoint, retries, HTTP client).
pub use aws_sdk_dynamodb as sdk;

/// The DynamoDB client a [`DynamoStore`] is built over.
pub use aws_sdk_dynamodb::Client;

/// A DynamoDB client configured from the environment: the standard AWS
/// variables and files (region, credentials, profiles) and endpoint
/// overrides (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL`, for local
/// emulators).
pub async fn client_from_env() -> Client {
    Client::new(&config_from_env().await)
}

/// The AWS configuration [`client_from_env`] builds its client from, for
/// what needs the region and credentials too (the change feed).
pub async fn config_from_env() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The AWS SDK's shared configuration (region, credentials, endpoint).
pub use aws_config::SdkConfig;
