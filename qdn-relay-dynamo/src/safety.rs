//! [`OptOuts`] and [`RateLimiter`] on DynamoDB, in the store's own table
//! (see the crate docs for the items).

use std::collections::{BTreeMap, HashSet, VecDeque};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use futures_util::future::try_join_all;
use qdn_relay_core::{
    Admission, OptOuts, PhoneNumber, ProviderMessageId, Rate, RateKey, RateLimiter, SafetyError,
    StoreError, Timestamp, earliest_admission,
};

use crate::error::{Cancelled, Guard, cancellation, map_sdk};
use crate::item;
use crate::store::{DynamoStore, Item};

/// How many times [`RateLimiter::acquire`] reads the histories again and
/// retries when another process counted a text on one of its keys between
/// its read and its write.
pub const RATE_ATTEMPTS: u32 = 16;

/// The most send times a rate history keeps (policies allow at most 10,000
/// texts per period).
const MAX_HISTORY: usize = 10_000;

fn safety(e: StoreError) -> SafetyError {
    SafetyError(Box::new(e))
}

impl DynamoStore {
    /// When `number` opted out (the first time, if it did so repeatedly
    /// without opting back in), or `None` if it is not opted out.
    pub async fn opted_out_at(
        &self,
        number: PhoneNumber,
    ) -> Result<Option<Timestamp>, SafetyError> {
        self.check().map_err(safety)?;
        let key = self.keys().opt_out(number);
        let Some(item) = self.get_item(key).await.map_err(safety)? else {
            return Ok(None);
        };
        let at = match item.get(item::AT) {
            Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            safety(StoreError::Corrupt(format!(
                "opt-out item of {number}: attribute {} is missing or not a number",
                item::AT
            )))
        })?;
        Ok(Some(Timestamp::from_millis(at)))
    }
}

/// Opt-outs as items of the store's table, one per opted-out number:
/// `opt_out` puts it unless it exists (the first time is kept), `opt_in`
/// deletes it. Every read is strongly consistent, so an opt-out is seen at
/// once by every process on the table.
#[async_trait]
impl OptOuts for DynamoStore {
    async fn opt_out(&self, number: PhoneNumber, at: Timestamp) -> Result<(), SafetyError> {
        self.check().map_err(safety)?;
        let cfg = self.config();
        let (pk, sk) = self.keys().opt_out(number);
        let mut item = self.keys().key(pk, sk);
        item.insert(
            item::AT.into(),
            AttributeValue::N(at.as_millis().to_string()),
        );
        let result = self
            .client()
            .put_item()
            .table_name(&cfg.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &cfg.partition_key)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already opted out: the first time stays.
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(safety(map_sdk(e))),
        }
    }

    async fn opt_in(&self, number: PhoneNumber) -> Result<(), SafetyError> {
        self.check().map_err(safety)?;
        let (pk, sk) = self.keys().opt_out(number);
        self.client()
            .delete_item()
            .table_name(&self.config().table)
            .set_key(Some(self.keys().key(pk, sk)))
            .send()
            .await
            .map_err(|e| safety(map_sdk(e)))?;
        Ok(())
    }

    async fn is_opted_out(&self, number: PhoneNumber) -> Result<bool, SafetyError> {
        self.check().map_err(safety)?;
        let key = self.keys().opt_out(number);
        Ok(self.get_item(key).await.map_err(safety)?.is_some())
    }

    async fn keyword_taken(&self, sid: &ProviderMessageId) -> Result<bool, SafetyError> {
        self.check().map_err(safety)?;
        let key = self.keys().keyword(sid.as_str());
        Ok(self.get_item(key).await.map_err(safety)?.is_some())
    }

    async fn take_keyword(
        &self,
        sid: &ProviderMessageId,
        at: Timestamp,
    ) -> Result<(), SafetyError> {
        self.check().map_err(safety)?;
        let (pk, sk) = self.keys().keyword(sid.as_str());
        let mut item = self.keys().key(pk, sk);
        item.insert(
            item::AT.into(),
            AttributeValue::N(at.as_millis().to_string()),
        );
        self.client()
            .put_item()
            .table_name(&self.config().table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| safety(map_sdk(e)))?;
        Ok(())
    }

    async fn opted_out_among(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<PhoneNumber>, SafetyError> {
        self.check().map_err(safety)?;
        // Partition key → number, each number once (BatchGetItem refuses
        // duplicate keys).
        let by_pk: BTreeMap<String, PhoneNumber> = numbers
            .iter()
            .map(|&n| (self.keys().opt_out(n).0, n))
            .collect();
        let keys = by_pk
            .keys()
            .map(|pk| {
                let (_, sk) = self.keys().opt_out(by_pk[pk]);
                self.keys().key(pk.clone(), sk)
            })
            .collect();
        let found = self.batch_get(keys).await.map_err(safety)?;
        let pk_attr = &self.config().partition_key;
        let mut out = HashSet::with_capacity(found.len());
        for it in &found {
            let n = item::string(it, pk_attr)
                .and_then(|pk| by_pk.get(pk))
                .ok_or_else(|| {
                    safety(StoreError::Corrupt(
                        "BatchGetItem returned an opt-out item that was not asked for".into(),
                    ))
                })?;
            out.insert(*n);
        }
        Ok(numbers
            .iter()
            .copied()
            .filter(|n| out.contains(n))
            .collect())
    }
}

