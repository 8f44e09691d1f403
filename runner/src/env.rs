//! What the runner learns from and gives to its environment: the host name, where `wf` is, the
//! environment every agent gets, and shell quoting for the commands prompts show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wf_core::config::Config;

/// `text` as one shell word.
pub fn shell_quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@=".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Finds the directory of the `wf` binary: next to the invoked runner, next to the runner's
/// executable, or on `PATH`.
pub fn find_wf_dir() -> Option<PathBuf> {
    let has_wf = |dir: &Path| dir.join("wf").is_file();
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    if let Some(dir) = argv0
        .filter(|p| p.components().count() > 1)
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if has_wf(&dir) {
            return std::fs::canonicalize(&dir).ok().or(Some(dir));
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if has_wf(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_wf(d))
}

/// The environment every agent of a runner gets (besides the per-job `WF_*` variables), and
/// how prompts name `wf`.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// `WF_NAMESPACE`, `WF_CONFIG`, `WF_RUNNER_ID`, `WF_BIN` and a `PATH` with `wf` first.
    pub base: BTreeMap<String, String>,
    /// `wf`'s absolute path, shell-quoted, or plain `wf` when it was not found.
    pub wf_command: String,
}

/// The agent environment of runner `runner_id`, with `wf` from `wf_dir`.
pub fn agent_env(
    config: &Config,
    runner_id: &str,
    wf_dir: Option<&Path>,
) -> anyhow::Result<AgentEnv> {
    let mut base = BTreeMap::new();
    base.insert("WF_NAMESPACE".into(), config.namespace.to_string());
    base.insert(
        "WF_CONFIG".into(),
        config.agent_config_path().display().to_string(),
    );
    base.insert("WF_RUNNER_ID".into(), runner_id.to_string());
    // An absolute path: agents' shells may be login shells that reset PATH (Codex runs
    // `bash -lc`).
    let wf_command = match wf_dir {
        Some(dir) => shell_quote(&dir.join("wf").display().to_string()),
        None => "wf".to_string(),
    };
    if let Some(dir) = wf_dir {
        base.insert("WF_BIN".into(), dir.join("wf").display().to_string());
    }
    match wf_dir {
        Some(dir) => {
            let mut path = vec![dir.to_path_buf()];
            path.extend(
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
            let joined = std::env::join_paths(path).context("PATH has an invalid entry")?;
            base.insert("PATH".into(), joined.to_string_lossy().into_owned());
        }
        None => {
            tracing::warn!("no `wf` binary found next to wf-runner or on PATH; PM jobs need it")
        }
    }

    Ok(AgentEnv { base, wf_command })
}

/// Whether output to a stream may be coloured: it is a terminal, `NO_COLOR` is unset or empty,
/// and `TERM` is not `dumb`. `wf` and `wf-runner` decide this once per process.
pub fn colour_allowed(is_terminal: bool) -> bool {
    colour_rule(
        is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

fn colour_rule(
    is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// Whether the runner runs as root (Claude needs to be told it is sandboxed then).
pub fn running_as_root() -> bool {
    #[expect(unsafe_code, reason = "geteuid(2) has no std wrapper")]
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color_or_a_dumb_term() {
        use std::ffi::OsStr;
        let (some, empty) = (Some(OsStr::new("1")), Some(OsStr::new("")));
        assert!(colour_rule(true, None, Some(OsStr::new("xterm-256color"))));
        assert!(colour_rule(true, empty, None));
        assert!(!colour_rule(false, None, None));
        assert!(!colour_rule(true, some, None));
        assert!(!colour_rule(true, None, Some(OsStr::new("dumb"))));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/usr/bin/wf"), "/usr/bin/wf");
        assert_eq!(shell_quote("--a=b"), "--a=b");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
