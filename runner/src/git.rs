//! `git`, run through the process layer (its own process group, a timeout, killed with the
//! runner). wf shells out to git for everything that touches a repository: it refuses to
//! clobber dirty files, honours hooks, sparse checkouts and credentials, and needs no C
//! library. Prompts are off (`GIT_TERMINAL_PROMPT=0`), so a missing credential fails instead
//! of hanging; LFS files are not smudged into every new worktree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::process::{self, Flow, Limits, Line};
use wf_core::harness::{CommandSpec, Ended};

/// Longest any one git command may run.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// A git command failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {args} (in {dir}) failed: {why}")]
pub struct GitError {
    /// The arguments, joined.
    pub args: String,
    /// Where it ran.
    pub dir: String,
    /// Its exit and the end of its stderr.
    pub why: String,
}

/// Runs `git -C dir args…`; returns its stdout (lines joined with `\n`).
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = run(dir, args).await?;
    match out.0 {
        Some(0) => Ok(out.1),
        code => Err(error(dir, args, code, &out.2)),
    }
}

/// Runs `git -C dir args…`; returns its exit code (`None`: killed) and stdout, whatever the
/// exit (for the commands whose exit code is the answer, such as `diff --quiet`).
pub async fn git_status(dir: &Path, args: &[&str]) -> Result<(Option<i32>, String), GitError> {
    let (code, stdout, _) = run(dir, args).await?;
    Ok((code, stdout))
}

fn error(dir: &Path, args: &[&str], code: Option<i32>, stderr: &str) -> GitError {
    let stderr = stderr.trim();
    // git's own verdict (`fatal: …`, `error: …`) says most; else the last lines.
    let tail = match stderr
        .lines()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
    {
        Some(verdict) => verdict.to_string(),
        None => {
            let last: Vec<&str> = stderr.lines().rev().take(4).collect();
            last.into_iter().rev().collect::<Vec<_>>().join(" / ")
        }
    };
    GitError {
        args: args.join(" "),
        dir: dir.display().to_string(),
        why: match code {
            Some(c) if tail.is_empty() => format!("exit {c}"),
            Some(c) => format!("exit {c}: {tail}"),
            None => format!("killed or timed out: {tail}"),
        },
    }
}

async fn run(dir: &Path, args: &[&str]) -> Result<(Option<i32>, String, String), GitError> {
    let mut full = vec!["-C".to_string(), dir.display().to_string()];
    full.extend(args.iter().map(|a| a.to_string()));
    let env: BTreeMap<String, String> = [
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_LFS_SKIP_SMUDGE", "1"),
        ("LC_ALL", "C"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let spec = CommandSpec {
        program: "git".into(),
        args: full,
        env: BTreeMap::new(),
        cwd: PathBuf::from(dir),
        stdin: None,
    };
    let limits = Limits::new(GIT_TIMEOUT, GIT_TIMEOUT, Duration::from_secs(2));
    let mut stdout = String::new();
    // Boxed: the process layer's future is large, and git calls nest inside unit futures.
    let exit = Box::pin(process::run(
        &spec,
        &env,
        &limits,
        &CancellationToken::new(),
        |_| {},
        |line| {
            if let Line::Text(t) = line {
                if !stdout.is_empty() {
                    stdout.push('\n');
                }
                stdout.push_str(t);
            }
            Flow::Continue
        },
    ))
    .await
    .map_err(|e| GitError {
        args: args.join(" "),
        dir: dir.display().to_string(),
        why: e.to_string(),
    })?;
    let code = match exit.ended {
        Ended::Exited { code, .. } => code,
        _ => None,
    };
    Ok((code, stdout, exit.stderr_tail))
}
