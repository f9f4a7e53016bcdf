//! Several sources behind one [`RateSource`] (issue 22, docs/sources.md): the first in the list
//! serves while it answers; when it has failed for `failover_after`, or answers 429, the next
//! one serves, value by value, until the first answers again. While two answer, the second
//! cross-checks the first's numbers, and a unit they disagree on beyond a threshold is held at
//! the last value they agreed on.
//!
//! The poller and the cluster leader see one source: a table, or an error when none answered.
//! Which source gave each value travels in the table itself ([`Rate::source`], [`Rate::flag`]),
//! so the store's diff makes a switch one delta of what changed, and cluster mode publishes it
//! like any other change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{info, warn};

use super::{RateSource, UpstreamError};
use crate::metrics::Metrics;
use ratecast_protocol::status::DOWN_AFTER_FAILURES;
use ratecast_protocol::{Failover, Rate, Rates, Source, UnitFlag, UpstreamState};

#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// How long the primary must have failed before the next source serves.
    pub failover_after: Duration,
    /// How often the second source is sampled while the first serves; `None`: no cross-check.
    pub crosscheck_interval: Option<Duration>,
    /// Relative difference (the larger value over the smaller, less one) above which a unit is
    /// reported.
    pub warn_ratio: f64,
    /// Relative difference above which a unit is held at its last agreed value.
    pub hold_ratio: f64,
}

/// One source and what is known of its health.
struct Feed<S> {
    source: Source,
    client: S,
    /// Start of the current run of failures (the wall-clock time for the wire, the monotonic
    /// one to measure it); `None` while it answers.
    failing_since: Option<(SystemTime, Instant)>,
    last_error: Option<&'static str>,
    /// A 429's `Retry-After`: not asked again before then.
    not_before: Option<Instant>,
    /// Failures in a row.
    failures: u32,
}

impl<S: RateSource> Feed<S> {
    async fn fetch(&mut self, metrics: &Metrics, now: SystemTime) -> Result<Rates, UpstreamError> {
        let result = self.client.fetch().await;
        let outcome = match &result {
            Ok(_) => {
                self.failing_since = None;
                self.not_before = None;
                self.failures = 0;
                "ok"
            }
            Err(err) => {
                self.failures += 1;
                self.failing_since.get_or_insert((now, Instant::now()));
                self.last_error = Some(err.kind());
                self.not_before = err.retry_after().map(|wait| Instant::now() + wait);
                err.kind()
            }
        };
        let source = self.source.label();
        metrics
            .counter(
                "ratecast_upstream_source_requests_total",
                &[("source", source), ("outcome", outcome)],
            )
            .increment(1);
        metrics
            .gauge_with("ratecast_upstream_source_up", &[("source", source)])
            .set(if result.is_ok() { 1.0 } else { 0.0 });
        result
    }

    fn due(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }
}

/// The latest answer of the cross-checking source.
struct Sample {
    rates: Rates,
    at: Instant,
}

/// `S`: each source's client (`Upstream` in production, a scripted one in tests).
pub struct Sources<S> {
    feeds: Vec<Feed<S>>,
    config: FailoverConfig,
    metrics: Arc<Metrics>,
    /// Index of the feed serving now.
    active: usize,
    /// The table last returned: the base a fallback's values are laid over.
    served: Rates,
    sample: Option<Sample>,
    /// Per unit, the primary's value when the two sources last agreed on it.
    agreed: BTreeMap<String, f64>,
    /// Units the two sources disagree on beyond the hold threshold, with the value they last
    /// agreed on (`None`: they never did, and the unit is left out until they do).
    held: BTreeMap<String, Option<f64>>,
    /// Units the two sources disagree on beyond the warning threshold (reported once per run).
    diverging: BTreeMap<String, f64>,
}

impl<S: RateSource> Sources<S> {
    /// `feeds` in order of priority; the first is the primary.
    pub fn new(feeds: Vec<(Source, S)>, config: FailoverConfig, metrics: Arc<Metrics>) -> Self {
        assert!(!feeds.is_empty(), "at least one source");
        let sources = Self {
            feeds: feeds
                .into_iter()
                .map(|(source, client)| Feed {
                    source,
                    client,
                    failing_since: None,
                    last_error: None,
                    not_before: None,
                    failures: 0,
                })
                .collect(),
            config,
            metrics,
            active: 0,
            served: Rates::new(),
            sample: None,
            agreed: BTreeMap::new(),
            held: BTreeMap::new(),
            diverging: BTreeMap::new(),
        };
        sources.count_serving();
        sources
    }

