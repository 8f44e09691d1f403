//! The command of one attempt: program, argv, environment and stdin, built by the harness's own
//! module from its typed settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{claude, codex, custom, gemini};
use crate::config::{HarnessConfig, HarnessKind};

/// A process to start: plain data, built by the harness, run by the runner's process layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (a path or a name looked up in `PATH`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment added to the runner's own.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Bytes written to stdin, which is then closed; `None` gives `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

/// Longest prompt that may go in an argument (Linux refuses single argv strings over 128 KiB).
pub const MAX_ARG_PROMPT: usize = 128 * 1024 - 1;

/// The prompt does not fit where the harness wants it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the prompt is {0} bytes, too long for a command-line argument (limit 128 KiB); let the harness read it on stdin")]
pub struct PromptTooLong(pub usize);

/// `items` as owned strings.
pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Builds the command for one attempt.
///
/// Built-in harnesses get the prompt on stdin, which is then closed: argv strings are limited to
/// 128 KiB, some CLIs' variadic options swallow a positional prompt, and Codex reads stdin to its
/// end. A custom harness gets it on stdin too, unless an argument contains `{prompt}`.
pub fn command(
    harness: &HarnessConfig,
    model: Option<&str>,
    prompt: &str,
    cwd: PathBuf,
    running_as_root: bool,
) -> Result<CommandSpec, PromptTooLong> {
    let model = model.or(harness.model.as_deref());
    let mut spec = CommandSpec {
        program: harness.command.clone(),
        args: Vec::new(),
        env: harness.env.clone(),
        cwd,
        stdin: Some(prompt.as_bytes().to_vec()),
    };
    match &harness.kind {
        HarnessKind::Claude {
            permission_mode,
            allowed_tools,
        } => {
            spec.args = claude::args(*permission_mode, allowed_tools, model, &harness.args);
            if running_as_root {
                claude::as_root(*permission_mode, &mut spec.env);
            }
        }
        HarnessKind::Codex { sandbox } => spec.args = codex::args(*sandbox, model, &harness.args),
        HarnessKind::Gemini { approval_mode } => {
            spec.args = gemini::args(*approval_mode, model, &harness.args)
        }
        HarnessKind::Custom { .. } => custom::fill(&mut spec, &harness.args, model, prompt)?,
    }
    Ok(spec)
}

/// Arguments that hold the agent to the money left in the assignment's budget while it runs,
/// for the harnesses that can (Claude Code's `--max-budget-usd`); the others report their cost
/// at the end, where the budget is checked.
pub fn budget_args(harness: &HarnessConfig, remaining_usd: f64) -> Vec<String> {
    match harness.kind {
        HarnessKind::Claude { .. } => claude::budget_args(remaining_usd),
        _ => Vec::new(),
    }
}
