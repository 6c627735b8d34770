//! Process assembly: binds the listeners, starts one pinned executor per shard and the
//! application core's executor, and joins them with lock-free channels.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::AsyncReadExt;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{CpuSet, ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use shards::proto::{ShardCommand, ShardEvent};
use shards::{ShardConfig, ShardSpec, ShardStats};

use crate::api;
use crate::app::downlink::Downlink;
use crate::app::store::{Restored, Store};
use crate::app::{unix_ms, App};
use crate::config::Config;

/// Events a shard may have in flight to the application core before its uplink waits (the
/// shard's own outbox holds the rest). glommio allocates and touches every slot when the
/// channel is made: 72 bytes each, so 16 Ki slots were 1.2 MiB resident per shard from the
/// start; 4 Ki still lets a shard hand over a burst of 4,096 joins at once.
const EVENT_CHANNEL: usize = 4 * 1024;
/// Commands the application core may have in flight to one shard before its downlink waits.
const COMMAND_CHANNEL: usize = 4 * 1024;
/// glommio's registered I/O memory per executor. glommio allocates it at start and registers
/// it with its rings, which pins it: 10 MiB of resident memory per executor by default, 30 MiB
/// for two shards and the application core, whatever the load. Only glommio's own DMA
/// buffers come from it (its file reads, and its socket writes when a viewer's socket is
/// full); when it is used up they come from the heap instead, the same bytes minus the
/// registration, which only fixed-buffer file I/O uses (ovation's sockets do not). The
/// smallest glommio accepts.
const IO_MEMORY: usize = 64 * 1024;

/// A running server: its bound addresses and its threads.
pub struct Server {
    pub viewer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Where broadcasters publish over RTMP.
    pub rtmp_addr: SocketAddr,
    pub shards: usize,
    /// Whether reuseport CPU steering is attached.
    pub steering: bool,
    pub api_token: String,
    /// The TLS viewer listener's address, when `tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// The operator API's TLS listener, when `api_tls_listen` is set.
    pub api_tls_addr: Option<SocketAddr>,
    /// The RTMPS ingest listener, when `rtmps_listen` is set.
    pub rtmps_addr: Option<SocketAddr>,
    /// The certificate of the TLS listeners: `reload` it (SIGHUP) to change what new
    /// handshakes get.
    pub certs: Option<Arc<netstack::tls::CertStore>>,
    /// This edge's id in the cluster (generated when `edge_id` is empty).
    pub edge_id: String,
    /// Where HAProxy's agent-check is answered, when `agent_listen` is set.
    pub agent_addr: Option<SocketAddr>,
    /// What the agent reports; `ready` is set once every shard listens.
    pub load: Arc<cluster::agent::LoadSource>,
    threads: Vec<ExecutorJoinHandle<()>>,
}

