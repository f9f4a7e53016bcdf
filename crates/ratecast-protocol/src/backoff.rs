//! The one retry schedule, shared by the server's poller and the terminal client's reconnects.

use std::time::Duration;

use rand::Rng;

/// Delay before retry number `attempt` (1-based): exponential from `first`, capped at `cap`,
/// with "equal jitter" (half fixed, half random) so that many replicas or clients that failed
/// together do not retry in lockstep.
pub fn backoff(first: Duration, cap: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let full = first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    let half = full / 2;
    half + half.mul_f64(rng.random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_with_jitter_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (first, cap) = (Duration::from_secs(5), Duration::from_secs(300));
        for (attempt, full) in [
            (0, 5),
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (7, 300),
            (40, 300),
        ] {
            let full = Duration::from_secs(full);
            let seen: Vec<Duration> = (0..200)
                .map(|_| backoff(first, cap, attempt, &mut rng))
                .collect();
            assert!(
                seen.iter().all(|d| *d >= full / 2 && *d <= full),
                "attempt {attempt}: {seen:?}"
            );
            assert!(
                seen.iter().any(|d| *d != seen[0]),
                "attempt {attempt}: no jitter"
            );
        }
    }
}
