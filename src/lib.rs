//! sense-ingest: a drop-in, lossless and fast replacement for Butler SOS's Qlik Sense user-event pipeline.
//!
//! Qlik Sense's proxy sends each user event (session start/stop, connection open/close) as one UDP datagram
//! through a Log4Net appender. sense-ingest receives them on per-core readers, parses them with Butler SOS's exact
//! rules, and delivers them in batches to the destinations a Butler SOS config file names, with the same schema.
//!
//! # Layout
//! - [`config`]: the Butler SOS YAML files (and our `sense-ingest:` section): layered, `${VAR}` values
//!   ([`config::layers`]), validated once into typed structs.
//! - [`event`]: the one [`event::Event`] type, the recycled [`event::slab::Slab`]s that carry events, and the
//!   channel that hands them from readers to destinations ([`event::handover`], whose doorbell lets a destination
//!   with an open batch sleep until it is due).
//! - [`parse`]: datagram bytes to `Event`; memchr, no I/O, no allocation.
//! - [`enrich`]: user-agent facts (Bowser-compatible, cached per reader) and app names.
//! - [`reader`]: UDP sockets (io_uring multishot or recvmmsg) → parse → slab → channels. Knows no sink. The
//!   rules a SIGHUP may change (excluded users, allowed sources, rate limit) are [`reader::rules`]; which backend
//!   runs, and the fallback, is [`reader::backend`].
//! - [`sink`]: destinations (InfluxDB, New Relic, MQTT, stdout). Each knows events and its wire format, nothing of
//!   UDP; what a reload changes in a running one is [`sink::delivery::retune`].
//! - [`pipeline`]: the only module that knows readers *and* sinks: the list of enabled destinations
//!   ([`pipeline::destinations`], the one place to add one), builds, wires, runs, shuts down, answers SIGHUP
//!   ([`pipeline::reload`]), watches ([`pipeline::monitor`]); writes Butler SOS's own InfluxDB metrics (event
//!   counts, queue metrics), which read both sides; takes the port and spool locks that make one engine the only
//!   owner of its ports and spool ([`pipeline::ownership`]).
//! - [`telemetry`]: logging setup (Butler SOS level names) and the escaping of network text in logs, the counters
//!   every loss path bumps, Butler SOS's event counts, `/metrics`, `/live`, `/ready` (hyper, on a thread of its
//!   own).
//! - [`stop`]: the stop request (SIGTERM/SIGINT) as a flag and a descriptor idle threads sleep on, so nothing
//!   wakes up periodically to notice a shutdown.
//! - [`appender`]: the Qlik Sense proxy `LocalLogConfig.xml` for a receiver.
//! - [`analytics`]: beyond Butler SOS, off by default: session/connection durations and concurrency, silent hosts.
//! - `testing` (hidden): test support shared by the unit tests, the integration tests and the fuzz targets.
//!
//! Dependencies point one way: `parse` → `event`; `reader` → `parse`, `enrich`, `event`; `sink` → `event`;
//! `pipeline` → everything. `config` is plain data.

// Every public item says what it is for; `cargo doc` stays warning-free (scripts/test.sh checks both).
#![warn(missing_docs)]

pub mod analytics;
pub mod appender;
pub mod config;
pub mod enrich;
pub mod event;
pub mod parse;
pub mod pipeline;
pub mod reader;
pub mod sink;
pub mod stop;
pub mod telemetry;

#[doc(hidden)]
pub mod testing;
