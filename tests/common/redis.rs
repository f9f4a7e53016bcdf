//! A real `redis-server` per test, on a free port, in a data directory of its own (a
//! `dump.rdb` left in the checkout, or by another test, is never loaded). By default nothing
//! is persisted: stopping it and starting it again is "Redis restarted empty". A persistent
//! server keeps its directory across restarts, so a `SAVE`d dump comes back
//! ([`RedisServer::restart_from_dump`]); two servers make a primary and its replica
//! ([`RedisServer::replicate`], [`RedisServer::promote`]). The CI stage installs the Debian
//! package.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct RedisServer {
    pub port: u16,
    /// This server's own `--dir`, removed on drop.
    dir: PathBuf,
    /// Keeps `dir` (and its dump) across restarts.
    persistent: bool,
    /// `--cluster-enabled yes`: a one-node sharded Redis Cluster holding every slot.
    sharded: bool,
    child: Option<Child>,
}

/// A port nothing listens on right now. Another process may take it before the caller binds
/// it: [`RedisServer::start`] checks that the server answering is its own and retries.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Tries of a fresh port when another process took the one picked first.
const PORT_TRIES: usize = 5;

impl RedisServer {
    /// An empty server that persists nothing.
    pub fn start() -> Self {
        Self::start_with(false, false)
    }

    /// A one-node Redis Cluster (`--cluster-enabled yes`) holding every slot: it reports
    /// `cluster_enabled:1`, as a sharded ElastiCache does.
    pub fn start_sharded() -> Self {
        let server = Self::start_with(false, true);
        server
            .command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .expect("CLUSTER ADDSLOTSRANGE");
        server
    }

    /// An empty server whose data directory survives [`Self::restart_from_dump`]: `SAVE` (or
    /// [`Self::save`]) writes `dump.rdb` there, and a restart loads it.
    pub fn start_persistent() -> Self {
        Self::start_with(true, false)
    }

    fn start_with(persistent: bool, sharded: bool) -> Self {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ratecast-redis-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut server = Self {
            port: 0,
            dir,
            persistent,
            sharded,
            child: None,
        };
        for _ in 0..PORT_TRIES {
            server.port = free_port();
            match server.launch(false) {
                Ok(()) => return server,
                // Another test bound the port between free_port() and redis-server.
                Err(e) => eprintln!("redis-server on {}: {e:#}; another port", server.port),
            }
        }
        panic!("redis-server did not start on any of {PORT_TRIES} ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts it again, empty, on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(false).expect("redis-server restarts");
    }

    /// Starts it again on the same port from the last `SAVE` in its directory (a persistent
    /// server only), and waits until the dump is loaded.
    pub fn restart_from_dump(&mut self) {
        assert!(
            self.persistent,
            "restart_from_dump needs start_persistent()"
        );
        self.stop();
        self.launch(true)
            .expect("redis-server restarts from its dump");
    }

    /// `SAVE`: the dump a later [`Self::restart_from_dump`] loads. Waits out a background save
    /// (a primary forks one to sync a replica that just attached).
    pub fn save(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.command(&["SAVE"]) {
                Ok(reply) => return assert_eq!(reply, "OK"),
                Err(e) if e.to_string().contains("in progress") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("SAVE: {e:#}"),
            }
        }
    }

    /// `SHUTDOWN NOSAVE`: gone, with only what the last `SAVE` wrote.
    pub fn shutdown_nosave(&mut self) {
        // The server closes the connection instead of answering.
        let _ = self.command(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Kills it (SIGKILL: no goodbye to the clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes this server a replica of `primary` and waits until its link is up and it holds
    /// the primary's data. A replica refuses writes (`READONLY`).
    pub fn replicate(&self, primary: &RedisServer) {
        let port = primary.port.to_string();
        assert_eq!(
            self.command(&["REPLICAOF", "127.0.0.1", &port])
                .expect("REPLICAOF"),
            "OK"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .command(&["INFO", "replication"])
            .is_ok_and(|info| info.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "replica link not up within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `REPLICAOF NO ONE`: a primary again, with whatever it had received; writes made on the
    /// old primary from now on never reach it.
    pub fn promote(&self) {
        assert_eq!(
            self.command(&["REPLICAOF", "NO", "ONE"])
                .expect("REPLICAOF NO ONE"),
            "OK"
        );
    }

    /// `CLIENT PAUSE`: every client's commands wait for `how_long` (a replica starting now
    /// cannot load the shared state until then).
    pub fn pause(&self, how_long: Duration) {
        let ms = how_long.as_millis().to_string();
        assert_eq!(
            self.command(&["CLIENT", "PAUSE", &ms, "ALL"])
                .expect("CLIENT PAUSE"),
            "OK"
        );
    }

    /// One command on a fresh connection; the reply as text (arrays one element a line), or
    /// the server's error.
    pub fn command(&self, args: &[&str]) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        read_reply(&mut BufReader::new(stream))
    }

    /// Spawns `redis-server` and waits until this very process answers (not another test's
    /// server that took the port) and has loaded its data.
    fn launch(&mut self, keep_data: bool) -> Result<()> {
        if !keep_data {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::fs::create_dir_all(&self.dir)?;
        let dir = self.dir.to_str().context("temp dir is UTF-8")?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir, "--save", "", "--appendonly", "no"]);
        if self.sharded {
            command.args(["--cluster-enabled", "yes"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server runs (apt-get install redis-server)")?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("redis-server exited: {status}");
            }
            if self.command(&["INFO", "server"]).is_ok_and(|info| {
                info.lines()
                    .any(|l| l.trim() == format!("process_id:{pid}"))
            }) && self.command(&["PING"]).is_ok_and(|r| r == "PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("redis-server did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One RESP2 reply: simple and bulk strings and integers as text, arrays one element a line,
/// an error reply as an error.
fn read_reply(reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).context("empty reply")?;
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => bail!("{rest}"),
        "$" if rest == "-1" => Ok(String::new()),
        "$" => {
            let len: usize = rest.parse()?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8(body)?)
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let items = (0..n.max(0))
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>>>()?;
            Ok(items.join("\n"))
        }
        _ => bail!("not a RESP reply: {line:?}"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
