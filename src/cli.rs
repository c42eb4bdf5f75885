//! Command line (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// sense-ingest: a drop-in, lossless, fast receiver for Qlik Sense user events (Butler SOS compatible).
#[derive(Debug, Parser)]
#[command(name = "sense-ingest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive user events and deliver them. Without --config: listen on 0.0.0.0:9997 and print each event as a
    /// JSON line on stdout.
    Run {
        /// The Butler SOS YAML config file (plus an optional `sense-ingest:` section). Repeatable: later files
        /// override earlier ones (mappings merge key by key; lists and values replace).
        #[arg(long, short, visible_alias = "configfile")]
        config: Vec<PathBuf>,
        /// Log level (error, warn, info, verbose, debug, silly); overrides Butler-SOS.logLevel.
        #[arg(long)]
        log_level: Option<String>,
        /// Log line format on stderr and in log files: text or json; overrides sense-ingest.logFormat.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Validate config files exactly as `run` does: exit 0 when valid, 1 with every error (and its file and key
    /// path) when not.
    CheckConfig {
        /// The config file; repeatable, like `run --config`.
        #[arg(long, short, visible_alias = "configfile", required = true)]
        config: Vec<PathBuf>,
    },
    /// Write the Qlik Sense proxy's LocalLogConfig.xml that sends user events to this receiver.
    Appender {
        /// Host name or IP address of the machine running sense-ingest, as the Sense nodes reach it.
        #[arg(long)]
        host: String,
        /// UDP port sense-ingest listens on (1-65535).
        #[arg(long, default_value_t = 9997, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}