    /// The primary first, then each fallback in order until one answers.
    async fn fetch_any(&mut self) -> Result<Rates, UpstreamError> {
        let now = SystemTime::now();
        let primary = match self.feeds[0].due() {
            true => self.feeds[0].fetch(&self.metrics, now).await,
            false => Err(UpstreamError::RateLimited { retry_after: None }),
        };
        let primary_error = match primary {
            Ok(rates) => {
                self.switch_to(0);
                self.cross_check(&rates).await;
                return Ok(self.serve_primary(rates));
            }
            Err(err) => err,
        };
        let failing_for = self.feeds[0]
            .failing_since
            .map(|(_, since)| since.elapsed())
            .unwrap_or_default();
        // The poller retries a failing source faster than its interval, and declares the data
        // down at the DOWN_AFTER_FAILURES-th failure in a row: fail over by then, so that a wall
        // never turns stale while another source answers.
        let fail_over = self.active != 0
            || failing_for >= self.config.failover_after
            || self.feeds[0].failures >= DOWN_AFTER_FAILURES
            || matches!(primary_error, UpstreamError::RateLimited { .. });
        if fail_over {
            for index in 1..self.feeds.len() {
                if !self.feeds[index].due() {
                    continue;
                }
                match self.feeds[index].fetch(&self.metrics, now).await {
                    Ok(rates) => {
                        self.switch_to(index);
                        return Ok(self.serve_fallback(index, rates));
                    }
                    Err(err) => {
                        warn!(source = self.feeds[index].source.label(), error = %err, kind = err.kind(), "fallback source failed too");
                    }
                }
            }
        }
        // Nobody answered. A fallback must still be tried at the poller's next attempt, so a
        // primary's long Retry-After does not set the pace when there is one.
        Err(match primary_error {
            UpstreamError::RateLimited { .. } if self.feeds.len() > 1 => {
                UpstreamError::RateLimited { retry_after: None }
            }
            err => err,
        })
    }

    fn switch_to(&mut self, index: usize) {
        if self.active == index {
            return;
        }
        let (from, to) = (self.feeds[self.active].source, self.feeds[index].source);
        if index == 0 {
            info!(
                from = from.label(),
                to = to.label(),
                "the primary source answers again; it serves from now"
            );
        } else {
            let error = self.feeds[0].last_error.unwrap_or("unknown");
            warn!(
                from = from.label(),
                to = to.label(),
                primary_error = error,
                "failing over to the next source"
            );
        }
        self.metrics
            .counter("ratecast_upstream_failovers_total", &[("to", to.label())])
            .increment(1);
        self.active = index;
        self.count_serving();
    }

    fn count_serving(&self) {
        for (index, feed) in self.feeds.iter().enumerate() {
            self.metrics
                .gauge_with(
                    "ratecast_upstream_serving",
                    &[("source", feed.source.label())],
                )
                .set(if index == self.active { 1.0 } else { 0.0 });
        }
    }

    /// The primary's table, with units under a hold kept at their agreed value.
    fn serve_primary(&mut self, rates: Rates) -> Rates {
        let mut table = rates;
        for (code, agreed) in &self.held {
            match agreed {
                Some(agreed) => {
                    if let Some(rate) = table.get_mut(code) {
                        rate.value = *agreed;
                        rate.flag = Some(UnitFlag::Held);
                    }
                }
                None => {
                    table.remove(code);
                }
            }
        }
        self.serve(table)
    }

