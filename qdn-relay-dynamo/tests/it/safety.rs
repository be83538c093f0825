//! The durable opt-outs and the rate limiter on DynamoDB: the same
//! behaviour as the core's in-memory adapters, shared by every process on
//! the table, and no limit exceeded under concurrent processes.

use std::time::Duration;

use futures_util::future::join_all;
use qdn_relay_core::{
    Admission, MemoryRateLimiter, OptOuts, PhoneNumber, Rate, RateKey, RateLimiter, Timestamp,
};

use crate::common::{fresh, fresh_with, raw_item, twin};

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn rate(count: u32, secs: u64) -> Rate {
    Rate {
        count,
        per: Duration::from_secs(secs),
    }
}

const T0: i64 = 1_767_603_600_000;

/// The claims of one `acquire`.
type Claims = Vec<(RateKey, Vec<Rate>)>;

#[tokio::test]
async fn opt_outs_keep_the_first_time_and_are_seen_by_every_process() {
    let s = fresh().await;
    let other = twin(&s).await;
    let (a, b) = (n("+16195550101"), n("+16195550102"));
    let (t1, t2) = (
        Timestamp::from_millis(T0),
        Timestamp::from_millis(T0 + 5_000),
    );

    assert!(!s.is_opted_out(a).await.expect("read"));
    assert_eq!(s.opted_out_at(a).await.expect("read"), None);
    s.opt_out(a, t1).await.expect("opt out");
    other.opt_out(a, t2).await.expect("idempotent");
    assert!(
        other.is_opted_out(a).await.expect("read"),
        "another process sees it"
    );
    assert_eq!(
        s.opted_out_at(a).await.expect("read"),
        Some(t1),
        "the first time stays"
    );
    assert!(!s.is_opted_out(b).await.expect("read"));
    assert_eq!(
        other.opted_out_among(&[b, a, b, a]).await.expect("batch"),
        vec![a, a],
        "members in the order asked, duplicates and all"
    );
    assert!(other.opted_out_among(&[]).await.expect("empty").is_empty());

    // The item is the relay's own, under its prefix.
    let p = &s.config().key_prefix;
    assert!(
        raw_item(&s, &format!("{p}OPTOUT#{a}"), &format!("{p}OPTOUT"))
            .await
            .is_some()
    );

    other.opt_in(a).await.expect("opt in");
    other.opt_in(a).await.expect("opt in is idempotent");
    assert!(
        !s.is_opted_out(a).await.expect("read"),
        "START clears it everywhere"
    );
    s.opt_out(a, t2).await.expect("opt out again");
    assert_eq!(s.opted_out_at(a).await.expect("read"), Some(t2));
}

#[tokio::test]
async fn keyword_texts_taken_are_seen_by_every_process() {
    let s = fresh().await;
    let other = twin(&s).await;
    let stop: qdn_relay_core::ProviderMessageId =
        "SM0000000000000000000000000000stop".parse().expect("sid");
    assert!(!s.keyword_taken(&stop).await.expect("read"));
    s.take_keyword(&stop, Timestamp::from_millis(T0))
        .await
        .expect("take");
    other
        .take_keyword(&stop, Timestamp::from_millis(T0 + 1))
        .await
        .expect("idempotent");
    assert!(other.keyword_taken(&stop).await.expect("read"));
    let p = &s.config().key_prefix;
    assert!(
        raw_item(
            &s,
            &format!("{p}KEYWORD#{}", stop.as_str()),
            &format!("{p}KEYWORD")
        )
        .await
        .is_some(),
        "the item is the relay's own, under its prefix"
    );
}

#[tokio::test]
async fn opted_out_among_reads_more_than_one_batch() {
    let s = fresh().await;
    let numbers: Vec<PhoneNumber> = (0..250)
        .map(|i| n(&format!("+1619555{:04}", 1000 + i)))
        .collect();
    let t = Timestamp::from_millis(T0);
    for m in numbers.iter().step_by(7) {
        s.opt_out(*m, t).await.expect("opt out");
    }
    let expected: Vec<PhoneNumber> = numbers.iter().copied().step_by(7).collect();
    assert_eq!(s.opted_out_among(&numbers).await.expect("batch"), expected);
}

