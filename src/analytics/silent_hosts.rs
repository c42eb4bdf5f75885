//! An alarm for Sense hosts that stopped sending user events: the "events silently never arrive" complaint.
//!
//! [`SilentHostAlarm`] is pure and clock-injected: the data path calls [`SilentHostAlarm::observe`] with each
//! event's host and receive time, and the monitor calls [`SilentHostAlarm::check`] with the current time.
//!
//! # Semantics
//! - A host is *known* from its first event on; hosts never seen raise nothing (sense-ingest cannot know a node it
//!   never heard from, and a fresh start knows none).
//! - A known host that sent nothing for `silent_after` (`now − last event ≥ silent_after`) raises exactly one
//!   [`AlarmKind::Silent`] at the next `check`, and is then in the silent set ([`SilentHostAlarm::silent_hosts`]).
//! - Its next event takes it out of the silent set at once; the next `check` reports one [`AlarmKind::Recovered`]
//!   (then, should it have fallen silent again meanwhile, a new `Silent`). Only hosts that raised `Silent` recover.
//! - A host is the datagram's host field (the Sense node's name), not the sender address.
//! - At most `max_hosts` hosts are remembered (the host field comes from the network); events of further hosts are
//!   counted in [`SilentHostAlarm::untracked_events`] and raise nothing. Nothing is ever forgotten otherwise: a
//!   decommissioned node stays in the silent set until restart.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::{Event, Field};

/// Default of `silent_after`: 15 minutes.
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(15 * 60);
/// Default of `max_hosts`.
pub const DEFAULT_MAX_HOSTS: usize = 10_000;

/// What happened to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    /// It sent nothing for `silent_after` (log at WARN).
    Silent,
    /// It sends again after a [`AlarmKind::Silent`] (log at INFO).
    Recovered,
}

impl AlarmKind {
    /// Stable snake_case key for logs and metrics.
    pub fn key(self) -> &'static str {
        match self {
            AlarmKind::Silent => "silent",
            AlarmKind::Recovered => "recovered",
        }
    }
}

/// One notification from [`SilentHostAlarm::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// Silent or recovered.
    pub kind: AlarmKind,
    /// The host (datagram field 1).
    pub host: String,
    /// Silent: its last event before the silence. Recovered: its first event after it. Ns since the epoch.
    pub last_seen_ns: u64,
    /// Silent: how long it has been silent at `check` time. Recovered: the gap between its last event before and
    /// its first event after the silence.
    pub silent_for: Duration,
}

#[derive(Debug, Clone, Copy)]
struct HostState {
    last_seen_ns: u64,
    /// A `Silent` was reported and no event came since.
    silent: bool,
    /// A `Recovered` to report: (last event before the silence, first event after it).
    recovered: Option<(u64, u64)>,
}

/// Tracks when each host was last heard from and raises one alarm per silence (see the module docs).
#[derive(Debug)]
pub struct SilentHostAlarm {
    silent_after_ns: u64,
    max_hosts: usize,
    hosts: HashMap<Box<str>, HostState>,
    untracked_events: u64,
}

impl SilentHostAlarm {
    /// An alarm for hosts silent for `silent_after`, remembering up to [`DEFAULT_MAX_HOSTS`] hosts.
    pub fn new(silent_after: Duration) -> SilentHostAlarm {
        SilentHostAlarm::with_max_hosts(silent_after, DEFAULT_MAX_HOSTS)
    }

    /// An alarm remembering at most `max_hosts` hosts.
    pub fn with_max_hosts(silent_after: Duration, max_hosts: usize) -> SilentHostAlarm {
        SilentHostAlarm {
            silent_after_ns: u64::try_from(silent_after.as_nanos()).unwrap_or(u64::MAX),
            max_hosts,
            hosts: HashMap::new(),
            untracked_events: 0,
        }
    }

    /// Records an event from `host` received at `now_ns`. Allocates only for a host seen for the first time; an
    /// empty host is ignored.
    pub fn observe(&mut self, host: &str, now_ns: u64) {
        if host.is_empty() {
            return;
        }
        if let Some(h) = self.hosts.get_mut(host) {
            if h.silent {
                h.silent = false;
                h.recovered = Some((h.last_seen_ns, now_ns));
            }
            h.last_seen_ns = h.last_seen_ns.max(now_ns);
        } else if self.hosts.len() < self.max_hosts {
            self.hosts.insert(
                host.into(),
                HostState {
                    last_seen_ns: now_ns,
                    silent: false,
                    recovered: None,
                },
            );
        } else {
            self.untracked_events += 1;
        }
    }

