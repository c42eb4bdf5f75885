//! Analytics beyond Butler SOS (off by default): session and connection durations and concurrency, and an alarm
//! for Sense hosts that fell silent.
//!
//! - [`sessions`]: [`SessionTracker`] pairs Start/Stop session and Open/Close connection events;
//!   [`SessionAnalytics`] writes `user_session` duration points and `user_session_concurrent` gauges as InfluxDB
//!   line protocol. It implements [`crate::sink::Encoder`], so it runs as its own batched InfluxDB destination
//!   (same database as `user_events`) through `sink::delivery::worker::run`, with that worker's batching, retries and spool.
//! - [`silent_hosts`]: [`SilentHostAlarm`] raises one alarm when a known host sent nothing for `silent_after`, and
//!   one notification when it sends again. [`watch_hosts`] feeds it from a slab channel; [`log_alarm`] logs one
//!   line per notification.
//!
//! Both state machines are pure: no I/O, and every time is an event's `received_ns` or a `now_ns` passed in, so
//! their unit tests script exact timelines. Like a sink, this module depends on `event` and `sink`, never on
//! `reader`.

pub mod sessions;
pub mod silent_hosts;

use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::Receiver;
use tracing::{info, warn};

use crate::event::slab::Slab;
use crate::telemetry::escape::Escaped;

pub use sessions::{SessionAnalytics, SessionCounters, SessionSettings, SessionTracker};
pub use silent_hosts::{Alarm, AlarmKind, SilentHostAlarm};

/// Feeds every event's host and receive time to `alarm` until `rx` disconnects: a sink-like consumer for the
/// silent-host alarm. The lock is taken once per slab; the monitor thread shares `alarm` to call
/// [`SilentHostAlarm::check`].
pub fn watch_hosts(rx: Receiver<Slab>, alarm: Arc<Mutex<SilentHostAlarm>>) {
    for slab in rx.iter() {
        alarm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe_events(slab.events());
    }
}

/// Logs one notification: `Silent` at WARN, `Recovered` at INFO. Both messages contain the word the kind is named
/// by (`silent`, `recovered`) and the host as a field.
pub fn log_alarm(alarm: &Alarm) {
    let silent_for_s = alarm.silent_for.as_secs();
    match alarm.kind {
        AlarmKind::Silent => warn!(
            host = %Escaped(&alarm.host), silent_for_s, last_seen_ns = alarm.last_seen_ns,
            "a Sense host went silent: no user events from it for sense-ingest.silentHostAfter"
        ),
        AlarmKind::Recovered => info!(
            host = %Escaped(&alarm.host), silent_for_s,
            "a silent Sense host recovered: it sends user events again"
        ),
    }
}