/// The core's reference scenario, answered the same by DynamoDB and the
/// in-memory limiter, step by step.
#[tokio::test]
async fn the_limiter_answers_like_the_reference() {
    let s = fresh_with(|c| c.shards(1)).await;
    let memory = MemoryRateLimiter::new();
    let a = RateKey::Destination(n("+16195550101"));
    let b = RateKey::Destination(n("+16195550102"));
    let line = RateKey::Line(n("+16195550000"));
    let claims = vec![(a, vec![rate(1, 60), rate(3, 600)])];
    let one = vec![rate(1, 1)];
    let t0 = Timestamp::from_millis(T0);
    let at = |s: u64| t0.plus(Duration::from_secs(s));
    let steps: Vec<(Timestamp, Claims, Option<Admission>)> = vec![
        (at(0), claims.clone(), Some(Admission::Admitted)),
        (at(0), claims.clone(), Some(Admission::NotBefore(at(60)))),
        (at(60), claims.clone(), Some(Admission::Admitted)),
        (at(120), claims.clone(), Some(Admission::Admitted)),
        // Three in ten minutes: the fourth waits for the first to age out.
        (at(180), claims.clone(), Some(Admission::NotBefore(at(600)))),
        (
            at(180),
            vec![(line, one.clone())],
            Some(Admission::Admitted),
        ),
        // All or nothing: a line limit that refuses counts nothing on b.
        (at(180), vec![(b, one.clone()), (line, one.clone())], None),
        (at(180), vec![(b, one.clone())], Some(Admission::Admitted)),
        (at(600), claims.clone(), Some(Admission::Admitted)),
        // No claims: nothing to count.
        (at(600), vec![], Some(Admission::Admitted)),
    ];
    for (i, (now, claims, want)) in steps.into_iter().enumerate() {
        let got = s.acquire(now, &claims).await.expect("acquire");
        let reference = memory.acquire(now, &claims).await.expect("reference");
        assert_eq!(got, reference, "step {i}: like the in-memory limiter");
        match want {
            Some(w) => assert_eq!(got, w, "step {i}"),
            None => assert!(
                matches!(got, Admission::NotBefore(t) if t > now),
                "step {i}: {got:?}"
            ),
        }
    }

    // The history item is the relay's own and expires after its longest
    // period.
    let p = &s.config().key_prefix;
    let it = raw_item(&s, &format!("{p}RATE#TO#+16195550101"), &format!("{p}RATE"))
        .await
        .expect("history item");
    let ttl = &s.config().ttl_attribute;
    let expires: i64 = match it.get(ttl) {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(v)) => v.parse().expect("number"),
        other => panic!("{ttl}: {other:?}"),
    };
    assert_eq!(expires, (at(600).as_millis() + 600_000) / 1000 + 1);
}

/// Dispatches whose policies limit one key differently (each keeps the
/// policy it opened with) never make each other forget a counted text.
#[tokio::test]
async fn a_stricter_claim_never_drops_history_a_looser_one_counts() {
    let s = fresh().await;
    let key = RateKey::Line(n("+16195550000"));
    let t0 = Timestamp::from_millis(T0);
    let loose = vec![(key, vec![rate(3, 600)])];
    let strict = vec![(key, vec![rate(1, 1)])];
    assert_eq!(
        s.acquire(t0, &loose).await.expect("acquire"),
        Admission::Admitted
    );
    let t1 = t0.plus(Duration::from_secs(10));
    assert_eq!(
        s.acquire(t1, &loose).await.expect("acquire"),
        Admission::Admitted
    );
    // The strict claim admits (one a second) and counts its text...
    let t2 = t0.plus(Duration::from_secs(20));
    assert_eq!(
        s.acquire(t2, &strict).await.expect("acquire"),
        Admission::Admitted
    );
    // ...without forgetting the loose claim's two: three in ten minutes.
    let t3 = t0.plus(Duration::from_secs(30));
    assert_eq!(
        s.acquire(t3, &loose).await.expect("acquire"),
        Admission::NotBefore(t0.plus(Duration::from_secs(600)))
    );
}

