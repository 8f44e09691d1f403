//! The guardian: a small process each runner starts before its first agent, which outlives the
//! runner only to stop everything its agents started.
//!
//! PDEATHSIG kills an agent's leader when the runner dies, but it is not inherited, and the
//! agent CLIs start their tool commands in sessions of their own (Claude Code's Bash tool,
//! Codex's exec, Gemini's `detached` shells), out of reach of a group kill. So the runner
//! starts `<its own executable> --wf-guard <runner id>` in a process group of its own, holding
//! the write end of the guardian's stdin for its whole life. When the runner ends — cleanly, or
//! by `kill -9` — the pipe closes, and the guardian kills every process whose environment
//! carries `WF_RUNNER_ID=<runner id>` (every agent and everything it started inherits it), then
//! exits. The reaper of the next runner remains the second line of defence.

use std::io::Read;
use std::process::ExitCode;

/// The argument that turns `wf-runner` (or `wf`, for the demo's in-process runner) into a
/// guardian.
pub const GUARD_ARG: &str = "--wf-guard";

/// A running guardian. Dropping it closes its stdin; the guardian then stops whatever is left
/// of this runner's agents, and is reaped here.
pub struct Guardian {
    child: std::process::Child,
}

impl Guardian {
    /// Starts the guardian of runner `runner_id`.
    pub fn start(runner_id: &str) -> std::io::Result<Self> {
        crate::process::spawn_guardian(runner_id).map(|child| Self { child })
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // Why: the guardian exits right after its last scan; its status tells nothing more.
        let _ = self.child.wait();
    }
}

/// If this process was started as a guardian, runs it and returns its exit code.
pub fn main_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(GUARD_ARG)) {
        return None;
    }
    let runner_id = args.next()?.to_string_lossy().into_owned();
    if runner_id.is_empty() {
        return Some(ExitCode::from(2));
    }
    // Until the runner is gone: EOF, or an error, which means the same.
    let mut sink = [0u8; 64];
    while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
    let marker = [("WF_RUNNER_ID".to_string(), runner_id)];
    crate::process::signal_marked(&marker, libc::SIGKILL, 20);
    Some(ExitCode::SUCCESS)
}