/// One key's history as read: the times of its recent texts (oldest
/// first), the item's version (`None`: no item yet) and its expiry.
struct History {
    sent: VecDeque<Timestamp>,
    version: Option<u64>,
    /// The largest count ever claimed on the key: how many send times it
    /// keeps.
    cap: usize,
    /// The longest period ever claimed on the key, in milliseconds: how
    /// long after its last text the history still matters.
    span_ms: i64,
}

/// Rate-limit histories as items of the store's table, one per key (a
/// destination or a line): the times of its last texts, as many as the
/// largest limit ever claimed on the key counts (dispatches keep the
/// policy they opened with, so two may limit one key differently; neither
/// makes the other forget a text), and a version.
///
/// `acquire` reads the histories of every claimed key (strongly
/// consistent), decides as [`MemoryRateLimiter`](qdn_relay_core::MemoryRateLimiter)
/// does, and, to admit, writes every history in one `TransactWriteItems`,
/// each put conditional on the version it read (or on the item still being
/// absent). If another process counted a text on one of the keys in
/// between, the transaction is cancelled, nothing is counted, and it reads
/// again (up to [`RATE_ATTEMPTS`] times): no limit is exceeded however
/// many processes share the table. A key claimed more than once in one
/// call is counted once, under all the limits claimed on it. A history
/// item expires (time to live) once its longest period has passed since
/// its last text.
#[async_trait]
impl RateLimiter for DynamoStore {
    async fn acquire(
        &self,
        now: Timestamp,
        claims: &[(RateKey, Vec<Rate>)],
    ) -> Result<Admission, SafetyError> {
        self.check().map_err(safety)?;
        // One claim per key, with every limit claimed on it.
        let mut merged: Vec<(RateKey, Vec<Rate>)> = Vec::with_capacity(claims.len());
        for (key, rates) in claims {
            if let Some(r) = rates.iter().find(|r| r.count == 0) {
                return Err(SafetyError(
                    format!(
                        "rate limit on {key:?}: {} texts per {:?} is not a limit (at least 1)",
                        r.count, r.per
                    )
                    .into(),
                ));
            }
            match merged.iter_mut().find(|(k, _)| k == key) {
                Some((_, all)) => all.extend(rates.iter().cloned()),
                None => merged.push((*key, rates.clone())),
            }
        }
        merged.retain(|(_, rates)| !rates.is_empty());
        if merged.is_empty() {
            return Ok(Admission::Admitted);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let histories = try_join_all(merged.iter().map(|(k, _)| self.rate_history(*k))).await?;
            let at = merged
                .iter()
                .zip(&histories)
                .map(|((_, rates), h)| earliest_admission(&h.sent, rates, now))
                .max()
                .unwrap_or(now);
            if at > now {
                return Ok(Admission::NotBefore(at));
            }
            let actions = merged
                .iter()
                .zip(histories)
                .map(|((k, rates), h)| self.count_text(*k, rates, h, now))
                .collect::<Result<Vec<_>, _>>()?;
            let guards = vec![Guard::Index; actions.len()];
            let err = match self
                .client()
                .transact_write_items()
                .set_transact_items(Some(actions))
                .send()
                .await
            {
                Ok(_) => return Ok(Admission::Admitted),
                Err(e) => e,
            };
            let cancelled = cancellation(&err, &guards);
            match cancelled {
                Some(Cancelled::Condition { .. } | Cancelled::Conflict)
                    if attempt < RATE_ATTEMPTS =>
                {
                    tracing::debug!(attempt, "rate history changed under us; reading again");
                    self.backoff(attempt).await;
                }
                Some(Cancelled::Condition { .. } | Cancelled::Conflict) => {
                    return Err(safety(StoreError::backend(
                        true,
                        format!(
                            "rate histories kept changing: nothing counted after {RATE_ATTEMPTS} attempts"
                        ),
                    )));
                }
                Some(Cancelled::Throttled) => return Err(safety(StoreError::backend(true, err))),
                Some(Cancelled::Other) => return Err(safety(StoreError::backend(false, err))),
                None => return Err(safety(map_sdk(err))),
            }
        }
    }
}

