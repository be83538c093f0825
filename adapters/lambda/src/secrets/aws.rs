//! SSM `GetParameter` and Secrets Manager `GetSecretValue` without their
//! SDK crates: both are one JSON 1.1 POST (`X-Amz-Target` names the
//! operation), signed with SigV4 (`aws-sigv4`, which the DynamoDB client
//! links anyway) with the function role's credentials from the
//! environment, sent over the functions' HTTP client.
//!
//! What the SDK clients did and this keeps: the regional endpoint (or
//! `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` /
//! `AWS_ENDPOINT_URL`), decryption of `SecureString` parameters, up to 3
//! attempts with exponential backoff on throttling, 5xx answers and
//! transport failures (both reads are idempotent), the service's error code
//! and message in errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use qdn_relay_twilio::transport::{Transport, TransportError};

use super::{FetchError, SecretFetcher};

/// Attempts per read, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// The overall timeout of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first backoff, doubled after each attempt, jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// The longest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// Where the two services are, and the region requests are signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The signing region (`AWS_REGION`, else `AWS_DEFAULT_REGION`).
    pub region: String,
    /// The SSM endpoint URL.
    pub ssm: String,
    /// The Secrets Manager endpoint URL.
    pub secrets_manager: String,
}

/// The DNS suffix of a region's partition.
fn dns_suffix(region: &str) -> &'static str {
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

impl Endpoints {
    /// From the environment: the region, and per service its
    /// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else the
    /// regional endpoint (`https://ssm.<region>.amazonaws.com`, the right
    /// suffix in the China, GovCloud-free ISO and EU sovereign
    /// partitions).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .ok_or("AWS_REGION is not set (the region of SSM and Secrets Manager)")?;
        let endpoint = |var: &str, service: &str| {
            get(var)
                .or_else(|| get("AWS_ENDPOINT_URL"))
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("https://{service}.{region}.{}", dns_suffix(&region)))
        };
        Ok(Self {
            ssm: endpoint("AWS_ENDPOINT_URL_SSM", "ssm"),
            secrets_manager: endpoint("AWS_ENDPOINT_URL_SECRETS_MANAGER", "secretsmanager"),
            region,
        })
    }
}

/// Reads SSM Parameter Store and Secrets Manager: one signed JSON call
/// each, retried on throttling, 5xx and transport failures. Settings missing from the environment (region,
/// credentials) are reported by the first read, naming the variable.
pub struct AwsSecretFetcher {
    http: Arc<dyn Transport>,
    endpoints: Result<Endpoints, String>,
    credentials: Result<aws_credential_types::Credentials, String>,
}

impl std::fmt::Debug for AwsSecretFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials' Debug redacts the secret key; the endpoints hold none.
        f.debug_struct("AwsSecretFetcher")
            .field("endpoints", &self.endpoints)
            .field("credentials", &self.credentials.as_ref().map(|_| "set"))
            .finish_non_exhaustive()
    }
}

impl AwsSecretFetcher {
    /// A fetcher over `http`, its endpoints ([`Endpoints::from_lookup`])
    /// and credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`: what Lambda sets for the function's role) read
    /// through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, http: Arc<dyn Transport>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(aws_credential_types::Credentials::new(
                id,
                secret,
                get("AWS_SESSION_TOKEN"),
                None,
                "environment",
            )),
            _ => Err(
                "no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                    .to_owned(),
            ),
        };
        Self {
            http,
            endpoints: Endpoints::from_lookup(&lookup),
            credentials,
        }
    }

    /// The endpoints in use, or why there are none.
    pub fn endpoints(&self) -> Result<&Endpoints, &str> {
        self.endpoints.as_ref().map_err(String::as_str)
    }

    /// Calls `target` (`AmazonSSM.GetParameter`, …) of `service` at
    /// `endpoint` with `body`, retrying what may be retried; the answer's
    /// JSON.
    async fn call(
        &self,
        service: &str,
        endpoint: &str,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, FetchError> {
        let region = &self
            .endpoints
            .as_ref()
            .map_err(|e| FetchError(e.clone()))?
            .region;
        let credentials = self
            .credentials
            .as_ref()
            .map_err(|e| FetchError(e.clone()))?;
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| FetchError(e.to_string()))?);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = signed_request(credentials, region, service, endpoint, target, &body)?;
            let outcome = self.exchange(request).await;
            match outcome {
                Ok(json) => return Ok(json),
                Err((error, retry)) => {
                    if !retry || attempt >= MAX_ATTEMPTS {
                        return Err(error);
                    }
                    let exp = BASE_BACKOFF.saturating_mul(1u32 << (attempt - 1));
                    let delay = exp / 2 + (exp / 2).mul_f64(fastrand::f64());
                    tracing::info!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %error,
                        "{target} failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt: the answer's JSON, or the error and whether to retry.
    async fn exchange(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<serde_json::Value, (FetchError, bool)> {
        let transport = |e: TransportError| (FetchError(e.message), true);
        let mut answer = self
            .http
            .send(request, ATTEMPT_TIMEOUT)
            .await
            .map_err(transport)?;
        let (body, read) = answer.read_body(MAX_ANSWER, false).await;
        read.map_err(transport)?;
        let status = answer.status;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| (FetchError(format!("the answer is not JSON: {e}")), false));
        }
        // {"__type": "com.amazonaws…#ParameterNotFound", "message": "…"};
        // the code may come in X-Amzn-ErrorType instead.
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let header_code = answer
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let code = json
            .get("__type")
            .and_then(serde_json::Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            .or(header_code)
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let retry = status.is_server_error()
            || status.as_u16() == 429
            || matches!(
                code.as_str(),
                "ThrottlingException"
                    | "Throttling"
                    | "ThrottledException"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
                    | "RequestThrottled"
                    | "RequestThrottledException"
                    | "ProvisionedThroughputExceededException"
                    | "InternalServiceError"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            );
        let mut text = format!("{code} (HTTP {})", status.as_u16());
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(message);
        }
        Err((FetchError(text), retry))
    }
}

