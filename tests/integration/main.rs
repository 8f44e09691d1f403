//! Black-box tests of wf: the real `wf` and `wf-runner` binaries, real sled, real processes.

#![allow(
    clippy::disallowed_methods,
    reason = "the test harness starts the binaries under test and their helpers"
)]

use std::path::PathBuf;
use std::sync::LazyLock;

use wf_tests::Bins;

mod cli;
mod dashboard;
mod e2e;
mod faults;
mod fuzz;
mod live;
mod nats;
mod notify;
mod process;
mod publish;
mod real_clis;
mod store_contract;
mod tidy;
mod triggers;
mod workflows;
mod workspaces;

/// The binaries cargo built for this test run.
pub(crate) static BINS: LazyLock<Bins> = LazyLock::new(|| Bins {
    wf: PathBuf::from(env!("CARGO_BIN_EXE_wf-dup")),
    runner: PathBuf::from(env!("CARGO_BIN_EXE_wf-runner-dup")),
    fake_agent: PathBuf::from(env!("CARGO_BIN_EXE_fake-agent")),
});

/// A recorded Claude Code transcript from tests/fixtures/claude.
pub(crate) fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/claude")
        .join(name)
        .display()
        .to_string()
}

/// Writes one row of docs/RELIABILITY.md (`cargo run -p wf-tests --bin wf-reliability` turns the
/// rows of the last test run into the file). `test` is the test's name, optionally followed by
/// `#variant` when one test records several rows.
pub(crate) fn record_reliability(
    test: &str,
    fault: &str,
    action: &str,
    times: usize,
    lost: &str,
    recovery: std::time::Duration,
) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    std::fs::create_dir_all(&dir).expect("reliability dir");
    let module = std::thread::current()
        .name()
        .unwrap_or("")
        .split("::")
        .next()
        .unwrap_or("")
        .to_string();
    let row = serde_json::json!({
        "test": test,
        "fault": fault,
        "action": action,
        "times": times,
        "lost": lost,
        "recoveryMs": recovery.as_millis() as u64,
        "command": format!("cargo test -p wf-tests --test integration -- {module}::{} --exact", test.split('#').next().unwrap_or(test)),
    });
    let file = test.replace('#', "-");
    std::fs::write(dir.join(format!("{file}.json")), row.to_string()).expect("reliability row");
}
