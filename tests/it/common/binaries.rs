//! Paths of the programs the tests run as child processes.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The directory of the build profile this test binary belongs to
/// (`target/debug` for `target/debug/deps/it-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// An example of this package, built next to this test binary
/// (`cargo test --all-features` builds the examples).
pub fn example(name: &str) -> PathBuf {
    let bin = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --all-features` builds the examples; with `--test it` \
         alone, run `cargo build --all-features --example {name}` first",
        bin.display()
    );
    bin
}

/// A program of the `sqs-worker-tools` crate (e.g. `fault-worker`). Built
/// with the crate's own features when missing (`cargo test --workspace`
/// builds only its tests), once per test process.
pub fn tool(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let profile = profile_dir();
    let bin = profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if bin.exists() || built.iter().any(|b| b == name) {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "sqs-worker-tools", "--bin", name])
        .arg("--target-dir")
        .arg(profile.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
    assert!(
        status.success() && bin.exists(),
        "`cargo build -p sqs-worker-tools --bin {name}` failed ({status}); build it by hand"
    );
    built.push(name.to_owned());
    bin
}

/// An example run with the environment every test gives it: the local
/// server's endpoint and test credentials, JSON logs on stdout, 1 s receives
/// and one receive loop (moto's `ReceiveMessage` takes no lock, so two
/// concurrent receives can return the same message, which SQS does not do).
pub fn example_command(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(example(name));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", &sqs_worker_testkit::server().endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SQS_WORKER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("SQS_WORKER_WAIT_SECONDS", "1")
        .env("SQS_WORKER_RECEIVERS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}
