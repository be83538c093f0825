//! AWS JSON-protocol calls over a [`Transport`](crate::Transport)
//! (feature `aws`), without the SDK's clients: what SSM, Secrets Manager
//! and End User Messaging SMS calls share.
//!
//! - Where: the region ([`region_from_lookup`]: `AWS_REGION`, else
//!   `AWS_DEFAULT_REGION`) and a service's endpoint
//!   ([`endpoint_from_lookup`]: `AWS_ENDPOINT_URL_<SERVICE>`, else
//!   `AWS_ENDPOINT_URL`, else the regional endpoint in the region's
//!   partition, [`dns_suffix`]).
//! - Who: the credentials the environment holds
//!   ([`credentials_from_lookup`]: `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, what Lambda sets for a
//!   function's role).
//! - How: one POST of a JSON body, the operation in `X-Amz-Target`, signed
//!   with SigV4 ([`signed_json_request`]).
//! - What came back: an error answer's code, message and fields
//!   ([`ErrorAnswer`]), read the way the SDKs read them.

use std::time::SystemTime;

use bytes::Bytes;

use crate::Request;

pub use aws_credential_types::Credentials;
pub use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// The DNS suffixes of AWS partitions (commercial, China, the ISO
/// partitions, the EU sovereign cloud): a service's host is
/// `<service>.<region>.<suffix>`.
pub const PARTITION_DNS_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
    "amazonaws.eu",
];

/// The DNS suffix of a region's partition (one of
/// [`PARTITION_DNS_SUFFIXES`]).
pub fn dns_suffix(region: &str) -> &'static str {
    match region {
        r if r.starts_with("cn-") => "amazonaws.com.cn",
        r if r.starts_with("us-isob-") => "sc2s.sgov.gov",
        r if r.starts_with("us-isof-") => "csp.hci.ic.gov",
        r if r.starts_with("us-iso-") => "c2s.ic.gov",
        r if r.starts_with("eu-isoe-") => "cloud.adc-e.uk",
        r if r.starts_with("eusc-") => "amazonaws.eu",
        _ => "amazonaws.com",
    }
}

/// A variable's value, trimmed; empty counts as unset.
fn get(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The signing region: `AWS_REGION`, else `AWS_DEFAULT_REGION`. The error
/// names the variable.
pub fn region_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    get(&lookup, "AWS_REGION")
        .or_else(|| get(&lookup, "AWS_DEFAULT_REGION"))
        .ok_or_else(|| "AWS_REGION is not set".to_owned())
}

/// A service's endpoint URL, without a trailing slash:
/// `AWS_ENDPOINT_URL_<service_var>` (`SSM`, `SECRETS_MANAGER`,
/// `PINPOINT_SMS_VOICE_V2`: the SDKs' names), else `AWS_ENDPOINT_URL`,
/// else `https://<endpoint_prefix>.<region>.<partition's suffix>`.
pub fn endpoint_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
    service_var: &str,
    endpoint_prefix: &str,
    region: &str,
) -> String {
    get(&lookup, &format!("AWS_ENDPOINT_URL_{service_var}"))
        .or_else(|| get(&lookup, "AWS_ENDPOINT_URL"))
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("https://{endpoint_prefix}.{region}.{}", dns_suffix(region)))
}

/// The credentials in the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` when set). The error
/// names the variables; it never holds a value.
pub fn credentials_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, String> {
    match (
        get(&lookup, "AWS_ACCESS_KEY_ID"),
        get(&lookup, "AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id,
            secret,
            get(&lookup, "AWS_SESSION_TOKEN"),
            None,
            "environment",
        )),
        _ => Err(
            "no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                .to_owned(),
        ),
    }
}

/// The AWS JSON protocol's version: it names the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonVersion {
    /// `application/x-amz-json-1.0` (End User Messaging SMS, DynamoDB).
    V1_0,
    /// `application/x-amz-json-1.1` (SSM, Secrets Manager).
    V1_1,
}

impl JsonVersion {
    /// The request's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            JsonVersion::V1_0 => "application/x-amz-json-1.0",
            JsonVersion::V1_1 => "application/x-amz-json-1.1",
        }
    }
}

