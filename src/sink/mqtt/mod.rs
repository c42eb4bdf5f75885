//! MQTT destination: each event as Butler SOS's JSON payload ([`EventJson`]) to the everything topic and to its
//! command's topic, through rumqttc, on the shared batched worker ([`crate::sink::delivery::worker`]): the same memory queue,
//! disk spool, cap accounting, retries, latency histograms and shutdown as the HTTP destinations.
//!
//! # Encoding
//! [`MqttEncoder`] turns each event into one item holding that event's messages (framing in [`frame`]): the topics
//! in Butler SOS's order (everything, then the command's own topic) and the payload they share, byte-identical to
//! what Butler SOS publishes. An event with no topic (a command without its own topic while the everything topic
//! is off) is `skipped`.
//!
//! # Sending and the confirmation rule
//! [`MqttTransport`] owns the rumqttc client. Its event loop runs as a task (`client::drive`) on the delivery
//! thread's single-threaded runtime, which the worker keeps running while it waits for batches, answers and
//! backoffs, so keep-alives and acks flow continuously. `start` connects at once (before the first event);
//! `prepare` waits until the broker accepted the connection. `send` publishes every message of the batch, in
//! order, with the configured QoS and retain flag, and returns `Ok` only once every one of them is **confirmed**
//! on the same connection:
//! - QoS 0: written to the socket (MQTT has no ack; a broker that dies right after can lose it unnoticed);
//! - QoS 1: the broker's PUBACK; QoS 2: the broker's PUBCOMP.
//!
//! Otherwise (not connected within [`CONNECT_WAIT`], connection lost, no progress for [`PROGRESS_TIMEOUT`]) it
//! returns `SinkError::Connection`: the worker backs off and retries the **whole batch**, while new batches wait
//! in the memory queue and then the spool. So delivery is **at least once**: messages of a batch that reached the
//! broker before the failure are published again, and a subscriber may see them twice (the repeat starts over
//! from the batch's first message). Batches keep their order: one is sent only after the one before it was
//! confirmed (or dropped for good).
//!
//! # Counters (per event, like the other destinations)
//! - `delivered`: events whose messages were all confirmed.
//! - `dropped`: the spool cap evicted them, they were left over at shutdown without a spool, or the item could not
//!   be published at all (payload over the packet bound, damaged item): counted with an ERROR.
//! - `skipped`: no topic to publish to. `retries`: failed send attempts. `spooled`: events waiting on disk.
//!
//! A refused connection (wrong credentials) is retried like an outage: events wait in the spool until it is
//! fixed, and the refusal is logged at ERROR (rate-limited).

pub mod frame;

mod client;
mod config;

pub(crate) use config::max_payload;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, MqttOptions, NetworkOptions, QoS};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{MqttConfig, MqttRouting};
use crate::event::{Command, Event};
use crate::sink::json::EventJson;
use crate::sink::{Encoded, Encoder, Endpoint, SinkError, Transport};
use crate::telemetry::metrics::RateLimit;

use client::Link;

/// Capacity of rumqttc's request channel (messages). `send` waits for room when it is full; at QoS 1/2 at most
/// 100 more are in flight unacknowledged.
pub const REQUEST_CAPACITY: usize = 1024;
/// How long `prepare` and `send` wait for a connection before failing the attempt (the event loop keeps
/// reconnecting in the background with its own backoff).
pub const CONNECT_WAIT: Duration = Duration::from_secs(1);
/// How long `send` waits without any progress (a message leaving the queue, a confirmation) before failing the
/// attempt. Below the engine's 5 s spool grace, so a send in progress at shutdown cannot hold the exit.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait at shutdown for DISCONNECT to be written.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// TCP connect + CONNACK timeout per attempt, seconds.
const CONNECT_TIMEOUT_S: u64 = 5;

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

/// Index of a command in per-command tables.
fn command_index(command: Command) -> usize {
    match command {
        Command::StartSession => 0,
        Command::StopSession => 1,
        Command::OpenConnection => 2,
        Command::CloseConnection => 3,
        Command::Other => 4,
    }
}

/// Encodes events into [`frame`] items: the item header (topics) is prepared once per command, the payload is
/// written straight into the batch.
#[derive(Debug)]
pub struct MqttEncoder {
    json: EventJson,
    /// Item header per [`command_index`]; `None`: no topic for that command (skipped).
    headers: [Option<Vec<u8>>; 5],
}

impl MqttEncoder {
    /// An encoder for the topics of `routing` and the payload writer `json`.
    pub fn new(routing: &MqttRouting, json: EventJson) -> MqttEncoder {
        let topics = Topics::new(routing);
        let headers = [
            Command::StartSession,
            Command::StopSession,
            Command::OpenConnection,
            Command::CloseConnection,
            Command::Other,
        ]
        .map(|c| {
            let list: Vec<&str> = topics.for_event(c).into_iter().flatten().collect();
            frame::header(&list)
        });
        MqttEncoder { json, headers }
    }
}