    /// A fallback's values laid over the served table: units it carries take its value (with
    /// the primary's names); units it does not carry keep their last value, flagged stale.
    fn serve_fallback(&mut self, index: usize, rates: Rates) -> Rates {
        let source = self.feeds[index].source;
        let mut table = self.served.clone();
        for rate in table.values_mut() {
            rate.flag = Some(UnitFlag::Stale);
        }
        for (code, fresh) in rates {
            let base = table.remove(&code);
            let rate = match self.held.get(&code) {
                Some(None) => continue,
                Some(Some(agreed)) => Rate {
                    value: *agreed,
                    flag: Some(UnitFlag::Held),
                    ..base.unwrap_or(fresh)
                },
                None => Rate {
                    value: fresh.value,
                    source: Some(source),
                    flag: None,
                    ..base.unwrap_or(fresh)
                },
            };
            table.insert(code, rate);
        }
        self.serve(table)
    }

    fn serve(&mut self, table: Rates) -> Rates {
        self.served = table.clone();
        let primary = self.feeds[0].source;
        for feed in &self.feeds {
            let count = table
                .values()
                .filter(|rate| rate.source.unwrap_or(primary) == feed.source)
                .count();
            self.metrics
                .gauge_with(
                    "ratecast_units_by_source",
                    &[("source", feed.source.label())],
                )
                .set(count as f64);
        }
        for flag in [UnitFlag::Stale, UnitFlag::Held] {
            let count = table
                .values()
                .filter(|rate| rate.flag == Some(flag))
                .count();
            self.metrics
                .gauge_with("ratecast_units_flagged", &[("flag", flag.as_str())])
                .set(count as f64);
        }
        table
    }

    /// While the primary serves: sample the second source when due (every interval, or every
    /// poll while a unit diverges), and compare each common unit with the latest sample.
    async fn cross_check(&mut self, primary: &Rates) {
        let Some(interval) = self.config.crosscheck_interval else {
            return;
        };
        if self.feeds.len() < 2 {
            return;
        }
        let due = !self.diverging.is_empty()
            || self
                .sample
                .as_ref()
                .is_none_or(|sample| sample.at.elapsed() >= interval);
        if due && self.feeds[1].due() {
            match self.feeds[1].fetch(&self.metrics, SystemTime::now()).await {
                Ok(rates) => {
                    self.sample = Some(Sample {
                        rates,
                        at: Instant::now(),
                    })
                }
                Err(err) => {
                    warn!(source = self.feeds[1].source.label(), error = %err, kind = err.kind(), "cross-check source failed; comparing with its last answer");
                }
            }
        }
        // Markets move: a sample older than two intervals says nothing about today's numbers.
        let Some(sample) = self
            .sample
            .as_ref()
            .filter(|s| s.at.elapsed() <= 2 * interval)
        else {
            return;
        };
        let (primary_source, other) = (self.feeds[0].source, self.feeds[1].source);
        for (code, rate) in primary {
            let Some(theirs) = sample.rates.get(code) else {
                continue;
            };
            // Symmetric: 100x too high and 100x too low are the same distance (99).
            let ratio = rate.value.max(theirs.value) / rate.value.min(theirs.value) - 1.0;
            self.metrics
                .gauge_with("ratecast_crosscheck_divergence_ratio", &[("unit", code)])
                .set(ratio);
            if ratio <= self.config.warn_ratio {
                self.agreed.insert(code.clone(), rate.value);
                if self.diverging.remove(code).is_some() {
                    info!(unit = %code, ratio, "the sources agree again on this unit");
                }
                self.held.remove(code);
                continue;
            }
            if !self.diverging.contains_key(code) {
                self.metrics
                    .counter_with("ratecast_crosscheck_divergences_total", &[("unit", code)])
                    .increment(1);
                warn!(
                    unit = %code,
                    ratio,
                    primary = primary_source.label(),
                    primary_value = rate.value,
                    other = other.label(),
                    other_value = theirs.value,
                    "the sources disagree on this unit"
                );
            }
            self.diverging.insert(code.clone(), ratio);
            if ratio > self.config.hold_ratio && !self.held.contains_key(code) {
                let agreed = self.agreed.get(code).copied();
                warn!(unit = %code, ratio, held_at = ?agreed, "holding this unit at the last value both sources agreed on");
                self.held.insert(code.clone(), agreed);
            }
        }
    }
}

impl<S: RateSource> RateSource for Sources<S> {
    async fn fetch(&mut self) -> Result<Rates, UpstreamError> {
        self.fetch_any().await
    }

