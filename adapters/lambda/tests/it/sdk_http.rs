//! The AWS SDK over the functions' HTTP client
//! ([`qdn_relay_lambda::https::sdk::SdkHttpClient`]): DynamoDB calls to
//! moto (`QDN_TEST_DYNAMO_URL`), and a refused connection classed as the
//! SDK's own client classes it (an I/O error, which its retry strategy
//! retries).

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use qdn_relay_lambda::https::sdk::SdkHttpClient;

fn client(url: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(SdkHttpClient::new())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "qdn-tests"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

#[tokio::test]
async fn dynamodb_calls_go_through() {
    let url = match std::env::var("QDN_TEST_DYNAMO_URL") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "QDN_TEST_DYNAMO_URL is not set: this test needs moto in server mode. Run the suite with ./scripts/test, which installs and starts it."
        ),
    };
    let out = client(&url).list_tables().send().await.expect("listed");
    assert!(out.table_names.is_some());
}

#[tokio::test]
async fn a_refused_connection_is_an_io_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let err = client(&format!("http://127.0.0.1:{port}"))
        .list_tables()
        .send()
        .await
        .expect_err("refused");
    use aws_sdk_dynamodb::error::SdkError;
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{failure:?}"),
        other => panic!("a dispatch failure: {other:?}"),
    }
}
