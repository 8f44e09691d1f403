//! Black-box tests of wf: the real `wf` and `wf-runner` binaries, real sled, real processes.

use std::path::PathBuf;
use std::sync::LazyLock;

use wf_tests::Bins;

mod cli;
mod e2e;
mod nats;
mod process;
mod real_clis;
mod store_contract;

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
