//! Coinbase's `/v2/exchange-rates?currency=BTC` (no key needed): the HTTPS client, and its
//! payload read into CoinGecko's units through the mapping table ([`super::units`],
//! docs/sources.md).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::http::{Endpoint, PayloadError};
use super::units::{self, Origin, UNITS};
use super::{SetupError, UpstreamError};
use ratecast_protocol::rates::validate;
use ratecast_protocol::{Rate, Rates};

const EXCHANGE_RATES_PATH: &str = "v2/exchange-rates?currency=BTC";

/// The payload's shape: `{"data": {"currency": "BTC", "rates": {"USD": "41819.86", …}}}`;
/// other fields are ignored.
#[derive(Deserialize)]
struct Payload {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    currency: String,
    /// Several hundred tickers, most of which CoinGecko's table does not have: kept as JSON
    /// until the mapping picks its own, so an odd value in a unit nobody reads rejects nothing.
    rates: HashMap<String, Value>,
}

/// Reads a whole payload into CoinGecko's units: only those both the mapping and the payload
/// have, with CoinGecko's codes, names, units and types, and `btc`, `bits`, `sats` by
/// definition. Any mapped unit with a bad value rejects the payload, as does a payload of
/// another base or with fewer than half the mapped units (not the payload we know).
pub fn parse_payload(body: &[u8]) -> Result<Rates, PayloadError> {
    let Payload { data } =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    if data.currency != "BTC" {
        return Err(PayloadError::WrongBase(data.currency));
    }
    let mut rates = Rates::new();
    let mut found = 0;
    for unit in UNITS {
        let value = match unit.origin {
            Origin::PerBtc(value) => value,
            Origin::Coinbase(ticker) => {
                let Some(raw) = data.rates.get(ticker) else {
                    continue;
                };
                found += 1;
                decimal(raw).ok_or_else(|| PayloadError::BadValue {
                    code: ticker.to_owned(),
                    // Bounded: the value ends up in a log line and the exposed last error.
                    value: raw.to_string().chars().take(40).collect(),
                })?
            }
        };
        let rate = Rate::new(unit.name, unit.unit, value, unit.kind);
        rates.insert(unit.code.to_owned(), rate);
    }
    let expected = units::read_from_coinbase();
    if found * 2 < expected {
        return Err(PayloadError::TooFewUnits { found, expected });
    }
    validate(&rates)?;
    Ok(rates)
}

