//! `qdn-relay-tick`: sweeps due timeouts once per scheduled event, fires
//! the timers the SQS queue delivers (feature `timers`), and takes AWS
//! SMS's two-way texts and delivery events when an SNS topic invokes it
//! (the stack deploys it a second time for that, as the SMS events
//! function).

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use qdn_relay_lambda::{SnsEvent, SnsSource, TickEvent, handle_sns, init, is_sns_event, tick};

fn bad_event(e: serde_json::Error) -> Diagnostic {
    Diagnostic {
        error_type: "BadEvent".into(),
        error_message: e.to_string(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init::init_logging();
    let (settings, relay, timers) = init::from_env_with_timers()
        .await
        .inspect_err(|e| tracing::error!("qdn-relay-tick cannot start: {e}"))?;
    let sns = SnsSource::from_settings(&settings);
    let (relay, timers, sns) = (&relay, &timers, &sns);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let LambdaEvent { payload, context } = event;
            if is_sns_event(&payload) {
                let event: SnsEvent = serde_json::from_value(payload).map_err(bad_event)?;
                let report = handle_sns(relay, sns.as_ref(), event).await?;
                return serde_json::to_value(report).map_err(bad_event);
            }
            #[cfg(feature = "timers")]
            if payload.get("Records").is_some() {
                let batch: qdn_relay_lambda::timers::SqsBatch =
                    serde_json::from_value(payload).map_err(bad_event)?;
                let out =
                    qdn_relay_lambda::timers::handle_timers(relay, timers.as_deref(), batch).await;
                return serde_json::to_value(out).map_err(bad_event);
            }
            #[cfg(not(feature = "timers"))]
            let _ = timers;
            let payload: TickEvent = serde_json::from_value(payload).map_err(bad_event)?;
            let report = tick(relay, LambdaEvent::new(payload, context)).await?;
            serde_json::to_value(report).map_err(bad_event)
        },
    ))
    .await
}