impl DynamoStore {
    /// Reads one key's history (strongly consistent).
    async fn rate_history(&self, key: RateKey) -> Result<History, SafetyError> {
        let Some(it) = self.get_item(self.keys().rate(key)).await.map_err(safety)? else {
            return Ok(History {
                sent: VecDeque::new(),
                version: None,
                cap: 0,
                span_ms: 0,
            });
        };
        let corrupt = |what: &str| {
            safety(StoreError::Corrupt(format!(
                "rate history of {key:?}: {what}"
            )))
        };
        let version = item::number(&it, item::VERSION)
            .ok_or_else(|| corrupt("the version is missing or not a number"))?;
        let mut sent = match it.get(item::SENT) {
            Some(AttributeValue::L(l)) => l
                .iter()
                .map(|v| match v {
                    AttributeValue::N(n) => n.parse::<i64>().ok().map(Timestamp::from_millis),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| corrupt("a send time is not a number"))?,
            _ => return Err(corrupt("the send times are missing or not a list")),
        };
        sent.sort();
        let cap = item::number(&it, item::CAP)
            .and_then(|c| usize::try_from(c).ok())
            .ok_or_else(|| corrupt("the kept count is missing or not a number"))?;
        let span_ms = item::number(&it, item::SPAN)
            .and_then(|s| i64::try_from(s).ok())
            .ok_or_else(|| corrupt("the span is missing or not a number"))?;
        Ok(History {
            sent: sent.into(),
            version: Some(version),
            cap,
            span_ms,
        })
    }

    /// The conditional put that counts a text at `now` on `key`.
    fn count_text(
        &self,
        key: RateKey,
        rates: &[Rate],
        mut h: History,
        now: Timestamp,
    ) -> Result<TransactWriteItem, SafetyError> {
        let cfg = self.config();
        let claimed = rates.iter().map(|r| r.count as usize).max().unwrap_or(1);
        let cap = claimed.max(h.cap).min(MAX_HISTORY);
        let longest = rates
            .iter()
            .map(|r| i64::try_from(r.per.as_millis()).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0);
        let span_ms = longest.max(h.span_ms);
        let at = h.sent.partition_point(|&t| t <= now);
        h.sent.insert(at, now);
        while h.sent.len() > cap {
            h.sent.pop_front();
        }
        let last = h.sent.back().copied().unwrap_or(now);
        let expires_at = last.as_millis().saturating_add(span_ms) / 1000 + 1;
        let (pk, sk) = self.keys().rate(key);
        let mut it: Item = self.keys().key(pk, sk);
        it.insert(
            item::SENT.into(),
            AttributeValue::L(
                h.sent
                    .iter()
                    .map(|t| AttributeValue::N(t.as_millis().to_string()))
                    .collect(),
            ),
        );
        let version = h.version.map_or(1, |v| v + 1);
        it.insert(item::VERSION.into(), AttributeValue::N(version.to_string()));
        it.insert(item::CAP.into(), AttributeValue::N(cap.to_string()));
        it.insert(item::SPAN.into(), AttributeValue::N(span_ms.to_string()));
        it.insert(
            cfg.ttl_attribute.clone(),
            AttributeValue::N(expires_at.to_string()),
        );
        let put = Put::builder().table_name(&cfg.table).set_item(Some(it));
        let put = match h.version {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", &cfg.partition_key),
            Some(v) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", item::VERSION)
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        let put = put
            .build()
            .map_err(|e| safety(StoreError::backend(false, e)))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}
