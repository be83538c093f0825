//! Secret references read from real peers: moto (`QDN_TEST_DYNAMO_URL`,
//! the server `./scripts/test` starts for DynamoDB serves SSM and Secrets
//! Manager too) through the SigV4-signed JSON calls over the functions'
//! HTTP client; wiremock for what moto does not do (throttling, the signed
//! request's shape).

use std::collections::BTreeMap;
use std::sync::Arc;

use qdn_relay_lambda::HttpsClient;
use qdn_relay_lambda::secrets::{self, AwsSecretFetcher, SecretError, SecretFetcher};
use serde_json::{Value, json};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn moto_url() -> String {
    match std::env::var("QDN_TEST_DYNAMO_URL") {
        Ok(v) if !v.trim().is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "QDN_TEST_DYNAMO_URL is not set: this test needs moto in server mode. Run the suite with ./scripts/test, which installs and starts it."
        ),
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Calls a JSON 1.1 operation on moto directly (moto does not check
/// signatures, but routes by the credential scope's service): setting up
/// what the fetcher then reads.
async fn moto_call(target: &str, body: Value) -> Value {
    let service = if target.starts_with("AmazonSSM.") {
        "ssm"
    } else {
        "secretsmanager"
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/", moto_url()))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
            ),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{target} on moto: {e}"));
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert!(status.is_success(), "{target}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn fetcher(endpoint: &str, extra: &[(&str, &str)]) -> AwsSecretFetcher {
    let mut vars: BTreeMap<String, String> = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_SESSION_TOKEN", "session-token"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    AwsSecretFetcher::from_lookup(
        |k| vars.get(k).cloned(),
        Arc::new(HttpsClient::new(std::time::Duration::from_secs(2))),
    )
}

#[tokio::test]
async fn references_resolve_from_ssm_and_secrets_manager() {
    let url = moto_url();
    let param = format!("/qdn/{}", unique("token"));
    let secret = unique("qdn-twilio");
    moto_call(
        "AmazonSSM.PutParameter",
        json!({"Name": param, "Value": "tok-from-ssm", "Type": "SecureString"}),
    )
    .await;
    let created = moto_call(
        "secretsmanager.CreateSecret",
        json!({"Name": secret, "SecretString": r#"{"sid":"AC123","auth":"tok-from-sm"}"#}),
    )
    .await;
    let arn = created["ARN"].as_str().expect("an ARN").to_owned();

    let f = fetcher(&url, &[]);
    let mut vars: BTreeMap<String, String> = [
        ("RELAY_DASHBOARD_TOKEN", format!("ssm:{param}")),
        ("TWILIO_AUTH_TOKEN", format!("secretsmanager:{secret}#auth")),
        ("TWILIO_ACCOUNT_SID", format!("secretsmanager:{arn}#sid")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let names = [
        "RELAY_DASHBOARD_TOKEN",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
    ];
    let done = secrets::resolve(&mut vars, &names, Some(&f))
        .await
        .expect("resolved");
    assert_eq!(done.len(), 3);
    assert_eq!(vars["RELAY_DASHBOARD_TOKEN"], "tok-from-ssm");
    assert_eq!(vars["TWILIO_AUTH_TOKEN"], "tok-from-sm");
    assert_eq!(vars["TWILIO_ACCOUNT_SID"], "AC123");
}

#[tokio::test]
async fn a_missing_parameter_or_secret_names_the_service_error() {
    let f = fetcher(&moto_url(), &[]);
    let e = f
        .parameter(&format!("/qdn/{}", unique("absent")))
        .await
        .expect_err("no such parameter");
    assert!(e.0.contains("ParameterNotFound"), "{e}");
    let e = f
        .secret(&unique("absent"))
        .await
        .expect_err("no such secret");
    assert!(e.0.contains("ResourceNotFoundException"), "{e}");

    let mut vars: BTreeMap<String, String> = [(
        "TWILIO_AUTH_TOKEN".to_owned(),
        format!("ssm:/qdn/{}", unique("absent")),
    )]
    .into();
    let e = secrets::resolve(&mut vars, &["TWILIO_AUTH_TOKEN"], Some(&f))
        .await
        .expect_err("unresolved");
    assert!(matches!(e, SecretError::Fetch { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("TWILIO_AUTH_TOKEN: could not read ssm:/qdn/"),
        "{text}"
    );
}

#[tokio::test]
async fn per_service_endpoints_win() {
    let moto = moto_url();
    let secret = unique("qdn-plain");
    moto_call(
        "secretsmanager.CreateSecret",
        json!({"Name": secret, "SecretString": "s3cret"}),
    )
    .await;
    // AWS_ENDPOINT_URL points nowhere; the service's own variable wins.
    let f = fetcher(
        "http://127.0.0.1:9",
        &[("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.as_str())],
    );
    assert_eq!(f.secret(&secret).await.expect("read"), "s3cret");
}

#[tokio::test]
async fn requests_are_signed_json_and_throttling_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "__type": "ThrottlingException",
            "message": "Rate exceeded"
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("x-amz-target", "AmazonSSM.GetParameter"))
        .and(header("content-type", "application/x-amz-json-1.1"))
        .and(header("x-amz-security-token", "session-token"))
        .and(header_exists("x-amz-date"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Parameter": {"Name": "/p", "Type": "SecureString", "Value": "v4lue", "Version": 1}
        })))
        .mount(&server)
        .await;
    let f = fetcher(&server.uri(), &[]);
    assert_eq!(f.parameter("/p").await.expect("read"), "v4lue");
    let reqs = server.received_requests().await.expect("recording");
    assert_eq!(reqs.len(), 2, "one throttled attempt, one retry");
    let last = &reqs[1];
    let body: Value = serde_json::from_slice(&last.body).expect("JSON");
    assert_eq!(body, json!({"Name": "/p", "WithDecryption": true}));
    let auth = last
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=test/")
            && auth.contains("/us-east-1/ssm/aws4_request"),
        "{auth}"
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_settings_are_checked_first() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "__type": "com.amazonaws.secretsmanager#AccessDeniedException",
            "Message": "not allowed"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = fetcher(&server.uri(), &[])
        .secret("x")
        .await
        .expect_err("denied");
    assert_eq!(e.0, "AccessDeniedException (HTTP 400): not allowed");

    let no_creds = AwsSecretFetcher::from_lookup(
        |k| (k == "AWS_REGION").then(|| "us-east-1".to_owned()),
        Arc::new(HttpsClient::new(std::time::Duration::from_secs(1))),
    );
    let e = no_creds.parameter("/p").await.expect_err("no credentials");
    assert!(e.0.contains("AWS_ACCESS_KEY_ID"), "{e}");
    let no_region = AwsSecretFetcher::from_lookup(
        |_| None,
        Arc::new(HttpsClient::new(std::time::Duration::from_secs(1))),
    );
    let e = no_region.parameter("/p").await.expect_err("no region");
    assert!(e.0.starts_with("AWS_REGION"), "{e}");
}