/// A rate as Coinbase writes it, a decimal string (`"41819.86"`), or a JSON number should they
/// drop the quotes one day; `None` unless it is a finite number > 0. Only digits, a point, a
/// sign and an exponent are read, so `"NaN"` and `"inf"`, which Rust would parse, are not.
fn decimal(raw: &Value) -> Option<f64> {
    let value = match raw {
        Value::String(s) => {
            let numeric =
                |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
            if !s.bytes().all(numeric) {
                return None;
            }
            s.parse().ok()?
        }
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    (value.is_finite() && value > 0.0).then_some(value)
}

/// Coinbase's `/v2/exchange-rates` client.
pub struct Coinbase {
    endpoint: Endpoint,
}

impl Coinbase {
    /// `base` is the API base URL (`https://api.coinbase.com`).
    pub fn new(base: &Url, timeout: Duration) -> Result<Self, SetupError> {
        Ok(Self {
            endpoint: Endpoint::new(base, EXCHANGE_RATES_PATH, HeaderMap::new(), timeout)?,
        })
    }

    pub async fn fetch(&self) -> Result<Rates, UpstreamError> {
        let body = self.endpoint.get().await?;
        Ok(parse_payload(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIXTURE: &str = include_str!("../../../../tests/fixtures/coinbase-exchange-rates.json");
    const COINGECKO: &str =
        include_str!("../../../../tests/fixtures/coingecko-exchange-rates-2022.json");

    fn fixture() -> Value {
        serde_json::from_str(FIXTURE).unwrap()
    }

    fn parse(payload: &Value) -> Result<Rates, PayloadError> {
        parse_payload(payload.to_string().as_bytes())
    }

    #[test]
    fn the_fixture_becomes_coingeckos_units() {
        let rates = parse_payload(FIXTURE.as_bytes()).unwrap();
        assert_eq!(rates.len(), UNITS.len());
        assert_eq!(rates.len(), 58, "61 CoinGecko units but bnb, vef, xau");
        assert_eq!(rates["usd"].value, 24_672.1);
        assert_eq!(rates["jpy"].value, 3_309_181.0);
        assert_eq!(rates["eth"].value, 14.593_009_93);
        assert_eq!(
            rates["xag"].value, 1_138.0,
            "whole ounces, as Coinbase rounds them"
        );
        assert_eq!(
            (rates["btc"].value, rates["bits"].value, rates["sats"].value),
            (1.0, 1e6, 1e8)
        );
        let uah = &rates["uah"];
        assert_eq!(
            (uah.name.as_str(), uah.unit.as_str(), uah.kind.as_str()),
            ("Ukrainian hryvnia", "₴", "fiat")
        );
        assert_eq!(rates["xag"].kind, "commodity");
        assert!(
            rates
                .values()
                .all(|r| r.source.is_none() && r.flag.is_none())
        );
        for code in ["bnb", "vef", "xau", "ves", "sol"] {
            assert!(!rates.contains_key(code), "{code}");
        }
    }

    /// The two recorded payloads agree well below the cross-check's 2 %: a test that compares
    /// them sees agreement, and one that moves a value sees only that.
    #[test]
    fn the_fixture_agrees_with_coingeckos_within_half_a_percent() {
        let coingecko = super::super::parse_payload(COINGECKO.as_bytes()).unwrap();
        for (code, rate) in parse_payload(FIXTURE.as_bytes()).unwrap() {
            let theirs = coingecko[&code].value;
            let gap = (rate.value / theirs - 1.0).abs();
            assert!(gap < 0.005, "{code}: {} vs {theirs}", rate.value);
        }
    }

    #[test]
    fn reads_numbers_and_exponents_and_ignores_what_it_does_not_map() {
        let mut payload = fixture();
        let rates = &mut payload["data"]["rates"];
        rates["USD"] = json!(41_819.86);
        rates["EUR"] = json!("3.9E4");
        rates["SOMETHING-NEW"] = json!(null);
        rates["SHIB"] = json!("NaN");
        rates["BTC"] = json!("2");
        let parsed = parse(&payload).unwrap();
        assert_eq!(parsed["usd"].value, 41_819.86);
        assert_eq!(parsed["eur"].value, 39_000.0);
        assert_eq!(parsed["btc"].value, 1.0, "derived, never read");
    }

    #[test]
    fn a_unit_coinbase_drops_is_left_out_not_an_error() {
        let mut payload = fixture();
        payload["data"]["rates"]
            .as_object_mut()
            .unwrap()
            .remove("LKR");
        let rates = parse(&payload).unwrap();
        assert_eq!(rates.len(), 57);
        assert!(!rates.contains_key("lkr"));
    }

    #[test]
    fn rejects_bad_payloads_whole() {
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut payload = fixture();
            edit(&mut payload);
            parse(&payload).unwrap_err()
        };
        let bad_value = |value: &str| PayloadError::BadValue {
            code: "EUR".into(),
            value: value.into(),
        };
        assert_eq!(
            with(&|p| p["data"]["currency"] = json!("USD")),
            PayloadError::WrongBase("USD".into())
        );
        for (value, shown) in [
            (json!("abc"), r#""abc""#),
            (json!("-23059.66"), r#""-23059.66""#),
            (json!("0.00"), r#""0.00""#),
            (json!("NaN"), r#""NaN""#),
            (json!("inf"), r#""inf""#),
            (json!("1e999"), r#""1e999""#),
            (json!(""), r#""""#),
            (json!(null), "null"),
            (json!({"amount": "1"}), r#"{"amount":"1"}"#),
        ] {
            let err = with(&|p| p["data"]["rates"]["EUR"] = value.clone());
            assert_eq!(err, bad_value(shown), "{value}");
        }
        let long = with(&|p| p["data"]["rates"]["EUR"] = json!("9".repeat(1000) + "x"));
        assert!(long.to_string().len() < 120, "{long}");
        for missing in ["data", "currency", "rates"] {
            let err = with(&|p| {
                let parent = if missing == "data" {
                    &mut *p
                } else {
                    &mut p["data"]
                };
                parent.as_object_mut().unwrap().remove(missing);
            });
            assert!(matches!(err, PayloadError::Json(_)), "{missing}: {err}");
        }
        assert!(matches!(
            parse_payload(b"{\"data\":{\"currency\":\"BTC\",\"rates\":{"),
            Err(PayloadError::Json(_))
        ));
        let expected = units::read_from_coinbase();
        let keep = |n: usize| {
            move |p: &mut Value| {
                let kept: serde_json::Map<_, _> = UNITS
                    .iter()
                    .filter_map(|u| match u.origin {
                        Origin::Coinbase(ticker) => Some(ticker),
                        Origin::PerBtc(_) => None,
                    })
                    .take(n)
                    .map(|t| (t.to_owned(), p["data"]["rates"][t].clone()))
                    .collect();
                p["data"]["rates"] = Value::Object(kept);
            }
        };
        let half = expected.div_ceil(2);
        assert_eq!(
            with(&keep(half - 1)),
            PayloadError::TooFewUnits {
                found: half - 1,
                expected
            }
        );
        let mut payload = fixture();
        keep(half)(&mut payload);
        assert_eq!(parse(&payload).unwrap().len(), half + 3);
        assert_eq!(
            with(&keep(0)),
            PayloadError::TooFewUnits { found: 0, expected }
        );
    }
}
