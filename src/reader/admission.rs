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
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

/// Senders tracked by the rate limiter before old windows are swept.
const MAX_TRACKED_SENDERS: usize = 65_536;

impl Admission {
    /// Rules from the validated config: `allowed` (resolved addresses) and `per_minute`.
    pub fn new(allowed: Option<&[IpAddr]>, per_minute: Option<u32>) -> Admission {
        Admission {
            allowed: allowed.map(|a| a.iter().map(|ip| ip.to_canonical()).collect()),
            rate: per_minute.map(|per_minute| RateLimit {
                per_minute,
                windows: Mutex::new(HashMap::new()),
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
        let mut windows = rate.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED_SENDERS {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(peer.to_canonical()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= rate.per_minute {
            return Err(RejectReason::RateLimited);
        }
        entry.1 += 1;
        Ok(())
    }

    /// Butler SOS's `rate_limit_current` (its `RateLimiter.getCurrentRate`), per sender: the busiest sender's
    /// admitted datagrams in the current minute, extrapolated to a per-minute rate
    /// (`round(count / elapsed_s * 60)`, 0 at the very start of a minute). 0 when the rate limit is off.
    pub fn busiest_rate_per_minute(&self, now_ns: u64) -> u64 {
        let Some(rate) = &self.rate else { return 0 };
        let minute = now_ns / 60_000_000_000;
        let elapsed_ns = now_ns % 60_000_000_000;
        let windows = rate.windows.lock().unwrap_or_else(|e| e.into_inner());
        let busiest = windows
            .values()
            .filter(|(m, _)| *m == minute)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        if elapsed_ns == 0 {
            return 0;
        }
        (f64::from(busiest) * 60e9 / elapsed_ns as f64).round() as u64
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
}
