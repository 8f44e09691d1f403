//! The `workspace` and `verify` sections: where each assignment's work happens (a git worktree
//! per assignment, or the checkout itself) and which checks the runner runs after a job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::JobType;

/// Default longest run of one verification step.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The `workspace` object as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawWorkspace {
    /// `worktree` or `in_place` (default: `worktree` in a git repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where the worktrees go (default: `.wf/worktrees`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The branch new workspaces are cut from (default: the checkout's current branch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The remote to fetch the base from and push branches to (default: `origin`, if it
    /// exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Commands run by `sh -c` in a new worktree, once, before its first job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Vec<String>>,
    /// Push the branch after every job (default: when the remote exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<bool>,
}

/// One entry of `verify` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCheck {
    /// Its name, e.g. `Tests` or `Lint`.
    pub name: String,
    /// Run by `sh -c` in the workspace.
    pub command: String,
    /// Longest run (default 20 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether a failure fails the job (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// How agents' work is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// A git worktree and branch per assignment.
    Worktree,
    /// Everyone works in the configured `workdir`.
    InPlace,
}

/// The resolved `workspace` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceConfig {
    /// `None`: `worktree` when the project root is in a git repository, else `in_place`.
    pub mode: Option<WorkspaceMode>,
    /// Where the worktrees go (absolute).
    pub root: PathBuf,
    /// The branch new workspaces are cut from (`None`: the checkout's current branch).
    pub base_branch: Option<String>,
    /// The remote (`None`: `origin`, when it exists).
    pub remote: Option<String>,
    /// Setup commands for new worktrees.
    pub setup: Vec<String>,
    /// Push after every job (`None`: when the remote exists).
    pub push: Option<bool>,
}

/// One configured verification step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// Its name.
    pub name: String,
    /// The command, for `sh -c`.
    pub command: String,
    /// Longest run.
    pub timeout: Duration,
    /// A failure fails the job.
    pub required: bool,
}

/// Resolves `workspace`; relative paths start at `root`.
pub(super) fn resolve_workspace(
    raw: Option<&RawWorkspace>,
    root: &Path,
    state_dir: &Path,
) -> Result<WorkspaceConfig, String> {
    let raw = raw.cloned().unwrap_or_default();
    let mode = match raw.mode.as_deref() {
        None => None,
        Some("worktree") => Some(WorkspaceMode::Worktree),
        Some("in_place") => Some(WorkspaceMode::InPlace),
        Some(other) => {
            return Err(format!(
                "workspace.mode: unknown mode {other:?} (expected worktree or in_place)"
            ))
        }
    };
    let name_ok = |what: &str, v: &Option<String>| match v {
        Some(s) if s.trim().is_empty() || s.starts_with('-') || s.contains(char::is_whitespace) => {
            Err(format!("workspace.{what}: {s:?} is not a git name"))
        }
        _ => Ok(()),
    };
    name_ok("baseBranch", &raw.base_branch)?;
    name_ok("remote", &raw.remote)?;
    for (i, c) in raw.setup.iter().flatten().enumerate() {
        if c.trim().is_empty() {
            return Err(format!("workspace.setup[{i}]: an empty command"));
        }
    }
    Ok(WorkspaceConfig {
        mode,
        root: raw.root.as_deref().map_or_else(
            || state_dir.join("worktrees"),
            |p| super::resolve::absolute(root, p),
        ),
        base_branch: raw.base_branch,
        remote: raw.remote,
        setup: raw.setup.unwrap_or_default(),
        push: raw.push,
    })
}