impl Server {
    /// Binds everything and starts the executors. The server stops when a byte (or EOF)
    /// arrives on `shutdown`: `main` wires SIGTERM and SIGINT to it.
    pub fn start(
        mut config: Config,
        api_token: String,
        shutdown: StdUnixStream,
    ) -> anyhow::Result<Server> {
        if config.edge_id.is_empty() {
            config.edge_id = format!("edge-{}", crate::app::random_hex(8));
        }
        let cpus: Vec<usize> = {
            let mut v: Vec<usize> = CpuSet::online()
                .map_err(|e| anyhow::anyhow!("reading the online CPUs: {e}"))?
                .into_iter()
                .map(|l| l.cpu)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        anyhow::ensure!(!cpus.is_empty(), "no online CPU found");
        let shards = if config.shards == 0 {
            cpus.len()
        } else {
            config.shards
        };
        crate::limits::check_host_limits(config.max_connections as u64, shards).log();
        let shard_cpus: Vec<usize> = (0..shards).map(|i| cpus[i % cpus.len()]).collect();

        let listeners =
            netstack::sys::reuseport_listeners(config.listen, shards, config.backlog)
                .with_context(|| format!("binding viewer listeners on {}", config.listen))?;
        let viewer_addr = listeners[0].local_addr()?;
        let steering = config.cpu_steering && shards <= cpus.len() && {
            match netstack::sys::attach_cpu_steering(&listeners[0], &shard_cpus) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "reuseport CPU steering unavailable; falling back to reuseport hashing"
                    );
                    false
                }
            }
        };

        let certs = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                netstack::tls::CertStore::open(cert, key).context("loading the TLS certificate")?,
            ),
            _ => None,
        };
        let tls_config = match &certs {
            Some(store) => Some(store.server_config()?),
            None => None,
        };
        let mut tls_listeners: Vec<Option<std::net::TcpListener>> =
            match (config.tls_listen, &tls_config) {
                (Some(addr), Some(_)) => {
                    netstack::sys::reuseport_listeners(addr, shards, config.backlog)
                        .with_context(|| format!("binding TLS viewer listeners on {addr}"))?
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                _ => (0..shards).map(|_| None).collect(),
            };
        let tls_addr = match tls_listeners.first() {
            Some(Some(l)) => Some(l.local_addr()?),
            _ => None,
        };

        // Startup reads (and the boot counter) on this thread; later writes go to the store's
        // own writer thread.
        let (store, restored) = crate::app::store::Store::open(&config.data_dir)
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
        if !restored.interrupted.is_empty() {
            tracing::warn!(
                polls = ?restored.interrupted,
                "polls left open by the last run are stored as interrupted with their checkpointed counts"
            );
        }
        let api_listener = std::net::TcpListener::bind(config.api_listen)
            .with_context(|| format!("binding the operator API on {}", config.api_listen))?;
        api_listener.set_nonblocking(true)?;
        let api_addr = api_listener.local_addr()?;
        let rtmp_listener = std::net::TcpListener::bind(config.rtmp_listen).with_context(|| {
            format!("binding the RTMP ingest listener on {}", config.rtmp_listen)
        })?;
        rtmp_listener.set_nonblocking(true)?;
        let rtmp_addr = rtmp_listener.local_addr()?;
        let api_tls = match (config.api_tls_listen, &tls_config) {
            (Some(addr), Some(tls)) => {
                let l = std::net::TcpListener::bind(addr).with_context(|| {
                    format!("binding the operator API's TLS listener on {addr}")
                })?;
                l.set_nonblocking(true)?;
                Some((l, tls.clone()))
            }
            _ => None,
        };
        let api_tls_addr = match &api_tls {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let rtmps = match (config.rtmps_listen, &tls_config) {
            (Some(addr), Some(tls)) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the RTMPS ingest listener on {addr}"))?;
                l.set_nonblocking(true)?;
                Some((l, tls.clone()))
            }
            _ => None,
        };
        let rtmps_addr = match &rtmps {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };

        remediation_rules(&config)?;
        let agent = match config.agent_listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("binding the agent-check listener on {addr}"))?,
            ),
            None => None,
        };
        let agent_addr = match &agent {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let mut config = config;
        // The shards and the application core share the key of signed playlist URLs.
        if config.session_key.is_none() {
            config.session_key = Some(crate::app::random_hex(32));
        }
        let config = Arc::new(config);
        let shard_config = Arc::new(ShardConfig {
            id_epoch: id_epoch(&config, restored.boot),
            geo: open_geo(&config.geo_db),
            closed_polls: Arc::new(restored.closed_poll_ids(crate::app::store::KNOWN_CLOSED_POLLS)),
            identity: config.identity_verifier()?.map(Arc::new),
            ..config.shard_config()
        });
        let open_total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let load = Arc::new(cluster::agent::LoadSource {
            connections: open_total.clone(),
            capacity: config.max_connections,
            ..Default::default()
        });
        if let Some(listener) = agent {
            cluster::agent::serve(listener, load.clone()).context("starting the agent-check")?;
        }
        let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
        let mut uplinks: Vec<SharedReceiver<ShardEvent>> = Vec::new();
        // Each shard's command channel, with the CPU its thread is pinned to.
        let mut downlinks: Vec<(SharedSender<ShardCommand>, usize)> = Vec::new();
        let mut threads = Vec::new();

        let stealing = shards::accept_neighbours(&listeners, config.accept_stealing)
            .context("duplicating a listener for its neighbour shard")?;
        for (index, (listener, stealing)) in listeners.into_iter().zip(stealing).enumerate() {
            let (ev_tx, ev_rx) = shared_channel::new_bounded(EVENT_CHANNEL);
            let (cmd_tx, cmd_rx) = shared_channel::new_bounded(COMMAND_CHANNEL);
            uplinks.push(ev_rx);
            downlinks.push((cmd_tx, shard_cpus[index]));
            let spec = ShardSpec {
                index,
                listener,
                config: shard_config.clone(),
                stats: stats[index].clone(),
                events: ev_tx,
                commands: cmd_rx,
                open_total: open_total.clone(),
                tls: tls_listeners[index].take().zip(tls_config.clone()),
                stealing,
                sched: shards::ShardSched::parse(&config.shard_sched)
                    .unwrap_or(shards::ShardSched::Storms),
            };
            let handle = LocalExecutorBuilder::new(Placement::Fixed(shard_cpus[index]))
                .name(&format!("shard-{index}"))
                .ring_depth(config.ring_depth)
                .io_memory(IO_MEMORY)
                .spawn(move || shards::run(spec))
                .map_err(|e| anyhow::anyhow!("starting shard {index}: {e}"))?;
            threads.push(handle);
        }

        // The application core gets a core of its own when one is left over.
        let placement = match cpus.get(shards) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let app_config = config.clone();
        let recordings_changes = shard_config.recordings_changes.clone();
        let token = api_token.clone();
        let app_load = load.clone();
        let app = LocalExecutorBuilder::new(placement)
            .name("app-core")
            .io_memory(IO_MEMORY)
            .spawn(move || {
                app_core(
                    app_config,
                    (store, restored),
                    stats,
                    uplinks,
                    downlinks,
                    Listeners {
                        api: api_listener,
                        rtmp: rtmp_listener,
                        rtmps,
                        viewer_addr,
                        api_tls,
                    },
                    token,
                    shutdown,
                    app_load,
                    recordings_changes,
                )
            })
            .map_err(|e| anyhow::anyhow!("starting the application core: {e}"))?;
        threads.push(app);
        // Every shard's listener is bound (the sockets exist before the shards start, so
        // connections queue in their backlogs from now on).
        load.ready.store(true, std::sync::atomic::Ordering::Relaxed);

        Ok(Server {
            edge_id: config.edge_id.clone(),
            agent_addr,
            load,
            viewer_addr,
            api_addr,
            rtmp_addr,
            shards,
            steering,
            api_token,
            tls_addr,
            api_tls_addr,
            rtmps_addr,
            certs,
            threads,
        })
    }

    /// Waits for every executor to finish.
    pub fn join(self) -> anyhow::Result<()> {
        for t in self.threads {
            t.join()
                .map_err(|e| anyhow::anyhow!("executor failed: {e}"))?;
        }
        Ok(())
    }
}

