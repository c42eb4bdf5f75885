//! The `sense-ingest` binary: parse the command line, load the config, start the engine, wait for a signal.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use tracing::info;

use sense_ingest::config::{self, Config, LogLevel};
use sense_ingest::{appender, pipeline, telemetry};

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sense-ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Run { config, log_level } => {
            let cli_level = match log_level.as_deref() {
                Some(l) => Some(LogLevel::parse(l).with_context(|| {
                    format!("--log-level: expected one of error, warn, info, verbose, debug, silly, got {l:?}")
                })?),
                None => None,
            };
            let (cfg, not_implemented) = match &config {
                Some(path) => {
                    let loaded = config::load_file(path)
                        .map_err(|errors| anyhow::anyhow!("{} is not valid:\n{errors}", path.display()))?;
                    (loaded.config, loaded.not_implemented)
                }
                None => (Config::embedded_default(), Vec::new()),
            };
            telemetry::init(cli_level.unwrap_or(cfg.log_level));
            match &config {
                Some(path) => info!(config = %path.display(), "config loaded"),
                None => info!("no --config: embedded default (udp 0.0.0.0:9997, events printed as JSON lines)"),
            }
            for key in &not_implemented {
                info!(%key, "setting accepted but not implemented yet; it has no effect");
            }
            if !cfg.user_events.enable {
                bail!("Butler-SOS.userEvents.enable is false: there is nothing to receive");
            }
            let stop = Arc::new(AtomicBool::new(false));
            pipeline::shutdown::install_signal_handlers(&stop).context("installing signal handlers")?;
            pipeline::reload::watch_sighup(config.clone()).context("installing the SIGHUP handler")?;
            let engine = pipeline::start(&cfg, stop).context("starting the engine")?;
            let clean = engine.wait();
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        cli::Command::CheckConfig { config } => match config::load_file(&config) {
            Ok(loaded) => {
                println!("{}: valid", config.display());
                for key in loaded.not_implemented {
                    println!("note: {key} is accepted but not implemented yet");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                eprintln!("{errors}");
                Ok(ExitCode::FAILURE)
            }
        },
        cli::Command::Appender { host, port, output } => {
            if host.trim().is_empty() {
                bail!("--host: must not be empty");
            }
            let xml = appender::local_log_config(&host, port);
            match output {
                Some(path) => std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{xml}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