/// One JSON call: where it goes and what it is.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JsonCall<'a> {
    /// The SigV4 signing name (`ssm`, `secretsmanager`, `sms-voice`).
    pub service: &'a str,
    /// The signing region.
    pub region: &'a str,
    /// The endpoint URL (scheme and authority, no trailing slash).
    pub endpoint: &'a str,
    /// The operation, as `X-Amz-Target` names it
    /// (`PinpointSMSVoiceV2.SendTextMessage`).
    pub target: &'a str,
    /// The protocol version.
    pub version: JsonVersion,
    /// The `User-Agent`.
    pub user_agent: &'a str,
}

impl<'a> JsonCall<'a> {
    /// A call of `target` on `service` in `region` at `endpoint`.
    pub fn new(
        service: &'a str,
        region: &'a str,
        endpoint: &'a str,
        target: &'a str,
        version: JsonVersion,
        user_agent: &'a str,
    ) -> Self {
        Self {
            service,
            region,
            endpoint,
            target,
            version,
            user_agent,
        }
    }
}

/// A request that could not be built or signed (an invalid endpoint URL,
/// header or signing parameter). The message names the part at fault,
/// never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct SignError {
    /// What was wrong.
    pub message: String,
}

impl SignError {
    fn new(what: &str, e: &dyn std::fmt::Display) -> Self {
        Self {
            message: format!("{what}: {e}"),
        }
    }
}

/// The POST of `body` to `<endpoint>/` for `call`, signed with SigV4 at
/// `time` with `credentials`: `Host`, `Content-Type`, `X-Amz-Target`,
/// `User-Agent`, then `X-Amz-Date`, `X-Amz-Security-Token` (with a session
/// token) and `Authorization` added by the signer. The `Authorization` and
/// token headers are marked sensitive.
pub fn signed_json_request(
    credentials: &Credentials,
    call: &JsonCall<'_>,
    body: &Bytes,
    time: SystemTime,
) -> Result<Request, SignError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let url = format!("{}/", call.endpoint);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| SignError::new("invalid endpoint URL", &e))?;
    let host = uri
        .authority()
        .ok_or_else(|| SignError {
            message: format!("invalid endpoint URL {url}: no host"),
        })?
        .to_string();
    let mut request = http::Request::post(uri)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, call.version.content_type())
        .header("x-amz-target", call.target)
        .header(http::header::USER_AGENT, call.user_agent)
        .body(body.clone())
        .map_err(|e| SignError::new("invalid request", &e))?;
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(call.region)
        .name(call.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError::new("signing", &e))?
        .into();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SignError::new("signing", &e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError::new("signing", &e))?
        .into_parts();
    instructions.apply_to_request_http1x(&mut request);
    for name in [http::header::AUTHORIZATION.as_str(), "x-amz-security-token"] {
        if let Some(v) = request.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    Ok(request)
}

/// An AWS JSON error answer, read as the SDKs read it: the code from the
/// body's `__type` (or `code`), else the `X-Amzn-ErrorType` header, the
/// namespace (`com.amazonaws…#`) and any `:…` suffix cut; the message from
/// `message` or `Message`; the whole body for the other fields (`Reason`,
/// `Fields`, `ResourceType`, …).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ErrorAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The error code (`ThrottlingException`), if the answer named one.
    pub code: Option<String>,
    /// The message, possibly empty.
    pub message: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

impl ErrorAnswer {
    /// Reads an error answer.
    pub fn parse(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let clean = |t: &str| {
            let t = t.split(':').next().unwrap_or(t);
            t.rsplit('#').next().unwrap_or(t).trim().to_owned()
        };
        let code = body
            .get("__type")
            .or_else(|| body.get("code"))
            .and_then(serde_json::Value::as_str)
            .or_else(|| {
                headers
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok())
            })
            .map(clean)
            .filter(|c| !c.is_empty());
        let message = body
            .get("message")
            .or_else(|| body.get("Message"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            status,
            code,
            message,
            body,
        }
    }

