//! The transport conformance suite over reqwest, the server's transport.

use std::sync::Arc;

use qdn_relay_twilio::{ReqwestTransport, Transport};

qdn_relay_twilio::transport_conformance_tests!(|connect_timeout| {
    Arc::new(ReqwestTransport::new(connect_timeout).expect("a reqwest client"))
        as Arc<dyn Transport>
});
