//! `ratecast serve` options: every flag has a `RATECAST_…` environment twin. The parsed struct
//! is the server's configuration; nothing is copied into a second struct.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use url::Url;

use ratecast_protocol::Source;

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to serve the page, the API and the WebSocket stream on.
    #[arg(long, env = "RATECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve /metrics on this separate address (and not on --listen), e.g. 0.0.0.0:9090.
    #[arg(long, env = "RATECAST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// CoinGecko API base URL (use https://pro-api.coingecko.com with a Pro key).
    #[arg(long, env = "RATECAST_UPSTREAM_URL", default_value = "https://api.coingecko.com", value_parser = parse_http_url)]
    pub upstream_url: Url,

    /// CoinGecko API key: sent as x-cg-pro-api-key to the pro host, x-cg-demo-api-key otherwise.
    /// Never logged.
    #[arg(long, env = "RATECAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// Time between polls (CoinGecko caches this endpoint for about a minute; the free Demo
    /// plan allows 30 calls per minute).
    #[arg(long, env = "RATECAST_POLL_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub poll_interval: Duration,

    /// Timeout of one upstream request (connect and read).
    #[arg(long, env = "RATECAST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,

    /// Longest wait between retries while the upstream fails.
    #[arg(long, env = "RATECAST_MAX_BACKOFF", default_value = "5m", value_parser = parse_positive_duration)]
    pub max_backoff: Duration,

    /// Flag data as stale when it is older than this (also when the upstream is down).
    #[arg(long, env = "RATECAST_STALE_AFTER", default_value = "3m", value_parser = parse_positive_duration)]
    pub stale_after: Duration,

    /// Upstream sources in order of priority (comma-separated): the first serves while it
    /// answers; when it fails for --failover-after or answers 429, the next one serves, value
    /// by value (docs/sources.md). `coingecko` alone: no fallback.
    #[arg(long = "upstream", env = "RATECAST_UPSTREAM", value_delimiter = ',', default_value = "coingecko,coinbase", value_parser = parse_source)]
    pub upstreams: Vec<Source>,

    /// Coinbase API base URL (its exchange-rates endpoint needs no key).
    #[arg(long, env = "RATECAST_COINBASE_URL", default_value = "https://api.coinbase.com", value_parser = parse_http_url)]
    pub coinbase_url: Url,

    /// How long the primary source must have failed before the next one serves (default: one
    /// poll interval). Sooner at the failure that would declare the data down (the third in a
    /// row: retries come faster than the interval), and at once on a 429.
    #[arg(long, env = "RATECAST_FAILOVER_AFTER", value_parser = parse_duration)]
    pub failover_after: Option<Duration>,

    /// While both sources answer, how often the second one is polled to cross-check the
    /// first's numbers (0 turns the cross-check off).
    #[arg(long, env = "RATECAST_CROSSCHECK_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub crosscheck_interval: Duration,

    /// A unit whose two sources differ by more than this many percent is reported (metric,
    /// log line, alert).
    #[arg(long, env = "RATECAST_CROSSCHECK_WARN_PERCENT", default_value_t = 2.0, value_parser = parse_percent)]
    pub crosscheck_warn_percent: f64,

    /// Above this many percent the unit is held at the last value both sources agreed on, and
    /// flagged, instead of showing a number they disagree on.
    #[arg(long, env = "RATECAST_CROSSCHECK_HOLD_PERCENT", default_value_t = 10.0, value_parser = parse_percent)]
    pub crosscheck_hold_percent: f64,

    /// Offline demo: no network; a recorded CoinGecko payload moved by a random walk each tick.
    /// Everything served says "source": "demo".
    #[arg(long, env = "RATECAST_DEMO")]
    pub demo: bool,

    /// Log format: text for people, json for log pipelines. Level via RUST_LOG (default info).
    #[arg(long, env = "RATECAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// On SIGTERM/SIGINT: how long to wait for requests and WebSockets to finish before exiting.
    #[arg(long, env = "RATECAST_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For is trusted for the client IP.
    /// Empty (the default): the TCP peer is the client.
    #[arg(long, env = "RATECAST_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<IpNet>,

    /// API requests per second per client IP (0 disables the limit). A whole office behind
    /// one NAT address shares it.
    #[arg(long, env = "RATECAST_RATE_LIMIT_PER_SECOND", default_value_t = 50)]
    pub rate_limit_per_second: u32,

    /// API burst allowance per client IP.
    #[arg(long, env = "RATECAST_RATE_LIMIT_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    #[command(flatten)]
    pub ws: WsConfig,

    #[command(flatten)]
    pub cluster: ClusterConfig,
}

/// Cluster mode (docs/cluster.md): one poller for the whole deployment, one `seq`, resume on
/// any replica, through a shared Redis / Valkey. Off (standalone) without --redis-url.
#[derive(Args, Debug, Clone)]
pub struct ClusterConfig {
    /// Redis or Valkey URL (redis:// or rediss:// for TLS, with user and password if needed,
    /// e.g. rediss://user:pass@host:6379/0). Turns cluster mode on. A secret: never logged.
    #[arg(long, env = "RATECAST_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Leadership lease: the poller's replica renews it every third of this; when it stops, a
    /// follower takes over within this time.
    #[arg(long, env = "RATECAST_CLUSTER_LEASE_TTL", default_value = "10s", value_parser = parse_positive_duration)]
    pub cluster_lease_ttl: Duration,