    fn failover(&self) -> Option<Failover> {
        (self.active != 0).then(|| Failover {
            via: self.feeds[self.active].source,
            primary_error: self.feeds[0].last_error.unwrap_or("unknown").to_owned(),
            primary_failing_since: self.feeds[0].failing_since.map(|(since, _)| since),
        })
    }

    /// A new cluster leader takes over where the last one was: the table as published (with
    /// its holds), and a failover in progress.
    fn resume(&mut self, served: &Rates, upstream: &UpstreamState) {
        self.served = served.clone();
        for (code, rate) in served {
            if rate.flag == Some(UnitFlag::Held) {
                self.held.insert(code.clone(), Some(rate.value));
            }
        }
        if let Some(failover) = &upstream.failover
            && let Some(index) = self.feeds.iter().position(|f| f.source == failover.via)
        {
            // Its failure began before this process saw it: fail over again at once.
            let since = failover
                .primary_failing_since
                .unwrap_or_else(SystemTime::now);
            let started = Instant::now()
                .checked_sub(self.config.failover_after)
                .unwrap_or_else(Instant::now);
            self.feeds[0].failing_since = Some((since, started));
            self.feeds[0].last_error = Some(known_kind(&failover.primary_error));
            self.active = index;
            self.count_serving();
        }
    }
}

