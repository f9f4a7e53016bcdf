//! The signals that end the process gracefully, for the server and the clients alike.

/// Completes on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, `docker stop`).
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// `serve --demo`: each SIGUSR1 toggles a simulated outage of the demo source, for failure
/// drills (`kill -USR1 PID`; `docker compose kill -s SIGUSR1` on the distroless image, which
/// has no shell to run anything else in). Outside demo mode SIGUSR1 keeps its default action.
#[cfg(unix)]
pub async fn toggle_demo_outage_on_sigusr1() {
    use ratecast_server::upstream::DEMO_OUTAGE;
    use tokio::signal::unix::{SignalKind, signal};
    let mut user1 = match signal(SignalKind::user_defined1()) {
        Ok(sig) => sig,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGUSR1: the demo outage drill is off");
            return;
        }
    };
    while user1.recv().await.is_some() {
        if DEMO_OUTAGE.toggle() {
            tracing::warn!("SIGUSR1: the demo source now fails like an unreachable upstream");
        } else {
            tracing::warn!("SIGUSR1: the demo source answers again");
        }
    }
}
