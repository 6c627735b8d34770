//! The broadcaster's view of a poll storm: one WebSocket on the server's
//! `/v1/broadcaster?stream=S` (API token in the Authorization header) that records when the final results
//! arrive and what they say. Servers without that endpoint (the peers) are reported as such.

use std::net::SocketAddr;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::monotonic_ns;

/// What the broadcaster saw of one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BroadcasterView {
    /// CLOCK_MONOTONIC ns when the final results arrived.
    pub final_ns: Option<u64>,
    pub final_total: Option<u64>,
    /// Live (non-final) results pushes received.
    pub live_pushes: u64,
}

/// Connects and follows `stream`; the returned receiver yields the view once the final results
/// for a poll arrive, or the connection ends. `Err` when the server refuses the upgrade.
pub async fn follow(
    api: SocketAddr,
    stream: &str,
    token: &str,
) -> anyhow::Result<oneshot::Receiver<BroadcasterView>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{api}/v1/broadcaster?stream={stream}").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut view = BroadcasterView::default();
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if v.get("type").and_then(|t| t.as_str()) != Some("results") {
                continue;
            }
            if v.get("final").and_then(|f| f.as_bool()) == Some(true) {
                view.final_ns = Some(monotonic_ns());
                view.final_total = v.get("total").and_then(|t| t.as_u64());
                break;
            }
            view.live_pushes += 1;
        }
        let _ = tx.send(view);
    });
    Ok(rx)
}
