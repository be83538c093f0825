//! The transport conformance suite over the functions' HTTP client
//! ([`HttpsClient`]) rather than reqwest: each transport failure gets the
//! class the client relies on (only failures where nothing was sent are
//! retried). qdn-relay-twilio's own suite covers the client's logic.

use std::sync::Arc;

use qdn_relay_lambda::HttpsClient;
use qdn_relay_transport::Transport;

qdn_relay_twilio::transport_conformance_tests!(|connect_timeout| {
    Arc::new(HttpsClient::new(connect_timeout)) as Arc<dyn Transport>
});
