//! The state every request handler and connection task shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client_ip::ClientIpResolver;
use crate::cluster::ClusterStatus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreConfig};
use crate::ws::Connections;
use ratecast_protocol::Source;

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
    /// Open WebSocket connections, counted against the global and per-IP caps.
    pub connections: Arc<Connections>,
    /// Cluster mode only: this replica's role and link to the shared state.
    pub cluster: Option<Arc<ClusterStatus>>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        let source = config
            .sources()
            .first()
            .copied()
            .unwrap_or(Source::CoinGecko);
        Self {
            store: Arc::new(Store::new(StoreConfig {
                broadcast_capacity: config.ws.broadcast_buffer as usize,
                resume_catch_up: config
                    .cluster
                    .redis_url
                    .is_some()
                    .then_some(crate::cluster::RESUME_CATCH_UP),
                ..StoreConfig::new(source, config.stale_after)
            })),
            metrics: Arc::new(Metrics::new()),
            client_ip: ClientIpResolver::new(&config.trusted_proxy),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connections: Arc::default(),
            cluster: config.cluster.redis_url.is_some().then(Arc::default),
            config: Arc::new(config),
        }
    }
}
