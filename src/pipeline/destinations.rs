//! The destinations a config enables, as one list: **the one place to add a destination.**
//!
//! `from_config` turns the validated config into [`Destination`]s. Each knows its name (its spool folder,
//! metrics label and log field), its counters, how to start its thread once its channel exists, and how to take a
//! reloaded config ([`Destination::retune`]). `pipeline::start` wires channels, readers and metrics to whatever
//! this list holds and names no destination itself.
//!
//! To add one: build its encoder and transport here (a [`Transport`] for the batched worker), derive its batch
//! limits in one function used at start and at reload, and push one [`Destination`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tracing::warn;

use super::{Ownership, StartError};
use crate::analytics::{SessionAnalytics, SessionSettings};
use crate::config::{BatchConfig, Config};
use crate::event::handover::SlabReceiver;
use crate::sink::delivery::queue::{QueueSettings, SpoolSettings};
use crate::sink::delivery::retune::{Retune, Update};
use crate::sink::delivery::worker::{self, WorkerSettings};
use crate::sink::influxdb::{InfluxTransport, LineEncoder};
use crate::sink::json::EventJson;
use crate::sink::mqtt::{self, MqttEncoder, MqttTransport};
use crate::sink::new_relic::{self, NewRelicEncoder, NewRelicTransport};
use crate::sink::stdout;
use crate::sink::{Encoder, Transport};
use crate::telemetry::metrics::SinkCounters;

/// Starts a destination's thread body once its channel exists.
pub(super) type SinkStart = Box<dyn FnOnce(SlabReceiver) + Send>;

/// Applies a reloaded, validated config to a running destination (see [`crate::sink::delivery::retune`]).
pub type Retuner = Box<dyn Fn(&Config) + Send + Sync>;

/// One enabled destination, not started yet.
pub struct Destination {
    /// Its name: spool folder, `destination` label, log field.
    pub name: String,
    /// Its counters (shared with metrics and summaries).
    pub counters: Arc<SinkCounters>,
    /// Starts its thread body.
    pub(super) start: SinkStart,
    /// Takes the live settings of a reloaded config.
    pub retune: Retuner,
    /// It writes a spool folder (every destination but stdout).
    pub(super) spools: bool,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("name", &self.name)
            .field("spools", &self.spools)
            .finish_non_exhaustive()
    }
}

