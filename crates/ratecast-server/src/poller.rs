//! The single poller: fetch → validate → store (diff, seq, broadcast), with backoff on failure.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::{RateSource, UpstreamError};
use ratecast_protocol::Rates;
use ratecast_protocol::backoff::backoff;

/// A `Retry-After` longer than this is treated as this: a typo upstream must not silence us for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub interval: Duration,
    /// Ceiling of the failure backoff.
    pub max_backoff: Duration,
}

/// Delay before the next attempt after `failures` consecutive failures: the shared [`backoff`]
/// from `min(interval, 5 s)` up to `max_backoff`; never shorter than what a 429 asked for.
pub fn failure_delay(
    failures: u32,
    config: &PollerConfig,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let first = config.interval.min(Duration::from_secs(5));
    let jittered = backoff(first, config.max_backoff, failures, rng);
    retry_after.map_or(jittered, |wait| jittered.max(wait.min(MAX_RETRY_AFTER)))
}

/// One fetch, timed and counted (latency, outcome, last success): what every poll loop shares.
pub async fn fetch(
    upstream: &mut impl RateSource,
    metrics: &Metrics,
) -> (Result<Rates, UpstreamError>, SystemTime) {
    let started = tokio::time::Instant::now();
    let result = upstream.fetch().await;
    metrics
        .upstream_latency
        .record(started.elapsed().as_secs_f64());
    let now = SystemTime::now();
    match &result {
        Ok(_) => {
            metrics.upstream_request("ok");
            metrics.upstream_last_success.set(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        }
        Err(err) => metrics.upstream_request(err.kind()),
    }
    (result, now)
}

/// Polls until `shutdown` is cancelled. Upstream faults are recorded and retried, never fatal.
pub async fn run(
    mut upstream: impl RateSource,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: PollerConfig,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let (result, now) = fetch(&mut upstream, &metrics).await;
        let delay = match result {
            Ok(rates) => {
                failures = 0;
                store.record_success(now, upstream.failover());
                if let Some(seq) = store.apply(rates, now) {
                    metrics.deltas_published.increment(1);
                    metrics.seq.set(seq as f64);
                    debug!(seq, "published delta");
                }
                config.interval
            }
            Err(err) => {
                failures += 1;
                let delay = failure_delay(failures, &config, err.retry_after(), &mut rand::rng());
                store.record_failure(err.kind(), now, Some(now + delay));
                let retry_in = humantime::format_duration(delay).to_string();
                if store.view().is_some() {
                    warn!(error = %err, kind = err.kind(), failures, %retry_in, "upstream poll failed; serving last good data");
                } else {
                    warn!(error = %err, kind = err.kind(), failures, %retry_in, "upstream poll failed; no data yet to serve");
                }
                delay
            }
        };
        metrics
            .upstream_up
            .set(if failures == 0 { 1.0 } else { 0.0 });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
    info!("poller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config() -> PollerConfig {
        PollerConfig {
            interval: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
        }
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (failures, full) in [(1, 5), (2, 10), (3, 20), (4, 40), (7, 300), (40, 300)] {
            for _ in 0..50 {
                let d = failure_delay(failures, &config(), None, &mut rng);
                let full = Duration::from_secs(full);
                assert!(d >= full / 2 && d <= full, "failures {failures}: {d:?}");
            }
        }
    }

    #[test]
    fn backoff_honours_retry_after() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let d = failure_delay(1, &config(), Some(Duration::from_secs(61)), &mut rng);
        assert_eq!(d, Duration::from_secs(61));
        // A long Retry-After is honoured even past the usual cap, up to an hour.
        let d = failure_delay(1, &config(), Some(Duration::from_secs(900)), &mut rng);
        assert_eq!(d, Duration::from_secs(900));
        let d = failure_delay(1, &config(), Some(Duration::from_secs(86_400)), &mut rng);
        assert_eq!(d, MAX_RETRY_AFTER);
    }
}
