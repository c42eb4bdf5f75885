//! Prints each event as one JSON line (Butler SOS's MQTT payload) on stdout: what `run` without a config does, so
//! a first run shows something.

use std::io::Write;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::error;

use crate::event::slab::Slab;
use crate::sink::json::EventJson;
use crate::telemetry::metrics::{HostTally, SinkCounters, SinkOutcome};

/// Writes every event of every slab as a JSON line until `rx` disconnects. Output is flushed once per slab;
/// delivered and dropped events are counted per sender once per slab.
pub fn run(rx: Receiver<Slab>, json: EventJson, counters: Arc<SinkCounters>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut line = Vec::with_capacity(4096);
    let mut broken = false;
    let (mut delivered, mut dropped) = (HostTally::default(), HostTally::default());
    for slab in rx.iter() {
        for ev in slab.events() {
            let sender = ev.peer.ip().to_canonical();
            if broken {
                counters.dropped.inc();
                dropped.add(sender, 1);
                continue;
            }
            line.clear();
            json.write(ev, &mut line);
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                error!(error = %e, "stdout is gone; events are no longer printed");
                broken = true;
                counters.dropped.add(1);
                dropped.add(sender, 1);
                continue;
            }
            counters.delivered.inc();
            delivered.add(sender, 1);
        }
        counters.hosts.add(SinkOutcome::Delivered, &delivered);
        counters.hosts.add(SinkOutcome::Dropped, &dropped);
        delivered.clear();
        dropped.clear();
        if !broken && out.flush().is_err() {
            broken = true;
        }
    }
    let _ = out.flush();
}
