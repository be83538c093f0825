//! Integration tests of qdn-relay-aws-sms (one binary):
//!
//! - `sns`: SNS messages in the shapes of AWS's documentation, signed with a
//!   certificate the tests make (SignatureVersion 1 and 2), verified;
//!   forgeries, foreign certificate URLs and topics refused; the
//!   certificate fetched over a real socket and cached.
//! - `events`: AWS's two-way text and delivery event payloads read into
//!   the core's inputs.
//! - `peer`: the client against the fake `pinpoint-sms-voice-v2` endpoint
//!   (`tests/peer/`, started by `./scripts/test`, address in
//!   `QDN_TEST_SMS_VOICE_URL`), which validates every request against the
//!   service model in botocore and fails on demand in each class.

mod events;
mod peer;
mod sns;
mod support;
