//! The leadership lease: `SET NX PX` through a script that also takes the next fencing epoch
//! (`INCR`), renewed every third of its TTL, released on shutdown. Publication checks the
//! lease's token, so a replica that lost it (paused, partitioned) cannot publish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use redis::Script;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ClusterError, ClusterStatus, Conn, Keys};
use crate::metrics::Metrics;
use ratecast_protocol::backoff::backoff;

/// KEYS: lease, epoch. ARGV: name, TTL ms, nonce.
/// Returns `{1, epoch}` when taken, `{0, remaining ms}` when another holds it.
const ACQUIRE: &str = r"
local held = redis.call('PTTL', KEYS[1])
if held ~= -2 then return {0, held} end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1] .. ':' .. ARGV[3], 'PX', ARGV[2])
return {1, epoch}
";

/// KEYS: lease. ARGV: token, TTL ms. 1 when still ours (and extended).
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS: lease. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// A held lease, as the leader's poll loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `epoch:name:nonce`, the value in Redis: the publication script compares it.
    pub token: String,
    /// The fencing epoch (`INCR`), for logs and metrics.
    pub epoch: u64,
    /// Counted on this process's monotonic clock from before the command that set the
    /// expiry: past it the lease may be someone else's, so no poll starts.
    pub valid_until: Instant,
}

impl Lease {
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

pub(super) struct Leasing {
    pub conn: Conn,
    pub keys: Keys,
    pub name: String,
    pub ttl: Duration,
    pub metrics: Arc<Metrics>,
    pub status: Arc<ClusterStatus>,
}

enum Attempt {
    Held(Lease),
    /// Another replica holds it for about this long.
    Other(Duration),
}

impl Leasing {
    pub async fn run(mut self, tx: watch::Sender<Option<Lease>>, shutdown: CancellationToken) {
        let period = self.ttl / 3;
        let mut failures = 0u32;
        loop {
            let current = tx.borrow().clone();
            let delay = match self.attempt(current.as_ref()).await {
                Ok(Attempt::Held(lease)) => {
                    failures = 0;
                    if current.is_none() {
                        self.transition("acquired");
                        info!(
                            epoch = lease.epoch,
                            "took the cluster lease: this replica polls"
                        );
                    }
                    tx.send_replace(Some(lease));
                    period
                }
                Ok(Attempt::Other(left)) => {
                    failures = 0;
                    if current.is_some() {
                        self.transition("lost");
                        warn!("lost the cluster lease to another replica; no longer polling");
                        tx.send_replace(None);
                    }
                    // Try again just after it expires: a takeover within the TTL.
                    (left + Duration::from_millis(10)).min(period)
                }
                Err(err) => {
                    failures += 1;
                    self.metrics
                        .counter(
                            "ratecast_cluster_redis_errors_total",
                            &[("kind", err.kind())],
                        )
                        .increment(1);
                    if let Some(lease) = &current
                        && !lease.is_valid()
                    {
                        self.transition("lost");
                        warn!(error = %err, kind = err.kind(), "cannot renew the cluster lease before it expired; no longer polling");
                        tx.send_replace(None);
                    } else if failures == 1 {
                        warn!(error = %err, kind = err.kind(), "cluster lease: Redis unreachable; retrying");
                    }
                    backoff(
                        Duration::from_millis(100),
                        period,
                        failures,
                        &mut rand::rng(),
                    )
                }
            };
            let leader = tx.borrow().is_some();
            self.status.leader.store(leader, Ordering::Relaxed);
            self.metrics
                .cluster_leader
                .set(if leader { 1.0 } else { 0.0 });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let held = tx.send_replace(None);
        self.status.leader.store(false, Ordering::Relaxed);
        self.metrics.cluster_leader.set(0.0);
        if let Some(lease) = held {
            let script = Script::new(RELEASE);
            let mut invocation = script.key(&self.keys.lease);
            invocation.arg(&lease.token);
            let release = invocation.invoke_async::<i64>(&mut self.conn);
            match tokio::time::timeout(Duration::from_secs(1), release).await {
                Ok(Ok(_)) => {
                    self.transition("released");
                    info!(epoch = lease.epoch, "released the cluster lease");
                }
                _ => warn!("could not release the cluster lease; it expires by itself"),
            }
        }
    }

    fn transition(&self, event: &'static str) {
        self.metrics
            .counter("ratecast_cluster_lease_changes_total", &[("event", event)])
            .increment(1);
    }

    async fn attempt(&mut self, current: Option<&Lease>) -> Result<Attempt, ClusterError> {
        let started = Instant::now();
        let ttl_ms = self.ttl.as_millis() as u64;
        match current {
            Some(lease) => {
                let ours: i64 = Script::new(RENEW)
                    .key(&self.keys.lease)
                    .arg(&lease.token)
                    .arg(ttl_ms)
                    .invoke_async(&mut self.conn)
                    .await?;
                Ok(if ours == 1 {
                    Attempt::Held(Lease {
                        valid_until: started + self.ttl,
                        ..lease.clone()
                    })
                } else {
                    Attempt::Other(Duration::ZERO)
                })
            }
            None => {
                let nonce: u64 = rand::rng().random();
                let (taken, value): (i64, i64) = Script::new(ACQUIRE)
                    .key(&self.keys.lease)
                    .key(&self.keys.epoch)
                    .arg(&self.name)
                    .arg(ttl_ms)
                    .arg(format!("{nonce:016x}"))
                    .invoke_async(&mut self.conn)
                    .await?;
                if taken == 1 {
                    let epoch = value.max(0) as u64;
                    self.metrics
                        .gauge("ratecast_cluster_epoch")
                        .set(epoch as f64);
                    Ok(Attempt::Held(Lease {
                        token: format!("{epoch}:{}:{nonce:016x}", self.name),
                        epoch,
                        valid_until: started + self.ttl,
                    }))
                } else {
                    // -1: held without expiry (set by hand): check again a period later.
                    let left = u64::try_from(value).unwrap_or(ttl_ms);
                    Ok(Attempt::Other(Duration::from_millis(left)))
                }
            }
        }
    }
}
