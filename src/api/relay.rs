//! The origin route (issue 17, streams across edges): `GET /api/relay/{stream}/index.m3u8`
//! and `GET /api/relay/{stream}/{seq}.ts`, the stream's live window as this edge has it,
//! for the other edges of a cluster to pull. On the API port (a read-scope token), never on
//! the viewer port: it serves the plain window whatever `hls_require_session` says.

use crate::app::{App, OriginRefusal};

use super::response::Response;

/// The answer for `file` (`index.m3u8` or `{seq}.ts`) of `stream`.
pub fn get(app: &mut App, stream: &str, file: &str) -> Response {
    if file == "index.m3u8" {
        return match app.origin_playlist(stream) {
            Ok(text) => Response::media("application/vnd.apple.mpegurl", text.into_bytes().into()),
            Err(OriginRefusal::Unknown) => Response::error(
                404,
                "not_found",
                format!("no segments of stream \"{stream}\" on this edge"),
            ),
            Err(OriginRefusal::NoSegment) => {
                Response::error(503, "no_segment", "the stream has no segment yet")
            }
        };
    }
    let seq = file
        .strip_suffix(".ts")
        .filter(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok());
    match seq.and_then(|n| app.origin_segment(stream, n)) {
        Some(data) => Response::media("video/mp2t", data),
        None => Response::error(
            404,
            "not_found",
            format!("no {file} of stream \"{stream}\" in this edge's window"),
        ),
    }
}
