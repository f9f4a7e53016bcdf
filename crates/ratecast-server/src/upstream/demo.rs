//! The offline demo source: a real recorded CoinGecko payload moved by a small random walk.

use rand::Rng;

use super::parse_payload;
use ratecast_protocol::Rates;

/// CoinGecko's answer as recorded in 2022; a unit test below checks that it parses.
const DEMO_SEED: &[u8] = include_bytes!("demo-seed.json");

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
        let rates = parse_payload(DEMO_SEED).expect("bundled demo payload is valid");
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
}
