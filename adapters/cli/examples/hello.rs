//! A bare axum server answering `GET /hello` with `hello`: the baseline the
//! HTTP load benchmark (`scripts/bench-http`) measures the relay against.
//!
//! It runs on the same Tokio multi-thread runtime as `qdn-relay serve`, with
//! nothing else: no state, no middleware, no logging.
//!
//! ```text
//! cargo run --release -p qdn-relay-cli --example hello -- 127.0.0.1:8081
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned())
        .parse()
        .expect("the first argument is an address like 127.0.0.1:8081");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    rt.block_on(async move {
        let app = Router::new().route("/hello", get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the address is free");
        axum::serve(listener, app).await.expect("the server runs");
    });
}
