//! Cluster mode (`--redis-url`, docs/cluster.md): one CoinGecko poller for the whole
//! deployment, one `seq`, and resume on any replica, through a shared Redis / Valkey.
//!
//! # Layout
//! - [`lease`]: the leadership lease (set-if-absent with expiry, renewed) and its fencing
//!   epoch; publishes who leads on a `watch` channel.
//! - [`leader`]: the lease holder's poll loop: upstream → [`publish`] (never the store).
//! - [`publish`]: the one Lua script that checks the lease and atomically assigns the next
//!   `seq`, appends to the stream and stores the snapshot and history.
//! - [`consume`]: every replica's stream reader, the leader's included: Redis → store. It
//!   loads the whole state on start, after a gap, and when Redis was emptied.
//! - [`conn`]: each task's Redis connection: rebuilt (a fresh connect) after a timeout, an
//!   I/O error, `READONLY`, `LOADING` or `MASTERDOWN`; a sharded Redis Cluster is refused.
//!
//! The store and the upstream know nothing of this module; it sits where the poller does.

mod conn;
mod consume;
mod leader;
mod lease;
mod publish;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::poller::PollerConfig;
use crate::store::Store;
use crate::upstream::RateSource;

use conn::Conn;
pub use lease::Lease;

/// Published deltas kept in the stream, and loaded into a starting replica's ring: the
/// store's ring length, so that `?since=` replays the same on every replica.
pub const STREAM_DELTAS: u64 = 1_024;

/// How long a `?since=` a few deltas ahead of this replica waits for its stream reader to
/// bring them (`StoreConfig::resume_catch_up`): one blocking read's worth, far more than the
/// milliseconds replicas normally trail each other by.
pub const RESUME_CATCH_UP: Duration = READ_BLOCK;

/// How long one `XREAD` blocks before the reader checks the shared state's head.
const READ_BLOCK: Duration = Duration::from_secs(2);

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Never shows the URL: it may hold a password.
    #[error("the Redis URL is not valid (expected redis://… or rediss://…)")]
    BadUrl,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the lease is no longer ours: another replica leads")]
    Fenced,
    #[error("the shared state changed under this leader")]
    Conflict,
    /// The shared state is behind what this replica served in the same generation.
    #[error("the shared state lost writes: {0}")]
    Behind(String),
    #[error("unexpected data in Redis: {0}")]
    Data(String),
    #[error(
        "the Redis at --redis-url is a sharded Redis Cluster (cluster_enabled:1), which is not \
         supported: use a non-clustered primary endpoint (e.g. ElastiCache with cluster mode \
         disabled)"
    )]
    Sharded,
}

impl ClusterError {
    /// Bounded label for `ratecast_cluster_redis_errors_total` and the stale reason.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl | Self::Sharded => "config",
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e) if e.is_io_error() || e.is_connection_dropped() => "io",
            Self::Redis(e) => match e.kind() {
                redis::ErrorKind::AuthenticationFailed => "auth",
                redis::ErrorKind::Io => "io",
                redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => "auth",
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => "loading",
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) => "readonly",
                redis::ErrorKind::Server(_) => "server",
                redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => "response",
                _ => "other",
            },
            Self::Fenced => "fenced",
            Self::Conflict => "conflict",
            Self::Behind(_) => "behind",
            Self::Data(_) => "data",
        }
    }
}

/// The names of every key, all in one hash slot (`{prefix}`) so the script may touch them
/// together on a clustered Redis too.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub lease: String,
    pub epoch: String,
    pub state: String,
    pub stream: String,
    /// The upstream state while the cluster has no data yet (see `publish`).
    pub waiting: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let prefix = format!("{{{prefix}}}");
        Self {
            lease: format!("{prefix}:lease"),
            epoch: format!("{prefix}:epoch"),
            state: format!("{prefix}:state"),
            stream: format!("{prefix}:stream"),
            waiting: format!("{prefix}:waiting"),
            prefix,
        }
    }

    /// One unit's history list (`"ts value"` strings, oldest first).
    pub fn history(&self, code: &str) -> String {
        format!("{}:history:{code}", self.prefix)
    }
}

/// What readiness and the operator see of this replica's cluster role.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    leader: AtomicBool,
    connected: AtomicBool,
}

