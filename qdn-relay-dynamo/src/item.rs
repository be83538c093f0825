//! Item shapes: keys, the dispatch record's encoding, and what a dispatch
//! item says about the lookup items written for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use qdn_relay_core::{
    Dispatch, DispatchId, PhoneNumber, ProviderMessageId, RateKey, Tag, Timestamp,
};

use crate::config::DynamoConfig;

/// DynamoDB's limit on one item, in bytes.
pub(crate) const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Room kept under [`MAX_ITEM_BYTES`] for the estimate's error.
const ITEM_SLACK: usize = 1024;

/// The largest decompressed record accepted (a corrupt size prefix must not
/// make the store allocate gigabytes).
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

// Attribute names of the store's own items (the key and index attributes
// come from the config).
pub(crate) const ID: &str = "id";
pub(crate) const VERSION: &str = "version";
pub(crate) const STATE: &str = "state";
pub(crate) const OPEN: &str = "open";
pub(crate) const RECORD: &str = "rec";
pub(crate) const INBOUND_SIDS: &str = "in_sids";
pub(crate) const LEG_SIDS: &str = "leg_sids";
pub(crate) const NOTIFIED: &str = "notified";
pub(crate) const JOB: &str = "job";
pub(crate) const AT: &str = "at";
/// On an inbound-sid lookup item, the text's position in the thread; on a
/// leg-sid one, the leg's index: once the dispatch has moved that far out
/// of its record, the lookup holds without the record holding the id.
pub(crate) const POS: &str = "pos";
pub(crate) const SENT: &str = "sent";
pub(crate) const CAP: &str = "cap";
pub(crate) const SPAN: &str = "span";

/// Builds the key values of every kind of item.
pub(crate) struct Keys<'a>(pub(crate) &'a DynamoConfig);

impl Keys<'_> {
    fn p(&self) -> &str {
        &self.0.key_prefix
    }

    /// A `(partition, sort)` key as an item map.
    pub(crate) fn key(&self, pk: String, sk: String) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (self.0.partition_key.clone(), AttributeValue::S(pk)),
            (self.0.sort_key.clone(), AttributeValue::S(sk)),
        ])
    }

    pub(crate) fn dispatch(&self, id: DispatchId) -> (String, String) {
        (format!("{}D#{id}", self.p()), format!("{}D", self.p()))
    }

    /// History page `seq` of a dispatch: in the dispatch item's partition.
    pub(crate) fn page(&self, id: DispatchId, seq: u32) -> (String, String) {
        (
            format!("{}D#{id}", self.p()),
            format!("{}H#{seq:010}", self.p()),
        )
    }

    /// The sort-key prefix of a dispatch's history pages.
    pub(crate) fn page_prefix(&self) -> String {
        format!("{}H#", self.p())
    }

    pub(crate) fn inbound(&self, sid: &str) -> (String, String) {
        (format!("{}IN#{sid}", self.p()), format!("{}IN", self.p()))
    }

    pub(crate) fn leg(&self, sid: &str) -> (String, String) {
        (format!("{}LEG#{sid}", self.p()), format!("{}LEG", self.p()))
    }

    pub(crate) fn open(&self, line: PhoneNumber, customer: PhoneNumber) -> (String, String) {
        (
            format!("{}OPEN#{line}#{customer}", self.p()),
            format!("{}OPEN", self.p()),
        )
    }

    pub(crate) fn tag(&self, tag: Tag) -> (String, String) {
        (format!("{}TAG#{tag}", self.p()), format!("{}TAG", self.p()))
    }

    /// The partition of a job's items: one per dispatch of the job.
    pub(crate) fn job_pk(&self, job: &str) -> String {
        format!("{}JOB#{job}", self.p())
    }

    /// A job item's key: the job's partition, the dispatch id as sort key
    /// (ids sort by creation time, so a backwards query reads newest first).
    pub(crate) fn job(&self, job: &str, id: &str) -> (String, String) {
        (self.job_pk(job), format!("{}JOB#{id}", self.p()))
    }

    /// A number's opt-out item (exists while it is opted out).
    pub(crate) fn opt_out(&self, number: PhoneNumber) -> (String, String) {
        (
            format!("{}OPTOUT#{number}", self.p()),
            format!("{}OPTOUT", self.p()),
        )
    }

    /// A keyword text's item (exists once the `STOP` / `START` with this
    /// message id was taken).
    pub(crate) fn keyword(&self, sid: &str) -> (String, String) {
        (
            format!("{}KEYWORD#{sid}", self.p()),
            format!("{}KEYWORD", self.p()),
        )
    }

    /// A rate-limit key's history item.
    pub(crate) fn rate(&self, key: RateKey) -> (String, String) {
        let pk = match key {
            RateKey::Destination(n) => format!("{}RATE#TO#{n}", self.p()),
            RateKey::Line(n) => format!("{}RATE#LINE#{n}", self.p()),
        };
        (pk, format!("{}RATE", self.p()))
    }

    /// The partition of a dispatcher's notified items.
    pub(crate) fn notified_pk(&self, dispatcher: &str) -> String {
        format!("{}N#{dispatcher}", self.p())
    }

    /// A notified item's sort key: last notified time, then id, so a
    /// backwards query reads most recently notified first.
    pub(crate) fn notified_sk(&self, at_millis: i64, id: &str) -> String {
        format!("{}N#{}#{id}", self.p(), millis_key(at_millis))
    }

    pub(crate) fn due_pk(&self, shard: u16) -> String {
        format!("{}DUE#{shard}", self.p())
    }

    pub(crate) fn list_all_pk(&self, shard: u16) -> String {
        format!("{}LIST#ALL#{shard}", self.p())
    }

    pub(crate) fn list_open_pk(&self, shard: u16) -> String {
        format!("{}LIST#OPEN#{shard}", self.p())
    }

    /// The shard of a dispatch in the due and list indexes.
    pub(crate) fn shard(&self, id: DispatchId) -> u16 {
        shard_of(id, self.0.shard_count())
    }
}

