//! Prometheus metrics. Each server owns its own recorder (nothing global), so several servers
//! in one test process do not share counters. Handles for hot-path metrics are registered once.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const DELIVERY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub upstream_latency: Histogram,
    pub upstream_last_success: Gauge,
    pub upstream_up: Gauge,
    pub data_age: Gauge,
    pub deltas_published: Counter,
    pub seq: Gauge,
    pub ws_connections: Gauge,
    pub ws_accepted: Counter,
    pub ws_frames_sent: Counter,
    pub ws_bytes_sent: Counter,
    pub ws_resyncs: Counter,
    pub ws_slow_consumer_closes: Counter,
    pub ws_delivery_delay: Histogram,
    /// Cluster mode: 1 on the replica holding the leadership lease.
    pub cluster_leader: Gauge,
    /// Cluster mode: seconds from the leader's publication to its application here.
    pub cluster_stream_lag: Gauge,
    pub cluster_stream_delay: Histogram,
    /// Cluster mode: times the shared state disagreed with what this replica served (lost
    /// writes: a lower `seq`, a served `seq` re-issued, a delta whose checksum does not match).
    pub cluster_divergences: Counter,
    pub ws_shard_lagged: Counter,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("ratecast_ws_delivery_delay_seconds".into()),
                DELIVERY_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("ratecast_cluster_stream_delay_seconds".into()),
                    DELIVERY_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(name.into(), unit, help.into());
        };
        for (name, unit, help) in DESCRIPTIONS {
            describe(name, *unit, help);
        }
        let m = |name: &'static str| Key::from_name(name);
        Self {
            upstream_latency: recorder
                .register_histogram(&m("ratecast_upstream_request_duration_seconds"), &METADATA),
            upstream_last_success: recorder.register_gauge(
                &m("ratecast_upstream_last_success_timestamp_seconds"),
                &METADATA,
            ),
            upstream_up: recorder.register_gauge(&m("ratecast_upstream_up"), &METADATA),
            data_age: recorder.register_gauge(&m("ratecast_data_age_seconds"), &METADATA),
            deltas_published: recorder
                .register_counter(&m("ratecast_deltas_published_total"), &METADATA),
            seq: recorder.register_gauge(&m("ratecast_seq"), &METADATA),
            ws_connections: recorder.register_gauge(&m("ratecast_ws_connections"), &METADATA),
            ws_accepted: recorder
                .register_counter(&m("ratecast_ws_connections_accepted_total"), &METADATA),
            ws_frames_sent: recorder
                .register_counter(&m("ratecast_ws_frames_sent_total"), &METADATA),
            ws_bytes_sent: recorder.register_counter(&m("ratecast_ws_bytes_sent_total"), &METADATA),
            ws_resyncs: recorder.register_counter(&m("ratecast_ws_resyncs_total"), &METADATA),
            ws_slow_consumer_closes: recorder
                .register_counter(&m("ratecast_ws_slow_consumer_closes_total"), &METADATA),
            ws_delivery_delay: recorder
                .register_histogram(&m("ratecast_ws_delivery_delay_seconds"), &METADATA),
            cluster_leader: recorder.register_gauge(&m("ratecast_cluster_leader"), &METADATA),
            cluster_stream_lag: recorder
                .register_gauge(&m("ratecast_cluster_stream_lag_seconds"), &METADATA),
            cluster_stream_delay: recorder
                .register_histogram(&m("ratecast_cluster_stream_delay_seconds"), &METADATA),
            ws_shard_lagged: recorder
                .register_counter(&m("ratecast_ws_shard_lagged_total"), &METADATA),
            cluster_divergences: recorder
                .register_counter(&m("ratecast_cluster_divergences_total"), &METADATA),
            recorder,
            handle,
        }
    }

    /// A counter with bounded labels: callers pass `&'static str` label values only.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        let labels: Vec<Label> = labels
            .iter()
            .map(|&(k, v)| Label::from_static_parts(k, v))
            .collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// A counter whose label values come from bounded data (a unit of the mapping table).
    pub fn counter_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, owned(labels)), &METADATA)
    }

    /// A gauge with bounded labels, registered on first use.
    pub fn gauge_with(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, owned(labels)), &METADATA)
    }

    /// A gauge without labels, registered on first use.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name(name), &METADATA)
    }

    pub fn upstream_request(&self, outcome: &'static str) {
        self.counter("ratecast_upstream_requests_total", &[("outcome", outcome)])
            .increment(1);
    }

    /// Counts one HTTP request by matched route (never the raw path) and status.
    pub fn http_request(&self, route: String, status: u16, seconds: f64) {
        let route = Label::new("route", route);
        let key = Key::from_parts(
            "ratecast_http_requests_total",
            vec![route.clone(), Label::new("status", status.to_string())],
        );
        self.recorder.register_counter(&key, &METADATA).increment(1);
        let key = Key::from_parts("ratecast_http_request_duration_seconds", vec![route]);
        self.recorder
            .register_histogram(&key, &METADATA)
            .record(seconds);
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into buckets; called periodically so they do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Vec<Label> {
    labels
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_owned()))
        .collect()
}

