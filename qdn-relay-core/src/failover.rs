//! Multi-carrier failover: the carrier layer's one decision, made by error
//! class. A per-recipient error is final; a carrier-wide one sends the same
//! text through the next carrier at once and marks the carrier degraded
//! for a cooling-off period.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::carrier::{CarrierNumber, CarrierSkip, Via};
use crate::event::OutboundMessage;
use crate::input::{SendError, SendErrorKind};
use crate::ports::{Clock, SendReceipt, SmsProvider, SystemClock};
use crate::types::Timestamp;

/// How long a carrier stays degraded after a carrier-wide error, by default.
pub const DEFAULT_COOLING_OFF: Duration = Duration::from_secs(5 * 60);

/// A `Retry-After` longer than this makes throttling carrier-wide
/// ("throttling past a bound"): the carrier is degraded, not just passed
/// over for this text.
pub const THROTTLE_BOUND: Duration = Duration::from_secs(30);

/// A provider made of carriers (each a provider whose
/// [`SmsProvider::name`] is the carrier's name), tried in order.
///
/// # Which carrier sends
///
/// A text's [`OutboundMessage::routes`] name the carriers that may send it
/// and the number each sends from (the policy's
/// [`crate::Policy::carriers`]); without routes every carrier may, from
/// the business line; never those it must [avoid](OutboundMessage::avoid).
/// Carriers in service are tried first, in that order;
/// degraded ones last, as a last resort.
///
/// # What each answer does
///
/// - Accepted: the receipt names the carrier and number ([`Via`]) and the
///   carriers passed over ([`CarrierSkip`]). A degraded carrier that
///   accepts a text (the probe, once its cooling-off period is over, or a
///   last resort) is back in service.
/// - Carrier-wide ([`SendErrorKind::is_carrier_wide`], or `Retryable` with
///   a `Retry-After` past [`THROTTLE_BOUND`]): the carrier is degraded for
///   the cooling-off period, and the same text goes to the next carrier at
///   once.
/// - `Retryable` (nothing was sent): the next carrier is tried; the
///   carrier stays in service.
/// - `MaybeSent` (a 5xx or a timeout after the request went out: the
///   carrier failed, and may or may not have sent it): the carrier is
///   degraded, as for an outage, and the same text goes to the next
///   carrier at once. Reaching the dispatcher beats the risk of a second
///   copy through another carrier; it is never sent again through the
///   carrier that may have sent it, and when no other carrier takes it the
///   answer stays `MaybeSent`, so the core sends it nowhere again.
/// - Anything else (per-recipient errors): final.
///
/// When every carrier failed, the last error is returned (with the skipped
/// carriers), as [`SendErrorKind::MaybeSent`] if any carrier may have sent
/// it, else as [`SendErrorKind::CarrierDown`] if it was `Retryable` and
/// another carrier is down; no carrier at all fails every send with
/// [`SendErrorKind::Config`].
///
/// Carrier health is this value's, shared by every dispatch it sends for
/// (one per server process, or per Lambda instance).
pub struct Failover {
    providers: Vec<Box<dyn SmsProvider>>,
    clock: Arc<dyn Clock>,
    cooling_off: Duration,
    /// Per provider: degraded until.
    health: Mutex<Vec<Option<Timestamp>>>,
}

impl Failover {
    /// Tries `providers` in order, on the system clock, with
    /// [`DEFAULT_COOLING_OFF`].
    pub fn new(providers: Vec<Box<dyn SmsProvider>>) -> Self {
        let health = Mutex::new(vec![None; providers.len()]);
        Self {
            providers,
            clock: Arc::new(SystemClock),
            cooling_off: DEFAULT_COOLING_OFF,
            health,
        }
    }

    /// The same failover reading `clock` for degraded periods.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same failover degrading a carrier for `period` after a
    /// carrier-wide error.
    pub fn with_cooling_off(mut self, period: Duration) -> Self {
        self.cooling_off = period;
        self
    }

    /// The providers, in order.
    pub fn providers(&self) -> &[Box<dyn SmsProvider>] {
        &self.providers
    }

