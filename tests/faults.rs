//! Issue 12, point 3: every way a stream connection can end — reset mid-write, a peer that
//! vanishes, a drain timeout, a flood close, garbage — frees its slot and its file descriptor,
//! even while the client still holds its end. Against the binary (a subprocess), so that the
//! server's open fds are its own to count.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{
    ServerProcess, client_frame, close_payload_code, open_fds, raw_ws, read_raw_until_end,
    wait_until,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_ratecast");

/// Waits until the server holds no stream connection and no more fds than at `baseline`.
async fn back_to_baseline(server: &ServerProcess, baseline: usize, path: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let connections = server
            .metric("ratecast_ws_connections")
            .await
            .unwrap_or(-1.0);
        let fds = open_fds(server.pid());
        if connections == 0.0 && fds <= baseline {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: not back to the baseline ({baseline} fds): {connections} connections, {fds} fds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_removal_path_frees_the_slot_and_the_fd() -> Result<()> {
    let server = ServerProcess::start(
        BIN,
        &[
            "--poll-interval",
            "20ms",
            "--socket-send-buffer",
            "4096",
            "--write-timeout",
            "1s",
            "--heartbeat-interval",
            "200ms",
            "--idle-timeout",
            "3s",
        ],
    )
    .await?;
    let baseline = open_fds(server.pid());
    assert!(baseline > 0, "/proc readable");

    // A reset while the server's writes are blocked (the client never read).
    let (tcp, _) = raw_ws(server.addr, "", Some(4096)).await?;
    wait_until(|| async { server.metric("ratecast_ws_connections").await.ok() == Some(1.0) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the buffers fill
    reset(tcp);
    back_to_baseline(&server, baseline, "reset mid-write").await;

    // A reset of a reading client.
    let (tcp, _) = raw_ws(server.addr, "", None).await?;
    reset(tcp);
    back_to_baseline(&server, baseline, "reset").await;

    // A peer that vanishes: reads nothing, answers no ping, and keeps its socket open.
    let (vanished, _) = raw_ws(server.addr, "", None).await?;
    back_to_baseline(&server, baseline, "vanished peer").await;

    // A drain timeout: a client that stops reading with a tiny buffer, socket kept open.
    let (stalled, _) = raw_ws(server.addr, "", Some(4096)).await?;
    back_to_baseline(&server, baseline, "drain timeout").await;

    // A flood: closed with 1008 by the frame budget.
    let (mut flooder, _) = raw_ws(server.addr, "", None).await?;
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend(client_frame(0x9, b"x"));
    }
    let _ = flooder.write_all(&batch).await;
    back_to_baseline(&server, baseline, "flood close").await;

    // Garbage: not a frame (reserved bits), closed with 1002.
    let (mut garbage, early) = raw_ws(server.addr, "", None).await?;
    garbage.write_all(&[0xF3; 64]).await?;
    let (_, close) = read_raw_until_end(&mut garbage, early, Duration::from_secs(10)).await?;
    let close = close.expect("garbage is answered with a close frame, not a bare end");
    assert_eq!(
        close_payload_code(&close),
        Some(1002),
        "garbage: {:?}",
        String::from_utf8_lossy(&close)
    );
    back_to_baseline(&server, baseline, "garbage").await;

    assert!(
        server
            .metric("ratecast_ws_slow_consumer_closes_total")
            .await?
            >= 1.0,
        "the drain timeout was the slow-consumer path"
    );
    assert!(
        server
            .metric("ratecast_ws_budget_closes_total{budget=\"frame_rate\"}")
            .await?
            >= 1.0
    );
    drop((vanished, stalled, flooder, garbage));
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    Ok(())
}
