//! The InfluxDB destination: Butler SOS's `user_events` schema, batched.
//!
//! - [`line_protocol`]: the one line-protocol writer; tag, field and measurement escaping per InfluxDB version.
//! - [`encode`]: `user_events` lines for one event, in the v1, v2 or v3 layout (pure).
//! - [`client`]: the InfluxDB 1.x HTTP transport (setup queries, `/write`, status handling).
//! - [`client_v2`], [`client_v3`]: the InfluxDB 2.x (`/api/v2/write`) and 3.x (`/api/v3/write_lp`) transports.
//! - [`http`]: what the three versions share (the client with `influxdbTls`, the endpoint, the gzipped write,
//!   partial-write answers); generic HTTP is [`crate::sink::http`].
//! - [`transport`]: [`InfluxTransport`], the one dispatch on `influxdbConfig.version`.
//! - [`metrics_encode`]: line protocol for Butler SOS's own measurements (event counts, queue metrics).

pub mod client;
pub mod client_v2;
pub mod client_v3;
pub mod encode;
pub mod http;
pub mod line_protocol;
pub mod metrics_encode;
pub mod transport;

pub use client::InfluxV1Transport;
pub use encode::LineEncoder;
pub use transport::InfluxTransport;
