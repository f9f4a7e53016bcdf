//! Periodic work that stops with the server.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `tick` now and then every `period` until `shutdown`; a late tick is not made up for
/// (a burst of catch-up heartbeats would help nobody).
pub async fn every(period: Duration, shutdown: &CancellationToken, mut tick: impl FnMut()) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick(),
            () = shutdown.cancelled() => return,
        }
    }
}