/// Milliseconds as 20 zero-padded digits (negative times clamp to 0), so
/// string order is time order.
pub(crate) fn millis_key(ms: i64) -> String {
    format!("{:020}", ms.max(0))
}

/// The due index's sort key: the deadline, then the id.
pub(crate) fn due_sk(deadline: Timestamp, id: DispatchId) -> String {
    format!("{}#{id}", millis_key(deadline.as_millis()))
}

/// Parses a due sort key back into its deadline and id.
pub(crate) fn parse_due_sk(s: &str) -> Option<(Timestamp, DispatchId)> {
    let (ms, id) = s.split_once('#')?;
    Some((Timestamp::from_millis(ms.parse().ok()?), id.parse().ok()?))
}

/// Which shard a dispatch lives in: a fixed mix (SplitMix64's finaliser) of
/// its id, modulo the shard count. It must never change: items written
/// under one function would be looked for in the wrong shard by another.
pub(crate) fn shard_of(id: DispatchId, shards: u16) -> u16 {
    let v = id.as_u128();
    let mut z = (v as u64) ^ ((v >> 64) as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(shards.max(1))) as u16
}

// ---------------------------------------------------------------------------
// The record

/// Encodes a dispatch (or a history page): its JSON as a string
/// attribute, or, when longer than `compress_above`, the LZ4 block of the
/// JSON (with its length prepended) as a binary attribute. The attribute's
/// type says which.
pub(crate) fn encode<T: serde::Serialize>(
    d: &T,
    compress_above: usize,
) -> Result<AttributeValue, String> {
    let json = serde_json::to_string(d).map_err(|e| format!("cannot serialize: {e}"))?;
    if json.len() > compress_above {
        Ok(AttributeValue::B(Blob::new(
            lz4_flex::block::compress_prepend_size(json.as_bytes()),
        )))
    } else {
        Ok(AttributeValue::S(json))
    }
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(av: &AttributeValue) -> Result<T, String> {
    match av {
        AttributeValue::S(json) => {
            serde_json::from_str(json).map_err(|e| format!("record does not parse: {e}"))
        }
        AttributeValue::B(blob) => {
            let bytes = blob.as_ref();
            let size = bytes
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or("compressed record is shorter than its size prefix")?;
            if size as usize > MAX_RECORD_BYTES {
                return Err(format!("compressed record claims {size} bytes"));
            }
            let json = lz4_flex::block::decompress_size_prepended(bytes)
                .map_err(|e| format!("record does not decompress: {e}"))?;
            serde_json::from_slice(&json).map_err(|e| format!("record does not parse: {e}"))
        }
        _ => Err("record is neither a string nor binary".into()),
    }
}

/// A conservative estimate of an item's size as DynamoDB counts it
/// (attribute names plus values).
pub(crate) fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len() / 2 + 2,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(ss) | AttributeValue::Ns(ss) => ss.iter().map(|s| s.len() + 1).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len() + 1).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

