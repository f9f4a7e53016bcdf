//! Poller timing under paused time: backoff with jitter, 429 waits, and the normal interval after recovery.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use ratecast_protocol::{Rates, Source, UpstreamStatus};
use ratecast_server::metrics::Metrics;
use ratecast_server::poller::{self, PollerConfig};
use ratecast_server::store::{Store, StoreConfig};
use ratecast_server::upstream::{RateSource, UpstreamError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod common;

/// Answers from a script and records when each fetch happened.
struct Scripted {
    script: VecDeque<Result<Rates, UpstreamError>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    done: CancellationToken,
}

impl RateSource for Scripted {
    async fn fetch(&mut self) -> Result<Rates, UpstreamError> {
        self.calls.lock().unwrap().push(Instant::now());
        let next = self.script.pop_front();
        if self.script.is_empty() {
            self.done.cancel();
        }
        next.unwrap_or(Err(UpstreamError::Timeout))
    }
}

fn rates() -> Rates {
    ratecast_server::upstream::parse_payload(common::FIXTURE.as_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn backoff_then_retry_after_then_normal_interval() {
    let done = CancellationToken::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let script = VecDeque::from([
        Ok(rates()),
        Err(UpstreamError::Status(StatusCode::INTERNAL_SERVER_ERROR)),
        Err(UpstreamError::Timeout),
        Err(UpstreamError::Status(StatusCode::BAD_GATEWAY)),
        Err(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(90)),
        }),
        Ok(rates()),
        Ok(rates()),
    ]);
    let source = Scripted {
        script,
        calls: calls.clone(),
        done: done.clone(),
    };
    let store = Arc::new(Store::new(StoreConfig::new(
        Source::CoinGecko,
        Duration::from_secs(180),
    )));
    let config = PollerConfig {
        interval: Duration::from_secs(30),
        max_backoff: Duration::from_secs(300),
    };
    poller::run(
        source,
        store.clone(),
        Arc::new(Metrics::new()),
        config,
        done,
    )
    .await;

    let calls = calls.lock().unwrap();
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    let within = |gap: Duration, lo: u64, hi: u64| {
        gap >= Duration::from_secs(lo) && gap <= Duration::from_secs(hi)
    };
    assert_eq!(
        gaps[0],
        Duration::from_secs(30),
        "normal interval after a success"
    );
    assert!(
        within(gaps[1], 2, 5),
        "1st failure: 5 s base with jitter, got {:?}",
        gaps[1]
    );
    assert!(
        within(gaps[2], 5, 10),
        "2nd failure: doubled, got {:?}",
        gaps[2]
    );
    assert!(
        within(gaps[3], 10, 20),
        "3rd failure: doubled again, got {:?}",
        gaps[3]
    );
    assert!(
        within(gaps[4], 90, 90),
        "429: Retry-After honoured, got {:?}",
        gaps[4]
    );
    assert_eq!(
        gaps[5],
        Duration::from_secs(30),
        "back to the normal interval after recovery"
    );
    let upstream = store.view().unwrap().upstream.clone();
    assert_eq!(upstream.status, UpstreamStatus::Ok);
    assert_eq!(upstream.last_error.as_deref(), Some("rate_limited"));
}
