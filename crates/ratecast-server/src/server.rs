//! Wiring: the routers, and `run`, which starts the poller, the timers and the accept loops on
//! listeners the caller binds (tests use port 0) and drains on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::accept::{self, SocketOptions};
use crate::cluster::{self, ClusterError};
use crate::config::Config;
use crate::every::every;
use crate::state::AppState;
use crate::metrics::Metrics;
use crate::upstream::{CoinGecko, Coinbase, Demo, FailoverConfig, SetupError, Sources, Upstream};
use ratecast_protocol::Source;
use crate::{http, poller, web, ws};

/// The whole HTTP surface (REST, page, stream, health, metrics unless served separately).
/// Starts the stream's fan-out shards, so call it inside a Tokio runtime.
pub fn app(state: AppState) -> Router {
    let routes = http::routes(&state)
        .layer(http::timeout_layer())
        .merge(web::router())
        .merge(ws::routes(&state));
    http::with_middleware(routes, &state).with_state(state)
}

/// The metrics-only router for `--metrics-listen`.
pub fn metrics_app(state: AppState) -> Router {
    let routes = Router::new().route("/metrics", axum::routing::get(http::metrics));
    http::with_middleware(routes, &state).with_state(state)
}

/// The sources in order of priority, behind one [`Sources`] that fails over between them.
fn upstream(config: &Config, metrics: Arc<Metrics>) -> Result<Sources<Upstream>, SetupError> {
    let feeds = config
        .sources()
        .into_iter()
        .map(|source| {
            let client = match source {
                Source::Demo => Upstream::Demo(Demo::new()),
                Source::CoinGecko => Upstream::CoinGecko(CoinGecko::new(
                    &config.upstream_url,
                    config.api_key.as_ref().map(|k| k.expose()),
                    config.request_timeout,
                )?),
                Source::Coinbase => {
                    Upstream::Coinbase(Coinbase::new(&config.coinbase_url, config.request_timeout)?)
                }
            };
            Ok((source, client))
        })
        .collect::<Result<_, SetupError>>()?;
    if config.crosscheck_hold_percent < config.crosscheck_warn_percent {
        return Err(SetupError::Thresholds {
            warn: config.crosscheck_warn_percent,
            hold: config.crosscheck_hold_percent,
        });
    }
    let failover = FailoverConfig {
        failover_after: config.failover_after.unwrap_or(config.poll_interval),
        crosscheck_interval: Some(config.crosscheck_interval).filter(|d| !d.is_zero()),
        warn_ratio: config.crosscheck_warn_percent / 100.0,
        hold_ratio: config.crosscheck_hold_percent / 100.0,
    };
    Ok(Sources::new(feeds, failover, metrics))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot set up the upstream client: {0}")]
    Upstream(#[from] SetupError),
    #[error("cannot set up cluster mode: {0}")]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves until `shutdown` completes, then drains within the grace period and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let state = AppState::new(config);
    let upstream = upstream(&state.config, state.metrics.clone())?;
    let config = state.config.clone();
    let token = state.shutdown.clone();
    info!(
        listen = %listener.local_addr()?,
        sources = ?config.sources().iter().map(|s| s.label()).collect::<Vec<_>>(),
        upstream = %config.upstream_url,
        poll_interval = ?config.poll_interval,
        // Never the Redis URL: it may hold a password.
        cluster = config.cluster.redis_url.is_some(),
        "ratecast serving"
    );

    let poller_config = poller::PollerConfig {
        interval: config.poll_interval,
        max_backoff: config.max_backoff,
    };
    // Standalone: this process polls. Cluster mode: the lease holder polls and publishes
    // to Redis, and every replica's store is fed from there.
    let background = match &state.cluster {
        None => vec![tokio::spawn(poller::run(
            upstream,
            state.store.clone(),
            state.metrics.clone(),
            poller_config,
            token.clone(),
        ))],
        Some(status) => {
            cluster::start(
                &config,
                upstream,
                state.store.clone(),
                state.metrics.clone(),
                status.clone(),
                token.clone(),
            )
            .await?
        }
    };
    tokio::spawn(ticker(state.clone()));

    let options = SocketOptions {
        send_buffer: config.ws.socket_send_buffer as usize,
    };
    // The listeners stay open through the drain (probes get 503, not a refused connection)
    // and close once the connections are drained or the grace period is over.
    let stop_accepting = CancellationToken::new();
    let serve = |listener: TcpListener, router: Router| {
        tokio::spawn(accept::serve(
            listener,
            router,
            options,
            token.clone(),
            stop_accepting.clone(),
        ))
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
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let drained = tokio::time::timeout_at(deadline, async {
        state.tasks.wait().await;
        for task in background {
            let _ = task.await;
        }
    })
    .await;
    stop_accepting.cancel();
    let requests = tokio::time::timeout_at(deadline, async {
        let _ = server.await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
    })
    .await;
    if drained.is_err() || requests.is_err() {
        warn!("grace period over with connections still open; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

/// One timer for the stale flag (no poll is needed to go stale) and metrics upkeep.
async fn ticker(state: AppState) {
    every(state.config.ws.heartbeat_interval, &state.shutdown, || {
        state.store.refresh_stale(SystemTime::now());
        state.metrics.upkeep();
    })
    .await;
}
