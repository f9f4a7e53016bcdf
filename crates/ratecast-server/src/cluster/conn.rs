//! A Redis connection that starts over — a fresh connect, the host name resolved again —
//! whenever the one it has can no longer be trusted to reach a working primary.
//!
//! redis-rs's `ConnectionManager` reconnects only on errors it deems unrecoverable: a response
//! timeout retries on the same socket, and so does `READONLY` from a primary that was demoted
//! under it. A primary lost without a RST (host or zone gone, partition) then leaves every
//! command timing out on a dead socket until the kernel gives up (~15 min), long after a
//! managed Redis failed over to a new address. Here any such error drops the connection, and
//! the next command connects anew; the callers' own back-off paces the attempts.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};

use super::ClusterError;

/// The longest a connect (TCP, TLS and the handshake commands) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keepalive probes on an idle connection: one after this much silence, then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] times: a dead peer is found within ~11 s
/// even when no command is waiting on it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;

/// `TCP_USER_TIMEOUT`: data sent and not acknowledged for this long closes the socket, instead
/// of the kernel's ~15 minutes of retransmissions.
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The error of every connect to a Redis that reports `cluster_enabled:1`.
const SHARDED: &str = "sharded Redis Cluster is not supported (use a non-clustered \
                       primary endpoint, e.g. ElastiCache with cluster mode disabled)";

/// The socket options of every connection: keepalive and `TCP_USER_TIMEOUT` on, so that a
/// silent peer is noticed by the kernel too.
pub(super) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(USER_TIMEOUT)
}

/// One replica task's connection to Redis. Commands fail fast while Redis is away (the caller
/// backs off and retries); each retry after a failure that [`starts_over`] connects anew.
pub(super) struct Conn {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// `None` until the first command, and again after a failure that condemns it.
    live: Option<MultiplexedConnection>,
    /// The last connect reached a sharded Redis Cluster.
    sharded: bool,
}

impl Conn {
    /// Nothing is connected yet. `response` bounds every command, blocking reads included:
    /// a reply later than that means the connection is given up.
    pub fn new(client: &redis::Client, response: Duration) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        Self {
            client: client.clone(),
            config,
            live: None,
            sharded: false,
        }
    }

    /// Connects now, to refuse a sharded Redis Cluster at start-up rather than in a log line.
    /// An unreachable Redis is not an error here: the replica starts and keeps trying.
    pub async fn check(&mut self) -> Result<(), ClusterError> {
        let reached = self.live().await.is_ok();
        if !reached && self.sharded {
            return Err(ClusterError::Sharded);
        }
        Ok(())
    }

    async fn live(&mut self) -> RedisResult<&mut MultiplexedConnection> {
        let conn = match self.live.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(self.live.insert(conn))
    }

    async fn connect(&mut self) -> RedisResult<MultiplexedConnection> {
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        // The keys share one hash slot, but nothing here follows MOVED/ASK: a failover of the
        // slot's master would strand every replica. Refused rather than half supported.
        let info: RedisResult<String> = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await;
        match info {
            Ok(info) if info.lines().any(|l| l.trim() == "cluster_enabled:1") => {
                self.sharded = true;
                Err(RedisError::from((ErrorKind::InvalidClientConfig, SHARDED)))
            }
            Ok(_) => Ok(conn),
            // An ACL user without INFO (NOPERM): nothing to learn, the connection is fine.
            Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => Ok(conn),
            Err(e) => Err(e),
        }
    }

    /// Drops the connection when `result` says it cannot be trusted any more.
    fn judge(&mut self, result: Result<&[Value], &RedisError>) {
        let condemned = match result {
            Err(e) => starts_over(e),
            Ok(values) => values.iter().any(condemns),
        };
        if condemned {
            self.live = None;
        }
    }
}

/// A failure after which this connection is not used again: it timed out (a black-holed or
/// overloaded peer, or a blocking read past its deadline), broke, or reached a server that is
/// no longer a working primary (demoted, loading a dump, lost its own primary).
fn starts_over(e: &RedisError) -> bool {
    // A connect or response timeout is an I/O error (`TimedOut`) in redis-rs.
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), ErrorKind::Server(kind) if moved_on(kind))
}

/// A reply (an error reply is a value until the caller converts it) from a server that is
/// not the primary to talk to.
fn condemns(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind().is_some_and(moved_on))
}

/// Server errors that mean the endpoint's current server is not the primary to talk to.
fn moved_on(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::ReadOnly | ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown
    )
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.live().await?.req_packed_command(cmd).await;
            self.judge(result.as_ref().map(std::slice::from_ref));
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .live()
                .await?
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.judge(result.as_deref());
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(resp: &str) -> Value {
        redis::parse_redis_value(resp.as_bytes()).expect("a RESP reply")
    }

    #[test]
    fn a_server_that_is_not_the_primary_condemns_the_connection() {
        for resp in [
            "-READONLY You can't write against a read only replica.\r\n",
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        ] {
            assert!(condemns(&reply(resp)), "{resp}");
        }
        for resp in [
            "-NOSCRIPT No matching script.\r\n",
            "-ERR wrong number of arguments\r\n",
            "+OK\r\n",
        ] {
            assert!(!condemns(&reply(resp)), "{resp}");
        }
    }

    #[test]
    fn timeouts_and_broken_sockets_start_over() {
        for kind in [
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            assert!(starts_over(&std::io::Error::from(kind).into()), "{kind:?}");
        }
        let not_found = RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "x"));
        assert!(!starts_over(&not_found));
        let loading = RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "x"));
        assert!(starts_over(&loading));
    }
}
