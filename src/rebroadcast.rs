//! The rebroadcast player: one task on the application core's executor per rebroadcast,
//! reading the recording's files with asynchronous file I/O (never blocking the core) and
//! releasing each segment as live, then waiting its duration, so the stream plays in real
//! time. The stream ends (the audience gets `ended`) after the last segment, or at once if
//! the recording cannot be read.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::app::{unix_ms, App, Rebroadcast};
use crate::recorder::{parse_entries, PLAYLIST};

/// Plays every rebroadcast the API starts, until the task is dropped.
pub async fn serve(app: Rc<RefCell<App>>) {
    let queued = app.borrow().rebroadcast_queued();
    loop {
        queued.wait().await;
        let started = app.borrow_mut().take_rebroadcasts();
        for rb in started {
            let app = app.clone();
            glommio::spawn_local(async move { play(&app, rb).await }).detach();
        }
    }
}

async fn play(app: &RefCell<App>, rb: Rebroadcast) {
    let entries = match shards::hls_files::read(&rb.dir.join(PLAYLIST)).await {
        Ok(bytes) => parse_entries(&String::from_utf8_lossy(&bytes)),
        Err(e) => {
            tracing::warn!(stream = %rb.turn.stream, error = %e, "rebroadcast: the recording's playlist could not be read");
            Vec::new()
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let data = match shards::hls_files::read(&rb.dir.join(&entry.uri)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(stream = %rb.turn.stream, error = %e, "rebroadcast: a segment could not be read; ending");
                break;
            }
        };
        let discontinuity = i == 0 || entry.discontinuity;
        let released = app.borrow_mut().rebroadcast_segment(
            &rb.turn,
            entry.duration_ms,
            discontinuity,
            data.into(),
            unix_ms(),
        );
        if !released {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(entry.duration_ms)).await;
    }
    app.borrow_mut().end_publish(&rb.turn, unix_ms());
    tracing::info!(stream = %rb.turn.stream, recording = %rb.recording, "rebroadcast ended");
}