    /// A string field of the body (`Reason`, `ResourceType`, …).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(serde_json::Value::as_str)
    }

    /// `<code> (HTTP <status>): <message>`, the parts that are there.
    pub fn summary(&self) -> String {
        let mut s = match &self.code {
            Some(c) => format!("{c} (HTTP {})", self.status),
            None => format!("HTTP {}", self.status),
        };
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn endpoints_are_regional_or_overridden() {
        let region = region_from_lookup(lookup(&[("AWS_REGION", "eu-west-3")])).expect("region");
        assert_eq!(
            endpoint_from_lookup(lookup(&[]), "PINPOINT_SMS_VOICE_V2", "sms-voice", &region),
            "https://sms-voice.eu-west-3.amazonaws.com"
        );
        let region =
            region_from_lookup(lookup(&[("AWS_DEFAULT_REGION", " cn-north-1 ")])).expect("region");
        assert_eq!(region, "cn-north-1");
        assert_eq!(
            endpoint_from_lookup(lookup(&[]), "SSM", "ssm", &region),
            "https://ssm.cn-north-1.amazonaws.com.cn"
        );
        let vars = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/"),
            (
                "AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2",
                "http://127.0.0.1:6000",
            ),
        ];
        assert_eq!(
            endpoint_from_lookup(lookup(&vars), "SSM", "ssm", "us-east-1"),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            endpoint_from_lookup(
                lookup(&vars),
                "PINPOINT_SMS_VOICE_V2",
                "sms-voice",
                "us-east-1"
            ),
            "http://127.0.0.1:6000"
        );
        let err = region_from_lookup(lookup(&[("AWS_REGION", " ")])).expect_err("no region");
        assert!(err.starts_with("AWS_REGION"), "{err}");
        for r in ["us-east-1", "cn-north-1", "us-iso-east-1", "us-isob-east-1"] {
            assert!(PARTITION_DNS_SUFFIXES.contains(&dns_suffix(r)), "{r}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_and_never_show() {
        let c = credentials_from_lookup(lookup(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            ("AWS_SESSION_TOKEN", "session-token"),
        ]))
        .expect("credentials");
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(c.session_token(), Some("session-token"));
        assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
        let err = credentials_from_lookup(lookup(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")]))
            .expect_err("no secret");
        assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn requests_are_signed_for_the_service() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let call = JsonCall::new(
            "sms-voice",
            "us-east-1",
            "https://sms-voice.us-east-1.amazonaws.com",
            "PinpointSMSVoiceV2.SendTextMessage",
            JsonVersion::V1_0,
            "test/1",
        );
        let r = signed_json_request(
            &creds,
            &call,
            &Bytes::from_static(br#"{"DestinationPhoneNumber":"+16195550100"}"#),
            SystemTime::now(),
        )
        .expect("signed");
        assert_eq!(r.uri(), "https://sms-voice.us-east-1.amazonaws.com/");
        let h = |k: &str| r.headers().get(k).and_then(|v| v.to_str().ok());
        assert_eq!(h("host"), Some("sms-voice.us-east-1.amazonaws.com"));
        assert_eq!(
            h("x-amz-target"),
            Some("PinpointSMSVoiceV2.SendTextMessage")
        );
        assert_eq!(h("content-type"), Some("application/x-amz-json-1.0"));
        assert_eq!(h("x-amz-security-token"), Some("session-token"));
        assert_eq!(h("user-agent"), Some("test/1"));
        assert!(h("x-amz-date").is_some());
        let auth = h("authorization").expect("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-1/sms-voice/aws4_request")
                && auth.contains("x-amz-target"),
            "{auth}"
        );
        assert!(!auth.contains("wJalrXUtnFEMI"), "{auth}");
        assert!(r.headers()["authorization"].is_sensitive());
        assert!(r.headers()["x-amz-security-token"].is_sensitive());
        assert!(!format!("{:?}", r.headers()).contains("session-token"));
    }

    #[test]
    fn error_answers_are_read_as_the_sdks_read_them() {
        let h = http::HeaderMap::new();
        let e = ErrorAnswer::parse(
            400,
            &h,
            br#"{"__type":"com.amazonaws.smsvoice#ValidationException","Message":"bad","Reason":"CANNOT_PARSE"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("ValidationException"));
        assert_eq!(e.message, "bad");
        assert_eq!(e.field("Reason"), Some("CANNOT_PARSE"));
        assert_eq!(e.summary(), "ValidationException (HTTP 400): bad");

        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/"
                .parse()
                .expect("header"),
        );
        let e = ErrorAnswer::parse(400, &h, b"not json");
        assert_eq!(e.code.as_deref(), Some("ThrottlingException"));
        assert_eq!(e.body, serde_json::Value::Null);
        let e = ErrorAnswer::parse(502, &http::HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(
            (e.code.as_deref(), e.summary().as_str()),
            (None, "HTTP 502")
        );
    }
}
