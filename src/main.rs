//! The `ratecast` binary: parses options and hands them to the server or a client crate.

mod signal;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ratecast_client::{healthcheck, loadtest, watch};
use ratecast_server::config::{Config, LogFormat};
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
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Watch the live rates: a terminal table, or NDJSON with --json.
    Watch(watch::WatchArgs),
    /// Open many subscribers against a stream; measure connects, gaps and delivery latency.
    Loadtest(loadtest::LoadtestArgs),
}

/// Colour only for a person at a terminal: never in a file, a pipe or a log collector, and
/// never when `NO_COLOR` is set to anything (<https://no-color.org>).
fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = log_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
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
            // One descriptor per WebSocket: take the hard limit.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(open_files) => tracing::info!(open_files, "open-file limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
            }
            #[cfg(unix)]
            if config.demo {
                tokio::spawn(signal::toggle_demo_outage_on_sigusr1());
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            ratecast_server::run(listener, *config, signal::shutdown()).await?;
        }
        Command::Healthcheck(args) => healthcheck::run(args).await?,
        Command::Watch(args) => watch::run(args, signal::shutdown()).await?,
        Command::Loadtest(args) => loadtest::run(args, signal::shutdown()).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(
            log_colour(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some("1".into())));
    }
}
