//! Delivery: the machinery every batched destination shares, knowing nothing of any one destination's wire
//! format.
//!
//! - [`worker`]: the sink worker: encodes slabs into [`batch::Batch`]es on its intake thread, delivers them
//!   oldest first through the destination's [`Transport`](super::Transport) on its delivery thread, with retries,
//!   413 splits and a counter for every event that is not delivered.
//! - [`queue`]: the delivery queue between the two: memory as a cache of the [`spool`], bounded, in order.
//! - [`spool`]: the crash-safe, checksummed disk spool of one destination.
//! - [`batch`]: encoded batches and their per-sender accounting.
//! - [`retune`]: what a reload (SIGHUP) changes in a running destination.

pub mod batch;
pub mod queue;
pub mod retune;
pub mod spool;
pub mod worker;
