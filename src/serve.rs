//! The HTTP/1.1 accept loop. Our own rather than `axum::serve` so that an upgraded WebSocket
//! is a plain `TcpStream` again (the stream's fan-out writes to raw sockets), and so that every
//! accepted socket gets its options.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// Slow-loris guard: a client gets this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-socket options.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOptions {
    /// Kernel send buffer in bytes; 0 keeps the OS default (auto-tuned).
    pub send_buffer: usize,
}

impl SocketOptions {
    fn apply(self, tcp: &TcpStream) {
        // Frames are small and latency matters: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if self.send_buffer > 0 {
            let _ = socket2::SockRef::from(tcp).set_send_buffer_size(self.send_buffer);
        }
    }
}

/// Serves `router` until `shutdown`, then waits for in-flight requests (upgraded connections
/// are no longer HTTP and are drained by their owners).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: SocketOptions,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        options.apply(&tcp);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, then close; idle keep-alives close now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
