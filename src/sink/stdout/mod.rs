//! Prints each event as one JSON line (Butler SOS's MQTT payload) on stdout: what `run` without a config does, so
//! a first run shows something.

use std::io::Write;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::error;

use crate::event::slab::Slab;
use crate::sink::json::EventJson;
use crate::telemetry::metrics::SinkCounters;

/// Writes every event of every slab as a JSON line until `rx` disconnects. Output is flushed once per slab.
pub fn run(rx: Receiver<Slab>, json: EventJson, counters: Arc<SinkCounters>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut line = Vec::with_capacity(4096);
    let mut broken = false;
    for slab in rx.iter() {
        for ev in slab.events() {
            if broken {
                counters.dropped.inc();
                continue;
            }
            line.clear();
            json.write(ev, &mut line);
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                error!(error = %e, "stdout is gone; events are no longer printed");
                broken = true;
                counters.dropped.add(1);
                continue;
            }
            counters.delivered.inc();
        }
        if !broken && out.flush().is_err() {
            broken = true;
        }
    }
    let _ = out.flush();
}
