//! Test support for the cluster side of the core: an edge's `App` on a bus that records what
//! the core publishes (nothing comes in by itself), and messages as another edge sends them.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use cluster::{Bus, BusEvent, Envelope, Msg};

use super::downlink::Downlink;
use super::App;
use crate::config::Config;

/// A bus that records what the core publishes.
struct Recorder {
    edge: &'static str,
    sent: Rc<RefCell<Vec<Msg>>>,
    /// Held so that `events()` waits instead of ending.
    _keep: cluster::flume::Sender<BusEvent>,
    rx: cluster::flume::Receiver<BusEvent>,
}

impl Bus for Recorder {
    fn mode(&self) -> &'static str {
        "nats"
    }
    fn edge(&self) -> &str {
        self.edge
    }
    fn publish(&self, msg: Msg) {
        self.sent.borrow_mut().push(msg);
    }
    fn connected(&self) -> bool {
        true
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn events(&self) -> cluster::flume::Receiver<BusEvent> {
        self.rx.clone()
    }
}

/// Edge `edge` (one shard, started at `now_ms`) on a recording bus: the core, its shard's
/// command queue and what it published.
pub fn clustered(edge: &'static str, now_ms: u64) -> (App, Rc<Downlink>, Rc<RefCell<Vec<Msg>>>) {
    let down: Rc<Downlink> = Rc::default();
    let config = Config {
        edge_id: edge.into(),
        ..Config::default()
    };
    let mut app = App::new(
        Arc::new(config),
        vec![Arc::default()],
        vec![down.clone()],
        now_ms,
    );
    let sent = Rc::new(RefCell::new(Vec::new()));
    let (keep, rx) = cluster::flume::bounded(1);
    app.set_bus(Box::new(Recorder {
        edge,
        sent: sent.clone(),
        _keep: keep,
        rx,
    }));
    (app, down, sent)
}

/// `msg` as edge `edge` sent it.
pub fn from(edge: &str, msg: Msg) -> BusEvent {
    BusEvent::Message(Envelope {
        from: edge.into(),
        msg,
    })
}
