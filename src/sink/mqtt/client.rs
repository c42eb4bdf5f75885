//! The rumqttc event loop, polled in its own task on the delivery thread's runtime: connects, reconnects with
//! backoff, and counts what the broker confirmed on the current connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Incoming, MqttState, Outgoing, QoS};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::telemetry::metrics::RateLimit;

/// First pause after a failed poll; doubles per failure (rumqttc itself adds none).
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What the event-loop task tells the transport.
///
/// Invariant: `confirmed` counts confirmations received on connection number `epoch` only. Both change together
/// at a CONNACK, and everything the transport handed to rumqttc during an earlier connection was discarded when
/// that connection failed (see [`drive`]), so on the current connection every handed message yields exactly one
/// confirmation and nothing else does.
#[derive(Debug, Default)]
pub(crate) struct Link {
    connected: AtomicBool,
    /// Connection number: +1 at every CONNACK.
    epoch: AtomicU64,
    /// Publishes confirmed on connection `epoch` (see [`drive`] for what counts as confirmed).
    confirmed: AtomicU64,
    /// The event loop task ended (client closed); nothing will be sent any more.
    stopped: AtomicBool,
    /// The last connection error, for the transport's own error.
    last_error: Mutex<Option<String>>,
    /// Woken on every outgoing publish, confirmation and connection change.
    changed: Notify,
}

impl Link {
    /// True between a CONNACK and the next connection error.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The current connection's number.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Publishes confirmed on the current connection.
    pub(crate) fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// True once the event loop stopped for good.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The last connection error, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Resolves at the next change after `enable()` was called on it (or after its first poll).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn connected_anew(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.confirmed.store(0, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn lost(&self, error: Option<String>) {
        self.connected.store(false, Ordering::Relaxed);
        if let Some(e) = error {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
        self.changed.notify_waiters();
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.lost(None);
    }

    fn progress(&self) {
        self.changed.notify_waiters();
    }

    fn confirm(&self) {
        self.confirmed.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// Polls `eventloop` until the client disconnects (or the task is dropped with the runtime). Never blocks: the
/// only waits are the poll itself and the backoff sleep between failed polls.
///
/// Confirmation (one per MQTT message):
/// - QoS 0: when rumqttc reports `Outgoing::Publish`, i.e. the PUBLISH was written and flushed to the socket. A
///   broker that dies right after can lose it unnoticed; MQTT offers no way to know.
/// - QoS 1: on the broker's PUBACK.
/// - QoS 2: on the broker's PUBCOMP.
///
/// Reconnects: when the connection fails, rumqttc moves every unacknowledged publish and every request still in
/// its channel to `EventLoop::pending`. They are **discarded** here, with any events rumqttc had buffered from
/// the dead connection: the transport's send fails on the lost connection and the worker re-publishes the whole
/// batch (at-least-once), so keeping them would only publish them twice and break the count of [`Link`].
/// The connection is a clean session, so the broker keeps nothing for us either.
pub(crate) async fn drive(mut eventloop: EventLoop, qos: QoS, link: Arc<Link>, broker: String) {
    let mut backoff = INITIAL_BACKOFF;
    let mut failures: u64 = 0;
    let mut ever_connected = false;
    let log_limit = RateLimit::new(Duration::from_secs(10));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = INITIAL_BACKOFF;
                if ever_connected {
                    info!(%broker, failed_attempts = failures, "reconnected to the MQTT broker");
                } else {
                    info!(%broker, "connected to the MQTT broker");
                }
                failures = 0;
                ever_connected = true;
                link.connected_anew();
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => link.confirm(),
            Ok(Event::Incoming(Incoming::PubAck(_))) if qos == QoS::AtLeastOnce => link.confirm(),
            Ok(Event::Incoming(Incoming::PubComp(_))) if qos == QoS::ExactlyOnce => link.confirm(),
            // A request left the channel: room for the next one.
            Ok(Event::Outgoing(Outgoing::Publish(_))) => link.progress(),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.stop();
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                link.stop();
                return;
            }
            Err(e) => {
                eventloop.pending.clear();
                let inflight = eventloop.mqtt_options.inflight();
                eventloop.state = MqttState::new(inflight, false);
                link.lost(Some(e.to_string()));
                failures += 1;
                if let Some(suppressed) = log_limit.allow() {
                    let retry_in_ms = backoff.as_millis() as u64;
                    if matches!(e, ConnectionError::ConnectionRefused(_)) {
                        error!(%broker, error = %e, attempt = failures, retry_in_ms, suppressed,
                            "the MQTT broker refused the connection; retrying");
                    } else if ever_connected && failures == 1 {
                        warn!(%broker, error = %e, retry_in_ms, "lost the MQTT broker connection; reconnecting");
                    } else {
                        warn!(%broker, error = %e, attempt = failures, retry_in_ms, suppressed,
                            "cannot connect to the MQTT broker; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
