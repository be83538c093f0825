//! `qdn-relay-tick`: sweeps due timeouts once per scheduled event.

use lambda_runtime::{LambdaEvent, service_fn};
use qdn_relay_lambda::{TickEvent, init, tick};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init::init_logging();
    let (_, relay) = init::from_env()
        .await
        .inspect_err(|e| tracing::error!("qdn-relay-tick cannot start: {e}"))?;
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<TickEvent>| async move { tick(relay, event).await },
    ))
    .await
}
