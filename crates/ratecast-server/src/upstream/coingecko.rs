//! CoinGecko's `/api/v3/exchange_rates`: the HTTPS client and the payload format.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::http::{Endpoint, PayloadError};
use super::{SetupError, UpstreamError};
use ratecast_protocol::Rates;
use ratecast_protocol::rates::validate;

const EXCHANGE_RATES_PATH: &str = "api/v3/exchange_rates";

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
    endpoint: Endpoint,
}

impl CoinGecko {
    /// `base` is the API base URL (`https://api.coingecko.com`, or the pro one). The key is sent
    /// as `x-cg-pro-api-key` to the pro host and `x-cg-demo-api-key` elsewhere, and marked
    /// sensitive so it never appears in debug output.
    pub fn new(base: &Url, api_key: Option<&str>, timeout: Duration) -> Result<Self, SetupError> {
        let mut headers = HeaderMap::new();
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
        Ok(Self {
            endpoint: Endpoint::new(base, EXCHANGE_RATES_PATH, headers, timeout)?,
        })
    }

    pub async fn fetch(&self) -> Result<Rates, UpstreamError> {
        let body = self.endpoint.get().await?;
        Ok(parse_payload(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