/// A failure kind read back from the shared state, as one of the bounded labels.
fn known_kind(kind: &str) -> &'static str {
    UpstreamError::KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// What a scripted source answers next.
    #[derive(Clone)]
    enum Answer {
        Rates(Rates),
        Down,
        RateLimited(Duration),
    }

    /// A source the test steers, counting its requests.
    #[derive(Clone)]
    struct Script(Arc<Mutex<(Answer, u32)>>);

    impl Script {
        fn new(answer: Answer) -> Self {
            Self(Arc::new(Mutex::new((answer, 0))))
        }
        fn set(&self, answer: Answer) {
            self.0.lock().unwrap().0 = answer;
        }
        fn calls(&self) -> u32 {
            self.0.lock().unwrap().1
        }
    }

    impl RateSource for Script {
        async fn fetch(&mut self) -> Result<Rates, UpstreamError> {
            let mut state = self.0.lock().unwrap();
            state.1 += 1;
            match &state.0 {
                Answer::Rates(rates) => Ok(rates.clone()),
                Answer::Down => Err(UpstreamError::Status(reqwest::StatusCode::BAD_GATEWAY)),
                Answer::RateLimited(wait) => Err(UpstreamError::RateLimited {
                    retry_after: Some(*wait),
                }),
            }
        }
    }

    fn table(units: &[(&str, f64)]) -> Rates {
        units
            .iter()
            .map(|&(code, value)| {
                (
                    code.to_owned(),
                    Rate::new(code.to_uppercase(), "$", value, "fiat"),
                )
            })
            .collect()
    }

    const INTERVAL: Duration = Duration::from_secs(30);

    struct Scene {
        primary: Script,
        fallback: Script,
        sources: Sources<Script>,
        metrics: Arc<Metrics>,
    }

    fn scene(crosscheck: Option<Duration>) -> Scene {
        let primary = Script::new(Answer::Rates(table(&[
            ("usd", 100.0),
            ("eur", 90.0),
            ("vef", 5.0),
        ])));
        let fallback = Script::new(Answer::Rates(table(&[("usd", 101.0), ("eur", 90.5)])));
        let metrics = Arc::new(Metrics::new());
        let sources = Sources::new(
            vec![
                (Source::CoinGecko, primary.clone()),
                (Source::Coinbase, fallback.clone()),
            ],
            FailoverConfig {
                failover_after: INTERVAL,
                crosscheck_interval: crosscheck,
                warn_ratio: 0.02,
                hold_ratio: 0.10,
            },
            metrics.clone(),
        );
        Scene {
            primary,
            fallback,
            sources,
            metrics,
        }
    }

    fn metric(metrics: &Metrics, line_start: &str) -> Option<f64> {
        metrics
            .render()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[tokio::test(start_paused = true)]
    async fn the_primary_serves_untagged_while_it_answers() {
        let mut s = scene(None);
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates, table(&[("usd", 100.0), ("eur", 90.0), ("vef", 5.0)]));
        assert_eq!(s.sources.failover(), None);
        assert_eq!(
            s.fallback.calls(),
            0,
            "no cross-check configured, no fallback request"
        );
        assert_eq!(
            metric(
                &s.metrics,
                "ratecast_upstream_serving{source=\"coingecko\"}"
            ),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_primary_is_replaced_value_by_value_after_failover_after_then_takes_over_again()
     {
        let mut s = scene(None);
        s.sources.fetch().await.unwrap();
        s.primary.set(Answer::Down);
        let err = s.sources.fetch().await.unwrap_err();
        assert_eq!(
            err.kind(),
            "http_5xx",
            "a single failure does not fail over yet"
        );
        assert_eq!(s.fallback.calls(), 0);
        tokio::time::advance(INTERVAL).await;
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].value, 101.0);
        assert_eq!(rates["usd"].source, Some(Source::Coinbase));
        assert_eq!(rates["usd"].name, "USD", "the primary's names stay");
        assert_eq!(rates["usd"].flag, None);
        // A unit the fallback does not carry keeps the primary's last value, flagged on its own.
        assert_eq!(rates["vef"].value, 5.0);
        assert_eq!(rates["vef"].source, None);
        assert_eq!(rates["vef"].flag, Some(UnitFlag::Stale));
        let failover = s.sources.failover().expect("failed over");
        assert_eq!(failover.via, Source::Coinbase);
        assert_eq!(failover.primary_error, "http_5xx");
        assert!(failover.primary_failing_since.is_some());
        assert_eq!(
            metric(&s.metrics, "ratecast_upstream_serving{source=\"coinbase\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric(&s.metrics, "ratecast_units_flagged{flag=\"stale\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric(&s.metrics, "ratecast_units_by_source{source=\"coinbase\"}"),
            Some(2.0)
        );

        // The primary is asked on every poll and serves again on its first answer.
        s.primary.set(Answer::Rates(table(&[
            ("usd", 102.0),
            ("eur", 90.0),
            ("vef", 5.0),
        ])));
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates, table(&[("usd", 102.0), ("eur", 90.0), ("vef", 5.0)]));
        assert_eq!(s.sources.failover(), None);
        assert_eq!(
            metric(
                &s.metrics,
                "ratecast_upstream_failovers_total{to=\"coingecko\"}"
            ),
            Some(1.0)
        );
    }

    /// The poller retries faster than the interval and declares the data down at the third
    /// failure in a row: the failover must come by then, or the wall flickers stale.
    #[tokio::test(start_paused = true)]
    async fn the_third_failure_in_a_row_fails_over_before_failover_after() {
        let mut s = scene(None);
        s.sources.fetch().await.unwrap();
        s.primary.set(Answer::Down);
        for _ in 1..DOWN_AFTER_FAILURES {
            assert!(s.sources.fetch().await.is_err());
        }
        assert_eq!(s.fallback.calls(), 0);
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].source, Some(Source::Coinbase));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_fails_over_at_once_and_its_retry_after_is_honoured() {
        let mut s = scene(None);
        s.sources.fetch().await.unwrap();
        s.primary.set(Answer::RateLimited(Duration::from_secs(600)));
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].source, Some(Source::Coinbase));
        assert_eq!(s.sources.failover().unwrap().primary_error, "rate_limited");
        let asked = s.primary.calls();
        for _ in 0..5 {
            tokio::time::advance(INTERVAL).await;
            s.sources.fetch().await.unwrap();
        }
        assert_eq!(
            s.primary.calls(),
            asked,
            "not asked again before its Retry-After"
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        s.primary.set(Answer::Rates(table(&[("usd", 100.0)])));
        s.sources.fetch().await.unwrap();
        assert_eq!(s.primary.calls(), asked + 1);
        assert_eq!(s.sources.failover(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn when_nothing_answers_the_primarys_error_is_returned_without_its_long_retry_after() {
        let mut s = scene(None);
        s.primary
            .set(Answer::RateLimited(Duration::from_secs(3600)));
        s.fallback.set(Answer::Down);
        let err = s.sources.fetch().await.unwrap_err();
        assert_eq!(err.kind(), "rate_limited");
        assert_eq!(
            err.retry_after(),
            None,
            "the fallback must be tried again soon"
        );
        assert_eq!(s.sources.failover(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_primary_table_yet_the_fallback_serves_what_it_has() {
        let mut s = scene(None);
        s.primary.set(Answer::RateLimited(Duration::from_secs(60)));
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates.len(), 2);
        assert!(rates.values().all(|r| r.source == Some(Source::Coinbase)));
    }

    #[tokio::test(start_paused = true)]
    async fn sources_that_disagree_are_reported_and_beyond_the_hold_threshold_the_unit_is_held() {
        let mut s = scene(Some(Duration::from_secs(300)));
        // Agree (1 % and 0.6 %): the agreed values are recorded.
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(
            s.fallback.calls(),
            1,
            "the first poll samples the second source"
        );
        assert_eq!(rates["usd"].flag, None);
        // Within the interval, no new sample.
        tokio::time::advance(INTERVAL).await;
        s.sources.fetch().await.unwrap();
        assert_eq!(s.fallback.calls(), 1);

        // A glitch upstream: usd off by 100x. Compared with the last sample at once.
        s.primary.set(Answer::Rates(table(&[
            ("usd", 10_000.0),
            ("eur", 90.0),
            ("vef", 5.0),
        ])));
        tokio::time::advance(INTERVAL).await;
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].value, 100.0, "held at the last agreed value");
        assert_eq!(rates["usd"].flag, Some(UnitFlag::Held));
        assert_eq!(rates["eur"].flag, None);
        assert_eq!(
            metric(
                &s.metrics,
                "ratecast_crosscheck_divergences_total{unit=\"usd\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &s.metrics,
                "ratecast_crosscheck_divergence_ratio{unit=\"usd\"}"
            ),
            Some(10_000.0 / 101.0 - 1.0),
            "symmetric: the larger value over the smaller"
        );
        assert_eq!(
            metric(&s.metrics, "ratecast_units_flagged{flag=\"held\"}"),
            Some(1.0)
        );
        // While a unit diverges, the second source is asked on every poll.
        let asked = s.fallback.calls();
        tokio::time::advance(INTERVAL).await;
        s.sources.fetch().await.unwrap();
        assert_eq!(s.fallback.calls(), asked + 1);

        // 5 %: reported, not held.
        s.primary.set(Answer::Rates(table(&[
            ("usd", 100.0),
            ("eur", 95.0),
            ("vef", 5.0),
        ])));
        tokio::time::advance(INTERVAL).await;
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].flag, None, "agreeing again releases the hold");
        assert_eq!(rates["usd"].value, 100.0);
        assert_eq!(rates["eur"].value, 95.0);
        assert_eq!(rates["eur"].flag, None);
        assert_eq!(
            metric(
                &s.metrics,
                "ratecast_crosscheck_divergences_total{unit=\"eur\"}"
            ),
            Some(1.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_the_sources_never_agreed_on_is_left_out_until_they_do() {
        let mut s = scene(Some(Duration::from_secs(300)));
        s.primary
            .set(Answer::Rates(table(&[("usd", 10_000.0), ("eur", 90.0)])));
        let rates = s.sources.fetch().await.unwrap();
        assert!(!rates.contains_key("usd"));
        assert!(rates.contains_key("eur"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_carries_on_a_failover_in_progress_at_once() {
        let mut s = scene(None);
        let served = table(&[("usd", 101.0), ("vef", 5.0)]);
        let upstream = UpstreamState {
            failover: Some(Failover {
                via: Source::Coinbase,
                primary_error: "timeout".into(),
                primary_failing_since: Some(SystemTime::UNIX_EPOCH),
            }),
            ..UpstreamState::default()
        };
        s.sources.resume(&served, &upstream);
        s.primary.set(Answer::Down);
        let rates = s.sources.fetch().await.unwrap();
        assert_eq!(rates["usd"].source, Some(Source::Coinbase));
        assert_eq!(rates["vef"].flag, Some(UnitFlag::Stale));
        let failover = s.sources.failover().unwrap();
        assert_eq!(failover.primary_failing_since, Some(SystemTime::UNIX_EPOCH));
    }
}