    /// The carriers degraded at `now`, each with the end of its
    /// cooling-off period.
    pub fn degraded(&self, now: Timestamp) -> Vec<(String, Timestamp)> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        self.providers
            .iter()
            .zip(health.iter())
            .filter_map(|(p, until)| until.filter(|&u| u > now).map(|u| (p.name().to_owned(), u)))
            .collect()
    }

    /// Which providers may send `msg` and from which number, in the order
    /// to try them at `now`: in service first, then degraded.
    fn plan(&self, msg: &OutboundMessage, now: Timestamp) -> Vec<(usize, CarrierNumber)> {
        let routes: Vec<(usize, CarrierNumber)> = if msg.routes.is_empty() {
            self.providers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let route = CarrierNumber {
                        carrier: p.name().to_owned(),
                        number: msg.from,
                    };
                    (i, route)
                })
                .collect()
        } else {
            msg.routes
                .iter()
                .filter_map(|r| {
                    let i = self.providers.iter().position(|p| p.name() == r.carrier)?;
                    Some((i, r.clone()))
                })
                .collect()
        };
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let degraded = |i: usize| health[i].is_some_and(|u| u > now);
        let (mut plan, last): (Vec<_>, Vec<_>) = routes
            .into_iter()
            .filter(|(_, r)| !msg.avoid.contains(&r.carrier))
            .partition(|(i, _)| !degraded(*i));
        plan.extend(last);
        plan
    }

    fn set_health(&self, i: usize, until: Option<Timestamp>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health[i] = until;
    }
}

/// Whether an error is about the carrier rather than the text: see
/// [`Failover`].
fn degrades(e: &SendError) -> bool {
    e.kind.is_carrier_wide()
        || e.kind == SendErrorKind::MaybeSent
        || (e.kind == SendErrorKind::Retryable
            && e.retry_after_ms
                .is_some_and(|ms| ms > THROTTLE_BOUND.as_millis() as u64))
}

