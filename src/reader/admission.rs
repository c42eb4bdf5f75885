//! Who may send, and how much: `udpServerConfig.enableSourceValidation`/`allowedSources` and `rateLimit`.
//!
//! Checked in Butler SOS's order, before parsing: source address, then (after the size check) the rate.
//!
//! - **Source validation**: the sender's IP (IPv4-mapped IPv6 addresses compare as IPv4) must be one of the
//!   addresses `allowedSources` resolved to at startup (IPv4 and IPv6 literals, hostnames: all their addresses).
//!   Butler SOS silently turns validation off when the list is empty or nothing resolves; sense-ingest refuses to
//!   start instead (config error), so an administrator never believes a filter is active when it is not.
//! - **Rate limit**: at most `maxMessagesPerMinute` datagrams per *sender IP* per fixed 60 s window (Butler SOS
//!   has one window shared by all senders, so one noisy node could starve the farm). Over the limit: rejected as
//!   `rate_limited`. The windows live in one mutex-protected map, touched only when the limit is enabled.
//!
//!   Memory and per-datagram work stay bounded however many addresses send (an IPv6 /64, spoofed sources): at
//!   most [`MAX_TRACKED_SENDERS`] senders have their own window. When the map is full and an untracked sender
//!   arrives, windows of earlier minutes are swept out, at most once per minute; if the map is still full, every
//!   sender not yet tracked shares one *overflow* window of `maxMessagesPerMinute` (Butler SOS's behaviour, for
//!   them), while tracked senders keep their own. A new minute's first untracked sender sweeps again and makes
//!   room.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::event::RejectReason;

/// The admission rules of one listener.
#[derive(Debug, Default)]
pub struct Admission {
    allowed: Option<HashSet<IpAddr>>,
    rate: Option<RateLimit>,
}

#[derive(Debug)]
struct RateLimit {
    per_minute: u32,
    windows: Mutex<Windows>,
}

/// The most senders with their own rate window; further senders share one overflow window (see the module docs).
pub const MAX_TRACKED_SENDERS: usize = 65_536;

/// One fixed 60 s window: the minute (Unix ns / 60 s) and the datagrams admitted in it.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: u64,
    admitted: u32,
}

impl Window {
    /// Counts one datagram against this window at `minute` (a new minute starts the window afresh).
    fn admit(&mut self, minute: u64, per_minute: u32) -> Result<(), RejectReason> {
        if self.minute != minute {
            *self = Window { minute, admitted: 0 };
        }
        if self.admitted >= per_minute {
            return Err(RejectReason::RateLimited);
        }
        self.admitted += 1;
        Ok(())
    }
}

/// The rate limiter's state, behind the one mutex all readers share.
///
/// Invariants: `senders.len() <= MAX_TRACKED_SENDERS`; `senders` is swept (an O(n) walk) at most once per
/// minute, when it is full and an untracked sender arrives, so every other datagram costs one hash lookup.
#[derive(Debug, Default)]
struct Windows {
    /// Each tracked sender's own window (keys are canonical: IPv4-mapped IPv6 as IPv4).
    senders: HashMap<IpAddr, Window>,
    /// The window shared by untracked senders while `senders` is full.
    overflow: Window,
    /// The minute of the last sweep (`None`: never swept).
    swept_minute: Option<u64>,
    /// Sweeps so far (tests check the at-most-once-per-minute bound).
    sweeps: u64,
}

impl Admission {
    /// Rules from the validated config: `allowed` (resolved addresses) and `per_minute`.
    pub fn new(allowed: Option<&[IpAddr]>, per_minute: Option<u32>) -> Admission {
        Admission {
            allowed: allowed.map(|a| a.iter().map(|ip| ip.to_canonical()).collect()),
            rate: per_minute.map(|per_minute| RateLimit {
                per_minute,
                windows: Mutex::new(Windows::default()),
            }),
        }
    }

    /// True when no rule is active (the reader skips the checks).
    pub fn is_open(&self) -> bool {
        self.allowed.is_none() && self.rate.is_none()
    }

    /// The source check.
    pub fn check_source(&self, peer: IpAddr) -> Result<(), RejectReason> {
        match &self.allowed {
            Some(allowed) if !allowed.contains(&peer.to_canonical()) => Err(RejectReason::DisallowedSource),
            _ => Ok(()),
        }
    }

    /// The rate check, counting this datagram against the sender's current minute (`now_ns`: Unix ns).
    pub fn check_rate(&self, peer: IpAddr, now_ns: u64) -> Result<(), RejectReason> {
        let Some(rate) = &self.rate else { return Ok(()) };
        let minute = now_ns / 60_000_000_000;
        let peer = peer.to_canonical();
        let mut guard = rate.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *guard;
        if let Some(window) = w.senders.get_mut(&peer) {
            return window.admit(minute, rate.per_minute);
        }
        if w.senders.len() >= MAX_TRACKED_SENDERS && w.swept_minute != Some(minute) {
            w.senders.retain(|_, window| window.minute == minute);
            w.swept_minute = Some(minute);
            w.sweeps += 1;
        }
        if w.senders.len() < MAX_TRACKED_SENDERS {
            return w.senders.entry(peer).or_default().admit(minute, rate.per_minute);
        }
        w.overflow.admit(minute, rate.per_minute)
    }

