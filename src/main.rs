//! The `ovation` binary: `ovation serve` runs the server.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ovation::config::{Config, Overrides};
use ovation::server::Server;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ovation: an edge server for live broadcasts. Viewers hold a push WebSocket beside their
/// media connection; ovation groups them by shared characteristics and reaches a whole group
/// with one command.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Every setting (addresses, shard count, limits, timeouts, API token, data \
                  directory) is a flag of `ovation serve` and a key of the TOML file given with \
                  --config: see `ovation serve --help`. Flags win over the file, the file over \
                  the embedded defaults; `ovation config` prints the result."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded defaults: viewers on 127.0.0.1:8080/v1/viewer, operator API on
    /// 127.0.0.1:8081).
    Serve(Overrides),
    /// Print the effective configuration as TOML and exit.
    Config(Overrides),
}

fn main() {
    // No transparent huge pages for this process. A 2 MiB page is resident in full as soon
    // as one byte of it is touched: with one mimalloc heap per thread that was 40 of an idle
    // server's 51 MiB (issue 18). mimalloc is built with `no_thp`, so it never asks for them
    // (the kernel's `madvise` mode); this covers hosts in THP mode `always`, for everything
    // mapped from here on. The cost is TLB reach on a large heap; the fan-out figures in
    // bench/RESULTS.md are taken with it off.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(o) => serve(&o),
        Command::Config(o) => Config::load(&o).and_then(|c| {
            let mut c = c;
            if c.api_token.is_some() {
                c.api_token = Some("<redacted>".into());
            }
            if c.jwt_hs256_secret.is_some() {
                c.jwt_hs256_secret = Some("<redacted>".into());
            }
            for t in &mut c.api_tokens {
                t.token = "<redacted>".into();
            }
            print!("{}", toml::to_string(&c)?);
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("ovation: {e:#}");
        std::process::exit(1);
    }
}

fn serve(o: &Overrides) -> anyhow::Result<()> {
    let config = Config::load(o)?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .context("bad log filter")?;
    // Colour codes only on a terminal: a log file or journald gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A thread that panicked would leave the others running half a server.
    ovation::panics::abort_on_panic();

    let token = match &config.api_token {
        Some(t) => t.clone(),
        None => generated_token(&config.data_dir)?,
    };

    // SIGTERM and SIGINT write a byte into this socket pair; the application core reads it.
    let (shutdown_rx, shutdown_tx) = UnixStream::pair().context("creating the signal pipe")?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, shutdown_tx.try_clone()?)
            .context("installing signal handlers")?;
    }

    let server = Server::start(config.clone(), token, shutdown_rx)?;
    // SIGHUP re-reads the TLS certificate and key: new handshakes get the new certificate,
    // open connections keep theirs. A bad file is logged and the old certificate stays.
    let mut hups = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    let certs = server.certs.clone();
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in hups.forever() {
                match &certs {
                    None => tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload"),
                    Some(store) => match store.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; keeping the old one"),
                    },
                }
            }
        })
        .context("starting the SIGHUP thread")?;
    tracing::info!(
        viewer = %server.viewer_addr,
        api = %server.api_addr,
        rtmp = %server.rtmp_addr,
        shards = server.shards,
        cpu_steering = server.steering,
        shard_sched = %config.shard_sched,
        "ovation serving"
    );
    // One machine-readable line on stdout for scripts and tests.
    let mut out = std::io::stdout().lock();
    let mut tls = server
        .tls_addr
        .map(|a| format!(" tls={a}"))
        .unwrap_or_default();
    if let Some(a) = server.api_tls_addr {
        tls.push_str(&format!(" api_tls={a}"));
    }
    if let Some(a) = server.rtmps_addr {
        tls.push_str(&format!(" rtmps={a}"));
    }
    if let Some(a) = server.agent_addr {
        tls.push_str(&format!(" agent={a}"));
    }
    tls.push_str(&format!(" edge={}", server.edge_id));
    writeln!(
        out,
        "ovation ready viewer={} api={} shards={} steering={} rtmp={}{tls}",
        server.viewer_addr, server.api_addr, server.shards, server.steering, server.rtmp_addr
    )?;
    out.flush()?;
    drop(out);
    // systemd (Type=notify): every listener is bound and every shard started. Outside
    // systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not tell systemd we are ready");
    }
    server.join()?;
    tracing::info!("ovation stopped");
    Ok(())
}

/// A fresh random token, written to `<data_dir>/api-token` (mode 0600) for the operator.
fn generated_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("reading random bytes for the API token: {e}"))?;
    let token = protocol::hex(&bytes);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join("api-token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    tracing::warn!(
        path = %path.display(),
        "no --api-token or OVATION_API_TOKEN set: generated a token and wrote it to this file"
    );
    Ok(token)
}
