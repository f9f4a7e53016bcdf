//! Where rates come from: CoinGecko over HTTPS ([`coingecko`]), or the offline demo source
//! ([`demo`]). Knows nothing of the store; the poller ties the two together.

mod coinbase;
mod coingecko;
mod demo;
mod failover;
mod http;
mod units;

use std::time::Duration;

use reqwest::StatusCode;

pub use coinbase::{Coinbase, parse_payload as parse_coinbase_payload};
pub use coingecko::{CoinGecko, parse_payload};
pub use demo::{DEMO_OUTAGE, Demo, OutageSwitch};
pub use failover::{FailoverConfig, Sources};
pub use http::{MAX_BODY_BYTES, PayloadError, retry_after};
use ratecast_protocol::{Failover, Rates, UpstreamState};

/// Why a poll failed. Every variant is retried; none is fatal.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("request timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("rate limited (HTTP 429), retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {0}")]
    Status(StatusCode),
    #[error("response body over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("reading the response failed: {0}")]
    Body(String),
    #[error("invalid payload: {0}")]
    Invalid(#[from] PayloadError),
}

impl UpstreamError {
    /// Bounded label for metrics and the exposed `last_error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status(s) if s.is_server_error() => "http_5xx",
            Self::Status(_) => "http_other",
            Self::TooLarge => "too_large",
            Self::Body(_) => "body",
            Self::Invalid(_) => "invalid_payload",
        }
    }

    /// Every [`Self::kind`].
    pub const KINDS: &[&'static str] = &[
        "timeout",
        "connect",
        "rate_limited",
        "http_5xx",
        "http_other",
        "too_large",
        "body",
        "invalid_payload",
    ];

    /// How long the upstream asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        // `without_url`: the URL is ours and harmless, but errors stay short in logs.
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect(err.without_url().to_string())
        } else {
            Self::Body(err.without_url().to_string())
        }
    }
}

/// Why the CoinGecko client cannot be built from the configuration (found at start-up, never
/// while polling).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the API key is not a valid HTTP header value")]
    BadApiKey,
    #[error("the upstream URL cannot be a base for {path}: {source}")]
    BadUrl {
        path: &'static str,
        source: url::ParseError,
    },
    #[error("--crosscheck-hold-percent ({hold}) is below --crosscheck-warn-percent ({warn})")]
    Thresholds { warn: f64, hold: f64 },
    #[error("the HTTP client cannot be built: {0}")]
    Client(#[from] reqwest::Error),
}

/// Anything the poller can poll: CoinGecko, the demo, or a scripted source in tests.
pub trait RateSource: Send {
    fn fetch(&mut self) -> impl std::future::Future<Output = Result<Rates, UpstreamError>> + Send;

    /// Set while a fallback serves in place of the failing primary ([`Sources`]).
    fn failover(&self) -> Option<Failover> {
        None
    }

    /// A new cluster leader picks up the published table and upstream state.
    fn resume(&mut self, _served: &Rates, _upstream: &UpstreamState) {}
}

/// The sources `ratecast serve` chooses between.
pub enum Upstream {
    CoinGecko(CoinGecko),
    Coinbase(Coinbase),
    Demo(Demo),
}

impl RateSource for Upstream {
    async fn fetch(&mut self) -> Result<Rates, UpstreamError> {
        match self {
            Self::CoinGecko(client) => client.fetch().await,
            Self::Coinbase(client) => client.fetch().await,
            Self::Demo(demo) => demo.fetch(),
        }
    }
}