impl Encoder for MqttEncoder {
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) -> Encoded {
        match &self.headers[command_index(event.command)] {
            Some(header) => {
                frame::write_item(out, header, |o| self.json.write(event, o));
                Encoded::Yes
            }
            None => Encoded::Skipped("no mqtt topic for this command"),
        }
    }
}

/// Publishes batches of [`frame`] items to the broker; see the module docs for the confirmation rule.
pub struct MqttTransport {
    /// Options for the client, until the event loop is started (first `prepare`).
    options: Option<MqttOptions>,
    broker: String,
    qos: QoS,
    retain: bool,
    /// Largest PUBLISH packet handed to rumqttc: its encoder fails the whole connection on a bigger one, which
    /// would retry the same batch for ever. Checked per item, since spooled items may carry older topics.
    max_packet: usize,
    client: Option<AsyncClient>,
    driver: Option<JoinHandle<()>>,
    link: Arc<Link>,
    /// Connection number the `handed` count belongs to.
    epoch: u64,
    /// Messages handed to rumqttc on connection `epoch`.
    handed: u64,
    reject_log: RateLimit,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("broker", &self.broker)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl MqttTransport {
    /// A transport for `config`; `routing` and `json` bound the packet size. Nothing connects before `prepare`.
    /// Fails when the options cannot be built (TLS: an unreadable or empty CA file, no system CA store).
    pub fn new(config: &MqttConfig, routing: &MqttRouting, json: &EventJson) -> Result<MqttTransport, SinkError> {
        let topics = Topics::new(routing);
        let max_payload = max_payload(json);
        let max_packet = max_payload + topics.longest() + config::PUBLISH_OVERHEAD;
        let client_id = config::client_id(config);
        let broker = format!("{}:{}", config.broker_host.trim(), config.broker_port);
        let options = config::mqtt_options(config, client_id.clone(), max_packet).map_err(SinkError::Setup)?;
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
        Ok(MqttTransport {
            options: Some(options),
            broker,
            qos: config::qos(config.qos),
            retain: config.retain,
            max_packet,
            client: None,
            driver: None,
            link: Arc::new(Link::default()),
            epoch: 0,
            handed: 0,
            reject_log: RateLimit::new(Duration::from_secs(10)),
        })
    }

    /// Starts the event loop task (once; must run inside the delivery runtime).
    fn start_event_loop(&mut self) {
        let Some(options) = self.options.take() else {
            return;
        };
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(CONNECT_TIMEOUT_S);
        eventloop.set_network_options(net);
        self.driver = Some(tokio::spawn(client::drive(
            eventloop,
            self.qos,
            Arc::clone(&self.link),
            self.broker.clone(),
        )));
        self.client = Some(client);
    }

    /// The error for a send that cannot go on.
    fn not_connected(&self, what: &str) -> SinkError {
        let cause = self.link.last_error().unwrap_or_else(|| "no connection yet".to_owned());
        SinkError::Connection(format!("{what} (mqtt broker {}: {cause})", self.broker))
    }

    /// Waits up to [`CONNECT_WAIT`] for a connection.
    async fn connected(&mut self) -> Result<(), SinkError> {
        self.start_event_loop();
        let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
        loop {
            let changed = self.link.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.link.is_connected() {
                return Ok(());
            }
            if self.link.is_stopped() {
                return Err(SinkError::Connection("the mqtt client stopped".to_owned()));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.not_connected("not connected"));
            }
        }
    }

    /// Waits for the next change on the link, at most [`PROGRESS_TIMEOUT`], and checks that the connection the
    /// batch started on is still there.
    async fn still_connected(
        &self,
        changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<(), SinkError> {
        if tokio::time::timeout(PROGRESS_TIMEOUT, changed).await.is_err() {
            return Err(SinkError::Connection(format!(
                "mqtt broker {}: no progress for {} s",
                self.broker,
                PROGRESS_TIMEOUT.as_secs()
            )));
        }
        self.check_link()
    }

    fn check_link(&self) -> Result<(), SinkError> {
        if self.link.is_stopped() {
            return Err(SinkError::Connection("the mqtt client stopped".to_owned()));
        }
        if !self.link.is_connected() || self.link.epoch() != self.epoch {
            return Err(self.not_connected("connection lost"));
        }
        Ok(())
    }

    /// Hands one message to rumqttc, waiting while its queue is full.
    async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), SinkError> {
        loop {
            // No await between this check and `try_publish`: the event-loop task (same thread) cannot fail the
            // connection in between, so a message is only ever handed on a live, current connection.
            self.check_link()?;
            let changed = self.link.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(client) = &self.client else {
                return Err(SinkError::Connection("the mqtt client is not started".to_owned()));
            };
            match client.try_publish(topic, self.qos, self.retain, payload) {
                Ok(()) => {
                    self.handed += 1;
                    return Ok(());
                }
                // Full (the topic was checked when the item was read): wait for room.
                Err(ClientError::TryRequest(_) | ClientError::Request(_)) => self.still_connected(changed).await?,
            }
        }
    }
}