/// Whether an item of this size can be written.
pub(crate) fn fits(size: usize) -> bool {
    size + ITEM_SLACK <= MAX_ITEM_BYTES
}

// ---------------------------------------------------------------------------
// What a dispatch item says is indexed

/// The lookup items that exist for one version of a dispatch, as recorded
/// on its item: whether it is open (its `OPEN` and `TAG` items exist), the
/// inbound and leg sids that have lookup items, while open each notified
/// dispatcher's last notified time (their notified items), and the host
/// job it is filed under (its job item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Indexed {
    pub(crate) open: bool,
    pub(crate) inbound: BTreeSet<String>,
    pub(crate) legs: BTreeSet<String>,
    pub(crate) notified: BTreeMap<String, i64>,
    pub(crate) job: Option<String>,
}

impl Indexed {
    /// What a save of `d` indexes.
    pub(crate) fn of(d: &Dispatch) -> Self {
        let open = d.state().is_open();
        Self {
            open,
            inbound: d.inbound_sids().map(|s| s.as_str().to_owned()).collect(),
            legs: d.leg_sids().map(|s| s.as_str().to_owned()).collect(),
            notified: if open {
                d.notified_at()
                    .into_iter()
                    .map(|(n, at)| (n.to_string(), at.as_millis()))
                    .collect()
            } else {
                BTreeMap::new()
            },
            job: d.job_id().map(|j| j.as_str().to_owned()),
        }
    }

    /// Writes these facts onto a dispatch item.
    pub(crate) fn write(&self, item: &mut HashMap<String, AttributeValue>) {
        item.insert(OPEN.into(), AttributeValue::Bool(self.open));
        if !self.inbound.is_empty() {
            item.insert(
                INBOUND_SIDS.into(),
                AttributeValue::Ss(self.inbound.iter().cloned().collect()),
            );
        }
        if !self.legs.is_empty() {
            item.insert(
                LEG_SIDS.into(),
                AttributeValue::Ss(self.legs.iter().cloned().collect()),
            );
        }
        if !self.notified.is_empty() {
            item.insert(
                NOTIFIED.into(),
                AttributeValue::M(
                    self.notified
                        .iter()
                        .map(|(n, at)| (n.clone(), AttributeValue::N(at.to_string())))
                        .collect(),
                ),
            );
        }
        if let Some(job) = &self.job {
            item.insert(JOB.into(), AttributeValue::S(job.clone()));
        }
    }

