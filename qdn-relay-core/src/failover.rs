//! Multi-carrier failover: try the next provider when one says "nothing was
//! sent, try later".

use async_trait::async_trait;

use crate::event::OutboundMessage;
use crate::input::{SendError, SendErrorKind};
use crate::ports::{SendReceipt, SmsProvider};

/// A provider that tries each of its providers in order, moving to the next
/// only on [`SendErrorKind::Retryable`] (the provider guarantees nothing was
/// sent). Any other answer, success or not, is final: a `MaybeSent` is never
/// sent again through another carrier, which could deliver it twice.
///
/// Each provider's message ids are its own; status callbacks still reach the
/// relay through each provider's callback route.
pub struct Failover {
    providers: Vec<Box<dyn SmsProvider>>,
}

impl Failover {
    /// Tries `providers` in order. An empty list fails every send with
    /// [`SendErrorKind::Config`].
    pub fn new(providers: Vec<Box<dyn SmsProvider>>) -> Self {
        Self { providers }
    }

    /// The providers, in order.
    pub fn providers(&self) -> &[Box<dyn SmsProvider>] {
        &self.providers
    }
}

#[async_trait]
impl SmsProvider for Failover {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let mut last = SendError::new(SendErrorKind::Config, "failover has no providers");
        for p in &self.providers {
            match p.send(msg).await {
                Err(e) if e.kind == SendErrorKind::Retryable => {
                    tracing::warn!(provider = p.name(), error = %e, "provider failed, trying the next");
                    last = e;
                }
                other => return other,
            }
        }
        Err(last)
    }

    fn name(&self) -> &str {
        "failover"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockSmsProvider;
    use crate::types::{DispatchId, Timestamp};

    fn msg() -> OutboundMessage {
        OutboundMessage {
            dispatch: DispatchId::new(Timestamp::from_millis(0), 1),
            leg: 0,
            to: "+16195550101".parse().unwrap(),
            from: "+16195550000".parse().unwrap(),
            body: "hi".into(),
            validity_secs: None,
        }
    }

    fn provider(answer: Result<&'static str, SendErrorKind>, times: usize) -> Box<dyn SmsProvider> {
        let mut m = MockSmsProvider::new();
        m.expect_send()
            .times(times)
            .returning(move |_| match answer {
                Ok(sid) => Ok(SendReceipt {
                    sid: sid.parse().unwrap(),
                }),
                Err(kind) => Err(SendError::new(kind, "x")),
            });
        m.expect_name().return_const("mock".to_owned());
        Box::new(m)
    }

    #[tokio::test]
    async fn retryable_error_moves_to_the_next_provider() {
        let f = Failover::new(vec![
            provider(Err(SendErrorKind::Retryable), 1),
            provider(Ok("SM2"), 1),
        ]);
        assert_eq!(f.send(&msg()).await.unwrap().sid.as_str(), "SM2");
    }

    #[tokio::test]
    async fn maybe_sent_is_final_and_never_resent_elsewhere() {
        let f = Failover::new(vec![
            provider(Err(SendErrorKind::MaybeSent), 1),
            provider(Ok("SM2"), 0),
        ]);
        assert_eq!(
            f.send(&msg()).await.unwrap_err().kind,
            SendErrorKind::MaybeSent
        );
    }

    #[tokio::test]
    async fn permanent_errors_are_final() {
        let f = Failover::new(vec![
            provider(Err(SendErrorKind::Unreachable), 1),
            provider(Ok("SM2"), 0),
        ]);
        assert_eq!(
            f.send(&msg()).await.unwrap_err().kind,
            SendErrorKind::Unreachable
        );
    }

    #[tokio::test]
    async fn all_retryable_returns_the_last_error_and_empty_is_config() {
        let f = Failover::new(vec![
            provider(Err(SendErrorKind::Retryable), 1),
            provider(Err(SendErrorKind::Retryable), 1),
        ]);
        assert_eq!(
            f.send(&msg()).await.unwrap_err().kind,
            SendErrorKind::Retryable
        );
        let empty = Failover::new(vec![]);
        assert_eq!(
            empty.send(&msg()).await.unwrap_err().kind,
            SendErrorKind::Config
        );
    }
}
