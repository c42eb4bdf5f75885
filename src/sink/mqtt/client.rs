//! The rumqttc event loop, polled in its own task: connects, reconnects with backoff, keeps unacknowledged
//! publishes across reconnects, and counts what the broker confirmed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Incoming, Outgoing, QoS, Request};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::telemetry::metrics::{RateLimit, SinkCounters};

/// First pause after a failed poll; doubles per failure (rumqttc itself adds none).
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the event-loop task tells the publishing side.
#[derive(Debug, Default)]
pub(crate) struct Link {
    connected: AtomicBool,
    /// Publishes the broker confirmed (see [`drive`] for what counts as confirmed).
    confirmed: AtomicU64,
    /// Woken on every confirmation and connection change.
    changed: Notify,
}

impl Link {
    /// True between a CONNACK and the next connection error.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Publishes confirmed so far.
    pub(crate) fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Resolves at the next confirmation or connection change after `enable()` was called on it (or after its
    /// first poll).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn confirm(&self, counters: &SinkCounters) {
        self.confirmed.fetch_add(1, Ordering::Relaxed);
        counters.delivered.inc();
        self.changed.notify_waiters();
    }
}

/// Polls `eventloop` until the client disconnects (or the task is aborted at shutdown). Never blocks: the only
/// waits are the poll itself and the backoff sleep between failed polls.
///
/// Delivery accounting (`counters.delivered`, one per MQTT message, i.e. per event *and* topic):
/// - QoS 0: when rumqttc reports `Outgoing::Publish`, i.e. the PUBLISH was written and flushed to the socket. A
///   broker that dies right after can lose it unnoticed; MQTT offers no way to know.
/// - QoS 1: on the broker's PUBACK.
/// - QoS 2: on the broker's PUBCOMP.
///
/// Reconnects: after a connection error rumqttc moves every unacknowledged publish (and the requests still queued
/// in its channel) to `EventLoop::pending`, and on the next CONNACK *clears* that queue when the broker has no
/// session for us (`session_present = 0`: always, with a clean session or a restarted broker without
/// persistence). So the queue is taken here when the error happens and put back after the CONNACK: nothing
/// queued or unacknowledged is lost to a reconnect; QoS 1/2 messages whose ack was lost are sent again
/// (at-least-once, a subscriber may see a duplicate).
pub(crate) async fn drive(
    mut eventloop: EventLoop,
    qos: QoS,
    link: Arc<Link>,
    counters: Arc<SinkCounters>,
    broker: String,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut saved: VecDeque<Request> = VecDeque::new();
    let mut failures: u64 = 0;
    let mut ever_connected = false;
    let log_limit = RateLimit::new(Duration::from_secs(10));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                let resent = saved.len();
                if !saved.is_empty() {
                    saved.append(&mut eventloop.pending);
                    eventloop.pending = std::mem::take(&mut saved);
                }
                backoff = INITIAL_BACKOFF;
                if ever_connected {
                    info!(%broker, failed_attempts = failures, resent, session_present = ack.session_present,
                        "reconnected to the MQTT broker");
                } else {
                    info!(%broker, "connected to the MQTT broker");
                }
                failures = 0;
                ever_connected = true;
                link.set_connected(true);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => link.confirm(&counters),
            Ok(Event::Incoming(Incoming::PubAck(_))) if qos == QoS::AtLeastOnce => link.confirm(&counters),
            Ok(Event::Incoming(Incoming::PubComp(_))) if qos == QoS::ExactlyOnce => link.confirm(&counters),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.set_connected(false);
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                link.set_connected(false);
                return;
            }
            Err(e) => {
                link.set_connected(false);
                saved.append(&mut eventloop.pending);
                failures += 1;
                counters.retries.inc();
                if let Some(suppressed) = log_limit.allow() {
                    let queued = saved.len();
                    let retry_in_ms = backoff.as_millis() as u64;
                    if matches!(e, ConnectionError::ConnectionRefused(_)) {
                        error!(%broker, error = %e, attempt = failures, queued, retry_in_ms, suppressed,
                            "the MQTT broker refused the connection; retrying");
                    } else if ever_connected && failures == 1 {
                        warn!(%broker, error = %e, queued, retry_in_ms, "lost the MQTT broker connection; reconnecting");
                    } else {
                        warn!(%broker, error = %e, attempt = failures, queued, retry_in_ms, suppressed,
                            "cannot connect to the MQTT broker; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
