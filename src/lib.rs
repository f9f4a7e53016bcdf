//! ratecast: live crypto exchange rates, polled once, pushed to every screen.
//!
//! # Layout
//! The path of one change, bottom to top:
//!
//! - [`model`]: rates, payload validation, diffs, upstream state (pure data).
//! - [`protocol`]: the wire frames of `docs/protocol.md` (pure data; shared with the CLI clients).
//! - [`upstream`]: CoinGecko client and the offline demo source (I/O, knows nothing of the store).
//! - [`store`]: current table, `seq`, delta ring, history; serialises each frame once and broadcasts it.
//! - [`poller`]: the single task tying upstream to store, with backoff.
//! - [`http`]: REST, health, metrics routes and shared middleware; [`ws`]: the live stream;
//!   [`web`]: the embedded page.
//! - [`client_ip`], [`error`], [`metrics`], [`shutdown`], [`config`]: cross-cutting pieces.
//! - [`watch`], [`loadtest`], [`healthcheck`]: the CLI clients (they share only [`protocol`]).
//!
//! [`run`] starts everything on a listener the caller binds (tests use port 0).

pub mod client_ip;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod loadtest;
pub mod metrics;
pub mod model;
pub mod poller;
pub mod protocol;
pub mod rlimit;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod upstream;
pub mod watch;
pub mod web;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::client_ip::ClientIpResolver;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::Source;
use crate::store::{Store, StoreConfig};
use crate::upstream::{CoinGecko, Demo, Upstream, UpstreamError};

/// Everything a request handler or connection task needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub client_ip: ClientIpResolver,
    /// Cancelled when shutdown starts: readiness flips, WebSockets close with 1001.
    pub shutdown: CancellationToken,
    /// Connection tasks that outlive their HTTP request (WebSockets), awaited on shutdown.
    pub tasks: TaskTracker,
    pub connections: Arc<ws::Connections>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let source = if config.demo {
            Source::Demo
        } else {
            Source::CoinGecko
        };
        Self {
            store: Arc::new(Store::new(StoreConfig {
                broadcast_capacity: config.ws.broadcast_buffer as usize,
                ..StoreConfig::new(source, config.stale_after)
            })),
            metrics: Arc::new(Metrics::new()),
            client_ip: ClientIpResolver::new(&config.trusted_proxy),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections: Arc::default(),
            config: Arc::new(config),
        }
    }
}

/// The whole HTTP surface (REST, page, stream, health, metrics unless served separately).
/// Starts the stream's fan-out shards, so call it inside a Tokio runtime.
pub fn app(state: AppState) -> Router {
    let routes = http::routes(&state)
        .layer(http::timeout_layer())
        .merge(web::router())
        .merge(ws::routes(&state, ws::Hub::start(&state)));
    http::with_middleware(routes, &state).with_state(state)
}

/// The metrics-only router for `--metrics-listen`.
pub fn metrics_app(state: AppState) -> Router {
    let routes = Router::new().route("/metrics", axum::routing::get(http::metrics));
    http::with_middleware(routes, &state).with_state(state)
}

fn upstream(config: &Config) -> Result<Upstream, UpstreamError> {
    Ok(if config.demo {
        Upstream::Demo(Demo::new())
    } else {
        Upstream::CoinGecko(CoinGecko::new(
            &config.upstream_url,
            config.api_key.as_ref().map(|k| k.expose()),
            config.request_timeout,
        )?)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot set up the upstream client: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves until `shutdown` completes, then drains within the grace period and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let upstream = upstream(&config)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let state = AppState::new(config);
    let config = state.config.clone();
    let token = state.shutdown.clone();
    info!(
        listen = %listener.local_addr()?,
        source = if config.demo { "demo" } else { "coingecko" },
        upstream = %config.upstream_url,
        poll_interval = ?config.poll_interval,
        "ratecast serving"
    );

    let poller_config = poller::PollerConfig {
        interval: config.poll_interval,
        max_backoff: config.max_backoff,
    };
    let poller = tokio::spawn(poller::run(
        upstream,
        state.store.clone(),
        state.metrics.clone(),
        poller_config,
        token.clone(),
    ));
    tokio::spawn(ticker(state.clone()));

    let options = serve::SocketOptions {
        send_buffer: config.ws.socket_send_buffer as usize,
    };
    let serve = |listener: TcpListener, router: Router| {
        tokio::spawn(serve::serve(listener, router, options, token.clone()))
    };
    let mut server = serve(listener, app(state.clone()));
    let metrics_server = metrics_listener.map(|l| serve(l, metrics_app(state.clone())));

    tokio::select! {
        () = shutdown => token.cancel(),
        result = &mut server => {
            token.cancel();
            result.map_err(std::io::Error::other)?;
        }
    }

    info!(grace = ?config.shutdown_grace, "draining");
    state.tasks.close();
    let drain = async {
        let _ = server.await;
        state.tasks.wait().await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        let _ = poller.await;
    };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        warn!("grace period over with connections still open; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

/// One timer for everyone: heartbeats (which also pace the connections' liveness checks), the
/// stale flag, and metrics upkeep.
async fn ticker(state: AppState) {
    let mut every = tokio::time::interval(state.config.ws.heartbeat_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        let now = SystemTime::now();
        state.store.refresh_stale(now);
        state.store.heartbeat(now);
        state.metrics.upkeep();
    }
}
