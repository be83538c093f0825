//! `qdn-relay-http`: the relay's HTTP routes behind API Gateway.

use qdn_relay_lambda::init;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init::init_logging();
    let app = async {
        let (settings, relay) = init::from_env().await?;
        init::http_app(&settings, relay)
    }
    .await
    .inspect_err(|e| tracing::error!("qdn-relay-http cannot start: {e}"))?;
    lambda_runtime::run(app.handler()).await
}