impl Transport for MqttTransport {
    /// Connects at once, so the broker sees the client (and a refusal is logged) before the first event.
    async fn start(&mut self) {
        self.start_event_loop();
    }

    async fn prepare(&mut self) -> Result<(), SinkError> {
        self.connected().await
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.broker.clone(),
            address_keys: "Butler-SOS.mqttConfig.brokerHost and Butler-SOS.mqttConfig.brokerPort",
            auth_keys: "Butler-SOS.mqttConfig.username and .password",
            tls_keys: "Butler-SOS.mqttConfig.tls",
        }
    }

    /// Waits for the broker's CONNACK (at most [`CONNECT_WAIT`]).
    async fn contact(&mut self) -> Result<String, SinkError> {
        self.connected()
            .await
            .map(|()| "connected to the mqtt broker".to_owned())
    }

    /// Publishes every message of `items` (whole [`frame`] items, `count` events) and waits until all are
    /// confirmed. `Ok(n)`: `n` events could not be published at all (payload over the bound, damaged item).
    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        self.connected().await?;
        let epoch = self.link.epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            self.handed = 0;
        }
        let mut read = 0usize;
        let mut rejected = 0usize;
        for item in frame::Items::new(items) {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    if let Some(suppressed) = self.reject_log.allow() {
                        error!(broker = %self.broker, error = %e, suppressed,
                            "damaged mqtt item; the rest of the batch cannot be read");
                    }
                    break;
                }
            };
            read += 1;
            let longest_topic = item.topics().iter().map(|t| t.len()).max().unwrap_or(0);
            let packet = item.payload.len() + longest_topic + config::PUBLISH_OVERHEAD;
            if packet > self.max_packet {
                rejected += 1;
                if let Some(suppressed) = self.reject_log.allow() {
                    error!(
                        bytes = packet,
                        max = self.max_packet,
                        suppressed,
                        "mqtt payload over the size bound; event not published"
                    );
                }
                continue;
            }
            for topic in item.topics() {
                self.publish(topic, item.payload).await?;
            }
        }
        // Items that could not be read are not published: count them with the rejected ones.
        rejected += count.saturating_sub(read);
        loop {
            self.check_link()?;
            let changed = self.link.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.link.confirmed() >= self.handed {
                return Ok(rejected);
            }
            self.still_connected(changed).await?;
        }
    }

    /// Sends DISCONNECT when connected (waiting at most [`DISCONNECT_TIMEOUT`]) and stops the event loop.
    async fn close(&mut self) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        let disconnected = self.link.is_connected()
            && self.client.as_ref().is_some_and(|c| c.try_disconnect().is_ok())
            && tokio::time::timeout(DISCONNECT_TIMEOUT, &mut driver).await.is_ok();
        if !disconnected {
            driver.abort();
            let _ = driver.await;
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

    fn event(datagram: &str) -> Event {
        let mut ev = Event::new();
        crate::parse::parse_into(datagram.as_bytes(), &mut ev).unwrap();
        ev
    }

    #[test]
    fn an_item_holds_the_event_topics_in_butler_sos_order_and_the_unchanged_payload() {
        let json = EventJson::new(&[]);
        let mut encoder = MqttEncoder::new(&routing(), json.clone());
        let start = event("/qseow-proxy-session/;qlik1;Start session;LAB;u1;AppAccess;/hub;m");
        let stop = event("/qseow-proxy-session/;qlik1;Stop session;LAB;u1;AppAccess;/hub;m");
        let mut batch = Vec::new();
        assert_eq!(encoder.encode(&start, &mut batch), Encoded::Yes);
        assert_eq!(encoder.encode(&stop, &mut batch), Encoded::Yes);
        let items: Vec<frame::Item<'_>> = frame::Items::new(&batch).collect::<Result<_, _>>().unwrap();
        let mut want = Vec::new();
        json.write(&start, &mut want);
        assert_eq!(items[0].topics(), ["all", "start"]);
        assert_eq!(items[0].payload, want.as_slice());
        assert_eq!(items[1].topics(), ["all"]);

        let mut nothing = MqttEncoder::new(
            &MqttRouting {
                everything: None,
                ..routing()
            },
            json,
        );
        let mut out = Vec::new();
        assert!(matches!(nothing.encode(&stop, &mut out), Encoded::Skipped(_)));
        assert!(out.is_empty());
        assert_eq!(nothing.encode(&start, &mut out), Encoded::Yes);
    }

    #[test]
    fn without_a_broker_prepare_and_send_fail_retriably_and_close_returns() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = MqttConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            ..Default::default()
        };
        let json = EventJson::new(&[]);
        let mut transport = MqttTransport::new(&config, &routing(), &json).unwrap();
        let item = frame::item_bytes(&["all"], b"{}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            transport.start().await;
            let e = transport.prepare().await.unwrap_err();
            assert!(e.is_retriable(), "{e}");
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
            let e = transport.send(&item, 1).await.unwrap_err();
            assert!(matches!(e, SinkError::Connection(_)), "{e}");
            tokio::time::timeout(Duration::from_secs(2), transport.close())
                .await
                .unwrap();
        });
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
