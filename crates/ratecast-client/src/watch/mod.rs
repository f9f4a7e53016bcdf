//! `ratecast watch`: the live table in a terminal, or NDJSON for scripts (`--json`).
//!
//! Like the page, it resumes with `?since=<last seq>&epoch=<its epoch>` after a drop, so a
//! reconnect replays what was missed instead of silently skipping it; on a full feed a `seq` jump
//! forces such a resume. It folds every snapshot and delta into its own table and checks the
//! `checksum` they carry: on a mismatch its table is wrong, so it reconnects *without* `since`
//! for a fresh snapshot, and counts it (status line; on stderr with `--json`).
//!
//! It offers permessage-deflate (RFC 7692) as browsers do, unless `--no-deflate`, letting the
//! server keep its compression context across messages: the stream is read with yawc, which
//! negotiates it and inflates each message into a buffer bounded by [`MAX_MESSAGE`]
//! (tungstenite rejects the RSV1 bit of compressed frames).

mod board;

use std::future::IntoFuture;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures_util::SinkExt;
use tokio::time::Instant;
use tokio_rustls::{TlsConnector, rustls};
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{CompressionLevel, Frame, OpCode, Options, WebSocketError};

use crate::table::{Check, Table};
use board::{Board, Link};
use ratecast_protocol::ServerFrame;
use ratecast_protocol::backoff::backoff;

/// Reconnect delays double from this up to `MAX_BACKOFF`, with jitter so a fleet of clients
/// dropped together by a restart does not come back in lockstep.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Redraws between frames keep the data age and the flashes current.
const REDRAW: Duration = Duration::from_millis(250);
/// The largest message accepted, on the wire and once inflated (a snapshot of every unit is a
/// few KiB): a server cannot make watch inflate a small frame into gigabytes.
const MAX_MESSAGE: usize = 4 << 20;

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// WebSocket URL of the stream (ws:// or wss://).
    #[arg(
        long,
        env = "RATECAST_WATCH_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,

    /// Comma-separated unit codes to show, in this order (the server filters the stream);
    /// every unit when omitted.
    #[arg(long, env = "RATECAST_WATCH_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,

    /// Show what one unit costs in this currency ("ETH $1,698.06"); `--base` is the old name.
    #[arg(
        long,
        alias = "base",
        env = "RATECAST_WATCH_QUOTE",
        default_value = "usd"
    )]
    pub quote: String,

    /// Show CoinGecko's raw values instead: how many of each unit one BTC buys.
    #[arg(long, env = "RATECAST_WATCH_PER_BTC")]
    pub per_btc: bool,

    /// Print every frame as one JSON line (NDJSON; the first line is the snapshot) instead of
    /// the table, for scripts and jq.
    #[arg(long, env = "RATECAST_WATCH_JSON")]
    pub json: bool,

    /// Exit 0 after this many frames (0 = until Ctrl-C).
    #[arg(long, env = "RATECAST_WATCH_MAX_FRAMES", default_value_t = 0)]
    pub max_frames: u64,

    /// Reconnect when not even a heartbeat arrived for this long (server heartbeats every 15 s
    /// by default).
    #[arg(long, env = "RATECAST_WATCH_IDLE_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Limit for the TCP connect, TLS and WebSocket handshake of each attempt.
    #[arg(long, env = "RATECAST_WATCH_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Do not offer permessage-deflate: read raw frames (by default watch offers it, as
    /// browsers do, and inflates the compressed ones).
    #[arg(long, env = "RATECAST_WATCH_NO_DEFLATE")]
    pub no_deflate: bool,
}

