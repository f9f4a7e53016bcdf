//! What the ratecast server and its clients agree on: the rate model and the wire protocol of
//! `docs/protocol.md`. Pure data — no async runtime, no HTTP, no I/O — so the terminal client,
//! the load generator and the server share exactly these types and nothing else.
//!
//! # Layout
//! - [`rates`]: one unit's rate, a table of them, validation, and the diff of two tables.
//! - [`status`]: where data comes from and how healthy that source is.
//! - [`frames`]: server → client frames and client → server commands.
//! - [`checksum`]: the table checksum every snapshot and delta carries.
//! - [`time`]: timestamps as the wire carries them.
//! - [`backoff`]: the retry schedule the poller and the clients share.

pub mod backoff;
pub mod checksum;
pub mod frames;
pub mod rates;
pub mod status;
pub mod time;

pub use frames::{ClientCommand, FrameHead, FrameKind, ServerFrame};
pub use rates::{Rate, Rates, UnitFlag};
pub use status::{Failover, Source, UpstreamState, UpstreamStatus};