#[async_trait]
impl SmsProvider for Failover {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let now = self.clock.now();
        let plan = self.plan(msg, now);
        let mut skipped = Vec::new();
        let mut last = SendError::new(SendErrorKind::Config, "no carrier may send this text");
        let mut maybe_sent = None;
        for (i, route) in plan {
            let p = &self.providers[i];
            let mut one = msg.clone();
            one.from = route.number;
            one.routes = Vec::new();
            one.avoid = Vec::new();
            match p.send(&one).await {
                Ok(mut receipt) => {
                    let was = {
                        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
                        health[i]
                    };
                    if was.is_some() {
                        tracing::info!(carrier = p.name(), "carrier back in service");
                        self.set_health(i, None);
                    }
                    receipt.via = Some(Via {
                        carrier: route.carrier,
                        from: route.number,
                    });
                    skipped.append(&mut receipt.skipped);
                    receipt.skipped = skipped;
                    return Ok(receipt);
                }
                Err(e) if degrades(&e) || e.kind == SendErrorKind::Retryable => {
                    let degraded_until = degrades(&e).then(|| now.plus(self.cooling_off));
                    if let Some(until) = degraded_until {
                        tracing::warn!(carrier = p.name(), error = %e, until = %until, "carrier degraded; trying the next");
                        self.set_health(i, Some(until));
                    } else {
                        tracing::warn!(carrier = p.name(), error = %e, "carrier failed; trying the next");
                    }
                    skipped.push(CarrierSkip {
                        carrier: route.carrier,
                        kind: e.kind,
                        code: e.code,
                        degraded_until,
                    });
                    if e.kind == SendErrorKind::MaybeSent {
                        maybe_sent = Some(e.clone());
                    }
                    last = e;
                }
                Err(mut e) => {
                    skipped.append(&mut e.skipped);
                    e.skipped = skipped;
                    return Err(e);
                }
            }
        }
        // Every carrier failed. One that may have sent it makes the answer
        // "maybe sent": never sent again.
        if let Some(first) = maybe_sent
            && last.kind != SendErrorKind::MaybeSent
        {
            last.kind = SendErrorKind::MaybeSent;
            last.message = format!("{}; before that, {}", last.message, first.message);
        }
        // If any is down, so is the text's way out: the dispatch holds
        // instead of spending its tries.
        if last.kind == SendErrorKind::Retryable
            && skipped.iter().any(|s| s.degraded_until.is_some())
        {
            last.kind = SendErrorKind::CarrierDown;
        }
        // The last skip is the error itself.
        skipped.pop();
        last.skipped = skipped;
        Err(last)
    }

    fn name(&self) -> &str {
        "failover"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::ports::ManualClock;
    use crate::types::{DispatchId, PhoneNumber};

    const LINE: &str = "+16195550000";
    const AWS: &str = "+16195550900";

    fn n(s: &str) -> PhoneNumber {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn msg(routes: &[(&str, &str)]) -> OutboundMessage {
        OutboundMessage {
            dispatch: DispatchId::new(Timestamp::from_millis(0), 1),
            leg: 0,
            to: n("+16195550101"),
            from: n(LINE),
            body: "hi".into(),
            validity_secs: None,
            routes: routes
                .iter()
                .map(|(c, num)| CarrierNumber {
                    carrier: (*c).to_owned(),
                    number: n(num),
                })
                .collect(),
            avoid: Vec::new(),
        }
    }

    /// A carrier answering from a script (then accepting), recording what
    /// it was asked to send.
    struct Script {
        name: &'static str,
        answers: Mutex<VecDeque<Result<(), SendError>>>,
        sent: Arc<Mutex<Vec<OutboundMessage>>>,
    }

    fn carrier(
        name: &'static str,
        answers: Vec<Result<(), SendError>>,
    ) -> (Box<dyn SmsProvider>, Arc<Mutex<Vec<OutboundMessage>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = Script {
            name,
            answers: Mutex::new(answers.into()),
            sent: Arc::clone(&sent),
        };
        (Box::new(s), sent)
    }

    #[async_trait]
    impl SmsProvider for Script {
        async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            sent.push(msg.clone());
            let answer = self
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
                .unwrap_or(Ok(()));
            answer.map(|()| {
                let sid = format!("{}{}", self.name.to_uppercase(), sent.len());
                SendReceipt::new(sid.parse().unwrap_or_else(|e| panic!("{e}")))
            })
        }
        fn name(&self) -> &str {
            self.name
        }
    }

    fn err(kind: SendErrorKind) -> Result<(), SendError> {
        Err(SendError::new(kind, "x"))
    }

    fn count(sent: &Arc<Mutex<Vec<OutboundMessage>>>) -> usize {
        sent.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);

    fn failover(carriers: Vec<Box<dyn SmsProvider>>) -> (Failover, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let f = Failover::new(carriers).with_clock(clock.clone());
        (f, clock)
    }

    #[tokio::test]
    async fn retryable_error_moves_to_the_next_carrier_without_degrading() {
        let (a, _) = carrier("a", vec![err(SendErrorKind::Retryable)]);
        let (b, _) = carrier("b", vec![]);
        let (f, _) = failover(vec![a, b]);
        let r = f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.sid.as_str(), "B1");
        assert_eq!(r.via.as_ref().map(|v| v.carrier.as_str()), Some("b"));
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].degraded_until, None);
        assert!(f.degraded(T0).is_empty());
    }

    #[tokio::test]
    async fn maybe_sent_goes_to_the_next_carrier_once_and_degrades_the_first() {
        let (a, a_sent) = carrier("a", vec![err(SendErrorKind::MaybeSent)]);
        let (b, b_sent) = carrier("b", vec![]);
        let (f, _) = failover(vec![a, b]);
        let r = f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.via.as_ref().map(|v| v.carrier.as_str()), Some("b"));
        assert_eq!((count(&a_sent), count(&b_sent)), (1, 1));
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].kind, SendErrorKind::MaybeSent);
        assert!(r.skipped[0].degraded_until.is_some());
        assert_eq!(f.degraded(T0).len(), 1, "the 5xx carrier cools off");
    }

    #[tokio::test]
    async fn maybe_sent_stays_maybe_sent_when_no_other_carrier_takes_it() {
        // The only carrier: final, as with one carrier.
        let (a, _) = carrier("a", vec![err(SendErrorKind::MaybeSent)]);
        let (f, _) = failover(vec![a]);
        let e = f.send(&msg(&[])).await.expect_err("maybe sent");
        assert_eq!(e.kind, SendErrorKind::MaybeSent);
        // The next one down as well: still "maybe sent", so the core never
        // sends it again (through the first carrier, which may have).
        let (a, _) = carrier("a", vec![err(SendErrorKind::MaybeSent)]);
        let (b, _) = carrier("b", vec![err(SendErrorKind::Retryable)]);
        let (f, _) = failover(vec![a, b]);
        let e = f.send(&msg(&[])).await.expect_err("maybe sent");
        assert_eq!(e.kind, SendErrorKind::MaybeSent, "{e}");
        assert_eq!(e.skipped.len(), 1, "a, skipped");
    }

    #[tokio::test]
    async fn per_recipient_errors_are_final() {
        for kind in [
            SendErrorKind::Unreachable,
            SendErrorKind::OptedOut,
            SendErrorKind::Filtered,
            SendErrorKind::Rejected,
        ] {
            let (a, _) = carrier("a", vec![err(kind)]);
            let (b, b_sent) = carrier("b", vec![]);
            let (f, _) = failover(vec![a, b]);
            assert_eq!(f.send(&msg(&[])).await.expect_err("final").kind, kind);
            assert_eq!(count(&b_sent), 0, "{kind:?}");
            assert!(f.degraded(T0).is_empty(), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_carrier_wide_error_sends_through_the_next_carrier_from_its_number_and_degrades() {
        for kind in [SendErrorKind::CarrierDown, SendErrorKind::Config] {
            let (a, a_sent) = carrier("twilio", vec![err(kind)]);
            let (b, b_sent) = carrier("aws-sms", vec![]);
            let (f, clock) = failover(vec![a, b]);
            let routes = [("twilio", LINE), ("aws-sms", AWS)];
            let r = f
                .send(&msg(&routes))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let via = r.via.unwrap_or_else(|| panic!("via"));
            assert_eq!((via.carrier.as_str(), via.from), ("aws-sms", n(AWS)));
            let b_msgs = b_sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
            assert_eq!(b_msgs[0].from, n(AWS), "sent from the line's AWS number");
            let until = T0.plus(DEFAULT_COOLING_OFF);
            assert_eq!(r.skipped[0].degraded_until, Some(until));
            assert_eq!(f.degraded(T0), vec![("twilio".to_owned(), until)]);

            // While it cools off, new texts go to the next carrier first.
            clock.advance(Duration::from_secs(60));
            let r = f
                .send(&msg(&routes))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.via.map(|v| v.carrier), Some("aws-sms".to_owned()));
            assert!(r.skipped.is_empty());
            assert_eq!(count(&a_sent), 1, "{kind:?}: not tried while degraded");

            // After the period, the next text probes it; it is back.
            clock.advance(DEFAULT_COOLING_OFF);
            let r = f
                .send(&msg(&routes))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.via.map(|v| v.carrier), Some("twilio".to_owned()));
            assert_eq!(count(&a_sent), 2);
            assert!(f.degraded(clock.now()).is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_probe_degrades_again_and_the_text_still_goes_out() {
        let down = || err(SendErrorKind::CarrierDown);
        let (a, a_sent) = carrier("a", vec![down(), down()]);
        let (b, _) = carrier("b", vec![]);
        let (f, clock) = failover(vec![a, b]);
        f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        clock.advance(DEFAULT_COOLING_OFF);
        let r = f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&a_sent), 2, "probed");
        assert_eq!(r.via.map(|v| v.carrier), Some("b".to_owned()));
        let until = clock.now().plus(DEFAULT_COOLING_OFF);
        assert_eq!(f.degraded(clock.now()), vec![("a".to_owned(), until)]);
    }

    #[tokio::test]
    async fn throttling_past_the_bound_degrades_and_short_throttling_does_not() {
        let throttled = |ms| {
            let mut e = SendError::new(SendErrorKind::Retryable, "429");
            e.retry_after_ms = Some(ms);
            Err(e)
        };
        let (a, _) = carrier("a", vec![throttled(1_000), throttled(120_000)]);
        let (b, _) = carrier("b", vec![]);
        let (f, _) = failover(vec![a, b]);
        f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(f.degraded(T0).is_empty());
        f.send(&msg(&[])).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.degraded(T0).len(), 1);
    }

    #[tokio::test]
    async fn every_carrier_down_is_carrier_down_with_the_skips() {
        let (a, _) = carrier("a", vec![err(SendErrorKind::Config)]);
        let (b, _) = carrier("b", vec![err(SendErrorKind::Retryable)]);
        let (f, _) = failover(vec![a, b]);
        let e = f.send(&msg(&[])).await.expect_err("all down");
        assert_eq!(e.kind, SendErrorKind::CarrierDown);
        assert_eq!(e.skipped.len(), 1);
        assert_eq!(e.skipped[0].carrier, "a");

        let (a, _) = carrier("a", vec![err(SendErrorKind::Retryable)]);
        let (b, _) = carrier("b", vec![err(SendErrorKind::Retryable)]);
        let (f, _) = failover(vec![a, b]);
        let e = f.send(&msg(&[])).await.expect_err("both transient");
        assert_eq!(e.kind, SendErrorKind::Retryable);
    }

    #[tokio::test]
    async fn only_the_routed_carriers_send_and_none_is_config() {
        let (a, a_sent) = carrier("twilio", vec![err(SendErrorKind::CarrierDown)]);
        let (b, b_sent) = carrier("aws-sms", vec![]);
        let (f, _) = failover(vec![a, b]);
        // A reply to the customer: the business line's carrier only.
        let e = f
            .send(&msg(&[("twilio", LINE)]))
            .await
            .expect_err("only twilio may send");
        assert_eq!(e.kind, SendErrorKind::CarrierDown);
        assert_eq!((count(&a_sent), count(&b_sent)), (1, 0));
        let empty = Failover::new(vec![]);
        assert_eq!(
            empty.send(&msg(&[])).await.expect_err("none").kind,
            SendErrorKind::Config
        );
    }
}
