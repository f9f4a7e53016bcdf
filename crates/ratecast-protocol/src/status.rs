//! Where the served data comes from and how healthy that source is: carried by REST bodies and
//! the stream's status frames.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339_opt;

/// Where the served data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[serde(rename = "coingecko")]
    CoinGecko,
    Coinbase,
    Demo,
}

impl Source {
    /// Its name in sentences people read (status reasons, the terminal board).
    pub fn name(self) -> &'static str {
        match self {
            Self::CoinGecko => "CoinGecko",
            Self::Coinbase => "Coinbase",
            Self::Demo => "the demo source",
        }
    }

    /// Its bounded label in metrics and configuration (`coingecko`, `coinbase`, `demo`).
    pub fn label(self) -> &'static str {
        match self {
            Self::CoinGecko => "coingecko",
            Self::Coinbase => "coinbase",
            Self::Demo => "demo",
        }
    }
}

/// The primary source is failing and another one serves in its place (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// The source serving now.
    pub via: Source,
    /// The primary's last failure kind (`timeout`, `rate_limited`, `http_5xx`, …).
    pub primary_error: String,
    /// When the primary's current run of failures began.
    #[serde(with = "rfc3339_opt", default)]
    pub primary_failing_since: Option<SystemTime>,
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
    /// When the poller tries again after a failure; `None` while polls succeed.
    #[serde(with = "rfc3339_opt", default)]
    pub next_attempt: Option<SystemTime>,
    /// Set while a fallback source serves in place of the failing primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

impl Default for UpstreamState {
    fn default() -> Self {
        Self {
            status: UpstreamStatus::Degraded,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
            next_attempt: None,
            failover: None,
        }
    }
}

impl UpstreamState {
    pub fn record_success(&mut self, at: SystemTime) {
        self.status = UpstreamStatus::Ok;
        self.last_success = Some(at);
        self.consecutive_failures = 0;
        self.next_attempt = None;
    }

    pub fn record_failure(&mut self, kind: &str, next_attempt: Option<SystemTime>) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(kind.to_owned());
        self.next_attempt = next_attempt;
        // Nothing answered: no fallback serves either.
        self.failover = None;
        self.status = if self.consecutive_failures >= DOWN_AFTER_FAILURES {
            UpstreamStatus::Down
        } else {
            UpstreamStatus::Degraded
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_state_goes_degraded_then_down_then_ok() {
        let mut state = UpstreamState::default();
        state.record_failure("timeout", None);
        assert_eq!(state.status, UpstreamStatus::Degraded);
        state.record_failure("timeout", None);
        state.record_failure("http_5xx", None);
        assert_eq!(state.status, UpstreamStatus::Down);
        state.record_success(SystemTime::now());
        assert_eq!(state.status, UpstreamStatus::Ok);
        assert_eq!(state.last_error.as_deref(), Some("http_5xx"));
        assert_eq!(state.consecutive_failures, 0);
    }
}
