//! MQTT destination: each event as Butler SOS's JSON payload ([`EventJson`]) to the everything topic and to its
//! command's topic, through rumqttc.
//!
//! # Threads and tasks
//! [`run`] is called on the sink's own thread and runs a current-thread tokio runtime there. Two things happen
//! concurrently:
//! - the rumqttc event loop, polled in its own task ([`client::drive`]), which never blocks: connecting, writing,
//!   reading acks, keep-alive pings, reconnecting with backoff (100 ms doubling to 10 s);
//! - the publishing loop (the `block_on` future): encodes each event once into a reused buffer and awaits
//!   `AsyncClient::publish` per topic.
//!
//! Slabs arrive on a crossbeam channel, whose `recv` blocks the thread. Calling it inside the runtime would stall
//! the event loop (no pings, no acks while idle), so a small forwarder thread (`sink-mqtt-recv`) moves slab
//! handles (one `Arc` per slab, never per event) from the crossbeam channel into a tokio channel of capacity 2.
//!
//! # Backpressure and what can be lost
//! rumqttc queues requests in a bounded channel ([`REQUEST_CAPACITY`]); `publish().await` waits for room.
//! - While connected, the sink waits as long as it takes: nothing is dropped, and a slow broker slows the sink
//!   (its slab channel fills, then the readers wait, counted as `channel_full_waits`).
//! - While disconnected, the queued requests and every unacknowledged QoS 1/2 publish are kept and sent again
//!   after the reconnect (see [`client::drive`]). If the queue stays full for [`OUTAGE_GRACE`] with no connection,
//!   the sink starts dropping (each message counted in `dropped`, one ERROR line) until the broker is back, so a
//!   dead broker cannot stall the readers (and the other destinations) for ever.
//! - With QoS 0 a message that was written to the socket counts as delivered; if the broker dies before reading
//!   it, it is lost without anyone knowing (MQTT has no ack at QoS 0). Use `qos: 1` where that matters.
//!
//! # Counters (per MQTT message: an event published to two topics counts twice)
//! - `delivered`: QoS 0 written to the socket; QoS 1 PUBACK; QoS 2 PUBCOMP received.
//! - `dropped`: given up on: shed during an outage, payload over the size bound, or still unconfirmed when the
//!   shutdown flush ends (`handed to rumqttc − confirmed`; such a message may still have reached the broker).
//! - `skipped` (per event): no topic to publish to (a command without its own topic and the everything topic off).
//! - `retries`: failed connection attempts.
//!
//! # Shutdown
//! When the slab channel disconnects, the sink waits up to [`FLUSH_TIMEOUT`] until every message handed to
//! rumqttc is confirmed, then sends DISCONNECT (waiting at most [`DISCONNECT_TIMEOUT`]) and stops the event loop;
//! whatever is still unconfirmed is counted as dropped.

mod client;
mod config;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use rumqttc::{AsyncClient, NetworkOptions, QoS};
use tracing::{error, info, warn};

use crate::config::{MqttConfig, MqttRouting};
use crate::event::slab::Slab;
use crate::event::{Command, Event};
use crate::sink::json::EventJson;
use crate::telemetry::metrics::{RateLimit, SinkCounters};

use client::Link;

/// Capacity of rumqttc's request channel (messages). With up to 100 unacknowledged QoS 1/2 publishes in flight,
/// this is what a reconnect re-sends at most; at a typical 400-800 bytes per payload about 1 MB.
pub const REQUEST_CAPACITY: usize = 1024;
/// How long a publish may wait for room in rumqttc's queue while the broker is unreachable before the sink
/// starts dropping (counted) until the connection is back.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(4);
/// Longest wait at shutdown for outstanding publishes to be confirmed. With [`OUTAGE_GRACE`] and
/// [`DISCONNECT_TIMEOUT`] this stays below the engine's default 10 s shutdown timeout.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait at shutdown for DISCONNECT to be written.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// TCP connect + CONNACK timeout per attempt, seconds.
const CONNECT_TIMEOUT_S: u64 = 5;
/// How often a waiting publish re-checks the connection state.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The topics of `userEvents.sendToMQTT.postTo`, by command.
#[derive(Debug, Clone)]
struct Topics {
    everything: Option<String>,
    session_start: Option<String>,
    session_stop: Option<String>,
    connection_open: Option<String>,
    connection_close: Option<String>,
}

impl Topics {
    fn new(routing: &MqttRouting) -> Topics {
        Topics {
            everything: routing.everything.clone(),
            session_start: routing.session_start.clone(),
            session_stop: routing.session_stop.clone(),
            connection_open: routing.connection_open.clone(),
            connection_close: routing.connection_close.clone(),
        }
    }