/// Runs until `shutdown` completes, the user quits, or `--max-frames` is reached.
pub async fn run(
    args: WatchArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url =
        url::Url::parse(&args.url).map_err(|e| anyhow!("invalid --url {:?}: {e}", args.url))?;
    if !matches!(url.scheme(), "ws" | "wss") || url.host_str().is_none() {
        bail!(
            "invalid --url {:?}: expected ws://host[:port]/ws or wss://…",
            args.url
        );
    }
    let symbols: Vec<String> = args
        .symbols
        .iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let quote = (!args.per_btc).then(|| args.quote.trim().to_lowercase());
    // The quote's own rate is needed to convert, even when it is not a shown symbol.
    let mut wanted = symbols.clone();
    if let Some(quote) = &quote
        && !wanted.is_empty()
        && !wanted.contains(quote)
    {
        wanted.push(quote.clone());
    }

    let mut sink = if args.json {
        Sink::Json
    } else {
        if !io::stdout().is_terminal() {
            bail!(
                "stdout is not a terminal: use --json for scripts (or give the container a TTY: docker run -t)"
            );
        }
        Sink::Table(
            Box::new(Board::new(args.url.clone(), symbols, quote)),
            Terminal::enter()?,
        )
    };

    let quit = CancellationToken::new();
    // Stops the key-reading thread on every way out.
    let _stop_keys = quit.clone().drop_guard();
    tokio::spawn({
        let quit = quit.clone();
        async move {
            shutdown.await;
            quit.cancel();
        }
    });
    if let Sink::Table(..) = sink {
        Terminal::watch_keys(quit.clone());
    }

    let mut feed = Feed {
        since: None,
        table: Table::default(),
        mismatches: 0,
        frames: 0,
        full_feed: wanted.is_empty(),
    };
    let tls = tls_connector()?;
    let options = connect_options(args.no_deflate);
    let mut attempt = 0u32;
    let mut connected_once = false;
    loop {
        let request = request_url(&url, &wanted, feed.since.as_ref());
        let connect = yawc::WebSocket::connect(request)
            .with_options(options.clone())
            .with_connector(tls.clone())
            .into_future();
        let result = tokio::select! {
            () = quit.cancelled() => return Ok(()),
            result = tokio::time::timeout(args.connect_timeout, connect) => result,
        };
        let why = match result {
            Ok(Ok(ws)) => {
                connected_once = true;
                attempt = 0;
                sink.link(Link::Live)?;
                match feed.session(ws, &mut sink, &args, &quit).await? {
                    End::Done => return Ok(()),
                    End::Lost(why) => why,
                }
            }
            Ok(Err(e)) => describe(&e),
            Err(_) => format!(
                "no answer within {}",
                humantime::format_duration(args.connect_timeout)
            ),
        };
        if !connected_once {
            drop(sink); // leave the alternate screen before printing the error
            bail!("cannot connect to {}: {why}", args.url);
        }
        attempt += 1;
        let delay = backoff(FIRST_BACKOFF, MAX_BACKOFF, attempt, &mut rand::rng());
        let at = Instant::now() + delay;
        sink.link(Link::Reconnecting {
            attempt,
            at: at.into_std(),
            why,
        })?;
        let mut redraw = tokio::time::interval(REDRAW);
        loop {
            tokio::select! {
                () = quit.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(at) => break,
                _ = redraw.tick() => sink.redraw()?,
            }
        }
    }
}

enum End {
    /// `--max-frames` reached or the user quit.
    Done,
    /// The connection is gone (or must be replaced); reconnect with `since`.
    Lost(String),
}

/// What survives reconnects: the resume point, the folded table and the counts.
struct Feed {
    /// The last seq applied and its epoch; `None` after a checksum mismatch, so that the next
    /// connection starts from a snapshot.
    since: Option<Resume>,
    table: Table,
    /// Checksum mismatches so far (each one cost a fresh snapshot).
    mismatches: u64,
    frames: u64,
    full_feed: bool,
}

/// Where a reconnect resumes.
struct Resume {
    seq: u64,
    /// Empty from servers older than epochs (they resume on `since` alone).
    epoch: String,
}

type Ws = yawc::TcpWebSocket;

