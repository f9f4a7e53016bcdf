//! The HTTP/1.1 accept loop. Our own rather than `axum::serve` for two reasons: every accepted
//! socket gets its options, and a connection a handler switches to another protocol (101) comes
//! back as the concrete [`TcpStream`] it was accepted as — typed, no run-time downcast — because
//! the stream's fan-out writes to raw sockets.
//!
//! How a handler takes a socket over: each request carries a [`Takeover`] extension. A handler
//! that answers 101 calls [`Takeover::claim`] and awaits the returned [`OnUpgrade`]. Hyper is
//! driven with `poll_without_shutdown`, so after the 101 is written the connection ends without
//! closing the socket, and this loop sends the socket (with any bytes hyper read past the
//! request) to the claimant. A socket nobody claimed is closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
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

/// A socket the HTTP layer has handed over after a 101 response.
pub struct Upgraded {
    pub stream: TcpStream,
    /// Bytes the client sent after its request that hyper had already read.
    pub read_buf: Bytes,
}

/// Resolves to the socket once the 101 response is written; an error if the connection ended
/// before that (the client went away).
pub type OnUpgrade = oneshot::Receiver<Upgraded>;

/// Request extension through which one handler per connection can take the socket over.
#[derive(Clone, Default)]
pub struct Takeover(Arc<Mutex<Option<oneshot::Sender<Upgraded>>>>);

impl Takeover {
    /// Claims the connection's socket for after the response; call only when answering 101.
    pub fn claim(&self) -> OnUpgrade {
        let (tx, rx) = oneshot::channel();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn claimant(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Serves `router` until `stop`, then waits for in-flight requests (taken-over connections
/// are no longer HTTP and are drained by their owners).
///
/// `shutdown` comes first and `stop` later, once the server has drained: in between the
/// listener still accepts, so probes get an answer (`/readyz` 503, `/ws` 503) instead of a
/// refused connection. Connections open when `shutdown` starts finish their request in flight
/// and close; those accepted during the drain serve one request each (no keep-alive).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: SocketOptions,
    shutdown: CancellationToken,
    stop: CancellationToken,
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
            () = stop.cancelled() => break,
        };
        options.apply(&tcp);
        connections.spawn(connection(tcp, peer, router.clone(), shutdown.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(tcp: TcpStream, peer: SocketAddr, router: Router, shutdown: CancellationToken) {
    let takeover = Takeover::default();
    let requests = takeover.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo::<SocketAddr>(peer));
        extensions.insert(requests.clone());
        let router = router.clone();
        // Boxed: `poll_without_shutdown` needs an `Unpin` future (one allocation per request).
        Box::pin(async move {
            Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
        })
    });
    let draining = shutdown.is_cancelled();
    let mut connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(!draining)
        .serve_connection(TokioIo::new(tcp), service);
    let result = tokio::select! {
        result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => result,
        // Accepted during the drain: one request (keep-alive is off), bounded by the header
        // read timeout; a graceful shutdown now would close it before it is read.
        () = shutdown.cancelled(), if !draining => {
            // Finish the request in flight, then close; idle keep-alives close now.
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)).await
        }
    };
    if let Err(e) = result {
        return debug!(error = %e, %peer, "connection ended with an error");
    }
    if let Some(claimant) = takeover.claimant() {
        let parts = connection.into_parts();
        let _ = claimant.send(Upgraded {
            stream: parts.io.into_inner(),
            read_buf: parts.read_buf,
        });
    }
}
