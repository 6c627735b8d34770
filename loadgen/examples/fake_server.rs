//! The test suite's fake server as a standalone process, for measuring loadgen itself:
//!
//! ```text
//! cargo run --release -p ovation-loadgen --example fake_server -- \
//!     127.0.0.1:9080 127.0.0.1:9081 TOKEN SECONDS [THREADS]
//! ```
//! It serves the viewer WebSocket and the API subset loadgen uses, and exits after SECONDS.

#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::time::Duration;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ws, api, token, secs, rest @ ..] = args.as_slice() else {
        return Err("usage: fake_server WS_ADDR API_ADDR TOKEN SECONDS [THREADS]".into());
    };
    let secs: u64 = secs.parse().map_err(|_| "SECONDS must be a number")?;
    let threads: usize = match rest.first() {
        Some(t) => t.parse().map_err(|_| "THREADS must be a number")?,
        None => 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let server =
            fake_server::FakeServer::start_on(ws, api, token, fake_server::Faults::default()).await;
        eprintln!(
            "fake_server: viewers ws://{}/v1/viewer, api http://{}, for {secs} s",
            server.ws_addr, server.api_addr
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    });
    Ok(())
}
