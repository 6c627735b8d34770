//! The bus over NATS: `async-nats` on a thread of its own with a single-threaded tokio
//! runtime, joined to the application core by two flume channels (the core sends without
//! blocking and awaits incoming events on its own executor).
//!
//! NATS unreachable at start or lost later: the client keeps reconnecting in the background,
//! the edge keeps serving its own viewers, messages published meanwhile are dropped (counted
//! in [`Bus::dropped`]), the loss and the return are each logged once, and the application
//! core republishes its state on [`BusEvent::Connected`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::msg::{Envelope, Msg, SUBJECT_PREFIX};
use crate::{Bus, BusError, BusEvent};

/// Messages the application core may have queued for the bus thread before they are dropped.
const OUT_QUEUE: usize = 64 * 1024;
/// Incoming messages queued for the application core before the bus thread waits.
const IN_QUEUE: usize = 64 * 1024;
/// The longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// An edge on a NATS server or cluster.
pub struct NatsBus {
    edge: String,
    out: flume::Sender<Envelope>,
    events: flume::Receiver<BusEvent>,
    connected: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl NatsBus {
    /// Starts the bus thread; returns at once (the connection is made in the background).
    pub fn start(url: &str, edge: &str) -> Result<NatsBus, BusError> {
        if url.trim().is_empty() {
            return Err(BusError::Url {
                url: url.into(),
                reason: "empty".into(),
            });
        }
        let (out, out_rx) = flume::bounded(OUT_QUEUE);
        let (events_tx, events) = flume::bounded(IN_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BusError::Thread)?;
        let thread = Thread {
            url: url.to_owned(),
            edge: edge.to_owned(),
            out: out_rx,
            events: events_tx,
            connected: connected.clone(),
        };
        std::thread::Builder::new()
            .name("cluster-bus".into())
            .spawn(move || runtime.block_on(thread.run()))
            .map_err(BusError::Thread)?;
        Ok(NatsBus {
            edge: edge.to_owned(),
            out,
            events,
            connected,
            dropped,
        })
    }
}

impl Bus for NatsBus {
    fn mode(&self) -> &'static str {
        "nats"
    }

    fn edge(&self) -> &str {
        &self.edge
    }

    fn publish(&self, msg: Msg) {
        if !self.connected() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let envelope = Envelope {
            from: self.edge.clone(),
            msg,
        };
        if self.out.try_send(envelope).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn events(&self) -> flume::Receiver<BusEvent> {
        self.events.clone()
    }
}

/// What the bus thread owns.
struct Thread {
    url: String,
    edge: String,
    out: flume::Receiver<Envelope>,
    events: flume::Sender<BusEvent>,
    connected: Arc<AtomicBool>,
}

impl Thread {
    /// Runs until the application core drops its sender.
    async fn run(self) {
        let (events, connected) = (self.events.clone(), self.connected.clone());
        let url = self.url.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("ovation-{}", self.edge))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(50) * attempts.min(10) as u32).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let (events, connected) = (events.clone(), connected.clone());
                let url = url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(url, "cluster bus connected");
                            connected.store(true, Ordering::Relaxed);
                            let _ = events.send_async(BusEvent::Connected).await;
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(
                                url,
                                "cluster bus lost: serving local viewers, reconnecting"
                            );
                            connected.store(false, Ordering::Relaxed);
                            let _ = events.send_async(BusEvent::Disconnected).await;
                        }
                        other => tracing::debug!(event = %other, "cluster bus"),
                    }
                }
            });
        let client = match options.connect(self.url.as_str()).await {
            Ok(c) => c,
            Err(e) => {
                // Only a malformed address fails here: with retry_on_initial_connect an
                // unreachable server is retried in the background.
                tracing::error!(url = self.url, error = %e, "cluster bus not started");
                return;
            }
        };
        let subscriber = match client.subscribe(format!("{SUBJECT_PREFIX}.>")).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cluster bus: subscribing failed");
                return;
            }
        };
        let incoming = tokio::spawn(receive(subscriber, self.edge.clone(), self.events));
        while let Ok(envelope) = self.out.recv_async().await {
            let subject = envelope.msg.subject();
            if let Err(e) = client.publish(subject, envelope.encode().into()).await {
                tracing::debug!(error = %e, "cluster bus: publish failed");
            }
        }
        incoming.abort();
        let _ = client.flush().await;
    }
}

/// Hands other edges' messages to the application core; drops our own and garbage.
async fn receive(
    mut subscriber: async_nats::Subscriber,
    edge: String,
    events: flume::Sender<BusEvent>,
) {
    let mut warned = false;
    while let Some(message) = subscriber.next().await {
        match Envelope::decode(&message.payload) {
            Ok(e) if e.from == edge => {}
            Ok(e) => {
                if events.send_async(BusEvent::Message(e)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(subject = %message.subject, error = %e, "cluster bus: dropping a message that is not ovation's (logged once)");
                    warned = true;
                }
            }
        }
    }
}
