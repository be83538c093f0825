//! Integration tests of qdn-relay-twilio.
//!
//! - `signatures`: Twilio's own Python helper library's known answers
//!   (`tests/vectors/signatures.json`), and what must not validate.
//! - `webhooks`: signed webhook bodies, checked and read as the HTTP layer
//!   does.
//! - `client` (feature `client`): the REST client against wiremock.
//! - `prism` (feature `client`): the REST client against Stoplight Prism
//!   mocking Twilio's OpenAPI spec (started by `./scripts/test`).

mod signatures;
mod webhooks;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod prism;
#[cfg(feature = "client")]
mod support;