/// The application core's listeners (bound before it starts, so errors surface at startup).
struct Listeners {
    api: std::net::TcpListener,
    /// The API's TLS listener and its certificate store, when `api_tls_listen` is set.
    api_tls: Option<(std::net::TcpListener, Arc<netstack::tls::ServerConfig>)>,
    rtmp: std::net::TcpListener,
    /// The RTMPS listener and its certificate store, when `rtmps_listen` is set.
    rtmps: Option<(std::net::TcpListener, Arc<netstack::tls::ServerConfig>)>,
    viewer_addr: SocketAddr,
}

#[allow(clippy::too_many_arguments)]
async fn app_core(
    config: Arc<Config>,
    (store, restored): (Store, Restored),
    stats: Vec<Arc<ShardStats>>,
    uplinks: Vec<SharedReceiver<ShardEvent>>,
    downlinks: Vec<(SharedSender<ShardCommand>, usize)>,
    listeners: Listeners,
    api_token: String,
    shutdown: StdUnixStream,
    load: Arc<cluster::agent::LoadSource>,
    recordings_changes: shards::hls_file_cache::Changes,
) {
    let Listeners {
        api: api_listener,
        api_tls,
        rtmp: rtmp_listener,
        rtmps,
        viewer_addr,
    } = listeners;
    let locals: Vec<Rc<Downlink>> = downlinks.iter().map(|_| Rc::default()).collect();
    let app = Rc::new(RefCell::new(App::new(
        config.clone(),
        stats,
        locals.clone(),
        unix_ms(),
    )));
    if let Ok(rtmp_addr) = rtmp_listener.local_addr() {
        app.borrow_mut().set_addresses(viewer_addr, rtmp_addr);
    }
    if let Ok(api_addr) = api_listener.local_addr() {
        app.borrow_mut().set_api_addr(api_addr);
    }
    if config.record {
        let root = config.data_dir.join("recordings");
        let target_secs = config.hls_segment_ms.div_ceil(1000);
        match crate::recorder::Recorder::start(root, target_secs, recordings_changes) {
            Ok(r) => app.borrow_mut().set_recorder(r),
            Err(e) => {
                tracing::error!(error = %e, "recording is off: the recordings directory could not be opened")
            }
        }
    }
    app.borrow_mut().restore(store, &restored, unix_ms());
    for rule in remediation_rules(&config).unwrap_or_default() {
        if let Err(e) = app.borrow_mut().add_rule(rule) {
            tracing::error!(error = %e, "remediation rule not loaded");
        }
    }
    app.borrow_mut().restore_api_rules(&restored.settings);

    let mut cluster_tasks = join_cluster(&app, &config);
    cluster_tasks.extend(watchdog());

    let mut links = Vec::new();
    for (i, (up, (down, cpu))) in uplinks.into_iter().zip(downlinks).enumerate() {
        let app = app.clone();
        let local = locals[i].clone();
        links.push(glommio::spawn_local(async move {
            let (up, down) = futures_lite::future::zip(up.connect(), down.connect()).await;
            let pump = async {
                while let Some(event) = up.recv().await {
                    app.borrow_mut().on_event(event, unix_ms());
                }
            };
            futures_lite::future::zip(pump, local.run(down, Some(cpu))).await;
        }));
    }

    // Coalesced live results and poll deadlines at the results interval while a poll is open;
    // otherwise only resume expiry, once a second: an idle server does not wake for nothing.
    let ticker = {
        let app = app.clone();
        let every = Duration::from_millis(config.results_interval_ms);
        let opened = app.borrow().poll_opened();
        glommio::spawn_local(async move {
            loop {
                let busy = app.borrow().has_open_polls();
                if busy {
                    glommio::timer::sleep(every).await;
                } else {
                    let idle = glommio::timer::sleep(Duration::from_secs(1));
                    futures_lite::future::or(opened.wait(), idle).await;
                }
                app.borrow_mut().tick(unix_ms());
            }
        })
    };
    let api = glommio::spawn_local(api::serve(
        netstack::sys::from_owned_fd(api_listener),
        api_tls.map(|(l, c)| (netstack::sys::from_owned_fd(l), c)),
        app.clone(),
        Rc::from(api_token.as_str()),
    ));

    let rebroadcasts = glommio::spawn_local(crate::rebroadcast::serve(app.clone()));
    // Streams live on another edge, pulled from it (a single edge never queues one).
    let relays = glommio::spawn_local(crate::relay::serve(
        app.clone(),
        Rc::from(api_token.as_str()),
    ));
    let vast = glommio::spawn_local(crate::vast::serve(app.clone()));
    let ingest = glommio::spawn_local(crate::ingest::serve(
        netstack::sys::from_owned_fd(rtmp_listener),
        rtmps.map(|(l, c)| (netstack::sys::from_owned_fd(l), c)),
        app.clone(),
        crate::ingest::IngestLimits {
            max_connections: config.rtmp_max_connections,
            handshake_timeout: Duration::from_millis(config.rtmp_handshake_timeout_ms),
            idle_timeout: Duration::from_millis(config.rtmp_idle_timeout_ms),
        },
    ));

    let mut signals: glommio::net::UnixStream = netstack::sys::from_owned_fd(shutdown);
    let mut byte = [0u8; 1];
    let _ = signals.read(&mut byte).await;
    tracing::info!("shutting down: closing viewers with 1001");
    load.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    drop((api, ticker, ingest, rebroadcasts, vast, relays));
    graceful_shutdown(&app, Duration::from_millis(config.shutdown_grace_ms)).await;
    for link in links {
        link.await;
    }
    drop(cluster_tasks);
    // Broadcaster sessions write their queued results and a 1001 close frame (bounded), then
    // the store's queue is committed.
    let sinks = app.borrow().broadcaster_sinks();
    let all_done = async {
        for sink in &sinks {
            sink.done().await;
        }
    };
    futures_lite::future::or(all_done, glommio::timer::sleep(BROADCASTER_CLOSE)).await;
    app.borrow_mut().close_store();
}

