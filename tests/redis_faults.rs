//! Cluster mode when its Redis fails the way managed Redis does: a primary that goes silent on
//! its open connections (host or zone lost, partition: no RST), a primary demoted under open
//! connections (READONLY), and a replica promoted while the endpoint name moves to it. Each
//! replica is a `ratecast serve` process whose `--redis-url` is a proxy in this test (the
//! endpoint). The target (docs/cluster.md): once a working endpoint is reachable, the cluster
//! has a leader and fresh data again within 2 × the lease TTL.

use std::time::Duration;

use anyhow::{Result, ensure};
use tokio::time::Instant;

mod common;

use common::proxy::Proxy;
use common::redis::RedisServer;
use common::replica::{Replica, leader_of, spawn_cluster};
use common::{FakeUpstream, Reply, fixture};

/// The lease of every replica here: short, so that each case takes seconds, and long enough
/// that a blocking read's deadline (`XREAD BLOCK` 2 s + 1 s) fits twice into the target.
const TTL: Duration = Duration::from_secs(3);
const TTL_FLAG: &str = "3s";

/// Replicas in each case: one leads, one follows.
const REPLICAS: usize = 2;

/// Starts the replicas behind `proxy` and waits until one leads and both serve data.
async fn cluster(upstream: &FakeUpstream, proxy: &Proxy) -> Result<Vec<Replica>> {
    let replicas = spawn_cluster(
        &upstream.url(),
        &proxy.url(),
        REPLICAS,
        &["--cluster-lease-ttl", TTL_FLAG],
    )
    .await;
    leader_of(&replicas, 4 * TTL).await?;
    Ok(replicas)
}

/// The highest `seq` any replica serves now.
async fn highest_seq(replicas: &[Replica]) -> Result<u64> {
    let mut highest = 0;
    for r in replicas {
        highest = highest.max(r.rates().await?["seq"].as_u64().unwrap_or(0));
    }
    Ok(highest)
}

/// Waits until no replica leads: every lease deadline passed with Redis silent or refusing.
async fn leaderless(replicas: &[Replica]) -> Result<()> {
    let deadline = Instant::now() + 4 * TTL;
    loop {
        let mut leading = 0.0;
        for r in replicas {
            leading += r.metric("ratecast_cluster_leader").await?;
        }
        if leading == 0.0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "a replica still leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// From `since` (a working endpoint became reachable), waits at most 2 × TTL until a
/// replica leads and every replica serves data newer than `seq_before`, not stale. Returns how
/// long it took.
async fn recovered(replicas: &[Replica], seq_before: u64, since: Instant) -> Result<Duration> {
    let deadline = since + 2 * TTL;
    loop {
        let mut fresh = 0;
        for r in replicas {
            // A replica that does not answer is not fresh (and may answer on the next round).
            if let Ok(rates) = r.rates().await
                && rates["seq"].as_u64().is_some_and(|seq| seq > seq_before)
                && rates["stale"] == false
            {
                fresh += 1;
            }
        }
        let mut leads = false;
        for r in replicas {
            leads |= r.is_leader().await;
        }
        if leads && fresh == replicas.len() {
            return Ok(since.elapsed());
        }
        ensure!(
            Instant::now() < deadline,
            "after {:?}: leader: {leads}, {fresh} of {} replicas with fresh data (seq > {seq_before})",
            2 * TTL,
            replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The outage: the primary vanishes without a RST (every open connection silent,
/// forever), and the endpoint name is then moved to a working primary (here the same one).
/// Only new connections reach it.
#[tokio::test]
async fn a_black_holed_primary_then_a_working_endpoint_has_a_leader_and_fresh_data_within_two_ttls()
-> Result<()> {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr()).await;
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let replicas = cluster(&upstream, &proxy).await?;

    proxy.black_hole();
    leaderless(&replicas).await?;
    let seq_before = highest_seq(&replicas).await?;
    proxy.switch_to(redis.addr());
    let took = recovered(&replicas, seq_before, Instant::now()).await?;
    eprintln!("black hole → working endpoint: leader and fresh data after {took:?}");
    Ok(())
}

/// A failover that demotes the old primary (`REPLICAOF` the new one) while the replicas'
/// connections stay open on it: every write there is answered `READONLY`. The endpoint name
/// points at the new primary for new connections.
#[tokio::test]
async fn an_old_primary_demoted_under_open_connections_readonly_recovers() -> Result<()> {
    let old = RedisServer::start();
    let new = RedisServer::start();
    new.replicate(&old);
    let proxy = Proxy::start(old.addr()).await;
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let replicas = cluster(&upstream, &proxy).await?;

    new.promote();
    old.replicate(&new);
    proxy.switch_to(new.addr());
    let switched = Instant::now();
    let seq_before = highest_seq(&replicas).await?;
    let took = recovered(&replicas, seq_before, switched).await?;
    eprintln!("READONLY on the demoted primary: leader and fresh data after {took:?}");
    Ok(())
}

/// The measured failover: the primary goes silent on its open connections, its
/// replica is promoted, and the endpoint name moves to it.
#[tokio::test]
async fn a_replica_promoted_while_the_old_primary_is_silent_recovers() -> Result<()> {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(&primary);
    let proxy = Proxy::start(primary.addr()).await;
    let upstream = FakeUpstream::start(Reply::Changing(fixture())).await;
    let replicas = cluster(&upstream, &proxy).await?;

    proxy.black_hole();
    replica.promote();
    proxy.switch_to(replica.addr());
    let switched = Instant::now();
    let seq_before = highest_seq(&replicas).await?;
    let took = recovered(&replicas, seq_before, switched).await?;
    eprintln!("promoted replica behind the moved endpoint: leader and fresh data after {took:?}");
    Ok(())
}
