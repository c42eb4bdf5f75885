//! The InfluxDB transport of the configured version: the one place that dispatches on
//! `influxdbConfig.version` (`user_events`, session analytics and Butler SOS's own measurements all use it).

use bytes::Bytes;

use super::client::InfluxV1Transport;
use super::client_v2::InfluxV2Transport;
use super::client_v3::InfluxV3Transport;
use crate::config::{InfluxConfig, InfluxVersion};
use crate::sink::{Endpoint, SinkError, Transport};

/// An InfluxDB 1.x, v2 or v3 transport, chosen once from the config.
#[derive(Debug)]
pub enum InfluxTransport {
    /// 1.x: `/write`, database + retention policy.
    V1(InfluxV1Transport),
    /// v2: `/api/v2/write`, org + bucket.
    V2(InfluxV2Transport),
    /// v3: `/api/v3/write_lp`, database.
    V3(InfluxV3Transport),
}

impl InfluxTransport {
    /// The transport for `config.version`; fails only when the HTTP client cannot be built (TLS settings).
    pub fn new(config: &InfluxConfig) -> Result<InfluxTransport, SinkError> {
        Ok(match config.version {
            InfluxVersion::V1 => InfluxTransport::V1(InfluxV1Transport::new(config)?),
            InfluxVersion::V2 => InfluxTransport::V2(InfluxV2Transport::new(config)?),
            InfluxVersion::V3 => InfluxTransport::V3(InfluxV3Transport::new(config)?),
        })
    }
}

/// Calls `$body` with `$t` bound to whichever version's transport `$self` holds.
macro_rules! each {
    ($self:expr, $t:ident => $body:expr) => {
        match $self {
            InfluxTransport::V1($t) => $body,
            InfluxTransport::V2($t) => $body,
            InfluxTransport::V3($t) => $body,
        }
    };
}

impl Transport for InfluxTransport {
    async fn start(&mut self) {
        each!(self, t => t.start().await)
    }

    async fn prepare(&mut self) -> Result<(), SinkError> {
        each!(self, t => t.prepare().await)
    }

    fn endpoint(&self) -> Endpoint {
        each!(self, t => t.endpoint())
    }

    async fn contact(&mut self) -> Result<String, SinkError> {
        each!(self, t => t.contact().await)
    }

    async fn send(&mut self, items: &[u8], count: usize) -> Result<usize, SinkError> {
        each!(self, t => t.send(items, count).await)
    }

    async fn send_shared(&mut self, items: Bytes, count: usize) -> Result<usize, SinkError> {
        each!(self, t => t.send_shared(items, count).await)
    }

    async fn close(&mut self) {
        each!(self, t => t.close().await)
    }
}
