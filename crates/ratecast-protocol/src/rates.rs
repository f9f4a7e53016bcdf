//! The rate model: one unit's rate, a table of them, its validation, and how two tables differ.
//! Pure data, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::Source;

/// One unit's rate: how many of `unit` one BTC buys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub name: String,
    pub unit: String,
    pub value: f64,
    /// `crypto`, `fiat`, `commodity`, or anything CoinGecko adds later (kept verbatim).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where this value came from when it is not the primary source (the frame's `source`):
    /// absent while the primary serves it, so the usual table costs no extra bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Why this one value is not the current answer of its source, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<UnitFlag>,
}

impl Rate {
    /// A value as its primary source gave it: no other source, no flag.
    pub fn new(
        name: impl Into<String>,
        unit: impl Into<String>,
        value: f64,
        kind: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            value,
            kind: kind.into(),
            source: None,
            flag: None,
        }
    }
}

/// A unit whose value is held back from its source's current answer (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitFlag {
    /// The source serving now does not carry this unit: it shows its last value from the one
    /// that did, and ages like stale data.
    Stale,
    /// Two sources disagree on it beyond the hold threshold: it shows the last value they agreed on.
    Held,
}

impl UnitFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Held => "held",
        }
    }
}

/// Rates by lower-case unit code; ordered so every serialisation is deterministic.
pub type Rates = BTreeMap<String, Rate>;

/// Largest number of units accepted in one payload: CoinGecko sends ~60, so anything near this
/// is a broken or hostile upstream, not data.
pub const MAX_UNITS: usize = 2_048;
const MAX_CODE_LEN: usize = 32;
const MAX_TEXT_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RatesError {
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

/// Checks a whole table; any bad entry rejects it: serving half a table would be worse than
/// serving the last good one.
pub fn validate(rates: &Rates) -> Result<(), RatesError> {
    if rates.is_empty() {
        return Err(RatesError::Empty);
    }
    if rates.len() > MAX_UNITS {
        return Err(RatesError::TooManyUnits(rates.len()));
    }
    for (code, rate) in rates {
        if !is_valid_code(code) {
            return Err(RatesError::BadCode(code.clone()));
        }
        if !(rate.value.is_finite() && rate.value > 0.0) {
            return Err(RatesError::BadValue {
                code: code.clone(),
                value: rate.value,
            });
        }
        let text_ok = |s: &str| !s.is_empty() && s.len() <= MAX_TEXT_LEN;
        if !(text_ok(&rate.name) && text_ok(&rate.unit) && text_ok(&rate.kind)) {
            return Err(RatesError::BadText(code.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(value: f64) -> Rate {
        Rate::new("US Dollar", "$", value, "fiat")
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
}
