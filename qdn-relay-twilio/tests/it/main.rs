//! Integration tests of qdn-relay-twilio.
//!
//! - `signatures`: Twilio's own Python helper library's known answers
//!   (`tests/vectors/signatures.json`), and what must not validate.
//! - `webhooks`: signed webhook bodies, checked and read as the HTTP layer
//!   does.
//! - `client` (features `client`, `testing`): the REST client against
//!   wiremock.
//! - `conformance` (features `client`, `testing`): the transport
//!   conformance suite over reqwest.
//! - `prism` (features `client`, `testing`): the REST client against Stoplight Prism
//!   mocking Twilio's OpenAPI spec (started by `./scripts/test`).

mod signatures;
mod webhooks;

#[cfg(all(feature = "client", feature = "testing"))]
mod client;
#[cfg(all(feature = "client", feature = "testing"))]
mod conformance;
#[cfg(all(feature = "client", feature = "testing"))]
mod prism;
#[cfg(all(feature = "client", feature = "testing"))]
mod support;
