//! Prints each event as one JSON line (Butler SOS's MQTT payload) on stdout: what `run` without a config does, so
//! a first run shows something.
//!
//! An event counts as delivered only once its whole line was written to the stdout file descriptor. Output
//! therefore bypasses `std::io::stdout()`'s own buffer (which would accept lines it may never write out): each slab
//! becomes one buffer, written with `write(2)` on a duplicate of fd 1 until it is all out or the write fails. On a
//! failure (stdout closed, a pipe whose reader has gone, a full disk behind a redirect) the lines that were
//! completely written are delivered, the rest of the slab and every later event are dropped, and one ERROR says
//! so.

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use tracing::error;

use crate::event::slab::Slab;
use crate::sink::delivery::retune::Retune;
use crate::sink::json::EventJson;
use crate::telemetry::metrics::{HostTally, SinkCounters, SinkOutcome};

/// Writes every event of every slab as a JSON line until `rx` disconnects, one write per slab; delivered and
/// dropped events are counted, in total and per sender, once per slab.
pub fn run(
    rx: Receiver<Slab>,
    mut json: EventJson,
    counters: Arc<SinkCounters>,
    retune: Option<Arc<Retune<EventJson>>>,
) {
    let mut out = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Some(File::from(fd)),
        Err(e) => {
            error!(error = %e, "stdout is gone; events are no longer printed");
            None
        }
    };
    let mut buf = Vec::with_capacity(64 << 10);
    // Per line of `buf`: where it ends, and the event's sender.
    let mut lines: Vec<(usize, IpAddr)> = Vec::new();
    let (mut delivered, mut dropped) = (HostTally::default(), HostTally::default());
    for slab in rx.iter() {
        if let Some(update) = retune.as_ref().and_then(|r| r.take()) {
            json = update.encoder.unwrap_or(json);
        }
        buf.clear();
        lines.clear();
        if out.is_some() {
            for ev in slab.events() {
                json.write(ev, &mut buf);
                buf.push(b'\n');
                lines.push((buf.len(), ev.peer.ip().to_canonical()));
            }
        } else {
            lines.extend(slab.events().iter().map(|ev| (usize::MAX, ev.peer.ip().to_canonical())));
        }
        drop(slab);
        let written = match out.as_mut().map(|f| write_out(f, &buf)) {
            Some(Err((written, e))) => {
                error!(error = %e, "stdout is gone; events are no longer printed");
                out = None;
                written
            }
            Some(Ok(())) => buf.len(),
            None => 0,
        };
        let mut n_delivered = 0;
        for &(end, sender) in &lines {
            if end <= written {
                delivered.add(sender, 1);
                n_delivered += 1;
            } else {
                dropped.add(sender, 1);
            }
        }
        counters.delivered.add(n_delivered);
        counters.dropped.add(lines.len() as u64 - n_delivered);
        counters.hosts.add(SinkOutcome::Delivered, &delivered);
        counters.hosts.add(SinkOutcome::Dropped, &dropped);
        delivered.clear();
        dropped.clear();
    }
}

/// Writes all of `buf`; on failure, how many bytes were written before it.
fn write_out(out: &mut File, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < buf.len() {
        match out.write(&buf[written..]) {
            Ok(0) => return Err((written, io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_fails_part_way_reports_what_was_written() {
        let (reader, writer) = io::pipe().unwrap();
        drop(reader);
        let mut out = File::from(std::os::fd::OwnedFd::from(writer));
        let (written, e) = write_out(&mut out, b"{}\n").unwrap_err();
        assert_eq!(written, 0);
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
