//! Liveness and readiness (`/live`, `/ready`, `/health`): whether the readers are bound and no sink has been
//! failing for too long.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::state::MetricsState;
use crate::telemetry::metrics::now_unix_ms;

impl MetricsState {
    /// Liveness (`/live`): `(200, "live")` once the readers are bound, whatever the destinations do, so a liveness
    /// probe never restarts the receiver during a destination outage (that is when the spool matters); `503`
    /// before. An engine that is wedged does not answer at all.
    pub fn live(&self) -> (u16, String) {
        if self.readers_bound.load(Ordering::Relaxed) {
            (200, "live".to_string())
        } else {
            (503, "not live: readers not bound".to_string())
        }
    }

    /// Readiness (`/ready`, `/health`): `(200, "ok")` when the readers are bound and no sink has been failing for
    /// longer than `max_failing`, else
    /// `(503, reason)` naming what is wrong, e.g. `unhealthy: sink influxdb failing for 95s`.
    pub fn health(&self, max_failing: Duration) -> (u16, String) {
        self.health_at(max_failing, now_unix_ms())
    }

    pub(super) fn health_at(&self, max_failing: Duration, now_unix_ms: u64) -> (u16, String) {
        let mut problems = Vec::new();
        if !self.readers_bound.load(Ordering::Relaxed) {
            problems.push("readers not bound".to_string());
        }
        for s in &self.sinks {
            if let Some(d) = s.failing_since.failing_for(now_unix_ms) {
                if d > max_failing {
                    problems.push(format!("sink {} failing for {}s", s.name, d.as_secs()));
                }
            }
        }
        if problems.is_empty() {
            (200, "ok".to_string())
        } else {
            (503, format!("unhealthy: {}", problems.join("; ")))
        }
    }
}
