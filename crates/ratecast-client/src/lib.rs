//! ratecast's clients. They share only the `ratecast-protocol` crate with the server (a test
//! reads `cargo metadata` to keep it so), and build on Linux and macOS alike.
//!
//! - [`watch`]: the live table in a terminal, or NDJSON for scripts.
//! - [`loadtest`]: many subscribers against one stream; connects, gaps, delivery latency.
//! - [`healthcheck`]: a probe for images without curl.
//!
//! Each `run` takes the future that ends it (the binary passes its signal handler).

pub mod healthcheck;
pub mod loadtest;
pub mod table;
pub mod watch;
