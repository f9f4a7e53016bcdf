//! Per-client-IP rate limits (governor), shared by the REST API and the stream's connects.

use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use governor::clock::{DefaultClock, QuantaInstant};
use governor::middleware::RateLimitingMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::{GovernorError, GovernorLayer};

use crate::client_ip::ClientIpResolver;
use crate::error::ApiError;

/// Per-client-IP rate limit with a JSON 429 and `Retry-After`, counting refusals in `refused`;
/// `None` when disabled (0/s).
pub fn layer(
    per_second: u32,
    burst: u32,
    client_ip: &ClientIpResolver,
    refused: Option<metrics::Counter>,
) -> Option<GovernorLayer<ClientIpResolver, governor::middleware::NoOpMiddleware, Body>> {
    if per_second == 0 {
        return None;
    }
    let config = GovernorConfigBuilder::default()
        .key_extractor(client_ip.clone())
        .period(Duration::from_secs(1) / per_second)
        .burst_size(burst.max(1))
        .finish()?;
    prune_limiter(Arc::downgrade(config.limiter()));
    Some(GovernorLayer::new(config).error_handler(move |err| {
        if let Some(refused) = &refused {
            refused.increment(1);
        }
        governor_error(err)
    }))
}

/// Forgets idle client IPs once a minute so the limiter's memory follows the active clients;
/// stops when the router holding the limiter is gone.
fn prune_limiter<K, M>(
    limiter: Weak<governor::RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, M>>,
) where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    M: RateLimitingMiddleware<QuantaInstant> + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            every.tick().await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
}

fn governor_error(err: GovernorError) -> Response {
    match err {
        GovernorError::TooManyRequests { wait_time, .. } => ApiError::RateLimited {
            retry_after: Duration::from_secs(wait_time),
        }
        .into_response(),
        GovernorError::UnableToExtractKey => {
            ApiError::BadRequest("cannot tell the client address".into()).into_response()
        }
        GovernorError::Other { .. } => ApiError::Internal.into_response(),
    }
}
