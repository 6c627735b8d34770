//! The application core: one executor beside the shards that knows every viewer.
//!
//! It mirrors the shards' profiles (from [`ShardEvent`]s), answers the viewer requests that
//! need global knowledge, and sends [`ShardCommand`]s down. It holds no sockets of viewers:
//! reaching a group is one command per shard, and each shard fans out from its own bitmaps.

pub mod downlink;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use shards::profile::{Profile, ViewerId};
use shards::proto::{Frame, ShardCommand, ShardEvent, ViewerRef};
use shards::{ShardStats, StatsSnapshot};

use crate::config::Config;
use downlink::Downlink;

/// The application core's copy of one viewer.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub at: ViewerRef,
    pub resume: Box<str>,
    pub profile: Profile,
}

/// All state of the application core. Single-threaded: the executor's tasks share it through
/// `Rc<RefCell<App>>` and never hold a borrow across an await.
pub struct App {
    pub config: Arc<Config>,
    pub shard_stats: Vec<Arc<ShardStats>>,
    downlinks: Vec<Rc<Downlink>>,
    pub viewers: HashMap<ViewerId, Viewer>,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        shard_stats: Vec<Arc<ShardStats>>,
        downlinks: Vec<Rc<Downlink>>,
    ) -> App {
        App {
            config,
            shard_stats,
            downlinks,
            viewers: HashMap::new(),
        }
    }

    /// Sends `command` to shard `shard`.
    pub fn command(&self, shard: u16, command: ShardCommand) {
        if let Some(d) = self.downlinks.get(shard as usize) {
            d.push(command);
        }
    }

    /// Sends a command built by `make` to every shard.
    pub fn broadcast(&self, mut make: impl FnMut() -> ShardCommand) {
        for d in &self.downlinks {
            d.push(make());
        }
    }

    /// Sends an encoded frame to one viewer.
    pub fn send_to(&self, at: ViewerRef, frame: Frame) {
        self.command(at.shard, ShardCommand::Send { to: at, frame });
    }

    /// Sends `{"type":"error",...}` to one viewer.
    pub fn send_error(&self, at: ViewerRef, code: &str, message: &str) {
        let json = serde_json::json!({"type": "error", "code": code, "message": message});
        self.send_to(at, text_frame(&json.to_string()));
    }

    pub fn on_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::Joined {
                at,
                resume,
                profile,
            } => {
                self.viewers.insert(
                    at.viewer,
                    Viewer {
                        at,
                        resume,
                        profile: *profile,
                    },
                );
            }
            ShardEvent::Changed { at, profile } => {
                if let Some(v) = self.viewers.get_mut(&at.viewer) {
                    v.profile = *profile;
                }
            }
            ShardEvent::Left { at } => {
                if self.viewers.get(&at.viewer).is_some_and(|v| v.at == at) {
                    self.viewers.remove(&at.viewer);
                }
            }
            ShardEvent::Request { at, request } => self.on_request(at, request),
        }
    }

    fn on_request(&mut self, at: ViewerRef, request: shards::proto::Request) {
        use shards::proto::Request;
        match request {
            Request::Watch { stream } => self.send_error(
                at,
                "unknown_stream",
                &format!("no stream {stream:?} is live"),
            ),
            Request::Vote { poll, .. } => {
                self.send_error(at, "unknown_poll", &format!("no open poll {poll:?}"))
            }
            Request::Telemetry(_) => {}
        }
    }

    /// Live counters of every shard.
    pub fn shard_snapshots(&self) -> Vec<StatsSnapshot> {
        self.shard_stats.iter().map(|s| s.snapshot()).collect()
    }
}

/// Encodes one text frame.
pub fn text_frame(json: &str) -> Frame {
    let mut buf = Vec::with_capacity(netstack::ws::header_len(json.len()) + json.len());
    netstack::ws::encode_frame(netstack::ws::OpCode::Text, json.as_bytes(), &mut buf);
    buf.into()
}
