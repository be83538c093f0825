//! SSM `GetParameter` and Secrets Manager `GetSecretValue` without their
//! SDK crates: both are one JSON 1.1 POST (`X-Amz-Target` names the
//! operation), signed with SigV4 (`qdn_relay_transport::aws`, over
//! `aws-sigv4`, which the DynamoDB client links anyway) with the function
//! role's credentials from the environment, sent over the functions' HTTP
//! client.
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
use qdn_relay_transport::aws::{
    Credentials, ErrorAnswer, JsonCall, JsonVersion, credentials_from_lookup, endpoint_from_lookup,
    region_from_lookup, signed_json_request,
};
use qdn_relay_transport::{Failed, RetryPolicy, Transport, TransportError};

use super::{FetchError, SecretFetcher};

/// The overall timeout of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Up to 3 attempts, 200 ms after the first, doubled, jittered.
fn retry_policy() -> RetryPolicy {
    let mut p = RetryPolicy::default();
    p.max_attempts = 3;
    p.base_delay = Duration::from_millis(200);
    p.max_delay = Duration::from_secs(2);
    p
}
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

impl Endpoints {
    /// From the environment: the region, and per service its
    /// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else the
    /// regional endpoint (`https://ssm.<region>.amazonaws.com`, the right
    /// suffix in the China, GovCloud-free ISO and EU sovereign
    /// partitions).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let region = region_from_lookup(&lookup)
            .map_err(|e| format!("{e} (the region of SSM and Secrets Manager)"))?;
        Ok(Self {
            ssm: endpoint_from_lookup(&lookup, "SSM", "ssm", &region),
            secrets_manager: endpoint_from_lookup(
                &lookup,
                "SECRETS_MANAGER",
                "secretsmanager",
                &region,
            ),
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
    credentials: Result<Credentials, String>,
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
        let credentials = credentials_from_lookup(&lookup);
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
        let call = JsonCall::new(
            service,
            region,
            endpoint,
            target,
            JsonVersion::V1_1,
            concat!("qdn-relay-lambda/", env!("CARGO_PKG_VERSION")),
        );
        retry_policy()
            .run(
                ATTEMPT_TIMEOUT,
                |per_call| {
                    let (call, body) = (&call, &body);
                    async move {
                        let request =
                            signed_json_request(credentials, call, body, SystemTime::now())
                                .map_err(|e| Failed::new(FetchError(e.message), false))?;
                        self.exchange(request, per_call)
                            .await
                            .map_err(|(error, again)| Failed::new(error, again))
                    }
                },
                |attempt, delay, error| {
                    tracing::info!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %error,
                        "{target} failed, retrying"
                    )
                },
            )
            .await
    }

    /// One attempt: the answer's JSON, or the error and whether to retry.
    async fn exchange(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<serde_json::Value, (FetchError, bool)> {
        let transport = |e: TransportError| (FetchError(e.message), true);
        let mut answer = self.http.send(request, timeout).await.map_err(transport)?;
        let (body, read) = answer.read_body(MAX_ANSWER, false).await;
        read.map_err(transport)?;
        let status = answer.status;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| (FetchError(format!("the answer is not JSON: {e}")), false));
        }
        // {"__type": "com.amazonaws…#ParameterNotFound", "message": "…"};
        // the code may come in X-Amzn-ErrorType instead.
        let answer = ErrorAnswer::parse(status.as_u16(), &answer.headers, &body);
        let code = answer.code.as_deref().unwrap_or("UnknownError");
        let retry = status.is_server_error()
            || status.as_u16() == 429
            || matches!(
                code,
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
        if !answer.message.is_empty() {
            text.push_str(": ");
            text.push_str(&answer.message);
        }
        Err((FetchError(text), retry))
    }
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

    /// Resolution itself is `qdn_relay_transport::aws`'s (tested there);
    /// this is which variables name the two services.
    #[test]
    fn each_service_has_its_endpoint_variable() {
        let e = Endpoints::from_lookup(lookup(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:6000"),
        ]))
        .expect("region");
        assert_eq!(e.region, "eu-west-3");
        assert_eq!(e.ssm, "https://ssm.eu-west-3.amazonaws.com");
        assert_eq!(e.secrets_manager, "http://127.0.0.1:6000");
        let e = Endpoints::from_lookup(lookup(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:5000"),
        ]))
        .expect("region");
        assert_eq!(e.ssm, "http://127.0.0.1:5000");
        assert_eq!(
            e.secrets_manager,
            "https://secretsmanager.eu-west-3.amazonaws.com"
        );
        let err = Endpoints::from_lookup(lookup(&[])).expect_err("no region");
        assert_eq!(
            err,
            "AWS_REGION is not set (the region of SSM and Secrets Manager)"
        );
    }
}
