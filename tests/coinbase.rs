//! The Coinbase client against the fake Coinbase: what it reads, and the guards it shares with
//! the CoinGecko client (status, 429 with `Retry-After`, size cap), on a real HTTP exchange.

mod common;

use std::time::Duration;

use common::{FakeUpstream, Reply, coinbase_fixture};
use ratecast_server::upstream::{Coinbase, MAX_BODY_BYTES, PayloadError, UpstreamError};

async fn client(fake: &FakeUpstream) -> Coinbase {
    Coinbase::new(&fake.url().parse().unwrap(), Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn reads_the_fixture_and_follows_the_values_the_test_sets() {
    let fake = FakeUpstream::coinbase(Reply::Json(coinbase_fixture())).await;
    let coinbase = client(&fake).await;
    let rates = coinbase.fetch().await.unwrap();
    assert_eq!(rates.len(), 58);
    assert_eq!(rates["usd"].value, 24_672.1);
    assert_eq!(rates["usd"].name, "US Dollar");
    assert_eq!(fake.requests(), 1);
    assert_eq!(
        fake.last_header("user-agent").as_deref(),
        Some(concat!("ratecast/", env!("CARGO_PKG_VERSION")))
    );

    fake.set_value("USD", 30_000.5);
    assert_eq!(coinbase.fetch().await.unwrap()["usd"].value, 30_000.5);

    fake.set(Reply::Changing(coinbase_fixture()));
    let first = coinbase.fetch().await.unwrap()["eur"].value;
    let second = coinbase.fetch().await.unwrap()["eur"].value;
    assert!(second > first, "a delta per poll: {first} then {second}");
}

#[tokio::test]
async fn a_429_says_how_long_to_wait() {
    let fake = FakeUpstream::coinbase(Reply::rate_limited(7)).await;
    let err = client(&fake).await.fetch().await.unwrap_err();
    assert_eq!(err.kind(), "rate_limited");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn failures_are_typed_and_bad_payloads_rejected_whole() {
    let fake = FakeUpstream::coinbase(Reply::status(503)).await;
    let coinbase = client(&fake).await;
    assert_eq!(coinbase.fetch().await.unwrap_err().kind(), "http_5xx");

    fake.set(Reply::body(vec![b' '; MAX_BODY_BYTES + 1]));
    assert!(matches!(
        coinbase.fetch().await,
        Err(UpstreamError::TooLarge)
    ));

    let mut eth_based = coinbase_fixture();
    eth_based["data"]["currency"] = "ETH".into();
    fake.set(Reply::Json(eth_based));
    assert!(matches!(
        coinbase.fetch().await,
        Err(UpstreamError::Invalid(PayloadError::WrongBase(base))) if base == "ETH"
    ));

    let mut broken = coinbase_fixture();
    broken["data"]["rates"]["JPY"] = "-1".into();
    fake.set(Reply::Json(broken));
    assert_eq!(
        coinbase.fetch().await.unwrap_err().kind(),
        "invalid_payload"
    );
}
