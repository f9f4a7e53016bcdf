//! The ratecast server: live crypto exchange rates, polled once, pushed to every screen.
//!
//! # Layout
//! The path of one change, bottom to top (`ARCHITECTURE.md` has the whole map):
//!
//! - [`upstream`]: CoinGecko's client and payload format, and the offline demo source (I/O;
//!   knows nothing of the store).
//! - [`store`]: current table, `seq`, delta ring, history; serialises each frame once and
//!   broadcasts it (state; knows nothing of the upstream).
//! - [`poller`]: the single task tying upstream to store, with backoff.
//! - The edge: [`http`] (REST, health, metrics), [`ws`] (the live stream and its fan-out),
//!   [`web`] (the embedded page), [`accept`] (the HTTP/1.1 accept loop that hands upgraded
//!   sockets to [`ws`]); with [`codes`] (client lists of unit codes), [`rate_limit`],
//!   [`client_ip`], [`etag`] and [`error`].
//! - [`state`]: what handlers and connection tasks share; [`config`]: `ratecast serve`'s options;
//!   [`metrics`]: the Prometheus registry; [`every`]: periodic work that stops with the server.
//! - [`server`]: wiring — [`app`] and [`run`].
//!
//! The rate model and the wire frames live in the `ratecast-protocol` crate, shared with the
//! clients; nothing here is imported by them.

pub mod accept;
pub mod client_ip;
pub mod cluster;
pub mod codes;
pub mod config;
pub mod error;
pub mod etag;
pub mod every;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod store;
pub mod upstream;
pub mod web;
pub mod ws;

pub use config::Config;
pub use server::{ServeError, app, metrics_app, run};
pub use state::AppState;
