//! The layering of ARCHITECTURE.md, read from `cargo metadata` so that it holds by construction:
//! the clients and the protocol never depend on the server, and the protocol does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate with its normal (non-dev) dependencies.
fn workspace() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().expect("name").to_owned())
                .collect();
            (package["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

/// Everything `name` depends on inside the workspace, directly or through other members.
fn reaches(crates: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![name.to_owned()];
    while let Some(next) = pending.pop() {
        for dep in crates.get(&next).into_iter().flatten() {
            if crates.contains_key(dep) && seen.insert(dep.clone()) {
                pending.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn clients_and_protocol_never_depend_on_the_server() {
    let crates = workspace();
    for name in [
        "ratecast-protocol",
        "ratecast-server",
        "ratecast-client",
        "ratecast",
    ] {
        assert!(
            crates.contains_key(name),
            "{name} is not a workspace member"
        );
    }
    for name in ["ratecast-client", "ratecast-protocol"] {
        let reached = reaches(&crates, name);
        assert!(
            !reached.contains("ratecast-server"),
            "{name} depends on ratecast-server: {reached:?}"
        );
    }
    assert_eq!(
        reaches(&crates, "ratecast-client"),
        BTreeSet::from(["ratecast-protocol".to_owned()])
    );
    assert_eq!(
        reaches(&crates, "ratecast-server"),
        BTreeSet::from(["ratecast-protocol".to_owned()])
    );
}

#[test]
fn protocol_is_pure_data() {
    let crates = workspace();
    let io = [
        "tokio",
        "axum",
        "hyper",
        "reqwest",
        "tokio-tungstenite",
        "tungstenite",
        "socket2",
        "libc",
        "mio",
    ];
    let protocol = &crates["ratecast-protocol"];
    for dep in io {
        assert!(
            !protocol.contains(dep),
            "ratecast-protocol depends on {dep}"
        );
    }
}