/// What watch offers in the handshake: permessage-deflate unless `no_deflate`. It never sends a
/// data frame, so the compression level only matters to the offer.
///
/// The offer is yawc's default, a bare `permessage-deflate`: no `server_no_context_takeover`, so
/// the server may keep its compression window across messages (smaller frames), as browsers let
/// it. yawc follows the answer: without `server_no_context_takeover` it keeps one inflater
/// for the connection, never reset between messages, with the `server_max_window_bits` answered
/// (a new connection, a new inflater); with it, it resets after each message. Nothing to set.
fn connect_options(no_deflate: bool) -> Options {
    let options = Options::default().with_limits(MAX_MESSAGE, MAX_MESSAGE);
    if no_deflate {
        options.without_compression()
    } else {
        options.with_compression_level(CompressionLevel::fast())
    }
}

/// TLS for wss:// with the system's trusted roots (yawc's default would be compiled-in ones).
fn tls_connector() -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable certificates are skipped: a wss:// server they would have vouched for then
    // fails its handshake, with rustls's reason on the status line.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Feed {
    async fn session(
        &mut self,
        mut ws: Ws,
        sink: &mut Sink,
        args: &WatchArgs,
        quit: &CancellationToken,
    ) -> anyhow::Result<End> {
        let mut redraw = tokio::time::interval(REDRAW);
        let mut deadline = Instant::now() + args.idle_timeout;
        loop {
            let msg = tokio::select! {
                () = quit.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(End::Lost(format!("no frame for {}", humantime::format_duration(args.idle_timeout))));
                }
                _ = redraw.tick() => {
                    sink.redraw()?;
                    continue;
                }
                msg = ws.next_frame() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => return Ok(End::Lost(describe(&e))),
            };
            let text = match msg.opcode() {
                OpCode::Text => match std::str::from_utf8(msg.payload()) {
                    Ok(text) => text,
                    Err(_) => return Ok(End::Lost("a text frame that is not UTF-8".into())),
                },
                OpCode::Close => {
                    return Ok(End::Lost(match msg.close_code() {
                        Some(code) => format!(
                            "server closed the stream ({} {})",
                            u16::from(code),
                            msg.close_reason().ok().flatten().unwrap_or_default()
                        ),
                        None => "server closed the stream".into(),
                    }));
                }
                // Pings are answered by yawc (fragments come reassembled); binary frames are
                // not part of the protocol.
                OpCode::Ping | OpCode::Pong | OpCode::Binary | OpCode::Continuation => continue,
            };
            deadline = Instant::now() + args.idle_timeout;
            // Unknown frame types (other servers, newer versions) are passed through, not fatal.
            let frame = serde_json::from_str::<ServerFrame>(text).ok();
            let (resume, check) = match &frame {
                Some(ServerFrame::Snapshot(s)) => (
                    Some((s.seq, &s.epoch)),
                    self.table.replace(s.rates.clone(), s.checksum),
                ),
                Some(ServerFrame::Delta(d)) => {
                    match &self.since {
                        // Already seen (a replay overlapping what we had): skip it.
                        Some(last) if d.epoch == last.epoch && d.seq <= last.seq => continue,
                        Some(last) if self.full_feed && d.seq != last.seq + 1 => {
                            return Ok(End::Lost(format!(
                                "seq jumped from {} to {}; resuming",
                                last.seq, d.seq
                            )));
                        }
                        // The server sends a snapshot when its epoch changes; a delta of another
                        // epoch cannot follow what we hold.
                        Some(last) if d.epoch != last.epoch => {
                            return Ok(End::Lost(format!(
                                "epoch changed from {:?} to {:?}; resuming",
                                last.epoch, d.epoch
                            )));
                        }
                        _ => (Some((d.seq, &d.epoch)), self.table.fold(d)),
                    }
                }
                _ => (None, Check::Unchecked),
            };
            if let Check::Mismatch { carried, folded } = check {
                self.mismatches += 1;
                self.since = None;
                sink.mismatches(self.mismatches);
                return Ok(End::Lost(format!(
                    "checksum mismatch at seq {} (frame {carried:#010x}, table {folded:#010x}; {} so far); a fresh snapshot",
                    resume.map_or(0, |(seq, _)| seq),
                    self.mismatches
                )));
            }
            let resume = resume.map(|(seq, epoch)| Resume {
                seq,
                epoch: epoch.clone(),
            });
            if !sink.frame(text, frame)? {
                return Ok(End::Done); // stdout closed (`| head -1`)
            }
            if resume.is_some() {
                self.since = resume;
            }
            self.frames += 1;
            if args.max_frames > 0 && self.frames >= args.max_frames {
                break;
            }
        }
        let goodbye = ws.send(Frame::close(CloseCode::Normal, []));
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
        Ok(End::Done)
    }
}