#[tokio::test]
async fn a_rate_of_zero_is_a_clear_error() {
    let s = fresh().await;
    let e = s
        .acquire(
            Timestamp::from_millis(T0),
            &[(RateKey::Line(n("+16195550000")), vec![rate(0, 60)])],
        )
        .await
        .expect_err("zero texts is not a limit");
    assert!(e.to_string().contains("is not a limit"), "{e}");
}

/// Many processes admitting texts at the same instant: no limit is ever
/// exceeded, and everything admitted is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_processes_never_exceed_a_limit() {
    let s = fresh().await;
    let mut stores = vec![s.clone()];
    for _ in 0..3 {
        stores.push(twin(&s).await);
    }
    let line = RateKey::Line(n("+16195550000"));
    let dests: Vec<RateKey> = (0..3)
        .map(|i| RateKey::Destination(n(&format!("+1619555020{i}"))))
        .collect();
    let now = Timestamp::from_millis(T0);
    // Each destination at most 2 a minute, the line at most 4 a minute:
    // 24 attempts, 8 per destination, all at once.
    let attempts = (0..24).map(|i| {
        let store = stores[i % stores.len()].clone();
        let dest = dests[i % dests.len()];
        async move {
            let claims = vec![(dest, vec![rate(2, 60)]), (line, vec![rate(4, 60)])];
            (dest, store.acquire(now, &claims).await)
        }
    });
    let results = join_all(attempts).await;
    let mut admitted = Vec::new();
    for (dest, r) in results {
        match r.unwrap_or_else(|e| panic!("acquire failed: {e}")) {
            Admission::Admitted => admitted.push(dest),
            Admission::NotBefore(t) => {
                assert_eq!(t, now.plus(Duration::from_secs(60)), "{dest:?}");
            }
        }
    }
    assert_eq!(
        admitted.len(),
        4,
        "the line's limit is reached, not exceeded"
    );
    for d in &dests {
        let k = admitted.iter().filter(|x| *x == d).count();
        assert!(k <= 2, "{d:?} admitted {k} times in a minute");
    }
    // Everything admitted was counted: nothing more goes within the minute.
    let later = now.plus(Duration::from_secs(59));
    for d in &dests {
        let r = s
            .acquire(later, &[(*d, vec![rate(2, 60)]), (line, vec![rate(4, 60)])])
            .await
            .expect("acquire");
        assert!(matches!(r, Admission::NotBefore(_)), "{d:?}: {r:?}");
    }
}

/// Two relay processes (two Lambda instances) over one table, each with its
/// own store as its opt-out list: a dispatcher's STOP through one is
/// respected by the other, and a START through the other clears it for
/// both.
#[tokio::test]
async fn a_stop_through_one_relay_holds_in_another() {
    use std::sync::Arc;

    use qdn_relay_core::testing::RecordingProvider;
    use qdn_relay_core::{InboundText, ManualClock, Policy, Relay};

    let first = fresh().await;
    let second = twin(&first).await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let (line, primary, backup) = (n("+16195550000"), n("+16195550101"), n("+18583354807"));
    let relay = |store: &qdn_relay_dynamo::DynamoStore| {
        let store = Arc::new(store.clone());
        let policy = Policy::simple(primary, backup, Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("{e}"));
        Relay::builder(store.clone(), provider.clone(), clock.clone())
            .line(line, policy)
            .opt_outs(store)
            .build()
    };
    let (a, b) = (relay(&first), relay(&second));
    let text = |from: PhoneNumber, sid: &str, body: &str| InboundText {
        sid: crate::common::sid(sid),
        from,
        to: line,
        body: body.into(),
        media: vec![],
    };

    a.inbound(text(primary, "SMstop1", "STOP"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(second.is_opted_out(primary).await.expect("read"));

    b.inbound(text(n("+16195550177"), "SMcust1", "the bin is on fire"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        provider.accepted_to(primary).is_empty(),
        "the other relay must not text a number that opted out through the first"
    );

    b.inbound(text(primary, "SMstart1", "START"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.is_opted_out(primary).await.expect("read"));
}