    /// Prefix of every key, so that several deployments can share one Redis. The keys are
    /// `{PREFIX}:…` (one hash slot): not empty, and no `{` or `}`.
    #[arg(long, env = "RATECAST_CLUSTER_KEY_PREFIX", default_value = "ratecast", value_parser = parse_key_prefix)]
    pub cluster_key_prefix: String,
}

/// WebSocket stream limits and timings.
#[derive(Args, Debug, Clone)]
pub struct WsConfig {
    /// Most concurrent WebSocket connections in this process.
    #[arg(long, env = "RATECAST_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most concurrent WebSocket connections from one client IP.
    #[arg(long, env = "RATECAST_MAX_CONNECTIONS_PER_IP", default_value_t = 200)]
    pub max_connections_per_ip: usize,

    /// New WebSocket connections per second per client IP (0 disables the limit).
    #[arg(
        long,
        env = "RATECAST_CONNECTION_RATE_PER_SECOND",
        default_value_t = 20
    )]
    pub connection_rate_per_second: u32,

    /// Burst allowance of new WebSocket connections per client IP.
    #[arg(long, env = "RATECAST_CONNECTION_RATE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub connection_rate_burst: u32,

    /// Origins allowed to open the stream (comma-separated, e.g. https://rates.example.com).
    /// Empty: any origin. Requests without an Origin header (CLI tools) are always allowed.
    #[arg(long, env = "RATECAST_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Heartbeat frame and ping interval.
    #[arg(long, env = "RATECAST_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_positive_duration)]
    pub heartbeat_interval: Duration,

    /// Close a connection from which nothing (not even a pong) arrived for this long.
    #[arg(long, env = "RATECAST_IDLE_TIMEOUT", default_value = "45s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Events buffered per fan-out shard (one per core); a shard that falls further behind resyncs
    /// its subscribers with a snapshot.
    #[arg(long, env = "RATECAST_BROADCAST_BUFFER", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub broadcast_buffer: u32,

    /// Kernel send buffer per connection in bytes (0: the OS default, auto-tuned). Bounds the
    /// memory a stalled client can pin and how soon it counts as slow.
    #[arg(long, env = "RATECAST_SOCKET_SEND_BUFFER", default_value_t = 0)]
    pub socket_send_buffer: u32,

    /// Close a connection whose socket does not take a frame within this time (slow consumer).
    #[arg(long, env = "RATECAST_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub write_timeout: Duration,

    /// Frames per second a client may send on its stream (pings, commands, pongs; 0: no
    /// limit). The page sends a few per minute; over the budget the connection is closed
    /// with 1008.
    #[arg(long, env = "RATECAST_CLIENT_FRAMES_PER_SECOND", default_value_t = 10)]
    pub client_frames_per_second: u32,

    /// Burst allowance of client frames on one stream.
    #[arg(long, env = "RATECAST_CLIENT_FRAMES_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_frames_burst: u32,

    /// Decline permessage-deflate (RFC 7692): every client gets raw frames. By default it is
    /// negotiated with clients that offer it, and each feed frame is compressed once for all.
    #[arg(long, env = "RATECAST_NO_PERMESSAGE_DEFLATE")]
    pub no_permessage_deflate: bool,

    /// Answer every permessage-deflate offer with `server_no_context_takeover`: each compressed
    /// frame is then self-contained, several times the bytes of deltas compressed in the shared
    /// context that takeover allows (docs/protocol.md, BENCHMARKS.md).
    #[arg(long, env = "RATECAST_NO_DEFLATE_CONTEXT_TAKEOVER")]
    pub no_deflate_context_takeover: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Humane durations: `30s`, `250ms`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 250ms, 2m)"))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// The prefix goes between braces as the keys' hash tag: `{}` is no hash tag, and a brace
/// inside would end or nest it, spreading the keys over slots.
fn parse_key_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (the keys' hash tag would be {}, which is none)".into());
    }
    if s.contains(['{', '}']) {
        return Err("must not contain { or } (it is the keys' hash tag: {PREFIX})".into());
    }
    Ok(s.to_owned())
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(_)) => Ok(url),
        _ => Err("must be an http:// or https:// URL with a host".into()),
    }
}

/// An upstream source by its label; `demo` is `--demo`'s, not a source to list.
fn parse_source(s: &str) -> Result<Source, String> {
    [Source::CoinGecko, Source::Coinbase]
        .into_iter()
        .find(|source| source.label() == s.trim())
        .ok_or_else(|| format!("unknown upstream {s:?} (expected coingecko or coinbase)"))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage above 0 (e.g. 2 or 2.5)")),
    }
}

impl Config {
    /// The sources in order of priority, each once; `--demo` replaces them all.
    pub fn sources(&self) -> Vec<Source> {
        if self.demo {
            return vec![Source::Demo];
        }
        let mut sources: Vec<Source> = Vec::with_capacity(self.upstreams.len());
        for source in &self.upstreams {
            if !sources.contains(source) {
                sources.push(*source);
            }
        }
        sources
    }
}
