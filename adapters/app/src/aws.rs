//! What AWS End User Messaging SMS publishes through SNS, taken by the
//! relay: the one function the axum route and the Lambda event source
//! share.

use qdn_relay_aws_sms::SmsNotification;
use qdn_relay_core::{Outcome, RelayError};

use crate::DynRelay;

/// Takes a notification's content: a two-way text is an inbound text (to
/// the line's AWS number, hence the line's: a dispatcher's reply or a
/// customer's text); a delivery event is a delivery report, placed by the
/// dispatch and leg of its `Context` when it carries them (as a Twilio
/// status callback by its URL), else by its message id. A duplicate or
/// out-of-order event changes nothing twice (the core keeps inbound ids
/// and only moves a leg's status forward). `None`: a kind of notification
/// the relay does not take.
pub async fn take_sms_notification(
    relay: &DynRelay,
    n: SmsNotification,
) -> Result<Option<Outcome>, RelayError> {
    let outcome = match n {
        SmsNotification::Inbound(text) => relay.inbound(text.into_inbound_text()).await?,
        SmsNotification::Delivery(event) => {
            let report = event.report();
            match event.placement {
                Some((dispatch, leg)) => relay.leg_delivery(report, dispatch, leg).await?,
                None => relay.delivery(report).await?,
            }
        }
        other => {
            tracing::debug!(?other, "an SMS notification the relay does not take");
            return Ok(None);
        }
    };
    Ok(Some(outcome))
}
