//! The `ratecast` binary itself: config errors, help, and signal handling.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ratecast");

fn serve(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("serve")
        .args(args)
        .env_clear()
        .envs(common::coverage_env())
        .output()
        .expect("runs")
}

#[test]
fn bad_config_fails_fast_with_one_clear_error() {
    let cases: [(&[&str], &str); 7] = [
        (&["--poll-interval", "soon"], "--poll-interval"),
        (&["--poll-interval", "0s"], "greater than zero"),
        (&["--upstream-url", "not a url"], "--upstream-url"),
        (
            &["--upstream-url", "ftp://example.com"],
            "http:// or https://",
        ),
        (&["--listen", "nowhere"], "--listen"),
        // The keys' hash tag is {PREFIX}: {} is none, and a brace breaks it.
        (&["--cluster-key-prefix", ""], "must not be empty"),
        (&["--cluster-key-prefix", "a{b"], "must not contain { or }"),
    ];
    for (args, expect) in cases {
        let started = Instant::now();
        let out = serve(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && stderr.contains(expect),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} did not fail fast"
        );
    }
}

#[test]
fn env_twins_are_read() {
    let out = Command::new(BIN)
        .args(["serve"])
        .env_clear()
        .envs(common::coverage_env())
        .env("RATECAST_POLL_INTERVAL", "0ms")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("greater than zero"));
}

#[test]
fn help_documents_every_flag_with_its_env_twin() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--upstream-url",
        "--poll-interval",
        "--api-key",
        "--demo",
        "--request-timeout",
        "--log-format",
        "--shutdown-grace",
        "--trusted-proxy",
        "--max-connections",
        "--allowed-origin",
        "--heartbeat-interval",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("RATECAST_POLL_INTERVAL") && help.contains("RATECAST_API_KEY"));
    let top = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
}

#[test]
fn api_key_never_reaches_the_logs() {
    // Unreachable upstream: the poller logs its failures; the key must not appear in them.
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream-url",
            "http://127.0.0.1:9",
            "--poll-interval",
            "50ms",
        ])
        .args([
            "--max-backoff",
            "50ms",
            "--api-key",
            "CG-topsecret",
            "--log-format",
            "json",
        ])
        .env_clear()
        .envs(common::coverage_env())
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second failure, 25+ ms after the first: well after the signal handler is installed.
    let logs = logs_after(&mut child, "upstream poll failed", 2);
    sigterm(child.id());
    child.wait().unwrap();
    let logs = logs.join().unwrap().join("\n");
    assert!(logs.contains("upstream poll failed"), "{logs}");
    assert!(!logs.contains("CG-topsecret"));
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "json logs"
    );
}

/// Text logs to a pipe (a file, `docker logs`, journald) carry no ANSI colour codes: colour is
/// for a terminal only.
#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let (mut child, listen) = serve_demo(&["--log-format", "text"], Stdio::piped());
    let logs = logs_after(&mut child, "ratecast serving", 1);
    wait_ready(&listen);
    sigterm(child.id());
    let status = child.wait().unwrap();
    let logs = logs.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("ratecast serving"), "{logs}");
    assert!(
        !logs.contains("\x1b["),
        "colour codes in a piped log: {logs:?}"
    );
}

/// Collects the child's stderr lines on a thread; returns once `times` lines hold `needle` (a
/// readiness wait instead of a fixed sleep), with the thread to join for the whole log.
fn logs_after(
    child: &mut std::process::Child,
    needle: &str,
    times: usize,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (seen, wait) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    let reader = std::thread::spawn(move || {
        let (mut lines, mut seen_count) = (Vec::new(), 0);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                seen_count += 1;
                if seen_count == times {
                    let _ = seen.send(());
                }
            }
            lines.push(line);
        }
        lines
    });
    wait.recv_timeout(Duration::from_secs(10))
        .expect("the awaited log line within 10 s");
    reader
}

/// `ratecast serve --demo --poll-interval 50ms` plus `extra` on a free port (`RUST_LOG=debug`),
/// stderr to `stderr`; returns the child and its address.
fn serve_demo(extra: &[&str], stderr: Stdio) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--demo",
            "--listen",
            &listen,
            "--poll-interval",
            "50ms",
        ])
        .args(extra)
        .env_clear()
        .envs(common::coverage_env())
        .env("RUST_LOG", "debug")
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, listen)
}

/// Ready (data served) rather than a fixed sleep: by then the signal handler is installed.
fn wait_ready(listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(listen) {
        assert!(Instant::now() < deadline, "not ready within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /readyz` answered 200.
fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let mut answer = String::new();
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_ok()
        && tcp.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sigterm_exits_zero_within_the_grace_period() {
    let (mut child, listen) = serve_demo(&["--shutdown-grace", "3s"], Stdio::null());
    wait_ready(&listen);
    let started = Instant::now();
    sigterm(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn runtime_errors_are_one_line_even_with_backtraces_enabled() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for args in [
        vec![
            "watch".to_string(),
            "--url".into(),
            format!("ws://127.0.0.1:{port}/ws"),
            "--json".into(),
        ],
        vec![
            "healthcheck".to_string(),
            "--url".into(),
            format!("http://127.0.0.1:{port}/healthz"),
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
    }
}
