//! The `sense-ingest` binary: parse the command line, load the config, start the engine, wait for a signal.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use tracing::{info, warn};

use sense_ingest::config::{self, Config, LogFormat, LogLevel};
use sense_ingest::reader::rules::{LiveRules, Rules};
use sense_ingest::stop::StopSignal;
use sense_ingest::{appender, pipeline, telemetry};

mod cli;

/// Exit status of `run` and `check-config` for a config that is not valid (sysexits' `EX_CONFIG`, as Vector
/// uses), so a service manager can stop retrying (`RestartPreventExitStatus=78`).
const EXIT_CONFIG: u8 = 78;

// No global allocator of our own: the hot path does not allocate (tests/alloc.rs), and mimalloc measured no CPU
// difference but 2-3x the resident memory of the system allocator (BENCHMARKS.md, "Dependencies measured").

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
        cli::Command::Run {
            config,
            log_level,
            log_format,
        } => {
            let cli_level = match log_level.as_deref() {
                Some(l) => Some(LogLevel::parse(l).with_context(|| {
                    format!("--log-level: expected one of error, warn, info, verbose, debug, silly, got {l:?}")
                })?),
                None => None,
            };
            let (cfg, not_implemented, tree) = if config.is_empty() {
                (Config::embedded_default(), Vec::new(), serde_norway::Value::Null)
            } else {
                match config::load_files(&config) {
                    Ok(loaded) => (loaded.config, loaded.not_implemented, loaded.tree),
                    Err(errors) => {
                        eprintln!("sense-ingest: {} is not valid:\n{errors}", config::file_names(&config));
                        return Ok(ExitCode::from(EXIT_CONFIG));
                    }
                }
            };
            let format = log_format
                .as_deref()
                .and_then(LogFormat::parse)
                .unwrap_or(cfg.logging.format);
            let log_file = telemetry::init(
                cli_level.unwrap_or(cfg.log_level),
                format,
                cfg.logging.file_dir.as_deref(),
            );
            if let Err(why) = log_file {
                warn!("Butler-SOS.fileLogging: {why}; logging to stderr only (set Butler-SOS.logDirectory)");
            }
            if config.is_empty() {
                info!("no --config: embedded default (udp 0.0.0.0:9997, events printed as JSON lines)");
            } else {
                info!(config = %config::file_names(&config), "config loaded");
            }
            for line in cfg.describe() {
                info!("{line}");
            }
            for key in &not_implemented {
                info!(%key, "setting accepted but not implemented yet; it has no effect");
            }
            let stop = StopSignal::new().context("creating the stop signal")?;
            stop.register_signals().context("installing signal handlers")?;
            let rules = Arc::new(LiveRules::new(Rules::from_config(&cfg)));
            let parts = Arc::new(pipeline::reload::LiveDestinations::default());
            pipeline::reload::watch_sighup(pipeline::reload::Live {
                files: config.clone(),
                started: tree,
                rules: Arc::clone(&rules),
                cli_log_level: cli_level.is_some(),
                parts: Arc::clone(&parts),
            })
            .context("installing the SIGHUP handler")?;
            let engine = pipeline::start(&cfg, stop, rules, &parts).context("starting the engine")?;
            let clean = engine.wait();
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        cli::Command::CheckConfig { config } => match config::load_files(&config) {
            Ok(loaded) => {
                println!("{}: valid", config::file_names(&config));
                for line in loaded.config.describe() {
                    println!("{line}");
                }
                for key in loaded.not_implemented {
                    println!("note: {key} is accepted but not implemented yet");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config::file_names(&config), errors.0.len());
                eprintln!("{errors}");
                Ok(ExitCode::from(EXIT_CONFIG))
            }
        },
        cli::Command::Appender { host, port, output } => {
            // The proxy sends to exactly this text: an IP address or a hostname, nothing else.
            if host.parse::<std::net::IpAddr>().is_err() && !config::validate::is_hostname(&host) {
                bail!("--host: expected an IP address or a hostname, got {host:?}");
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
