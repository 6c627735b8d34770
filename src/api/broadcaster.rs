//! Broadcasters following their stream's live results over WebSocket
//! (`/v1/broadcaster?stream=S` on the API address, authenticated with the API token).
//!
//! The application core pushes results frames into a [`Sink`] (`app::sink`); one task per
//! broadcaster connection writes them and answers pings and the close handshake.

use std::ops::ControlFlow;
use std::rc::Rc;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use netstack::ws::{self, close_code, Decoder, Event, OpCode};
use shards::proto::Frame;

use super::tls::Transport;
use crate::app::sink::Sink;

/// A broadcaster whose socket accepts nothing for this long is dropped.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes `bytes`, giving up after [`WRITE_TIMEOUT`] (a broadcaster that stopped reading).
async fn write_bounded<S: Transport>(stream: &mut S, bytes: &[u8]) -> bool {
    future::or(async { stream.write_all(bytes).await.is_ok() }, async {
        glommio::timer::sleep(WRITE_TIMEOUT).await;
        false
    })
    .await
}

enum Step {
    Read(std::io::Result<usize>),
    Write(Option<Frame>),
}

/// What a broadcaster's text message is answered with (`None`: nothing).
pub type OnText<'a> = &'a dyn Fn(&str) -> Option<Frame>;

/// Serves one upgraded broadcaster connection until either side closes; each text message
/// the broadcaster sends goes to `on_text` (e.g. `{"type":"break","duration_s":N}`).
pub async fn session<S: Transport>(
    stream: S,
    sink: Rc<Sink>,
    pending: Vec<u8>,
    on_text: OnText<'_>,
) {
    serve(stream, &sink, pending, on_text).await;
    sink.finish();
}

async fn serve<S: Transport>(
    mut stream: S,
    sink: &Sink,
    mut pending: Vec<u8>,
    on_text: OnText<'_>,
) {
    let mut decoder = Decoder::new(ws::Limits {
        max_frame: 4096,
        max_message: 4096,
    });
    let mut buf = vec![0u8; 4096];
    loop {
        let mut replies: Vec<u8> = Vec::new();
        let mut close: Option<u16> = None;
        if !pending.is_empty() {
            let result = decoder.feed(&mut pending, &mut |event| {
                match event {
                    Event::Ping(p) => ws::encode_frame(OpCode::Pong, p, &mut replies),
                    Event::Close(frame) => {
                        close = Some(frame.map_or(close_code::NORMAL, |f| f.code));
                        return ControlFlow::Break(());
                    }
                    Event::Text(text) => {
                        if let Some(answer) = on_text(text) {
                            replies.extend_from_slice(&answer);
                        }
                    }
                    _ => {}
                }
                ControlFlow::Continue(())
            });
            pending.clear();
            if let Err(e) = result {
                close = Some(e.close_code());
            }
        }
        if let Some(code) = close {
            ws::encode_close(code, "", &mut replies);
            let _ = write_bounded(&mut stream, &replies).await;
            let _ = stream.close().await;
            sink.close();
            return;
        }
        if !replies.is_empty() && !write_bounded(&mut stream, &replies).await {
            break;
        }
        let step = future::or(async { Step::Read(stream.read(&mut buf).await) }, async {
            Step::Write(sink.next().await)
        })
        .await;
        match step {
            Step::Read(Ok(0)) | Step::Read(Err(_)) => break,
            Step::Read(Ok(n)) => pending.extend_from_slice(&buf[..n]),
            Step::Write(Some(frame)) => {
                if !write_bounded(&mut stream, &frame).await {
                    break;
                }
            }
            Step::Write(None) => {
                let mut bye = Vec::new();
                if sink.is_going_away() {
                    ws::encode_close(close_code::GOING_AWAY, "", &mut bye);
                } else {
                    ws::encode_close(close_code::POLICY, "too slow", &mut bye);
                }
                let _ = write_bounded(&mut stream, &bye).await;
                break;
            }
        }
    }
    sink.close();
}
