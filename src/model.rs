//! The rate model: what CoinGecko sends, how it is validated, and how two polls differ.
//! Pure data, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One unit's rate: how many of `unit` one BTC buys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub name: String,
    pub unit: String,
    pub value: f64,
    /// `crypto`, `fiat`, `commodity`, or anything CoinGecko adds later (kept verbatim).
    #[serde(rename = "type")]
    pub kind: String,
}

/// Rates by lower-case unit code; ordered so every serialisation is deterministic.
pub type Rates = BTreeMap<String, Rate>;

/// Largest number of units accepted in one payload: CoinGecko sends ~60, so anything near this
/// is a broken or hostile upstream, not data.
pub const MAX_UNITS: usize = 2_048;
const MAX_CODE_LEN: usize = 32;
const MAX_TEXT_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload is not the expected JSON: {0}")]
    Json(String),
    #[error("payload holds no rates")]
    Empty,
    #[error("payload holds {0} units, more than the {MAX_UNITS} accepted")]
    TooManyUnits(usize),
    #[error("unit code {0:?} is not 1-{MAX_CODE_LEN} characters of [a-z0-9_-]")]
    BadCode(String),
    #[error("unit {code:?}: value {value} is not a finite number > 0")]
    BadValue { code: String, value: f64 },
    #[error("unit {0:?}: name, unit or type is empty or longer than {MAX_TEXT_LEN} bytes")]
    BadText(String),
}

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

pub fn validate(rates: &Rates) -> Result<(), PayloadError> {
    if rates.is_empty() {
        return Err(PayloadError::Empty);
    }
    if rates.len() > MAX_UNITS {
        return Err(PayloadError::TooManyUnits(rates.len()));
    }
    for (code, rate) in rates {
        if !is_valid_code(code) {
            return Err(PayloadError::BadCode(code.clone()));
        }
        if !(rate.value.is_finite() && rate.value > 0.0) {
            return Err(PayloadError::BadValue {
                code: code.clone(),
                value: rate.value,
            });
        }
        let text_ok = |s: &str| !s.is_empty() && s.len() <= MAX_TEXT_LEN;
        if !(text_ok(&rate.name) && text_ok(&rate.unit) && text_ok(&rate.kind)) {
            return Err(PayloadError::BadText(code.clone()));
        }
    }
    Ok(())
}

/// Unit codes end up in URLs, filters and the DOM: keep them to a safe alphabet.
pub fn is_valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Most codes one list (`?symbols=`, `?codes=`, a subscribe command) may name.
pub const MAX_CODES: usize = 256;

/// A client's list of unit codes: trimmed, lower-cased, deduplicated; empty means "all".
pub fn parse_codes<'a>(
    codes: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<String>, String> {
    let set: BTreeSet<String> = codes
        .into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = set.iter().find(|s| !is_valid_code(s)) {
        return Err(format!("invalid symbol {bad:?}"));
    }
    if set.len() > MAX_CODES {
        return Err(format!("at most {MAX_CODES} symbols"));
    }
    Ok(set)
}

/// A unit that is new or differs from the previous poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rate: Rate,
    /// The previous value; `None` when the unit was just added.
    pub prev: Option<f64>,
}

/// What one poll changed relative to the one before.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    pub changed: BTreeMap<String, Change>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Differences between two polls: changed or added units (with their previous value) and removed ones.
pub fn diff(old: &Rates, new: &Rates) -> Changes {
    let changed = new
        .iter()
        .filter_map(|(code, rate)| match old.get(code) {
            Some(prev) if prev == rate => None,
            prev => Some((
                code.clone(),
                Change {
                    rate: rate.clone(),
                    prev: prev.map(|p| p.value),
                },
            )),
        })
        .collect();
    let removed = old
        .keys()
        .filter(|code| !new.contains_key(*code))
        .cloned()
        .collect();
    Changes { changed, removed }
}

/// Where the served data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[serde(rename = "coingecko")]
    CoinGecko,
    Demo,
}

/// Health of the upstream as the poller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamStatus {
    /// The last poll succeeded.
    Ok,
    /// Recent polls failed, but fewer than [`DOWN_AFTER_FAILURES`] in a row.
    Degraded,
    /// At least [`DOWN_AFTER_FAILURES`] polls in a row failed.
    Down,
}

/// Consecutive failures after which the upstream counts as down rather than degraded.
pub const DOWN_AFTER_FAILURES: u32 = 3;

/// Upstream state exposed by the REST API and the stream's status frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamState {
    pub status: UpstreamStatus,
    #[serde(with = "rfc3339_opt")]
    pub last_success: Option<SystemTime>,
    /// Kind of the last failure (`timeout`, `rate_limited`, `invalid_payload`, …), kept after recovery.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

impl Default for UpstreamState {
    fn default() -> Self {
        Self {
            status: UpstreamStatus::Degraded,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
        }
    }
}

impl UpstreamState {
    pub fn record_success(&mut self, at: SystemTime) {
        self.status = UpstreamStatus::Ok;
        self.last_success = Some(at);
        self.consecutive_failures = 0;
    }

    pub fn record_failure(&mut self, kind: &str) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(kind.to_owned());
        self.status = if self.consecutive_failures >= DOWN_AFTER_FAILURES {
            UpstreamStatus::Down
        } else {
            UpstreamStatus::Degraded
        };
    }
}

/// Milliseconds since the Unix epoch, the `ts` of every frame.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, milliseconds) for optional timestamps in JSON.
pub mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(value: f64) -> Rate {
        Rate {
            name: "US Dollar".into(),
            unit: "$".into(),
            value,
            kind: "fiat".into(),
        }
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

    #[test]
    fn diff_reports_changed_added_removed() {
        let old: Rates = [("usd".into(), rate(1.0)), ("eur".into(), rate(2.0))].into();
        let new: Rates = [("usd".into(), rate(1.5)), ("gbp".into(), rate(3.0))].into();
        let changes = diff(&old, &new);
        assert_eq!(changes.changed["usd"].prev, Some(1.0));
        assert_eq!(changes.changed["gbp"].prev, None);
        assert_eq!(changes.changed.len(), 2);
        assert_eq!(changes.removed, vec!["eur".to_string()]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn upstream_state_goes_degraded_then_down_then_ok() {
        let mut state = UpstreamState::default();
        state.record_failure("timeout");
        assert_eq!(state.status, UpstreamStatus::Degraded);
        state.record_failure("timeout");
        state.record_failure("http_5xx");
        assert_eq!(state.status, UpstreamStatus::Down);
        state.record_success(SystemTime::now());
        assert_eq!(state.status, UpstreamStatus::Ok);
        assert_eq!(state.last_error.as_deref(), Some("http_5xx"));
        assert_eq!(state.consecutive_failures, 0);
    }
}