const DESCRIPTIONS: &[(&str, Option<Unit>, &str)] = &[
    (
        "ratecast_upstream_source_requests_total",
        None,
        "Requests to each upstream source, by source and outcome (ok or the failure kind).",
    ),
    (
        "ratecast_upstream_source_up",
        None,
        "1 when the source's last request succeeded, else 0, by source.",
    ),
    (
        "ratecast_upstream_serving",
        None,
        "1 for the source serving the table now (the primary, or a fallback while it fails), by source.",
    ),
    (
        "ratecast_upstream_failovers_total",
        None,
        "Switches of the serving source, by the source switched to.",
    ),
    (
        "ratecast_units_by_source",
        None,
        "Units served, by the source their value came from.",
    ),
    (
        "ratecast_units_flagged",
        None,
        "Units not showing their source's current answer, by flag (stale: the serving source lacks them; held: the sources disagree).",
    ),
    (
        "ratecast_crosscheck_divergence_ratio",
        None,
        "Relative difference between the two sources at the last cross-check, by unit.",
    ),
    (
        "ratecast_crosscheck_divergences_total",
        None,
        "Times the two sources started to disagree on a unit beyond --crosscheck-warn-percent, by unit.",
    ),
    (
        "ratecast_upstream_requests_total",
        None,
        "Upstream polls by outcome (ok or the failure kind).",
    ),
    (
        "ratecast_upstream_request_duration_seconds",
        Some(Unit::Seconds),
        "Upstream poll latency.",
    ),
    (
        "ratecast_upstream_last_success_timestamp_seconds",
        Some(Unit::Seconds),
        "Unix time of the last successful poll.",
    ),
    (
        "ratecast_upstream_up",
        None,
        "1 when the last poll succeeded, else 0.",
    ),
    (
        "ratecast_data_age_seconds",
        Some(Unit::Seconds),
        "Age of the served data: seconds since the upstream last confirmed it (stale past --stale-after).",
    ),
    (
        "ratecast_deltas_published_total",
        None,
        "Deltas published (new seq values).",
    ),
    ("ratecast_seq", None, "Current sequence number."),
    (
        "ratecast_http_requests_total",
        None,
        "HTTP requests by matched route and status.",
    ),
    (
        "ratecast_http_request_duration_seconds",
        Some(Unit::Seconds),
        "HTTP request latency by matched route.",
    ),
    (
        "ratecast_ws_connections",
        None,
        "Open WebSocket connections.",
    ),
    (
        "ratecast_ws_connections_accepted_total",
        None,
        "WebSocket upgrades accepted.",
    ),
    (
        "ratecast_ws_connections_refused_total",
        None,
        "WebSocket upgrades refused, by reason.",
    ),
    (
        "ratecast_ws_frames_sent_total",
        None,
        "WebSocket frames sent.",
    ),
    (
        "ratecast_ws_bytes_sent_total",
        Some(Unit::Bytes),
        "WebSocket payload bytes sent.",
    ),
    (
        "ratecast_ws_deflate_compressions_total",
        None,
        "Feed frames compressed for permessage-deflate: once per publication per window size in use, not per subscriber.",
    ),
    (
        "ratecast_ws_deflate_shared_frames_total",
        None,
        "Deltas sent in the shared compression context (context takeover); a takeover subscriber's other deltas were self-contained while its window filled.",
    ),
    (
        "ratecast_ws_resyncs_total",
        None,
        "Snapshots sent to subscribers that lagged behind the broadcast buffer.",
    ),
    (
        "ratecast_ws_slow_consumer_closes_total",
        None,
        "Connections closed because the client did not read in time.",
    ),
    (
        "ratecast_ws_resumes_total",
        None,
        "Resume requests by result (replayed or snapshot).",
    ),
    (
        "ratecast_ws_delivery_delay_seconds",
        Some(Unit::Seconds),
        "Delay from publish to frame written (sampled).",
    ),
    (
        "ratecast_cluster_leader",
        None,
        "Cluster mode: 1 on the replica that holds the leadership lease (and polls), else 0.",
    ),
    (
        "ratecast_cluster_lease_changes_total",
        None,
        "Cluster mode: this replica's leadership changes, by event (acquired, lost, released).",
    ),
    (
        "ratecast_cluster_stream_lag_seconds",
        Some(Unit::Seconds),
        "Cluster mode: age of the newest publication when this replica applied it.",
    ),
    (
        "ratecast_cluster_stream_delay_seconds",
        Some(Unit::Seconds),
        "Cluster mode: delay from the leader's publication to its application on this replica.",
    ),
    (
        "ratecast_cluster_redis_errors_total",
        None,
        "Cluster mode: failed Redis operations, by kind (io, timeout, auth, script, response, other).",
    ),
    (
        "ratecast_cluster_resyncs_total",
        None,
        "Cluster mode: whole-state loads from Redis, by reason (start, gap, generation, reconnect, behind, diverged).",
    ),
    (
        "ratecast_cluster_divergences_total",
        None,
        "Cluster mode: the shared state disagreed with what this replica served (it lost writes); the replica kept its table until a new epoch.",
    ),
    (
        "ratecast_cluster_publish_total",
        None,
        "Cluster mode: the leader's publications, by result (delta, confirm, reset, fenced, conflict, error).",
    ),
    (
        "ratecast_cluster_epoch",
        None,
        "Cluster mode: fencing epoch of the newest lease this replica held.",
    ),
    (
        "ratecast_ws_budget_closes_total",
        None,
        "Connections closed with 1008 for going over a per-connection budget (frame_rate, reply_queue).",
    ),
    (
        "ratecast_ws_shard_lagged_total",
        None,
        "Times a fan-out shard fell behind the broadcast buffer and resynced its subscribers.",
    ),
];
