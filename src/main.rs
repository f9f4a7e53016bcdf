//! The `ratecast` binary: parses options and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ratecast::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// Live crypto exchange rates: one CoinGecko poller, deltas over WebSocket to every screen.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: poller, REST API, WebSocket stream, page, metrics.
    Serve(Box<Config>),
    /// Probe a URL and exit 0 when it answers 2xx (for images without curl).
    Healthcheck(ratecast::healthcheck::HealthcheckArgs),
    /// Watch the live rates: a terminal table, or NDJSON with --json.
    Watch(ratecast::watch::WatchArgs),
    /// Open many subscribers against a stream; measure connects, gaps and delivery latency.
    Loadtest(ratecast::loadtest::LoadtestArgs),
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// Errors leave as one line (`Error: what: why`), whatever RUST_BACKTRACE says.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            init_tracing(config.log_format);
            let open_files = ratecast::rlimit::raise_nofile_limit();
            tracing::info!(open_files, "open-file limit (one per WebSocket)");
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            ratecast::run(listener, *config, ratecast::shutdown::signal()).await?;
        }
        Command::Healthcheck(args) => ratecast::healthcheck::run(args).await?,
        Command::Watch(args) => ratecast::watch::run(args).await?,
        Command::Loadtest(args) => ratecast::loadtest::run(args).await?,
    }
    Ok(())
}
