//! [`AppState::answer_before_sends`] (the server's mode): a text's webhook
//! is answered once its dispatch and pending forward are durable; the
//! forward is sent after the answer, in a tracked task.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use qdn_relay_axum::{AppState, EventHub, router};
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Clock, DeliveryStatus, ManualClock, MemoryStore, OutboundMessage, Policy, Relay, SendError,
    SendReceipt, SmsProvider, Store, Timestamp,
};
use qdn_relay_twilio::{Secret, SignatureValidator};
use tower::ServiceExt;

use super::{BACKUP, CUSTOMER, LINE, PRIMARY, TOKEN, config, n, pairs, sid, signed, text};

/// A provider whose sends wait until the test opens the gate.
struct Gated {
    inner: RecordingProvider,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl SmsProvider for Gated {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        self.inner.send(msg).await
    }
    fn name(&self) -> &str {
        "gated"
    }
}

#[tokio::test]
async fn the_answer_waits_for_the_save_not_the_send_and_the_forward_follows() {
    let (gate, open) = tokio::sync::watch::channel(false);
    let provider = Arc::new(Gated {
        inner: RecordingProvider::new(),
        open,
    });
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
    let relay = Arc::new(
        Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
            store.clone() as Arc<dyn Store>,
            provider.clone() as Arc<dyn SmsProvider>,
            clock as Arc<dyn Clock>,
        )
        .line(
            n(LINE),
            Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy"),
        )
        .seed(1)
        .build(),
    );
    let state = AppState::new(
        relay,
        SignatureValidator::new(Secret::new(TOKEN)),
        EventHub::default(),
        config(),
    )
    .expect("state")
    .answer_before_sends();
    let background = state.background().expect("tracked");
    let app = router(state);

    let t = text(&sid(1), CUSTOMER, "Gate is locked");
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        app.clone().oneshot(signed("/sms/inbound", &pairs(&t))),
    )
    .await
    .expect("answered while the provider holds the send")
    .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("<Response"));

    // Durable before the answer: the dispatch with its forward pending.
    let d = store.all().pop().expect("a dispatch");
    assert_eq!(d.legs().len(), 1);
    assert_eq!(d.legs()[0].status, DeliveryStatus::Pending);
    assert!(provider.inner.sent().is_empty(), "not sent yet");
    assert_eq!(background.len(), 1, "the send is under way");

    // The same webhook again (Twilio's retry) changes nothing.
    let res = app
        .clone()
        .oneshot(signed("/sms/inbound", &pairs(&t)))
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(background.len(), 1, "a duplicate leaves nothing to send");

    // The provider answers: the forward goes out once and is recorded.
    gate.send(true).expect("gate");
    background.close();
    tokio::time::timeout(Duration::from_secs(5), background.wait())
        .await
        .expect("the send finishes");
    assert_eq!(provider.inner.accepted_to(n(PRIMARY)).len(), 1);
    let d = store.all().pop().expect("a dispatch");
    assert!(d.legs()[0].sid.is_some(), "{:?}", d.legs()[0]);
}