/// Where frames go: NDJSON on stdout, or the table on the terminal.
enum Sink {
    Json,
    Table(Box<Board>, Terminal),
}

impl Sink {
    /// Returns false when stdout is gone (the reader of `--json` exited).
    fn frame(&mut self, text: &str, frame: Option<ServerFrame>) -> io::Result<bool> {
        match self {
            Sink::Json => {
                let mut out = io::stdout().lock();
                // Frames are single-line JSON already; re-encode the odd pretty-printed one.
                let written = if text.contains('\n') {
                    serde_json::from_str::<serde_json::Value>(text)
                        .map_err(io::Error::other)
                        .and_then(|v| writeln!(out, "{v}"))
                } else {
                    writeln!(out, "{text}")
                };
                match written.and_then(|()| out.flush()) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
                    other => other.map(|()| true),
                }
            }
            Sink::Table(board, _) => {
                if let Some(frame) = frame {
                    board.apply(frame);
                }
                board.draw(&mut io::stdout().lock())?;
                Ok(true)
            }
        }
    }

    fn link(&mut self, link: Link) -> io::Result<()> {
        match self {
            Sink::Json => {
                if let Link::Reconnecting { attempt, at, why } = &link {
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    eprintln!(
                        "ratecast watch: {why}; reconnecting in {:.1}s (attempt {attempt})",
                        wait.as_secs_f32()
                    );
                }
                Ok(())
            }
            Sink::Table(board, _) => {
                board.link = link;
                board.draw(&mut io::stdout().lock())
            }
        }
    }

    /// The count of checksum mismatches, for the status line (`--json` says it on stderr).
    fn mismatches(&mut self, count: u64) {
        if let Sink::Table(board, _) = self {
            board.checksum_mismatches = count;
        }
    }

    fn redraw(&mut self) -> io::Result<()> {
        match self {
            Sink::Json => Ok(()),
            Sink::Table(board, _) => board.draw(&mut io::stdout().lock()),
        }
    }
}

/// Raw mode and the alternate screen for the table; restored on drop, on panic and on every
/// way out (q, Ctrl-C, SIGTERM, errors).
struct Terminal;

impl Terminal {
    fn enter() -> io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            Self::restore();
            previous(info);
        }));
        crossterm::terminal::enable_raw_mode()?;
        crossterm::execute!(
            io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(Self)
    }

    fn restore() {
        let _ = crossterm::execute!(
            io::stdout(),
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }

    /// In raw mode Ctrl-C is a key press, not SIGINT: read keys on a thread of their own.
    fn watch_keys(quit: CancellationToken) {
        use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
        std::thread::spawn(move || {
            while !quit.is_cancelled() {
                if !event::poll(Duration::from_millis(200)).unwrap_or(false) {
                    continue;
                }
                if let Ok(Event::Key(key)) = event::read() {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if key.kind == KeyEventKind::Press
                        && (ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc))
                    {
                        quit.cancel();
                    }
                }
            }
        });
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        Self::restore();
    }
}

fn request_url(url: &url::Url, symbols: &[String], since: Option<&Resume>) -> url::Url {
    let mut url = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "since" && k != "epoch" && k != "symbols")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    let mut pairs = url.query_pairs_mut();
    pairs.extend_pairs(kept);
    if !symbols.is_empty() {
        pairs.append_pair("symbols", &symbols.join(","));
    }
    if let Some(since) = since {
        pairs.append_pair("since", &since.seq.to_string());
        // Without it the server cannot tell the seq is its own, and sends a snapshot.
        if !since.epoch.is_empty() {
            pairs.append_pair("epoch", &since.epoch);
        }
    }
    drop(pairs);
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