/// Resolves `verify` (`None`: detect from the repository) and `verifyAfter` (default:
/// implement).
pub(super) fn resolve_verify(
    raw: Option<&Vec<RawCheck>>,
    after: Option<&Vec<String>>,
) -> Result<(Option<Vec<CheckConfig>>, Vec<JobType>), String> {
    let checks = match raw {
        None => None,
        Some(list) => {
            let mut out: Vec<CheckConfig> = Vec::new();
            for (i, c) in list.iter().enumerate() {
                if c.name.trim().is_empty() || c.name.len() > 80 {
                    return Err(format!("verify[{i}].name: 1 to 80 characters"));
                }
                if out.iter().any(|o| o.name == c.name) {
                    return Err(format!("verify[{i}].name: {:?} is used twice", c.name));
                }
                if c.command.trim().is_empty() {
                    return Err(format!("verify[{i}].command: an empty command"));
                }
                if c.timeout_ms == Some(0) {
                    return Err(format!("verify[{i}].timeoutMs: at least 1"));
                }
                out.push(CheckConfig {
                    name: c.name.clone(),
                    command: c.command.clone(),
                    timeout: c
                        .timeout_ms
                        .map_or(DEFAULT_CHECK_TIMEOUT, Duration::from_millis),
                    required: c.required.unwrap_or(true),
                });
            }
            Some(out)
        }
    };
    let after = match after {
        None => vec![JobType::Implement],
        Some(list) => list
            .iter()
            .map(|t| {
                t.parse::<JobType>()
                    .map_err(|e| format!("verifyAfter: {e}"))
                    .and_then(|t| match t {
                        JobType::Pm => Err("verifyAfter: PM jobs change no code".to_string()),
                        t => Ok(t),
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok((checks, after))
}

impl WorkspaceConfig {
    /// The section as written, for the effective config.
    pub(super) fn to_raw(&self) -> RawWorkspace {
        RawWorkspace {
            mode: self.mode.map(|m| {
                match m {
                    WorkspaceMode::Worktree => "worktree",
                    WorkspaceMode::InPlace => "in_place",
                }
                .to_string()
            }),
            root: Some(self.root.display().to_string()),
            base_branch: self.base_branch.clone(),
            remote: self.remote.clone(),
            setup: Some(self.setup.clone()),
            push: self.push,
        }
    }
}

impl CheckConfig {
    /// The entry as written, for the effective config.
    pub(super) fn to_raw(&self) -> RawCheck {
        RawCheck {
            name: self.name.clone(),
            command: self.command.clone(),
            timeout_ms: Some(self.timeout.as_millis() as u64),
            required: Some(self.required),
        }
    }
}

/// The `forge` object as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawForge {
    /// `github` (GitHub Enterprise too, through `apiUrl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `owner/repo` (default: from the remote's URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The REST API's base URL (default `https://api.github.com`; GHES:
    /// `https://HOST/api/v3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The environment variable that holds the token (default: `GH_TOKEN`, then
    /// `GITHUB_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// The resolved `forge` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeConfig {
    /// `owner/repo`, when configured.
    pub repo: Option<String>,
    /// The REST API's base URL, without a trailing slash.
    pub api_url: String,
    /// The environment variables to read the token from, in order.
    pub token_env: Vec<String>,
}

/// Resolves `forge`.
pub(super) fn resolve_forge(raw: Option<&RawForge>) -> Result<ForgeConfig, String> {
    let raw = raw.cloned().unwrap_or_default();
    match raw.kind.as_deref() {
        None | Some("github") => {}
        Some(other) => {
            return Err(format!(
                "forge.kind: unknown forge {other:?} (expected github; GitHub Enterprise is github with forge.apiUrl)"
            ))
        }
    }
    if let Some(repo) = &raw.repo {
        crate::forge::check_repo(repo).map_err(|e| format!("forge.repo: {e}"))?;
    }
    let api_url = raw
        .api_url
        .unwrap_or_else(|| "https://api.github.com".into())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(format!("forge.apiUrl: {api_url:?} is not an http(s) URL"));
    }
    let token_env = match raw.token_env {
        Some(name) if name.is_empty() || name.contains(['=', '\0']) => {
            return Err(format!("forge.tokenEnv: {name:?} is not a variable name"))
        }
        Some(name) => vec![name],
        None => vec!["GH_TOKEN".into(), "GITHUB_TOKEN".into()],
    };
    Ok(ForgeConfig {
        repo: raw.repo,
        api_url,
        token_env,
    })
}

impl ForgeConfig {
    /// The section as written, for the effective config.
    pub(super) fn to_raw(&self) -> RawForge {
        RawForge {
            kind: Some("github".into()),
            repo: self.repo.clone(),
            api_url: Some(self.api_url.clone()),
            token_env: self.token_env.first().cloned(),
        }
    }
}
