//! `loadgen`: simulated viewers for ovation and the peer servers (see loadgen/README.md).
//!
//! `loadgen run ...` coordinates a run; `loadgen hls ...` plays a live HLS playlist with N
//! players; the hidden `loadgen worker` is what the coordinator
//! spawns for each share of the connections.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use ovation_loadgen::cli::{Cli, Command, RunArgs};
use ovation_loadgen::{coordinator, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Hls(args) => hls(&args),
        Command::Worker => worker::run_process(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hls(args: &ovation_loadgen::hls::HlsArgs) -> anyhow::Result<()> {
    worker::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the player runtime")?;
    let report = rt
        .block_on(ovation_loadgen::hls::run(args))
        .map_err(anyhow::Error::msg)?;
    let json = report.to_json();
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let plan = args.validate().map_err(anyhow::Error::msg)?;
    // The coordinator holds no viewer sockets, but --in-process workers share its table.
    worker::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the coordinator runtime")?;
    let report = rt.block_on(coordinator::run(&plan))?;
    if let Some(path) = &plan.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !plan.quiet {
        print!("{}", report.render());
    }
    Ok(())
}