impl ClusterStatus {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
    /// The stream reader reached Redis on its last attempt.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A Redis client for `url`, its sockets with keepalive and `TCP_USER_TIMEOUT`; nothing is
/// connected yet.
pub fn client(url: &str) -> Result<redis::Client, ClusterError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ClusterError::BadUrl);
    }
    // The parse error may quote the URL: it is dropped.
    let parsed = redis::Client::open(url).map_err(|_| ClusterError::BadUrl)?;
    let info = parsed
        .get_connection_info()
        .clone()
        .set_tcp_settings(conn::tcp_settings());
    redis::Client::open(info).map_err(|_| ClusterError::BadUrl)
}

/// This process's name in the lease (for people reading Redis; fencing uses a random token).
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    format!("{host}-{}", std::process::id())
}

/// Starts the lease, the leader's poll loop and the stream reader. They stop when `shutdown`
/// is cancelled (the lease is released, so another replica takes over at once). Fails at
/// once on a sharded Redis Cluster; an unreachable Redis is retried in the background.
pub async fn start(
    config: &Config,
    upstream: impl RateSource + 'static,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    status: Arc<ClusterStatus>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, ClusterError> {
    let url = config
        .cluster
        .redis_url
        .as_ref()
        .ok_or(ClusterError::BadUrl)?;
    let client = client(url.expose())?;
    let keys = Keys::new(&config.cluster.cluster_key_prefix);
    let ttl = config.cluster.cluster_lease_ttl;
    let command_timeout = (ttl / 2).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let (lease_tx, lease_rx) = watch::channel(None);
    let mut lease_conn = Conn::new(&client, command_timeout);
    lease_conn.check().await?;
    let lease = lease::Leasing {
        conn: lease_conn,
        keys: keys.clone(),
        name: replica_name(),
        ttl,
        metrics: metrics.clone(),
        status: status.clone(),
    };
    let publisher = publish::Publisher::new(
        Conn::new(&client, command_timeout.max(Duration::from_secs(2))),
        keys.clone(),
        store.clone(),
    );
    let poller = PollerConfig {
        interval: config.poll_interval,
        max_backoff: config.max_backoff,
    };
    let reader = consume::Reader {
        // Past this a blocking read is stuck (a silent peer): the connection is rebuilt.
        conn: Conn::new(&client, READ_BLOCK + Duration::from_secs(1)),
        keys,
        store: store.clone(),
        metrics: metrics.clone(),
        status,
    };
    Ok(vec![
        tokio::spawn(lease.run(lease_tx, shutdown.clone())),
        tokio::spawn(leader::run(
            upstream,
            publisher,
            lease_rx,
            metrics,
            poller,
            shutdown.clone(),
        )),
        tokio::spawn(reader.run(shutdown)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_one_hash_slot() {
        let keys = Keys::new("ratecast");
        for key in [
            &keys.lease,
            &keys.epoch,
            &keys.state,
            &keys.stream,
            &keys.waiting,
        ] {
            assert!(key.starts_with("{ratecast}:"), "{key}");
        }
        assert_eq!(keys.history("usd"), "{ratecast}:history:usd");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        for url in [
            "http://user:hunter2@host:6379",
            "redis://user:hunter2@[bad",
            "hunter2",
        ] {
            let err = client(url).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("not valid"), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(client("rediss://user:pw@host:6380/1").is_ok());
        assert!(client("redis://127.0.0.1:6379").is_ok());
    }

    #[test]
    fn the_url_never_shows_in_the_config_debug_output() {
        use clap::Parser;
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            config: Config,
        }
        let args = Args::try_parse_from(["ratecast", "--redis-url", "rediss://u:hunter2@h:6380"])
            .expect("parses");
        let shown = format!("{:?}", args.config);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            args.config.cluster.cluster_lease_ttl,
            Duration::from_secs(10)
        );
    }

    /// A lease is valid on this process's monotonic clock only until its deadline: a process
    /// stopped past it finds it expired on resume and starts no poll.
    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_on_the_local_clock() {
        let lease = Lease {
            token: "1:a:00".into(),
            epoch: 1,
            valid_until: tokio::time::Instant::now() + Duration::from_secs(10),
        };
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(lease.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!lease.is_valid());
    }
}
