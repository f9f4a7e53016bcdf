//! Issue 12, point 8: the 60-second soak. `ratecast loadtest --soak` keeps clients connecting,
//! reading, misbehaving and leaving against a `ratecast serve` subprocess, samples its RSS and
//! fds, and fails when the server dies or restarts, when a connection ends otherwise than its
//! behaviour calls for, when RSS keeps growing after the warm-up, when the server does not
//! come back to its baseline (fds, connection slots) or logs a panic. The one-hour run is in
//! BENCHMARKS.md; the command is in NOTES/README.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ratecast");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_second_soak_leaves_no_leak_and_no_panic() -> Result<()> {
    let duration = std::env::var("RATECAST_SOAK_DURATION").unwrap_or_else(|_| "60s".into());
    let mut server = ServerProcess::start(
        BIN,
        &[
            "--poll-interval",
            "100ms",
            "--socket-send-buffer",
            "16384",
            "--write-timeout",
            "2s",
            "--heartbeat-interval",
            "1s",
            "--idle-timeout",
            "3s",
            "--max-connections-per-ip",
            "10000",
        ],
    )
    .await?;
    let out = tokio::time::timeout(
        Duration::from_secs(60 * 60 * 2),
        tokio::process::Command::new(BIN)
            .arg("loadtest")
            .args(["--soak", "--json", "--clients", "40"])
            .args(["--duration", &duration, "--sample-every", "5s"])
            .args(["--soak-linger", "6s"])
            .args(["--url", &format!("ws://{}/ws", server.addr)])
            .args(["--server-pid", &server.pid().to_string()])
            .args(["--server-log", &server.log.display().to_string()])
            .env_clear()
            .envs(common::coverage_env())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    println!("{stdout}");
    let summary: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| anyhow::anyhow!("no JSON summary ({e}): {stdout} {stderr}"))?;
    assert_eq!(summary["problems"], serde_json::json!([]), "{summary}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(summary["connections"].as_u64().unwrap() > 40, "{summary}");
    for behaviour in ["read", "slow", "garbage", "reset", "flood", "vanish"] {
        assert!(
            summary["by_behaviour"][behaviour].as_u64().unwrap_or(0) > 0,
            "{behaviour} ran: {summary}"
        );
    }
    assert_eq!(summary["corrupt_streams"], 0);
    assert_eq!(summary["unreachable"], serde_json::json!([]), "{summary}");
    assert!(
        summary["rss_bound_kib"].as_u64().is_some() && summary["settled"]["fds"].is_u64(),
        "RSS and fds were compared: {summary}"
    );
    assert!(
        server.child.try_wait()?.is_none(),
        "the server is still running after the soak"
    );
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    Ok(())
}
