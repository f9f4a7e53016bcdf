//! Where rates come from: CoinGecko over HTTPS, or the offline demo source.
//! Knows nothing of the store; the poller ties the two together.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use crate::model::{self, PayloadError, Rates};

/// Largest body accepted from the upstream; a bigger one is an error, never an OOM.
pub const MAX_BODY_BYTES: usize = 1 << 20;
const EXCHANGE_RATES_PATH: &str = "api/v3/exchange_rates";
const DEMO_SEED: &str = include_str!("../tests/fixtures/coingecko-exchange-rates-2022.json");

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

/// Anything the poller can poll: CoinGecko, the demo, or a scripted source in tests.
pub trait RateSource: Send {
    fn fetch(&mut self) -> impl std::future::Future<Output = Result<Rates, UpstreamError>> + Send;
}

/// The sources `ratecast serve` chooses between.
pub enum Upstream {
    CoinGecko(CoinGecko),
    Demo(Demo),
}

impl RateSource for Upstream {
    async fn fetch(&mut self) -> Result<Rates, UpstreamError> {
        match self {
            Self::CoinGecko(client) => client.fetch().await,
            Self::Demo(demo) => Ok(demo.tick()),
        }
    }
}

/// CoinGecko's `/api/v3/exchange_rates` client.
pub struct CoinGecko {
    client: reqwest::Client,
    url: Url,
}

impl CoinGecko {
    /// `base` is the API base URL (`https://api.coingecko.com`, or the pro one). The key is sent
    /// as `x-cg-pro-api-key` to the pro host and `x-cg-demo-api-key` elsewhere, and marked
    /// sensitive so it never appears in debug output.
    pub fn new(
        base: &Url,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            let mut value = HeaderValue::from_str(key).map_err(|_| {
                UpstreamError::Connect("the API key is not a valid header value".into())
            })?;
            value.set_sensitive(true);
            let name = if base.host_str().is_some_and(|h| h.starts_with("pro-api.")) {
                "x-cg-pro-api-key"
            } else {
                "x-cg-demo-api-key"
            };
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("ratecast/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .gzip(true)
            .build()
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join(EXCHANGE_RATES_PATH)
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        Ok(Self { client, url })
    }

    pub async fn fetch(&self) -> Result<Rates, UpstreamError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::RateLimited {
                retry_after: retry_after(response.headers(), SystemTime::now()),
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(UpstreamError::TooLarge);
        }
        let mut body = Vec::with_capacity(16 * 1024);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(UpstreamError::from_reqwest)?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(UpstreamError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(model::parse_payload(&body)?)
    }
}

/// How long a 429 asks us to wait: `Retry-After` (seconds or HTTP date), else CoinGecko's
/// `x-ratelimit-reset` (epoch seconds, or a `2024-01-01 00:00:00 +0000` style date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let until = |t: SystemTime| t.duration_since(now).ok();
    if let Some(v) = header(RETRY_AFTER.as_str()) {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(t) = httpdate::parse_http_date(v) {
            return until(t);
        }
    }
    let v = header("x-ratelimit-reset")?;
    if let Ok(n) = v.parse::<u64>() {
        // Small numbers are a delay in seconds, big ones an epoch timestamp.
        return if n < 1_000_000_000 {
            Some(Duration::from_secs(n))
        } else {
            until(SystemTime::UNIX_EPOCH + Duration::from_secs(n))
        };
    }
    let rfc3339ish = v
        .trim_end_matches(" +0000")
        .trim_end_matches(" UTC")
        .replacen(' ', "T", 1);
    humantime::parse_rfc3339_weak(&rfc3339ish)
        .ok()
        .and_then(until)
}

/// Offline source: a real recorded CoinGecko payload moved by a small random walk each tick.
pub struct Demo {
    rates: Rates,
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

impl Demo {
    pub fn new() -> Self {
        // The seed is a fixture checked by the tests; it always parses.
        let rates =
            model::parse_payload(DEMO_SEED.as_bytes()).expect("bundled demo payload is valid");
        Self { rates }
    }

    /// Moves about a third of the units by up to ±0.5% (BTC itself stays 1, it is the base).
    pub fn tick(&mut self) -> Rates {
        let mut rng = rand::rng();
        for (code, rate) in self.rates.iter_mut() {
            if code != "btc" && rng.random_bool(0.35) {
                rate.value *= 1.0 + rng.random_range(-0.005..0.005);
            }
        }
        self.rates.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "1700000045")]), now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            retry_after(
                &headers(&[("x-ratelimit-reset", "2023-11-14 22:13:40 +0000")]),
                now
            ),
            Some(Duration::from_secs(20))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn demo_walks_but_keeps_every_unit_valid() {
        let mut demo = Demo::new();
        let first = demo.tick();
        let later = (0..20).map(|_| demo.tick()).last().unwrap();
        assert_eq!(first.len(), 61);
        assert_ne!(first, later);
        assert_eq!(later["btc"].value, 1.0);
        model::validate(&later).unwrap();
    }
}
