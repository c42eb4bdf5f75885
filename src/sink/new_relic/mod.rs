//! The New Relic destination: Butler SOS's `qs_userEvent` through the Event API, batched, gzip, per account.
//!
//! - [`encode`]: one event as one JSON object item (`{...},`), attribute for attribute as Butler SOS (pure).
//! - [`client`]: the HTTP transport for one account (URL, headers, gzip, the 1 MB limit, status handling).
//! - [`scramble`]: SHAKE256 8-byte hex of user ids (`sendToNewRelic.scramble`).
//!
//! # One worker per account
//! Each account in `userEvents.sendToNewRelic.destinationAccount` is its own sink, named `new_relic:<account name>`:
//! its own channel, its own [`worker::run`](crate::sink::delivery::worker::run) thread, [`NewRelicEncoder`] and
//! [`NewRelicTransport`]. Accounts are independent: a wrong key (403, final: the account's events are counted as
//! dropped) or an outage (retried with backoff) on one account never blocks or delays another, and each account
//! has its own counters. Wiring, per account:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sense_ingest::config::Config;
//! # use sense_ingest::sink::new_relic::{self, NewRelicEncoder, NewRelicTransport};
//! # use sense_ingest::sink::delivery::worker::{self, WorkerSettings};
//! # use sense_ingest::telemetry::metrics::SinkCounters;
//! # fn wire(config: &Config, rx: crossbeam_channel::Receiver<sense_ingest::event::slab::Slab>) {
//! let routing = &config.user_events.send_to_new_relic;
//! for account in &routing.accounts {
//!     let transport = NewRelicTransport::new(&config.new_relic, account).expect("valid config");
//!     let encoder = NewRelicEncoder::new(&config.user_events.tags, routing.scramble);
//!     let mut batch = config.engine.batch;
//!     // Keep batches under the Event API's 1 MB so the transport's local 413 split stays the exception.
//!     batch.max_bytes = batch.max_bytes.min(new_relic::max_body_bytes() - 64 * 1024);
//!     // The engine also gives each account a spool (see `pipeline::start`); this sketch keeps a memory queue.
//!     let name = format!("new_relic:{}", account.name);
//!     let settings = WorkerSettings::in_memory(&name, batch, config.engine.retry);
//!     let counters = Arc::new(SinkCounters::default());
//! #   let rx = rx.clone();
//!     std::thread::spawn(move || worker::run(settings, rx, encoder, transport, counters));
//! }
//! # }
//! ```
//!
//! # Where this differs from Butler SOS (fixtures/README.md, last section)
//! | Butler SOS | sense-ingest |
//! |---|---|
//! | one POST per event per account, body one JSON object | one POST per batch per account, body a JSON array of the same objects |
//! | no compression | `Content-Encoding: gzip` (New Relic asks for it) |
//! | accounts in sequence; an error on one skips the rest for that event | accounts independent (own worker each) |
//! | no retry; every failure loses the event silently | 408/429/5xx/connection errors retried with backoff (429: `Retry-After`); 413 and bodies over 1 MB split; other 4xx final, logged once per batch and counted as dropped |
//! | `timestamp` = processing time | `timestamp` = receive time (ms) |
//! | `User-Agent: axios/<version>` | `User-Agent: sense-ingest/<version>` |
//! | insert keys printed at debug level | the key is only ever in the `Api-Key` header |
//!
//! The event objects themselves (attribute names, order, values, scrambling, tag overrides) are byte for byte
//! Butler SOS's; see [`encode`].

pub mod client;
pub mod encode;
pub mod scramble;

pub use client::{max_body_bytes, NewRelicTransport, MAX_BODY_BYTES};
pub use encode::{NewRelicEncoder, EVENT_TYPE};
