//! `ratecast healthcheck`: a probe for images without curl (Docker HEALTHCHECK, helm test).

use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// URL to probe; healthy when it answers 2xx.
    #[arg(
        long,
        env = "RATECAST_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    pub url: url::Url,

    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(args.timeout).build()?;
    let status = client.get(args.url.clone()).send().await?.status();
    anyhow::ensure!(status.is_success(), "{} answered {status}", args.url);
    Ok(())
}