/// A JSON 1.1 POST of `body` to `endpoint`, signed with SigV4 for
/// `service` in `region`.
fn signed_request(
    credentials: &aws_credential_types::Credentials,
    region: &str,
    service: &str,
    endpoint: &str,
    target: &str,
    body: &Bytes,
) -> Result<http::Request<Bytes>, FetchError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let bad = |what: &str, e: &dyn std::fmt::Display| FetchError(format!("{what}: {e}"));
    let url = format!("{endpoint}/");
    let uri: http::Uri = url.parse().map_err(|e| bad("invalid endpoint URL", &e))?;
    let host = uri
        .authority()
        .ok_or_else(|| FetchError(format!("invalid endpoint URL {url}: no host")))?
        .to_string();
    let mut request = http::Request::post(uri)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .header(
            http::header::USER_AGENT,
            concat!("qdn-relay-lambda/", env!("CARGO_PKG_VERSION")),
        )
        .body(body.clone())
        .map_err(|e| bad("invalid request", &e))?;
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| bad("signing", &e))?
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
    .map_err(|e| bad("signing", &e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| bad("signing", &e))?
        .into_parts();
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

#[async_trait]
impl SecretFetcher for AwsSecretFetcher {
    async fn parameter(&self, name: &str) -> Result<String, FetchError> {
        let endpoint = &self
            .endpoints
            .as_ref()
            .map_err(|e| FetchError(e.clone()))?
            .ssm;
        let out = self
            .call(
                "ssm",
                endpoint,
                "AmazonSSM.GetParameter",
                &serde_json::json!({ "Name": name, "WithDecryption": true }),
            )
            .await?;
        out.get("Parameter")
            .and_then(|p| p.get("Value"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| FetchError("the parameter has no value".to_owned()))
    }

    async fn secret(&self, id: &str) -> Result<String, FetchError> {
        let endpoint = &self
            .endpoints
            .as_ref()
            .map_err(|e| FetchError(e.clone()))?
            .secrets_manager;
        let out = self
            .call(
                "secretsmanager",
                endpoint,
                "secretsmanager.GetSecretValue",
                &serde_json::json!({ "SecretId": id }),
            )
            .await?;
        out.get("SecretString")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                FetchError(
                    "the secret has no SecretString (binary secrets are not supported)".into(),
                )
            })
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
        let e = Endpoints::from_lookup(lookup(&[("AWS_REGION", "eu-west-3")])).expect("region");
        assert_eq!(e.ssm, "https://ssm.eu-west-3.amazonaws.com");
        assert_eq!(
            e.secrets_manager,
            "https://secretsmanager.eu-west-3.amazonaws.com"
        );
        let e = Endpoints::from_lookup(lookup(&[("AWS_DEFAULT_REGION", "cn-north-1")]))
            .expect("region");
        assert_eq!(e.ssm, "https://ssm.cn-north-1.amazonaws.com.cn");
        let e = Endpoints::from_lookup(lookup(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:6000"),
        ]))
        .expect("region");
        assert_eq!(e.ssm, "http://127.0.0.1:5000");
        assert_eq!(e.secrets_manager, "http://127.0.0.1:6000");
        let err = Endpoints::from_lookup(lookup(&[])).expect_err("no region");
        assert!(err.starts_with("AWS_REGION"), "{err}");
    }

    #[test]
    fn requests_are_signed_for_the_service() {
        let creds = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let r = signed_request(
            &creds,
            "us-east-1",
            "ssm",
            "https://ssm.us-east-1.amazonaws.com",
            "AmazonSSM.GetParameter",
            &Bytes::from_static(br#"{"Name":"/a"}"#),
        )
        .expect("signed");
        assert_eq!(r.uri(), "https://ssm.us-east-1.amazonaws.com/");
        let h = |k: &str| r.headers().get(k).and_then(|v| v.to_str().ok());
        assert_eq!(h("host"), Some("ssm.us-east-1.amazonaws.com"));
        assert_eq!(h("x-amz-target"), Some("AmazonSSM.GetParameter"));
        assert_eq!(h("content-type"), Some("application/x-amz-json-1.1"));
        assert_eq!(h("x-amz-security-token"), Some("session-token"));
        assert!(h("x-amz-date").is_some());
        let auth = h("authorization").expect("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/us-east-1/ssm/aws4_request")
                && auth.contains("x-amz-target"),
            "{auth}"
        );
        assert!(!auth.contains("wJalrXUtnFEMI"), "{auth}");
    }
}