    /// Records every event of a slab (its host and receive time), skipping repeats of the previous host cheaply.
    pub fn observe_events(&mut self, events: &[Event]) {
        let mut last: Option<(&str, u64)> = None;
        for ev in events {
            let host = ev.get(Field::Host);
            if let Some((h, t)) = last {
                if h == host && t >= ev.received_ns {
                    continue;
                }
            }
            self.observe(host, ev.received_ns);
            last = Some((host, ev.received_ns));
        }
    }

    /// The notifications due at `now_ns`, sorted by host (a host's `Recovered` before its `Silent`). Each silence
    /// is reported once, each recovery once. Allocates only when something is reported.
    pub fn check(&mut self, now_ns: u64) -> Vec<Alarm> {
        let mut alarms = Vec::new();
        for (host, h) in self.hosts.iter_mut() {
            if let Some((before, again)) = h.recovered.take() {
                alarms.push(Alarm {
                    kind: AlarmKind::Recovered,
                    host: host.to_string(),
                    last_seen_ns: again,
                    silent_for: Duration::from_nanos(again.saturating_sub(before)),
                });
            }
            let quiet_ns = now_ns.saturating_sub(h.last_seen_ns);
            if !h.silent && quiet_ns >= self.silent_after_ns {
                h.silent = true;
                alarms.push(Alarm {
                    kind: AlarmKind::Silent,
                    host: host.to_string(),
                    last_seen_ns: h.last_seen_ns,
                    silent_for: Duration::from_nanos(quiet_ns),
                });
            }
        }
        alarms.sort_by(|a, b| {
            a.host
                .cmp(&b.host)
                .then((a.kind == AlarmKind::Silent).cmp(&(b.kind == AlarmKind::Silent)))
        });
        alarms
    }

    /// When [`SilentHostAlarm::check`] next has something to report, in unix ns: at once (`Some(0)`) when a
    /// recovery waits, else the earliest moment a host still heard from turns silent; `None` when nothing can
    /// become due without a new event. A watcher sleeps until then instead of checking periodically.
    pub fn next_check_ns(&self) -> Option<u64> {
        if self.hosts.values().any(|h| h.recovered.is_some()) {
            return Some(0);
        }
        self.hosts
            .values()
            .filter(|h| !h.silent)
            .map(|h| h.last_seen_ns.saturating_add(self.silent_after_ns))
            .min()
    }

