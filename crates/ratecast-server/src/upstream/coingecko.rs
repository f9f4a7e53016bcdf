//! CoinGecko's `/api/v3/exchange_rates`: the HTTPS client and the payload format.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use url::Url;

use super::{SetupError, UpstreamError};
use ratecast_protocol::Rates;
use ratecast_protocol::rates::{RatesError, validate};

/// Largest body accepted from the upstream; a bigger one is an error, never an OOM.
pub const MAX_BODY_BYTES: usize = 1 << 20;
const EXCHANGE_RATES_PATH: &str = "api/v3/exchange_rates";

/// Why a body is not a usable `/exchange_rates` payload.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload is not the expected JSON: {0}")]
    Json(String),
    #[error(transparent)]
    Rates(#[from] RatesError),
}

/// The payload's shape: `{"rates": {code: {name, unit, value, type}}}`; other fields are ignored.
#[derive(Deserialize)]
struct Payload {
    rates: Rates,
}

/// Parses and validates a whole `/exchange_rates` payload. Any bad entry rejects the payload:
/// serving half a table would be worse than serving the last good one.
pub fn parse_payload(body: &[u8]) -> Result<Rates, PayloadError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    validate(&payload.rates)?;
    Ok(payload.rates)
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
    pub fn new(base: &Url, api_key: Option<&str>, timeout: Duration) -> Result<Self, SetupError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            let mut value = HeaderValue::from_str(key).map_err(|_| SetupError::BadApiKey)?;
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
            .build()?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let url = base
            .join(EXCHANGE_RATES_PATH)
            .map_err(|source| SetupError::BadUrl {
                path: EXCHANGE_RATES_PATH,
                source,
            })?;
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
        Ok(parse_payload(&body)?)
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
    fn parses_exponent_notation_and_non_ascii_units() {
        let body = r#"{"rates":{"vnd":{"name":"Vietnamese đồng","unit":"₫","value":1.5327290981E7,"type":"fiat"},
            "bits":{"name":"Bits","unit":"μBTC","value":1000000,"type":"crypto","extra":true}},"other":1}"#;
        let rates = parse_payload(body.as_bytes()).unwrap();
        assert_eq!(rates["vnd"].value, 15_327_290.981);
        assert_eq!(rates["vnd"].unit, "₫");
        assert_eq!(rates["bits"].unit, "μBTC");
    }

    #[test]
    fn tolerates_unknown_types() {
        let body = r#"{"rates":{"xyz":{"name":"Thing","unit":"T","value":2,"type":"stablecoin"}}}"#;
        assert_eq!(
            parse_payload(body.as_bytes()).unwrap()["xyz"].kind,
            "stablecoin"
        );
    }

    #[test]
    fn rejects_bad_payloads_whole() {
        let cases = [
            (r#"{"rates":{}}"#, "no rates"),
            (r#"{"rate":{}}"#, "JSON"),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","value":-1,"type":"fiat"}}}"#,
                "finite",
            ),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","value":0,"type":"fiat"}}}"#,
                "finite",
            ),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","value":"NaN","type":"fiat"}}}"#,
                "JSON",
            ),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","value":1e999,"type":"fiat"}}}"#,
                "JSON",
            ),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","type":"fiat"}}}"#,
                "JSON",
            ),
            (
                r#"{"rates":{"USD!":{"name":"US Dollar","unit":"$","value":1,"type":"fiat"}}}"#,
                "unit code",
            ),
            (
                r#"{"rates":{"usd":{"name":"","unit":"$","value":1,"type":"fiat"}}}"#,
                "empty",
            ),
            (
                r#"{"rates":{"usd":{"name":"US Dollar","unit":"$","value":1,"type":"fiat"}"#,
                "JSON",
            ),
        ];
        for (body, expect) in cases {
            let err = parse_payload(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expect), "{body}: {err}");
        }
    }
}
