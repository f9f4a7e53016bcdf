//! Micro-benchmarks of the per-poll hot path: parse + validate the CoinGecko payload, diff two
//! tables, serialise the frames, and the store's whole `apply` (diff + frames + view + history).
//! Run: `cargo bench --bench hot_path` (reports in target/criterion/). Not run in CI.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ratecast_protocol::checksum::table_checksum;
use ratecast_protocol::frames::{self as protocol, ServerFrame};
use ratecast_protocol::rates;
use ratecast_protocol::{Rates, Source};
use ratecast_server::store::{Store, StoreConfig};
use ratecast_server::upstream::Demo;
use ratecast_server::upstream::parse_payload;

const PAYLOAD: &[u8] = include_bytes!("../tests/fixtures/coingecko-exchange-rates-2022.json");

/// Two consecutive demo tables: about a third of the units moved, as in the demo feed.
fn two_polls() -> (Rates, Rates) {
    let mut demo = Demo::new();
    let old = demo.tick();
    (old, demo.tick())
}

fn delta_frame(old: &Rates, new: &Rates) -> ServerFrame {
    let changes = rates::diff(old, new);
    ServerFrame::Delta(protocol::Delta {
        epoch: "5f0c2a9e81d3b7c4".into(),
        seq: 43,
        ts: 1_732_550_030_456,
        changed: changes
            .changed
            .iter()
            .map(|(code, change)| (code.clone(), change.into()))
            .collect(),
        removed: changes.removed,
        checksum: Some(table_checksum(new)),
    })
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(PAYLOAD.len() as u64));
    group.bench_function("payload_parse_validate", |b| {
        b.iter(|| parse_payload(black_box(PAYLOAD)).expect("fixture parses"))
    });
    group.finish();
}

fn diff(c: &mut Criterion) {
    let (old, new) = two_polls();
    c.bench_function("diff/demo_tick", |b| {
        b.iter(|| rates::diff(black_box(&old), black_box(&new)))
    });
    c.bench_function("diff/unchanged", |b| {
        b.iter(|| rates::diff(black_box(&old), black_box(&old)))
    });
}

fn serialise(c: &mut Criterion) {
    let (old, new) = two_polls();
    let delta = delta_frame(&old, &new);
    let snapshot = ServerFrame::Snapshot(protocol::Snapshot {
        epoch: "5f0c2a9e81d3b7c4".into(),
        seq: 42,
        ts: 1_732_550_000_123,
        source: Source::CoinGecko,
        stale: false,
        checked_at: Some(1_732_550_000_123),
        rates: new.clone(),
        failover: None,
        checksum: Some(table_checksum(&new)),
    });
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(delta.encode().len() as u64));
    group.bench_function("delta", |b| b.iter(|| black_box(&delta).encode()));
    group.throughput(Throughput::Bytes(snapshot.encode().len() as u64));
    group.bench_function("snapshot", |b| b.iter(|| black_box(&snapshot).encode()));
    group.finish();
}

/// The table checksum every snapshot and delta carries: once per publication, never per
/// subscriber, so this is its whole cost.
fn checksum(c: &mut Criterion) {
    let (_, new) = two_polls();
    c.bench_function("checksum/table", |b| {
        b.iter(|| table_checksum(black_box(&new)))
    });
}

fn store_apply(c: &mut Criterion) {
    let (old, new) = two_polls();
    c.bench_function("store/apply_demo_tick", |b| {
        // `_ref`: building and dropping the store stay outside the measurement.
        b.iter_batched_ref(
            || {
                let store = Store::new(StoreConfig::new(
                    Source::Demo,
                    std::time::Duration::from_secs(180),
                ));
                store.apply(old.clone(), SystemTime::now());
                (store, new.clone())
            },
            |(store, rates)| store.apply(std::mem::take(rates), SystemTime::now()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, parse, diff, serialise, checksum, store_apply);
criterion_main!(benches);
