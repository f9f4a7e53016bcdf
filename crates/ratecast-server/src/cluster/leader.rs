//! The lease holder's poll loop: fetch → publish (the stream reader then feeds every replica's
//! store, this one's included). It polls only while its lease is valid on its own clock, and
//! keeps the cluster's rhythm: the first poll after a takeover waits for the interval since
//! the previous leader's last poll.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::publish::{Published, Publisher};
use super::{ClusterError, Lease};
use crate::metrics::Metrics;
use crate::poller::{self, PollerConfig, failure_delay};
use crate::upstream::RateSource;
use ratecast_protocol::UpstreamState;

pub(super) async fn run(
    mut upstream: impl RateSource,
    mut publisher: Publisher,
    mut leases: watch::Receiver<Option<Lease>>,
    metrics: Arc<Metrics>,
    config: PollerConfig,
    shutdown: CancellationToken,
) {
    loop {
        // Follower: wait for the lease.
        let lease = loop {
            if let Some(lease) = leases.borrow_and_update().clone() {
                break lease;
            }
            tokio::select! {
                changed = leases.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
        };
        let head = match publisher.load().await {
            Ok(head) => head,
            Err(err) => {
                count_error(&metrics, &err);
                warn!(error = %err, "cluster: cannot read the shared state after taking the lease; retrying");
                pause(Duration::from_secs(1), &lease, &mut leases, &shutdown).await;
                continue;
            }
        };
        let mut state = head.upstream.unwrap_or_default();
        // Carry on where the last leader was: its table (holds included) and any failover.
        upstream.resume(publisher.served().unwrap_or(&Default::default()), &state);
        let since_last = head
            .polled
            .and_then(|p| SystemTime::now().duration_since(p).ok());
        let first = since_last.map_or(Duration::ZERO, |s| config.interval.saturating_sub(s));
        info!(epoch = lease.epoch, first_poll_in = ?first, "cluster: leading; polling the upstream");
        if !pause(first, &lease, &mut leases, &shutdown).await {
            continue;
        }
        while let Some(lease) = current(&leases, &lease) {
            let delay = poll_once(
                &mut upstream,
                &mut publisher,
                &lease,
                &mut state,
                &metrics,
                &config,
            )
            .await;
            let Some(delay) = delay else { break };
            if !pause(delay, &lease, &mut leases, &shutdown).await {
                break;
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// The lease still held, as last renewed, if it is still `lease`'s and valid.
fn current(leases: &watch::Receiver<Option<Lease>>, lease: &Lease) -> Option<Lease> {
    leases
        .borrow()
        .clone()
        .filter(|l| l.token == lease.token && l.is_valid())
}

/// Sleeps `delay` unless the lease goes or shutdown starts; true when still leading after it.
async fn pause(
    delay: Duration,
    lease: &Lease,
    leases: &mut watch::Receiver<Option<Lease>>,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return current(leases, lease).is_some(),
            changed = leases.changed() => {
                if changed.is_err() || current(leases, lease).is_none() {
                    return false;
                }
            }
            () = shutdown.cancelled() => return false,
        }
    }
}

/// One poll and its publication; the delay before the next, or `None` when the lease is gone.
async fn poll_once(
    upstream: &mut impl RateSource,
    publisher: &mut Publisher,
    lease: &Lease,
    state: &mut UpstreamState,
    metrics: &Metrics,
    config: &PollerConfig,
) -> Option<Duration> {
    let (result, now) = poller::fetch(upstream, metrics).await;
    let (rates, delay) = match result {
        Ok(rates) => {
            state.record_success(now);
            state.failover = upstream.failover();
            (Some(rates), config.interval)
        }
        Err(err) => {
            let failures = state.consecutive_failures + 1;
            let delay = failure_delay(failures, config, err.retry_after(), &mut rand::rng());
            state.record_failure(err.kind(), Some(now + delay));
            warn!(error = %err, kind = err.kind(), failures, retry_in = %humantime::format_duration(delay), "upstream poll failed");
            (None, delay)
        }
    };
    metrics
        .upstream_up
        .set(if rates.is_some() { 1.0 } else { 0.0 });
    match publisher.publish(lease, rates.as_ref(), state, now).await {
        Ok(published) => {
            metrics
                .counter(
                    "ratecast_cluster_publish_total",
                    &[("result", published.label())],
                )
                .increment(1);
            match published {
                Published::Delta(seq) | Published::Reset(seq) => debug!(seq, "cluster: published"),
                Published::NewEpoch(seq) => {
                    warn!(
                        seq,
                        "cluster: published a new epoch over the state that lost writes"
                    )
                }
                Published::Confirm | Published::Waiting => {}
            }
            Some(delay)
        }
        Err(ClusterError::Fenced) => {
            metrics
                .counter("ratecast_cluster_publish_total", &[("result", "fenced")])
                .increment(1);
            warn!(
                epoch = lease.epoch,
                "cluster: publication refused: the lease is no longer ours"
            );
            None
        }
        Err(err) => {
            count_error(metrics, &err);
            metrics
                .counter("ratecast_cluster_publish_total", &[("result", "error")])
                .increment(1);
            warn!(error = %err, kind = err.kind(), "cluster: publication failed; the next poll publishes the state then");
            Some(delay)
        }
    }
}

fn count_error(metrics: &Metrics, err: &ClusterError) {
    metrics
        .counter(
            "ratecast_cluster_redis_errors_total",
            &[("kind", err.kind())],
        )
        .increment(1);
}