    /// Reads them back from a dispatch item.
    pub(crate) fn read(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        let open = match item.get(OPEN) {
            Some(AttributeValue::Bool(b)) => *b,
            _ => return Err(format!("attribute {OPEN} is missing or not a boolean")),
        };
        let set = |name: &str| match item.get(name) {
            None => Ok(BTreeSet::new()),
            Some(AttributeValue::Ss(ss)) => Ok(ss.iter().cloned().collect()),
            Some(_) => Err(format!("attribute {name} is not a string set")),
        };
        let notified = match item.get(NOTIFIED) {
            None => BTreeMap::new(),
            Some(AttributeValue::M(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    AttributeValue::N(n) => n
                        .parse::<i64>()
                        .map(|at| (k.clone(), at))
                        .map_err(|e| format!("notified time {n:?}: {e}")),
                    _ => Err(format!("notified time of {k} is not a number")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("attribute {NOTIFIED} is not a map")),
        };
        let job = match item.get(JOB) {
            None => None,
            Some(AttributeValue::S(j)) => Some(j.clone()),
            Some(_) => return Err(format!("attribute {JOB} is not a string")),
        };
        Ok(Self {
            open,
            inbound: set(INBOUND_SIDS)?,
            legs: set(LEG_SIDS)?,
            notified,
            job,
        })
    }
}

/// Reads a number attribute.
pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// Reads a string attribute.
pub(crate) fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// The sid as stored in keys and sets.
pub(crate) fn sid_str(s: &ProviderMessageId) -> &str {
    s.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keys_sort_like_times() {
        let mut ks: Vec<String> = [5i64, 1_767_603_600_000, 0, -3, i64::MAX, 42]
            .iter()
            .map(|&m| millis_key(m))
            .collect();
        ks.sort();
        assert_eq!(
            ks,
            vec![
                millis_key(0),
                millis_key(0),
                millis_key(5),
                millis_key(42),
                millis_key(1_767_603_600_000),
                millis_key(i64::MAX)
            ]
        );
        assert_eq!(millis_key(i64::MAX).len(), 20);
    }

    #[test]
    fn due_sort_keys_round_trip() {
        let id = DispatchId::new(Timestamp::from_millis(1_767_603_600_000), 77);
        let t = Timestamp::from_millis(1_767_604_500_000);
        assert_eq!(parse_due_sk(&due_sk(t, id)), Some((t, id)));
        assert_eq!(parse_due_sk("nonsense"), None);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let id = DispatchId::new(Timestamp::from_millis(1_767_603_600_000), 12345);
        assert_eq!(shard_of(id, 8), shard_of(id, 8));
        let mut seen = [0usize; 8];
        for i in 0..800u128 {
            let s = shard_of(DispatchId::new(Timestamp::from_millis(0), i), 8);
            seen[s as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "spread: {seen:?}");
        assert_eq!(shard_of(id, 1), 0);
        assert_eq!(shard_of(id, 0), 0);
    }

    #[test]
    fn records_round_trip_plain_and_compressed() {
        let d = qdn_relay_core::testing::contract::fixture(1, "K7", "+16195550100", "SMin1", 0);
        let plain = encode(&d, usize::MAX).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(plain, AttributeValue::S(_)));
        let packed = encode(&d, 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(packed, AttributeValue::B(_)));
        for av in [plain, packed] {
            assert_eq!(decode::<Dispatch>(&av).unwrap_or_else(|e| panic!("{e}")), d);
        }
    }

    #[test]
    fn index_facts_round_trip_through_an_item() {
        let mut d = qdn_relay_core::testing::contract::fixture(1, "K7", "+16195550100", "SMin1", 0);
        let facts = Indexed::of(&d);
        assert!(facts.open);
        assert_eq!(facts.inbound.len(), 1);
        assert_eq!(facts.notified.len(), 1);
        assert_eq!(facts.job, None);
        let mut item = HashMap::new();
        facts.write(&mut item);
        assert_eq!(Indexed::read(&item), Ok(facts));
        assert!(Indexed::read(&HashMap::new()).is_err(), "open is required");

        let job = "dumpster #1042".parse().unwrap_or_else(|e| panic!("{e}"));
        let at = d.opened_at();
        d.handle(at, qdn_relay_core::Input::LinkJob { job, sync: false })
            .unwrap_or_else(|e| panic!("{e}"));
        let facts = Indexed::of(&d);
        assert_eq!(facts.job.as_deref(), Some("dumpster #1042"));
        let mut item = HashMap::new();
        facts.write(&mut item);
        assert_eq!(Indexed::read(&item), Ok(facts));
        item.insert(JOB.into(), AttributeValue::N("1".into()));
        assert!(Indexed::read(&item).is_err(), "a job that is not a string");
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(decode::<Dispatch>(&AttributeValue::S("{".into())).is_err());
        assert!(decode::<Dispatch>(&AttributeValue::B(Blob::new(vec![1, 2]))).is_err());
        assert!(
            decode::<Dispatch>(&AttributeValue::B(Blob::new(vec![
                0xff, 0xff, 0xff, 0x7f, 0
            ])))
            .is_err()
        );
        assert!(
            decode::<Dispatch>(&AttributeValue::B(Blob::new(vec![8, 0, 0, 0, 1, 2, 3]))).is_err()
        );
        assert!(decode::<Dispatch>(&AttributeValue::Bool(true)).is_err());
    }
}
