//! What the HTTPS sources share: an [`Endpoint`] whose GET has the guards every upstream gets
//! (timeout, gzip, status, 429 and its `Retry-After`, a body size cap), and why a body is not a
//! usable payload. Each source adds only its path, its headers and its payload format.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use super::{SetupError, UpstreamError};
use ratecast_protocol::rates::RatesError;

/// Largest body accepted from an upstream; a bigger one is an error, never an OOM. CoinGecko's
/// payload is ~7 KB; Coinbase's, ~640 units of `"CODE":"digits",` at ~25 bytes each, ~16 KB
/// (docs/sources.md): both fit sixty times over.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a body is not a usable payload of its source.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload is not the expected JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Rates(#[from] RatesError),
    /// Coinbase answered rates of another base currency than the one asked for.
    #[error("payload holds rates of one {0:?}, not of one BTC")]
    WrongBase(String),
    /// A unit the mapping reads is not a finite decimal > 0.
    #[error("unit {code:?}: value {value} is not a finite decimal > 0")]
    BadValue { code: String, value: String },
    /// Too few of the expected units to be the payload we know.
    #[error("payload holds {found} of the {expected} mapped units, fewer than half")]
    TooFewUnits { found: usize, expected: usize },
}

/// One upstream endpoint and the client that asks it.
pub(super) struct Endpoint {
    client: reqwest::Client,
    url: Url,
}

impl Endpoint {
    /// `path` (with its query, if any) under `base`, whether or not `base` ends with a slash.
    /// The client asks for JSON with our user agent, allows `timeout` to connect and for the
    /// whole request, and takes gzip; `headers` adds the source's own (an API key).
    pub(super) fn new(
        base: &Url,
        path: &'static str,
        mut headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Self, SetupError> {
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("ratecast/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .gzip(true)
            .build()?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join(path)
            .map_err(|source| SetupError::BadUrl { path, source })?;
        Ok(Self { client, url })
    }

    /// GETs the endpoint and returns the body of a 2xx answer, at most [`MAX_BODY_BYTES`] of it.
    pub(super) async fn get(&self) -> Result<Vec<u8>, UpstreamError> {
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
        Ok(body)
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
    fn endpoint_under_a_base_with_or_without_a_trailing_slash() {
        let url = |base: &str, path| {
            let endpoint = Endpoint::new(
                &base.parse().unwrap(),
                path,
                HeaderMap::new(),
                Duration::from_secs(1),
            );
            endpoint.unwrap().url.to_string()
        };
        for base in ["https://api.coinbase.com", "https://api.coinbase.com/"] {
            assert_eq!(
                url(base, "v2/exchange-rates?currency=BTC"),
                "https://api.coinbase.com/v2/exchange-rates?currency=BTC"
            );
        }
        assert_eq!(
            url("http://proxy:8080/coingecko", "api/v3/exchange_rates"),
            "http://proxy:8080/coingecko/api/v3/exchange_rates"
        );
    }
}
