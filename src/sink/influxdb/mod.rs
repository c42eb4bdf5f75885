//! The InfluxDB destination: Butler SOS's `user_events` schema, batched.
//!
//! - [`encode`]: line protocol for one event (pure).
//! - [`client`]: the HTTP transport (setup queries, `/write`, status handling).
//! - [`butler_metrics`]: line protocol for Butler SOS's own measurements (event counts, queue metrics).

pub mod butler_metrics;
pub mod client;
pub mod client_v2;
pub mod client_v3;
pub mod encode;
pub mod http;
pub mod transport;

pub use client::InfluxV1Transport;
pub use encode::LineEncoder;
pub use transport::InfluxTransport;
