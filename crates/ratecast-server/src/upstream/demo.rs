//! The offline demo source: a real recorded CoinGecko payload moved by a small random walk.
//!
//! For failure drills it can be told to fail: [`DEMO_OUTAGE`] is a process-wide switch that the
//! binary flips on SIGUSR1 (`kill -USR1`, `docker compose kill -s SIGUSR1` on an image with no
//! shell). While it is on, every poll fails as an unreachable upstream would, so the store marks
//! the data stale and the page shows its age, exactly as in a CoinGecko outage.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;

use super::{UpstreamError, parse_payload};
use ratecast_protocol::Rates;

/// CoinGecko's answer as recorded in 2022; a unit test below checks that it parses.
const DEMO_SEED: &[u8] = include_bytes!("demo-seed.json");

/// CoinGecko's `exchange_rates` values have three decimals.
const UPSTREAM_SCALE: f64 = 1000.0;

/// Whether the demo source simulates an outage. One per process because the signal that flips
/// it is one per process; tests use switches of their own so they cannot disturb each other.
#[derive(Debug, Default)]
pub struct OutageSwitch(AtomicBool);

impl OutageSwitch {
    pub const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Flips the switch; returns whether the source now fails.
    pub fn toggle(&self) -> bool {
        !self.0.fetch_xor(true, Ordering::Relaxed)
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The switch `ratecast serve --demo` polls through; the binary toggles it on SIGUSR1.
pub static DEMO_OUTAGE: OutageSwitch = OutageSwitch::new();

/// Offline source: a real recorded CoinGecko payload moved by a small random walk each tick.
pub struct Demo {
    rates: Rates,
    outage: &'static OutageSwitch,
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

impl Demo {
    /// The demo source of `ratecast serve --demo`, failing while [`DEMO_OUTAGE`] is on.
    pub fn new() -> Self {
        Self::with_outage_switch(&DEMO_OUTAGE)
    }

    pub fn with_outage_switch(outage: &'static OutageSwitch) -> Self {
        // The seed is a fixture checked by the tests; it always parses.
        let rates = parse_payload(DEMO_SEED).expect("bundled demo payload is valid");
        Self { rates, outage }
    }

    /// One poll: the next step of the walk, or a connection failure while the outage is on (the
    /// walk pauses, so recovery resumes from the rates the viewers last saw).
    pub fn fetch(&mut self) -> Result<Rates, UpstreamError> {
        if self.outage.is_on() {
            return Err(UpstreamError::Connect(
                "simulated demo outage (SIGUSR1 toggles it)".into(),
            ));
        }
        Ok(self.tick())
    }

    /// Moves about a third of the units by up to ±0.5% (BTC itself stays 1, it is the base),
    /// keeping CoinGecko's three decimals: the digits on the wall and the bytes on the wire are
    /// those of the real upstream (full-precision floats doubled a delta's random digits and
    /// made it compress like noise).
    pub fn tick(&mut self) -> Rates {
        let mut rng = rand::rng();
        for (code, rate) in self.rates.iter_mut() {
            if code != "btc" && rng.random_bool(0.35) {
                let moved = rate.value * (1.0 + rng.random_range(-0.005..0.005));
                rate.value = (moved * UPSTREAM_SCALE).round() / UPSTREAM_SCALE;
            }
        }
        self.rates.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratecast_protocol::rates::validate;

    #[test]
    fn demo_walks_but_keeps_every_unit_valid() {
        let mut demo = Demo::new();
        let first = demo.tick();
        let later = (0..20).map(|_| demo.tick()).last().unwrap();
        assert_eq!(first.len(), 61);
        assert_ne!(first, later);
        assert_eq!(later["btc"].value, 1.0);
        validate(&later).unwrap();
    }

    #[test]
    fn demo_rates_carry_the_precision_coingecko_sends() {
        // CoinGecko's exchange_rates answer has at most three decimals (the recorded payload:
        // 14.553, 24711.871); a walk in full f64 precision puts digits on the wall and on the
        // wire that no real upstream ever sends.
        let mut demo = Demo::new();
        for _ in 0..50 {
            for (code, rate) in demo.tick().iter() {
                let json = serde_json::to_string(&rate.value).unwrap();
                let decimals = json.split_once('.').map_or(0, |(_, frac)| frac.len());
                assert!(decimals <= 3, "{code}: {json} has {decimals} decimals");
            }
        }
    }

    #[test]
    fn the_outage_switch_makes_polls_fail_as_a_connect_error_until_toggled_back() {
        static SWITCH: OutageSwitch = OutageSwitch::new();
        let mut demo = Demo::with_outage_switch(&SWITCH);
        let before = demo.fetch().expect("no outage yet");

        assert!(SWITCH.toggle(), "the first toggle turns the outage on");
        for _ in 0..3 {
            let err = demo.fetch().expect_err("fails during the outage");
            // "connect" is the kind the metrics, the status frame and the alerts see.
            assert_eq!(err.kind(), "connect");
        }

        assert!(!SWITCH.toggle(), "the second toggle ends it");
        let after = demo.fetch().expect("recovered");
        validate(&after).unwrap();
        assert_eq!(after.len(), before.len());
        // The process-wide switch was never touched.
        assert!(!DEMO_OUTAGE.is_on());
    }
}