    /// Butler SOS's order: the everything topic, then the command's own topic (exact command match; any other
    /// command has none).
    fn for_event(&self, command: Command) -> [Option<&str>; 2] {
        let own = match command {
            Command::StartSession => self.session_start.as_deref(),
            Command::StopSession => self.session_stop.as_deref(),
            Command::OpenConnection => self.connection_open.as_deref(),
            Command::CloseConnection => self.connection_close.as_deref(),
            Command::Other => None,
        };
        [self.everything.as_deref(), own]
    }

    fn longest(&self) -> usize {
        [
            &self.everything,
            &self.session_start,
            &self.session_stop,
            &self.connection_open,
            &self.connection_close,
        ]
        .iter()
        .filter_map(|t| t.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
    }
}

/// Publishes every event of every slab from `rx` to the broker of `config`, on the topics of `routing`, until
/// `rx` disconnects; then flushes (bounded) and disconnects. Blocking: call it on a dedicated thread.
pub fn run(config: MqttConfig, routing: MqttRouting, json: EventJson, rx: Receiver<Slab>, counters: Arc<SinkCounters>) {
    let topics = Topics::new(&routing);
    let max_payload = config::max_payload(&json);
    let max_packet = max_payload + topics.longest() + config::PUBLISH_OVERHEAD;
    let client_id = config::client_id(&config);
    let broker = format!("{}:{}", config.broker_host.trim(), config.broker_port);
    let options = match config::mqtt_options(&config, client_id.clone(), max_packet) {
        Ok(o) => o,
        Err(e) => {
            error!(%broker, error = %e, "mqtt sink cannot start; every event for MQTT is dropped (counted)");
            return drain_as_dropped(&rx, &topics, &counters);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "mqtt sink cannot start its runtime; every event for MQTT is dropped (counted)");
            return drain_as_dropped(&rx, &topics, &counters);
        }
    };
    let (slab_tx, slab_rx) = tokio::sync::mpsc::channel::<Slab>(2);
    let forwarder = match std::thread::Builder::new()
        .name("sink-mqtt-recv".into())
        .spawn(move || {
            for slab in rx.iter() {
                if slab_tx.blocking_send(slab).is_err() {
                    break;
                }
            }
        }) {
        Ok(handle) => handle,
        Err(e) => {
            // The closure (and `rx` with it) is gone: the readers see this sink's channel as closed.
            error!(error = %e, "mqtt sink cannot start its receive thread; MQTT gets nothing");
            return;
        }
    };