/// Every destination `config` enables, in a fixed order (stdout, InfluxDB, session analytics, MQTT, New Relic
/// accounts). The first destination that spools takes the spool lock in `owned`; `stop` is the engine's stop flag.
pub(super) fn from_config(
    config: &Config,
    owned: &mut Ownership,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Destination>, StartError> {
    let engine = &config.engine;
    let tags = &config.user_events.tags;
    let mut out = Vec::new();

    if engine.stdout {
        let retune = Arc::new(Retune::new(engine.retry));
        let counters = Arc::new(SinkCounters::default());
        let (json, c, r) = (EventJson::new(tags), Arc::clone(&counters), Arc::clone(&retune));
        out.push(Destination {
            name: "stdout".into(),
            counters,
            start: Box::new(move |rx: SlabReceiver| stdout::run(rx.into_inner(), json, c, Some(r))),
            retune: Box::new(move |new: &Config| {
                retune.offer(Update {
                    encoder: Some(EventJson::new(&new.user_events.tags)),
                    batch: new.engine.batch,
                    retry: new.engine.retry,
                })
            }),
            spools: false,
        });
    }
    if config.user_events.send_to_influxdb {
        let influx = &config.influxdb;
        let version = influx.version;
        let settings = worker_settings(config, "influxdb", influx_batch(config), owned, stop)?;
        let transport = InfluxTransport::new(influx);
        out.push(batched(
            settings,
            LineEncoder::with_version(tags, version),
            transport,
            move |new| Update {
                encoder: Some(LineEncoder::with_version(&new.user_events.tags, version)),
                batch: influx_batch(new),
                retry: new.engine.retry,
            },
        )?);

        if engine.analytics.enable {
            let a = &engine.analytics;
            let session = SessionSettings {
                orphan_after: a.orphan_after,
                gauge_interval: a.gauge_interval,
                max_tracked: a.max_tracked,
            };
            let name = "user_session";
            let settings = worker_settings(config, name, engine.batch, owned, stop)?;
            let encoder = SessionAnalytics::new(&session, version);
            // The tracked sessions are the encoder's state: it is kept; only batching and retries change.
            out.push(batched(settings, encoder, InfluxTransport::new(influx), |new| {
                Update {
                    encoder: None,
                    batch: new.engine.batch,
                    retry: new.engine.retry,
                }
            })?);
        }
    } else if engine.analytics.enable {
        warn!("sense-ingest.analytics.enable is set but the InfluxDB destination is off: no session analytics");
    }
    if config.user_events.send_to_mqtt.enable {
        let routing = config.user_events.send_to_mqtt.clone();
        let json = EventJson::new(tags);
        let transport = MqttTransport::new(&config.mqtt, &routing, &json);
        // The transport bounds packets by the tags in force at start; larger tags wait for a restart.
        let bound = mqtt::max_payload(&json);
        let settings = worker_settings(config, "mqtt", engine.batch, owned, stop)?;
        out.push(batched(
            settings,
            MqttEncoder::new(&routing, json),
            transport,
            move |new| {
                let json = EventJson::new(&new.user_events.tags);
                let encoder = if mqtt::max_payload(&json) <= bound {
                    Some(MqttEncoder::new(&routing, json))
                } else {
                    warn!(
                        "Butler-SOS.userEvents.tags now make MQTT payloads larger than the bound set at start: MQTT \
                     keeps the earlier tags until the next restart"
                    );
                    None
                };
                Update {
                    encoder,
                    batch: new.engine.batch,
                    retry: new.engine.retry,
                }
            },
        )?);
    }
    if config.user_events.send_to_new_relic.enable {
        let routing = &config.user_events.send_to_new_relic;
        let scramble = routing.scramble;
        // One worker per account: a failing account never holds up another.
        for account in &routing.accounts {
            let name = account.destination_name();
            let settings = worker_settings(config, &name, new_relic_batch(config), owned, stop)?;
            let transport = NewRelicTransport::new(&config.new_relic, account);
            out.push(batched(
                settings,
                NewRelicEncoder::new(tags, scramble),
                transport,
                move |new| Update {
                    encoder: Some(NewRelicEncoder::new(&new.user_events.tags, scramble)),
                    batch: new_relic_batch(new),
                    retry: new.engine.retry,
                },
            )?);
        }
    }
    Ok(out)
}

/// The InfluxDB batch limits: `influxdbConfig.maxBatchSize` keeps Butler SOS's meaning, the most points per write
/// request.
fn influx_batch(config: &Config) -> BatchConfig {
    let mut batch = config.engine.batch;
    if config.influxdb.max_batch_size > 0 {
        batch.max_events = batch.max_events.min(config.influxdb.max_batch_size);
    }
    batch
}

/// The New Relic batch limits: a whole batch must fit one Event API request (1 MB uncompressed). A batch is closed
/// once it reaches `max_bytes`, so it can exceed it by one event (a few KB): keep a margin.
fn new_relic_batch(config: &Config) -> BatchConfig {
    let mut batch = config.engine.batch;
    batch.max_bytes = batch.max_bytes.min(new_relic::max_body_bytes() - (64 << 10));
    batch
}

/// A batched destination named by `settings`: the shared worker with `encoder` and `transport`; `update` makes
/// its live settings from a reloaded config.
fn batched<E, T>(
    settings: WorkerSettings,
    encoder: E,
    transport: Result<T, crate::sink::SinkError>,
    update: impl Fn(&Config) -> Update<E> + Send + Sync + 'static,
) -> Result<Destination, StartError>
where
    E: Encoder + 'static,
    T: Transport + Send + 'static,
{
    let name = settings.name.clone();
    let transport = transport.map_err(|source| StartError::Sink {
        destination: name.clone(),
        source,
    })?;
    let counters = Arc::new(SinkCounters::default());
    let retune = Arc::new(Retune::new(settings.retry));
    let (c, r) = (Arc::clone(&counters), Arc::clone(&retune));
    Ok(Destination {
        name,
        counters,
        start: Box::new(move |rx| worker::run_retunable(settings, rx, encoder, transport, c, Some(r))),
        retune: Box::new(move |new| retune.offer(update(new))),
        spools: true,
    })
}

/// Batching, retry, queue and spool settings for the destination `name` (the first that spools takes the spool
/// lock); `stop` is the engine's stop flag.
fn worker_settings(
    config: &Config,
    name: &str,
    batch: BatchConfig,
    owned: &mut Ownership,
    stop: &Arc<AtomicBool>,
) -> Result<WorkerSettings, StartError> {
    let engine = &config.engine;
    let spool = (engine.spool.enable && owned.spool_usable(&engine.spool.root())?).then(|| SpoolSettings {
        dir: engine.spool.folder_of(name),
        max_bytes: engine.spool.max_bytes,
        fsync_interval: engine.spool.fsync_interval,
    });
    Ok(WorkerSettings {
        name: name.to_string(),
        batch,
        retry: engine.retry,
        queue: QueueSettings {
            max_memory_bytes: engine.spool.memory_bytes,
            spool,
        },
        shutdown_timeout: engine.shutdown_timeout,
        stop: Some(Arc::clone(stop)),
    })
}
