//! A TCP proxy in the test process standing in for a Redis endpoint (a DNS name in front of
//! a primary): its target can be switched at run time (a failover moves the name), it can
//! reset every open connection, and it can black-hole — keep accepting and reading, answer
//! nothing, send no RST — as a primary lost with its host or behind a partition does.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// One relayed connection, as the proxy holds it.
struct Link {
    /// `true` while the link is black-holed: bytes are read and held, none passed on.
    silent: watch::Sender<bool>,
    task: AbortHandle,
}

struct State {
    target: SocketAddr,
    /// New connections are black-holed from the start.
    black_hole: bool,
    links: Vec<Link>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a port of its own (held from the start: no other test can take it) and
    /// relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = Arc::new(Mutex::new(State {
            target,
            black_hole: false,
            links: Vec::new(),
        }));
        let accept = tokio::spawn(accept_loop(listener, state.clone())).abort_handle();
        Self {
            port,
            state,
            accept,
        }
    }

    /// `redis://` URL of the proxy, for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// New connections go to `target`; the open ones stay where they are (and silent, if
    /// they are black-holed: the lost primary never answers them). Ends the black hole for
    /// new connections, as a DNS name moved to a working primary does.
    pub fn switch_to(&self, target: SocketAddr) {
        let mut state = self.state.lock().unwrap();
        state.target = target;
        state.black_hole = false;
    }

    /// From now on nothing is answered, on the open connections and on new ones (still
    /// accepted, and read): no reply, no FIN, no RST.
    pub fn black_hole(&self) {
        let mut state = self.state.lock().unwrap();
        state.black_hole = true;
        for link in &state.links {
            link.silent.send_replace(true);
        }
    }

    /// Ends the black hole: every connection passes its held bytes on and relays again (a
    /// partition that heals).
    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.black_hole = false;
        for link in &state.links {
            link.silent.send_replace(false);
        }
    }

    /// Resets every open connection (RST to the client), as a failover that kills the old
    /// primary's connections does; new connections are relayed as before.
    pub fn reset_all(&self) {
        let links = std::mem::take(&mut self.state.lock().unwrap().links);
        for link in links {
            // The task owns both sockets (lingering 0): aborting it drops them with a RST.
            link.task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((client, _)) = listener.accept().await {
        // A reset sends a RST, not a FIN.
        let _ = client.set_zero_linger();
        let mut state = state.lock().unwrap();
        let (silent, silenced) = watch::channel(state.black_hole);
        let target = state.target;
        let task = tokio::spawn(relay(client, target, silenced)).abort_handle();
        state.links.retain(|l| !l.task.is_finished());
        state.links.push(Link { silent, task });
    }
}

/// Relays both ways until either side closes; while `silenced` says so, each direction holds
/// the chunk it read and waits.
async fn relay(client: TcpStream, target: SocketAddr, mut silenced: watch::Receiver<bool>) {
    // Accepted into a black hole: the target is not even asked (it may be down) until healed.
    if silenced.wait_for(|silent| !silent).await.is_err() {
        return;
    }
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = server.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut both = JoinSet::new();
    both.spawn(pump(client_read, server_write, silenced.clone()));
    both.spawn(pump(server_read, client_write, silenced));
    // Both halves must end before the sockets are dropped; an abort of this task drops them.
    while both.join_next().await.is_some() {}
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silenced: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if silenced.wait_for(|silent| !silent).await.is_err()
            || to.write_all(&buf[..n]).await.is_err()
        {
            break;
        }
    }
    let _ = to.shutdown().await;
}