    info!(
        %broker,
        client_id = %client_id,
        tls = config.tls.is_some(),
        auth = config.username.is_some(),
        qos = config.qos,
        retain = config.retain,
        max_payload,
        "mqtt sink starting"
    );
    let qos = config::qos(config.qos);
    rt.block_on(async move {
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(CONNECT_TIMEOUT_S);
        eventloop.set_network_options(net);
        let link = Arc::new(Link::default());
        let mut driver = tokio::spawn(client::drive(
            eventloop,
            qos,
            Arc::clone(&link),
            Arc::clone(&counters),
            broker.clone(),
        ));

        let mut publisher = Publisher {
            client,
            qos,
            retain: config.retain,
            link: Arc::clone(&link),
            counters: Arc::clone(&counters),
            handed: 0,
            shedding: false,
            shed: 0,
            oversize_log: RateLimit::new(Duration::from_secs(10)),
        };
        let mut slab_rx = slab_rx;
        let mut payload = Vec::with_capacity(4096);
        while let Some(slab) = slab_rx.recv().await {
            for ev in slab.events() {
                publisher.event(&json, &topics, ev, &mut payload, max_payload).await;
            }
        }

        // Shutdown: flush (bounded), disconnect, count what is left.
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        loop {
            let changed = link.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if link.confirmed() >= publisher.handed {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        // Connected: DISCONNECT goes out after everything queued before it. Not connected: nothing to say
        // goodbye to, and the event loop would only keep reconnecting.
        let disconnected = link.is_connected()
            && publisher.client.try_disconnect().is_ok()
            && tokio::time::timeout(DISCONNECT_TIMEOUT, &mut driver).await.is_ok();
        if !disconnected {
            driver.abort();
            let _ = driver.await;
        }
        let confirmed = link.confirmed();
        let unconfirmed = publisher.handed.saturating_sub(confirmed);
        if unconfirmed > 0 {
            counters.dropped.add(unconfirmed);
            error!(
                %broker,
                unconfirmed,
                timeout_s = FLUSH_TIMEOUT.as_secs(),
                "mqtt messages not confirmed by the broker at shutdown; counted as dropped"
            );
        }
        info!(
            delivered = counters.delivered.get(),
            dropped = counters.dropped.get(),
            skipped = counters.skipped.get(),
            "mqtt sink stopped"
        );
    });
    let _ = forwarder.join();
}

/// The publishing side: hands messages to rumqttc and decides when to wait and when to shed.
struct Publisher {
    client: AsyncClient,
    qos: QoS,
    retain: bool,
    link: Arc<Link>,
    counters: Arc<SinkCounters>,
    /// Messages accepted into rumqttc's queue.
    handed: u64,
    /// True while dropping because the broker has been unreachable for longer than [`OUTAGE_GRACE`].
    shedding: bool,
    /// Messages dropped in the current shedding period.
    shed: u64,
    oversize_log: RateLimit,
}

impl Publisher {
    /// Encodes `ev` once into `payload` and publishes it to each of its topics.
    async fn event(&mut self, json: &EventJson, topics: &Topics, ev: &Event, payload: &mut Vec<u8>, max: usize) {
        let targets = topics.for_event(ev.command);
        let n = targets.iter().flatten().count() as u64;
        if n == 0 {
            self.counters.skipped.inc();
            return;
        }
        payload.clear();
        json.write(ev, payload);
        if payload.len() > max {
            self.counters.dropped.add(n);
            if let Some(suppressed) = self.oversize_log.allow() {
                error!(
                    bytes = payload.len(),
                    max, suppressed, "mqtt payload over the size bound; event dropped"
                );
            }
            return;
        }
        for topic in targets.into_iter().flatten() {
            self.publish(topic, payload).await;
        }
    }

    /// Hands one message to rumqttc: waits for room while connected; while disconnected waits up to
    /// [`OUTAGE_GRACE`], then sheds until the connection is back.
    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        if self.shedding {
            if self.link.is_connected() {
                self.shedding = false;
                info!(dropped = self.shed, "mqtt broker reachable again; publishing resumes");
                self.shed = 0;
            } else {
                self.counters.dropped.inc();
                self.shed += 1;
                return;
            }
        }
        let send = self.client.publish(topic, self.qos, self.retain, payload.to_vec());
        tokio::pin!(send);
        let mut waited_disconnected = Duration::ZERO;
        loop {
            match tokio::time::timeout(WAIT_SLICE, send.as_mut()).await {
                Ok(Ok(())) => {
                    self.handed += 1;
                    return;
                }
                Ok(Err(e)) => {
                    // Only when the event loop is gone, which happens only at shutdown.
                    self.counters.dropped.inc();
                    warn!(error = %e, "mqtt client closed; message dropped");
                    return;
                }
                Err(_) if self.link.is_connected() => waited_disconnected = Duration::ZERO,
                Err(_) => {
                    waited_disconnected += WAIT_SLICE;
                    if waited_disconnected >= OUTAGE_GRACE {
                        self.shedding = true;
                        self.shed = 1;
                        self.counters.dropped.inc();
                        error!(
                            grace_s = OUTAGE_GRACE.as_secs(),
                            queued = REQUEST_CAPACITY,
                            "mqtt broker unreachable and the send queue is full: dropping messages (counted) until \
                             it is back"
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// Counts every message `rx` would have produced as dropped (the sink could not start).
fn drain_as_dropped(rx: &Receiver<Slab>, topics: &Topics, counters: &SinkCounters) {
    for slab in rx.iter() {
        for ev in slab.events() {
            let n = topics.for_event(ev.command).iter().flatten().count() as u64;
            if n == 0 {
                counters.skipped.inc();
            } else {
                counters.dropped.add(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> MqttRouting {
        MqttRouting {
            enable: true,
            everything: Some("all".into()),
            session_start: Some("start".into()),
            session_stop: None,
            connection_open: Some("open".into()),
            connection_close: Some("a/much/longer/topic".into()),
        }
    }

    #[test]
    fn each_command_goes_to_everything_then_its_own_topic() {
        let t = Topics::new(&routing());
        assert_eq!(t.for_event(Command::StartSession), [Some("all"), Some("start")]);
        assert_eq!(t.for_event(Command::StopSession), [Some("all"), None]);
        assert_eq!(t.for_event(Command::OpenConnection), [Some("all"), Some("open")]);
        assert_eq!(t.for_event(Command::Other), [Some("all"), None]);
        assert_eq!(t.longest(), "a/much/longer/topic".len());
        let none = Topics::new(&MqttRouting {
            everything: None,
            ..routing()
        });
        assert_eq!(none.for_event(Command::Other), [None, None]);
    }
}
