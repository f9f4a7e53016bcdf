//! haproxy in front of ratecast replicas, as a load balancer with health checks does it.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::Stdio;

use tokio::process::{Child, Command};

/// haproxy in front of `backends`, checking readiness every 200 ms (a draining replica's 503 is
/// seen at once; a check may take up to 2 s on a loaded box before it counts as a failure);
/// WebSockets may live long.
pub fn haproxy(listen: u16, backends: &[u16], dir: &std::path::Path) -> Child {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!("    server r{i} 127.0.0.1:{port} check inter 200ms fall 1 rise 2\n")
        })
        .collect();
    let config = format!(
        "global\n    maxconn 8000\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout tunnel 1h\n    timeout check 2s\n    option forwardfor\n    option redispatch\n    retries 3\n\
         frontend ws\n    bind 127.0.0.1:{listen}\n    default_backend replicas\n\
         backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n    \
         http-check expect status 200\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    Command::new("haproxy")
        .args(["-f", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy runs (the test command installs it: bash .ci/test.sh rust)")
}
