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
use crate::{Bus, BusError, BusEvent, Durable};

/// The JetStream key-value bucket of durable viewer records.
pub const BUCKET: &str = "ovation_viewers";
/// How long a viewer record outlives its last write (it must outlast the longest poll).
const RECORD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What the application core hands the bus thread.
enum Out {
    Publish(Envelope),
    Durable(Durable),
}

/// Messages the application core may have queued for the bus thread before they are dropped.
const OUT_QUEUE: usize = 64 * 1024;
/// Incoming messages queued for the application core before the bus thread waits.
const IN_QUEUE: usize = 64 * 1024;
/// The longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// An edge on a NATS server or cluster.
pub struct NatsBus {
    edge: String,
    out: flume::Sender<Out>,
    events: flume::Receiver<BusEvent>,
    /// Answers refused operations at once.
    events_tx: flume::Sender<BusEvent>,
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
            events: events_tx.clone(),
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
            events_tx,
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
        if self.out.try_send(Out::Publish(envelope)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn has_store(&self) -> bool {
        true
    }

    fn durable(&self, op: Durable) {
        let refused = |op: &Durable| match *op {
            Durable::Put { ticket, .. } => BusEvent::Stored { ticket, ok: false },
            Durable::Get { ticket, .. } => BusEvent::Found {
                ticket,
                value: None,
            },
            Durable::Scan { ticket } => BusEvent::Scanned {
                ticket,
                values: None,
            },
        };
        if !self.connected() {
            let _ = self.events_tx.try_send(refused(&op));
            return;
        }
        if let Err(e) = self.out.try_send(Out::Durable(op)) {
            if let Out::Durable(op) = e.into_inner() {
                let _ = self.events_tx.try_send(refused(&op));
            }
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
    out: flume::Receiver<Out>,
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
        let incoming = tokio::spawn(receive(subscriber, self.edge.clone(), self.events.clone()));
        let store = Store {
            js: async_nats::jetstream::new(client.clone()),
            kv: Arc::new(tokio::sync::OnceCell::new()),
        };
        while let Ok(out) = self.out.recv_async().await {
            match out {
                Out::Publish(envelope) => {
                    let subject = envelope.msg.subject();
                    if let Err(e) = client.publish(subject, envelope.encode().into()).await {
                        tracing::debug!(error = %e, "cluster bus: publish failed");
                    }
                }
                Out::Durable(op) => {
                    let (store, events) = (store.clone(), self.events.clone());
                    tokio::spawn(async move {
                        let _ = events.send_async(store.run(op).await).await;
                    });
                }
            }
        }
        incoming.abort();
        let _ = client.flush().await;
    }
}

/// The JetStream key-value bucket, opened (or created) on first use.
#[derive(Clone)]
struct Store {
    js: async_nats::jetstream::Context,
    kv: Arc<tokio::sync::OnceCell<async_nats::jetstream::kv::Store>>,
}

impl Store {
    async fn bucket(&self) -> Option<&async_nats::jetstream::kv::Store> {
        let made = self
            .kv
            .get_or_try_init(|| async {
                let config = async_nats::jetstream::kv::Config {
                    bucket: BUCKET.into(),
                    history: 1,
                    max_age: RECORD_MAX_AGE,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                };
                match self.js.get_key_value(BUCKET).await {
                    Ok(kv) => Ok(kv),
                    Err(_) => self
                        .js
                        .create_key_value(config)
                        .await
                        .map_err(|e| e.to_string()),
                }
            })
            .await;
        match made {
            Ok(kv) => Some(kv),
            Err(e) => {
                tracing::warn!(error = %e, "cluster bus: JetStream bucket unavailable");
                None
            }
        }
    }

    async fn run(&self, op: Durable) -> BusEvent {
        match op {
            Durable::Put { ticket, key, value } => {
                let ok = match self.bucket().await {
                    Some(kv) => kv.put(key, value.into()).await.is_ok(),
                    None => false,
                };
                BusEvent::Stored { ticket, ok }
            }
            Durable::Get { ticket, key } => {
                let value = match self.bucket().await {
                    Some(kv) => kv.get(key).await.ok().flatten().map(|b| b.to_vec()),
                    None => None,
                };
                BusEvent::Found { ticket, value }
            }
            Durable::Scan { ticket } => BusEvent::Scanned {
                ticket,
                values: self.scan().await,
            },
        }
    }

    /// Every record: the keys, then each value.
    async fn scan(&self) -> Option<Vec<Vec<u8>>> {
        let kv = self.bucket().await?;
        let keys: Vec<String> = match kv.keys().await {
            Ok(keys) => keys.filter_map(|k| async move { k.ok() }).collect().await,
            Err(_) => return None,
        };
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            match kv.get(key).await {
                Ok(Some(v)) => values.push(v.to_vec()),
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        Some(values)
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