/// One line a person can act on, for the errors a connection attempt meets.
fn describe(e: &WebSocketError) -> String {
    match e {
        WebSocketError::InvalidStatusCode(status) => {
            format!("server answered HTTP {status} instead of a WebSocket upgrade")
        }
        WebSocketError::IoError(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    /// watch, through yawc as [`connect_options`] sets it up, lets the server keep its context:
    /// the offer does not ask for `server_no_context_takeover`, and messages that refer back
    /// into earlier ones (one raw deflate stream, 10-bit window, sync-flushed per message, RFC
    /// 7692 §7.2.1) read back whole.
    #[tokio::test]
    async fn watch_reads_a_server_that_keeps_its_compression_context() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("ws://{}/ws", listener.local_addr().unwrap())).unwrap();
        let messages: Vec<Vec<u8>> = (0..10)
            .map(|seq| {
                format!(
                    r#"{{"type":"delta","seq":{seq},"changed":{{"usd":{{"value":{}.5}}}},"removed":[]}}"#,
                    41_000 + seq * 7
                )
                .into_bytes()
            })
            .collect();
        let server = tokio::spawn({
            let messages = messages.clone();
            async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(socket.read_u8().await.unwrap());
                }
                let head = String::from_utf8(head).unwrap();
                let header = |name: &str| {
                    head.lines().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.eq_ignore_ascii_case(name)
                            .then(|| value.trim().to_owned())
                    })
                };
                let accept = derive_accept_key(header("sec-websocket-key").unwrap().as_bytes());
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\
                     Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
                     server_max_window_bits=10\r\n\r\n"
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                let mut deflate = flate2::Compress::new_with_window_bits(
                    flate2::Compression::default(),
                    false,
                    10,
                );
                for message in &messages {
                    let mut payload = Vec::with_capacity(2 * message.len() + 64);
                    deflate
                        .compress_vec(message, &mut payload, flate2::FlushCompress::Sync)
                        .unwrap();
                    assert!(payload.ends_with(&[0, 0, 0xff, 0xff]));
                    payload.truncate(payload.len() - 4);
                    let mut frame = vec![0xC1, u8::try_from(payload.len()).unwrap()];
                    frame.extend_from_slice(&payload);
                    socket.write_all(&frame).await.unwrap();
                }
                (header("sec-websocket-extensions"), socket)
            }
        });
        let mut ws = yawc::WebSocket::connect(url)
            .with_options(connect_options(false))
            .await
            .unwrap();
        for message in &messages {
            let frame = ws.next_frame().await.unwrap();
            assert_eq!(frame.opcode(), OpCode::Text);
            assert_eq!(frame.payload(), &message[..]);
        }
        let (offer, _socket) = server.await.unwrap();
        let offer = offer.expect("an extension offer");
        assert!(offer.starts_with("permessage-deflate"), "{offer}");
        assert!(!offer.contains("server_no_context_takeover"), "{offer}");
    }

    #[test]
    fn request_url_replaces_resume_and_filter() {
        let base = url::Url::parse("ws://h:8080/ws?since=3&epoch=old&token=x").unwrap();
        assert_eq!(
            request_url(&base, &[], None).as_str(),
            "ws://h:8080/ws?token=x"
        );
        let resume = Resume {
            seq: 42,
            epoch: "g1 7".into(),
        };
        let url = request_url(&base, &["usd".into(), "eth".into()], Some(&resume));
        assert_eq!(
            url.as_str(),
            "ws://h:8080/ws?token=x&symbols=usd%2Ceth&since=42&epoch=g1+7"
        );
        let plain = url::Url::parse("wss://h/ws").unwrap();
        assert_eq!(request_url(&plain, &[], None).as_str(), "wss://h/ws");
    }
}