    /// The hosts silent now (a `Silent` was reported, no event since), sorted.
    pub fn silent_hosts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.hosts.iter().filter(|(_, h)| h.silent).map(|(k, _)| &**k).collect();
        v.sort_unstable();
        v
    }

    /// How many hosts are silent now.
    pub fn silent_count(&self) -> usize {
        self.hosts.values().filter(|h| h.silent).count()
    }

    /// How many hosts were ever seen (up to `max_hosts`).
    pub fn known_hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Events of hosts not remembered because `max_hosts` was reached.
    pub fn untracked_events(&self) -> u64 {
        self.untracked_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_into;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MIN: u64 = 60_000_000_000;

    fn alarm(kind: AlarmKind, host: &str, last_seen_min: u64, silent_for_min: u64) -> Alarm {
        Alarm {
            kind,
            host: host.to_string(),
            last_seen_ns: T0 + last_seen_min * MIN,
            silent_for: Duration::from_secs(silent_for_min * 60),
        }
    }

    #[test]
    fn a_known_host_silent_for_silent_after_raises_exactly_one_alarm_and_recovers_once() {
        let mut a = SilentHostAlarm::new(DEFAULT_SILENT_AFTER);
        a.observe("sense1", T0);
        a.observe("sense2", T0);
        a.observe("sense2", T0 + 10 * MIN);
        assert_eq!(a.check(T0 + 15 * MIN - 1), vec![], "not yet 15 min");
        assert_eq!(a.check(T0 + 15 * MIN), vec![alarm(AlarmKind::Silent, "sense1", 0, 15)]);
        assert_eq!(a.check(T0 + 16 * MIN), vec![], "one alarm per silence");
        assert_eq!(a.silent_hosts(), ["sense1"]);
        assert_eq!(a.check(T0 + 26 * MIN), vec![alarm(AlarmKind::Silent, "sense2", 10, 16)]);
        assert_eq!(a.silent_hosts(), ["sense1", "sense2"]);
        assert_eq!(a.silent_count(), 2);

        a.observe("sense1", T0 + 30 * MIN);
        assert_eq!(a.silent_hosts(), ["sense2"], "out of the silent set at its first event");
        assert_eq!(
            a.check(T0 + 30 * MIN),
            vec![alarm(AlarmKind::Recovered, "sense1", 30, 30)]
        );
        assert_eq!(a.check(T0 + 31 * MIN), vec![], "one recovery notification");
        assert_eq!(
            a.check(T0 + 45 * MIN),
            vec![alarm(AlarmKind::Silent, "sense1", 30, 15)],
            "a new silence alarms again"
        );
        assert_eq!(a.known_hosts(), 2);
    }

    #[test]
    fn a_host_that_recovers_and_falls_silent_again_before_a_check_gets_both_in_order() {
        let mut a = SilentHostAlarm::new(Duration::from_secs(60));
        a.observe("sense1", T0);
        assert_eq!(a.check(T0 + MIN).len(), 1);
        a.observe("sense1", T0 + 2 * MIN);
        assert_eq!(
            a.check(T0 + 4 * MIN),
            vec![
                alarm(AlarmKind::Recovered, "sense1", 2, 2),
                alarm(AlarmKind::Silent, "sense1", 2, 2)
            ]
        );
    }

    #[test]
    fn the_next_check_is_when_the_first_host_turns_silent_and_at_once_for_a_recovery() {
        let mut a = SilentHostAlarm::new(Duration::from_secs(600));
        assert_eq!(a.next_check_ns(), None, "no host: nothing can become due");
        a.observe("n1", T0);
        a.observe("n2", T0 + MIN);
        assert_eq!(a.next_check_ns(), Some(T0 + 10 * MIN), "n1 turns silent first");
        assert!(a.check(T0 + 10 * MIN - 1).is_empty(), "not a nanosecond early");
        assert_eq!(a.check(T0 + 10 * MIN).len(), 1, "due exactly then");
        assert_eq!(
            a.next_check_ns(),
            Some(T0 + 11 * MIN),
            "then n2; a silent host no longer counts"
        );
        a.observe("n1", T0 + 12 * MIN);
        assert_eq!(a.next_check_ns(), Some(0), "a recovery is reported at once");
        assert_eq!(a.check(T0 + 12 * MIN).len(), 2, "n1 recovered, n2 silent");
        assert_eq!(a.next_check_ns(), Some(T0 + 22 * MIN), "only n1 can turn silent now");
    }

    #[test]
    fn hosts_never_seen_raise_nothing_and_the_number_of_hosts_is_bounded() {
        let mut a = SilentHostAlarm::with_max_hosts(Duration::from_secs(60), 2);
        assert_eq!(a.check(T0 + 100 * MIN), vec![]);
        a.observe("", T0);
        for h in ["a", "b", "c", "c"] {
            a.observe(h, T0);
        }
        assert_eq!(a.known_hosts(), 2);
        assert_eq!(a.untracked_events(), 2);
        let hosts: Vec<String> = a.check(T0 + MIN).into_iter().map(|x| x.host).collect();
        assert_eq!(hosts, ["a", "b"]);
    }

    #[test]
    fn a_late_event_with_an_older_receive_time_does_not_move_last_seen_back() {
        let mut a = SilentHostAlarm::new(Duration::from_secs(60));
        a.observe("sense1", T0 + MIN);
        a.observe("sense1", T0);
        assert_eq!(a.check(T0 + 2 * MIN - 1), vec![]);
        assert_eq!(a.check(T0 + 2 * MIN), vec![alarm(AlarmKind::Silent, "sense1", 1, 1)]);
    }

    #[test]
    fn observe_events_takes_each_events_host_and_receive_time() {
        let mut events = Vec::new();
        for (host, at_min) in [("sense1", 0), ("sense1", 0), ("sense2", 0), ("sense1", 5)] {
            let mut e = Event::new();
            let d = format!("/qseow-proxy-session/;{host};Start session;LAB;goran;Hub;/hub/;x");
            parse_into(d.as_bytes(), &mut e).unwrap();
            e.received_ns = T0 + at_min * MIN;
            events.push(e);
        }
        let mut a = SilentHostAlarm::new(Duration::from_secs(10 * 60));
        a.observe_events(&events);
        assert_eq!(a.check(T0 + 10 * MIN), vec![alarm(AlarmKind::Silent, "sense2", 0, 10)]);
        assert_eq!(a.check(T0 + 15 * MIN), vec![alarm(AlarmKind::Silent, "sense1", 5, 10)]);
    }
}