    /// Butler SOS's `rate_limit_current` (its `RateLimiter.getCurrentRate`), per sender: the busiest sender's
    /// admitted datagrams in the current minute, extrapolated to a per-minute rate
    /// (`round(count / elapsed_s * 60)`, 0 at the very start of a minute). The overflow window shared by
    /// untracked senders counts as one sender. 0 when the rate limit is off.
    ///
    /// Walks every tracked window (up to [`MAX_TRACKED_SENDERS`]) under the readers' mutex: the metrics writer
    /// calls it once per queue-metrics interval, so that walk is a rare pause, not a per-datagram cost.
    pub fn busiest_rate_per_minute(&self, now_ns: u64) -> u64 {
        let Some(rate) = &self.rate else { return 0 };
        let minute = now_ns / 60_000_000_000;
        let elapsed_ns = now_ns % 60_000_000_000;
        let windows = rate.windows.lock().unwrap_or_else(|e| e.into_inner());
        let busiest = windows
            .senders
            .values()
            .chain([&windows.overflow])
            .filter(|w| w.minute == minute)
            .map(|w| w.admitted)
            .max()
            .unwrap_or(0);
        if elapsed_ns == 0 {
            return 0;
        }
        (f64::from(busiest) * 60e9 / elapsed_ns as f64).round() as u64
    }

    /// Senders with their own window (tests).
    #[cfg(test)]
    fn tracked_senders(&self) -> usize {
        self.rate
            .as_ref()
            .map_or(0, |r| r.windows.lock().unwrap().senders.len())
    }

    /// Sweeps of old-minute windows so far (tests).
    #[cfg(test)]
    fn sweeps(&self) -> u64 {
        self.rate.as_ref().map_or(0, |r| r.windows.lock().unwrap().sweeps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_sources_pass_and_mapped_ipv4_counts_as_ipv4() {
        let allowed: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::7".parse().unwrap()];
        let a = Admission::new(Some(&allowed), None);
        assert_eq!(a.check_source("10.0.0.5".parse().unwrap()), Ok(()));
        assert_eq!(a.check_source("::ffff:10.0.0.5".parse().unwrap()), Ok(()));
        assert_eq!(a.check_source("fd00::7".parse().unwrap()), Ok(()));
        assert_eq!(
            a.check_source("10.0.0.6".parse().unwrap()),
            Err(RejectReason::DisallowedSource)
        );
    }

    #[test]
    fn the_rate_limit_is_per_sender_and_per_minute() {
        let a = Admission::new(None, Some(2));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = 7 * 60_000_000_000;
        assert_eq!(a.check_rate(x, t), Ok(()));
        assert_eq!(a.check_rate(x, t + 1), Ok(()));
        assert_eq!(a.check_rate(x, t + 2), Err(RejectReason::RateLimited));
        assert_eq!(a.check_rate(y, t + 3), Ok(()), "another sender has its own window");
        assert_eq!(
            a.busiest_rate_per_minute(t + 30_000_000_000),
            4,
            "2 in 30 s is 4 per minute"
        );
        assert_eq!(Admission::new(None, None).busiest_rate_per_minute(t + 1), 0);
        assert_eq!(
            a.check_rate(x, t + 60_000_000_000),
            Ok(()),
            "a new minute starts a new window"
        );
    }

    #[test]
    fn a_spray_of_senders_is_bounded_and_shares_one_overflow_window() {
        let per_minute = 5;
        let a = Admission::new(None, Some(per_minute));
        let minute_ns = 60_000_000_000;
        let t = 7 * minute_ns;
        let early: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(a.check_rate(early, t), Ok(()));

        // 200,000 distinct senders within one minute, one datagram each.
        let spray = |i: u32| {
            IpAddr::from(std::net::Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))
        };
        let mut admitted = 0;
        for i in 0..200_000u32 {
            if a.check_rate(spray(i), t + u64::from(i)).is_ok() {
                admitted += 1;
            }
            assert!(
                a.tracked_senders() <= MAX_TRACKED_SENDERS,
                "sender {i}: {}",
                a.tracked_senders()
            );
            assert!(a.sweeps() <= 1, "sender {i}: {} sweeps in one minute", a.sweeps());
        }
        assert_eq!(a.tracked_senders(), MAX_TRACKED_SENDERS);
        assert_eq!(a.sweeps(), 1, "the map filled up once this minute: one sweep");
        // `early` and the first MAX_TRACKED_SENDERS - 1 spray senders have their own window; everyone after
        // shares the overflow window, admitted `per_minute` times between them.
        let tracked_spray = MAX_TRACKED_SENDERS as u32 - 1;
        assert_eq!(admitted, tracked_spray + per_minute);
        assert_eq!(
            a.busiest_rate_per_minute(t + minute_ns / 2),
            u64::from(per_minute) * 2,
            "the overflow window's 5 in 30 s is the busiest"
        );
        assert_eq!(
            a.check_rate(spray(199_999), t + minute_ns / 2),
            Err(RejectReason::RateLimited),
            "an overflow sender"
        );
        assert_eq!(
            a.check_rate(spray(tracked_spray - 1), t + minute_ns / 2),
            Ok(()),
            "the last tracked spray sender keeps its own window"
        );
        for n in 1..per_minute {
            assert_eq!(a.check_rate(early, t + minute_ns / 2), Ok(()), "datagram {}", n + 1);
        }
        assert_eq!(a.check_rate(early, t + minute_ns / 2), Err(RejectReason::RateLimited));
        assert_eq!(a.sweeps(), 1);

        // A new minute: the first untracked sender sweeps the old windows away and gets its own.
        let later: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(a.check_rate(later, t + minute_ns), Ok(()));
        assert_eq!(a.sweeps(), 2);
        assert_eq!(a.tracked_senders(), 1);
        assert_eq!(
            a.check_rate(spray(199_999), t + minute_ns + 1),
            Ok(()),
            "room again: its own window"
        );
        assert_eq!(a.tracked_senders(), 2);
    }
}