/// systemd's watchdog (`WatchdogSec=`): pinged from the application core's executor at half
/// the interval, so a stalled core stops the pings and systemd restarts the service.
fn watchdog() -> Option<glommio::Task<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let every = Duration::from_micros(usec / 2);
    Some(glommio::spawn_local(async move {
        loop {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            glommio::timer::sleep(every).await;
        }
    }))
}

/// The viewer-id epoch: the boot counter; in a cluster, 12 bits of a hash of the edge id
/// above 10 bits of the boot counter, so edges mint distinct ids (a viewer id names one
/// viewer on every edge's API) and restarts of an edge still mint new ones.
fn id_epoch(config: &Config, boot: u32) -> u32 {
    if config.cluster_nats_url.is_none() {
        return boot;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = config.edge_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    ((hash & 0xfff) << 10) | (boot & 0x3ff)
}

/// Joins the cluster when `cluster_nats_url` is set: the bus thread, one task handing its
/// events to the core, one announcing this edge. A single edge starts none of them.
fn join_cluster(app: &Rc<RefCell<App>>, config: &Config) -> Vec<glommio::Task<()>> {
    let Some(url) = config.cluster_nats_url.as_deref() else {
        return Vec::new();
    };
    match cluster::nats::NatsBus::start(url, &config.edge_id) {
        Ok(bus) => app.borrow_mut().set_bus(Box::new(bus)),
        Err(e) => {
            tracing::error!(error = %e, "cluster bus not started: serving as a single edge");
            return Vec::new();
        }
    }
    let events = app.borrow().bus_events();
    let pump = {
        let app = app.clone();
        glommio::spawn_local(async move {
            while let Ok(event) = events.recv_async().await {
                app.borrow_mut().on_bus(event, unix_ms());
            }
        })
    };
    let announce = {
        let app = app.clone();
        let every = Duration::from_millis(app.borrow().announce_interval_ms());
        glommio::spawn_local(async move {
            loop {
                app.borrow_mut().cluster_tick(unix_ms());
                glommio::timer::sleep(every).await;
            }
        })
    };
    vec![pump, announce]
}

/// How long broadcaster sessions get to write their close frames once the shards are done.
const BROADCASTER_CLOSE: Duration = Duration::from_secs(2);

/// The shutdown handshake, bounded by `grace`: open polls are closed, and the shards are told
/// to stop only once every final tally is in and every cast (the final results) is written,
/// so viewers in a poll's audience get `final:true` results before their 1001 close.
/// Broadcasters get the final results and then their own 1001 close frame.
async fn graceful_shutdown(app: &RefCell<App>, grace: Duration) {
    let start = Instant::now();
    app.borrow_mut().close_open_polls(unix_ms());
    let progress = app.borrow().progress();
    loop {
        if app.borrow().shutdown_settled() {
            break;
        }
        let Some(left) = grace.checked_sub(start.elapsed()) else {
            tracing::warn!("shutdown grace ran out before every final poll count was sent");
            break;
        };
        futures_lite::future::or(progress.wait(), glommio::timer::sleep(left)).await;
    }
    let mut app = app.borrow_mut();
    app.close_broadcasters();
    app.shutdown_shards(grace.saturating_sub(start.elapsed()));
}

/// The country database at `path` (empty: none). A missing or unreadable one logs one
/// warning and leaves every viewer's country empty; it never stops the server.
fn open_geo(path: &std::path::Path) -> Option<Arc<shards::geo::GeoDb>> {
    if path.as_os_str().is_empty() {
        return None;
    }
    match shards::geo::GeoDb::open(path) {
        Ok(db) => {
            tracing::info!(path = %path.display(), "geolocation database loaded");
            Some(Arc::new(db))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no geolocation: viewers' country stays empty (see README, geolocation)");
            None
        }
    }
}

/// The configured remediation rules, each checked (a bad one stops the start, named).
fn remediation_rules(config: &Config) -> anyhow::Result<Vec<crate::app::remediation::RuleSpec>> {
    let mut rules: Vec<crate::app::remediation::RuleSpec> = Vec::new();
    for (i, value) in config.remediation_rules.iter().enumerate() {
        let rule: crate::app::remediation::RuleSpec = serde_json::from_value(value.clone())
            .with_context(|| format!("remediation_rules[{i}]"))?;
        rule.check(&config.telemetry_windows_s)
            .with_context(|| format!("remediation_rules[{i}]"))?;
        if rules.iter().any(|r| r.id == rule.id) {
            anyhow::bail!("remediation_rules[{i}]: duplicate id {:?}", rule.id);
        }
        rules.push(rule);
    }
    Ok(rules)
}
