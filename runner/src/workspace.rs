//! Workspaces: a git worktree and branch per assignment, owned by the runner.
//!
//! The runner, never the agent, writes to git: it creates the worktree (cut from a recorded
//! base), commits what each job left (`git add -A`, trailers naming the assignment and the
//! job), keeps `refs/wf/<aid>/<job>` so no commit is lost to gc, and pushes when a remote
//! exists. Admin operations on one repository (worktree add/remove, ref updates, commits)
//! are serialised, within the process by a mutex and across processes by an flock on a file
//! in the repository's common git directory. A worktree is removed only when it is clean and
//! its branch is pushed or merged (`wf gc`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wf_core::config::{WorkspaceConfig, WorkspaceMode};
use wf_core::model::Workspace;

use crate::git::{git, git_status, GitError};

/// A git repository: its main checkout and its common git directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The main checkout's top directory.
    pub top: PathBuf,
    /// The common git directory (shared by every worktree).
    pub common_dir: PathBuf,
}

/// The repository `dir` is in, if it is in one.
pub async fn find_repo(dir: &Path) -> Option<Repo> {
    let out = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
        ],
    )
    .await
    .ok()?;
    let mut lines = out.lines();
    let top = PathBuf::from(lines.next()?);
    let common_dir = PathBuf::from(lines.next()?);
    Some(Repo { top, common_dir })
}

/// The mode in effect: the configured one, else `worktree` in a git repository.
pub fn effective_mode(config: &WorkspaceConfig, repo: Option<&Repo>) -> WorkspaceMode {
    match (config.mode, repo) {
        (Some(mode), _) => mode,
        (None, Some(_)) => WorkspaceMode::Worktree,
        (None, None) => WorkspaceMode::InPlace,
    }
}

/// Holds the admin lock of one repository.
pub struct AdminLock {
    _file: std::fs::File,
    _inner: tokio::sync::OwnedMutexGuard<()>,
}

/// Takes the admin lock of `repo`: first this process's mutex for it, then the flock that
/// orders processes (another runner, `wf gc`).
pub async fn admin_lock(repo: &Repo) -> Result<AdminLock, GitError> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mutex = {
        let mut map = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(repo.common_dir.clone()).or_default().clone()
    };
    let inner = mutex.lock_owned().await;
    let path = repo.common_dir.join("wf-admin.lock");
    let locked = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await;
    match locked {
        Ok(Ok(file)) => Ok(AdminLock {
            _file: file,
            _inner: inner,
        }),
        Ok(Err(e)) => Err(lock_error(repo, &e.to_string())),
        Err(e) => Err(lock_error(repo, &e.to_string())),
    }
}

fn lock_error(repo: &Repo, why: &str) -> GitError {
    GitError {
        args: "(admin lock)".into(),
        dir: repo.common_dir.display().to_string(),
        why: format!("cannot lock wf-admin.lock: {why}"),
    }
}

/// The remote in effect: the configured one, else `origin` if the repository has it.
pub async fn remote(config: &WorkspaceConfig, repo: &Repo) -> Option<String> {
    let remotes = git(&repo.top, &["remote"]).await.ok()?;
    let want = config.remote.clone().unwrap_or_else(|| "origin".into());
    remotes.lines().any(|r| r == want).then_some(want)
}

/// Whether `git show-ref` finds `reference`.
async fn has_ref(dir: &Path, reference: &str) -> bool {
    matches!(
        git_status(dir, &["show-ref", "--verify", "--quiet", reference]).await,
        Ok((Some(0), _))
    )
}

/// Creates assignment `aid`'s worktree on a new branch (`branch`, or `wf/<aid>`; `-2`, `-3`…
/// when taken), cut from the base branch — from the remote's copy when there is a remote —
/// and records the base commit.
pub async fn create(
    config: &WorkspaceConfig,
    repo: &Repo,
    aid: &str,
    branch: Option<&str>,
    host: &str,
) -> Result<Workspace, GitError> {
    let _lock = admin_lock(repo).await?;
    let base_branch = match &config.base_branch {
        Some(b) => b.clone(),
        None => git(&repo.top, &["symbolic-ref", "--short", "-q", "HEAD"])
            .await
            .map_err(|e| GitError {
                why: format!(
                    "the checkout has no current branch (detached HEAD?); set workspace.baseBranch: {}",
                    e.why
                ),
                ..e
            })?,
    };
    let mut start = base_branch.clone();
    if let Some(remote) = remote(config, repo).await {
        // A fresh base when the remote has it; an unreachable remote is no reason to stop.
        if let Err(e) = git(&repo.top, &["fetch", "-q", &remote, &base_branch]).await {
            tracing::warn!(%e, "cannot fetch the base branch; cutting from the local one");
        }
        if has_ref(&repo.top, &format!("refs/remotes/{remote}/{base_branch}")).await {
            start = format!("{remote}/{base_branch}");
        }
    }
    let base_commit = git(
        &repo.top,
        &["rev-parse", "--verify", &format!("{start}^{{commit}}")],
    )
    .await?;
    let wanted = branch.map_or_else(|| format!("wf/{aid}"), str::to_string);
    let mut name = wanted.clone();
    let mut n = 1;
    while has_ref(&repo.top, &format!("refs/heads/{name}")).await {
        n += 1;
        name = format!("{wanted}-{n}");
    }
    let path = config.root.join(aid);
    exclude_root(config, repo);
    git(&repo.top, &["worktree", "prune"]).await?;
    git(
        &repo.top,
        &[
            "worktree",
            "add",
            "-q",
            "--no-track",
            "-b",
            &name,
            &path.display().to_string(),
            &base_commit,
        ],
    )
    .await?;
    Ok(Workspace {
        branch: name,
        base_branch,
        base_commit,
        path: path.display().to_string(),
        host: host.to_string(),
    })
}

/// Keeps the worktree root out of the main checkout's `git status` (the common directory's
/// `info/exclude`, which linked worktrees read too). Best effort.
fn exclude_root(config: &WorkspaceConfig, repo: &Repo) {
    let Ok(rel) = config.root.strip_prefix(&repo.top) else {
        return;
    };
    let line = format!("/{}/", rel.display());
    let path = repo.common_dir.join("info").join("exclude");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.lines().any(|l| l.trim() == line) {
        return;
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("# wf's worktrees\n{line}\n"));
    if let Some(dir) = path.parent() {
        // Why: without the exclude the worktrees only show as untracked in `git status`.
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&path, text) {
        tracing::warn!(path = %path.display(), %e, "cannot exclude the worktree root");
    }
}

/// Makes sure `ws`'s worktree exists here (re-adding it from its branch when its directory
/// was removed) and returns its path.
pub async fn ensure_present(repo: &Repo, ws: &Workspace) -> Result<PathBuf, GitError> {
    let path = PathBuf::from(&ws.path);
    if path.join(".git").exists() {
        return Ok(path);
    }
    let _lock = admin_lock(repo).await?;
    git(&repo.top, &["worktree", "prune"]).await?;
    git(&repo.top, &["worktree", "add", "-q", &ws.path, &ws.branch]).await?;
    Ok(path)
}

/// Checks out branch `branch` of `remote` as a new worktree for assignment `aid` (its work
/// was done on another machine, which pushed it): fetched into the local branch, which is
/// created or moved to the remote's commit.
pub async fn adopt(
    config: &WorkspaceConfig,
    repo: &Repo,
    aid: &str,
    remote: &str,
    branch: &str,
) -> Result<PathBuf, GitError> {
    let _lock = admin_lock(repo).await?;
    let path = config.root.join(aid);
    exclude_root(config, repo);
    git(
        &repo.top,
        &[
            "fetch",
            "-q",
            remote,
            &format!("+refs/heads/{branch}:refs/heads/{branch}"),
        ],
    )
    .await?;
    git(&repo.top, &["worktree", "prune"]).await?;
    if !path.join(".git").exists() {
        git(
            &repo.top,
            &["worktree", "add", "-q", &path.display().to_string(), branch],
        )
        .await?;
    }
    Ok(path)
}

/// The commit checked out in `dir`.
pub async fn head(dir: &Path) -> Result<String, GitError> {
    git(dir, &["rev-parse", "HEAD"]).await
}

/// Commits everything in the worktree `dir` (tracked, untracked, deletions) with `message`,
/// bypassing hooks; returns the new commit, or `None` when there was nothing to commit.
pub async fn commit_all(
    repo: &Repo,
    dir: &Path,
    message: &str,
) -> Result<Option<String>, GitError> {
    let _lock = admin_lock(repo).await?;
    git(dir, &["add", "-A"]).await?;
    match git_status(dir, &["diff", "--cached", "--quiet"]).await? {
        (Some(0), _) => return Ok(None),
        (Some(1), _) => {}
        (code, _) => {
            return Err(GitError {
                args: "diff --cached --quiet".into(),
                dir: dir.display().to_string(),
                why: format!("unexpected exit {code:?}"),
            })
        }
    }
    let mut args = identity_args(dir).await;
    args.extend(
        [
            "commit",
            "--no-verify",
            "--no-gpg-sign",
            "-q",
            "-m",
            message,
        ]
        .map(str::to_string),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(dir, &args).await?;
    head(dir).await.map(Some)
}

/// `-c user.name=… -c user.email=…` for the runner's commits, only where the user has no
/// identity configured (a fresh CI machine).
async fn identity_args(dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for (key, fallback) in [("user.name", "wf"), ("user.email", "wf@localhost")] {
        if git(dir, &["config", key]).await.is_err() {
            args.extend(["-c".to_string(), format!("{key}={fallback}")]);
        }
    }
    args
}

/// The main checkout's repository of workspace `ws`, when the worktree is on this machine (a
/// worktree's own top is the worktree, so the repository comes from the config's `workdir`).
pub async fn main_repo(workdir: &Path, ws: &Workspace) -> Result<Repo, String> {
    let not_here = || format!("the worktree {} is not on this machine", ws.path);
    if !Path::new(&ws.path).exists() {
        return Err(not_here());
    }
    find_repo(workdir).await.ok_or_else(not_here)
}

/// Points `refs/wf/<aid>/<job>` at `commit`, so the job's work stays reachable whatever
/// happens to the branch.
pub async fn keep_ref(repo: &Repo, aid: &str, job: &str, commit: &str) -> Result<(), GitError> {
    let _lock = admin_lock(repo).await?;
    git(
        &repo.top,
        &["update-ref", &format!("refs/wf/{aid}/{job}"), commit],
    )
    .await?;
    Ok(())
}

/// Pushes the worktree's branch to `remote`.
pub async fn push(dir: &Path, remote: &str, branch: &str) -> Result<(), GitError> {
    git(
        dir,
        &["push", "-q", remote, &format!("HEAD:refs/heads/{branch}")],
    )
    .await?;
    Ok(())
}

/// How many paths `git status` lists in `dir` (uncommitted work).
pub async fn dirty_paths(dir: &Path) -> Result<usize, GitError> {
    Ok(
        git(dir, &["status", "--porcelain", "--untracked-files=all"])
            .await?
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
    )
}

/// One of wf's worktrees, as `wf workspaces` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeState {
    /// The assignment (the directory's name).
    pub assignment: String,
    /// The worktree's path.
    pub path: String,
    /// Its branch (`None`: detached).
    pub branch: Option<String>,
    /// The commit checked out.
    pub head: String,
    /// Paths with uncommitted changes.
    pub dirty: usize,
    /// Commits on the branch that the base branch does not have (`None`: base unknown).
    pub ahead: Option<usize>,
    /// The remote has the branch at this commit.
    pub pushed: bool,
    /// Commits the remote's copy of the branch lacks (`None`: the remote has no copy).
    pub unpushed: Option<usize>,
    /// The base branch contains the branch's commit.
    pub merged: bool,
    /// Bytes on disk (git's metadata excluded).
    pub disk_bytes: u64,
}

impl WorktreeState {
    /// Whether removing the worktree loses nothing: no uncommitted change, and its commits are
    /// on the remote or in the base branch.
    pub fn safe_to_remove(&self) -> Result<(), String> {
        if self.dirty > 0 {
            return Err(format!("{} uncommitted paths", self.dirty));
        }
        if !(self.pushed || self.merged) {
            return Err(match self.unpushed.or(self.ahead) {
                Some(n) => format!("{n} commits neither pushed nor merged"),
                None => "its branch is neither pushed nor merged".to_string(),
            });
        }
        Ok(())
    }
}

/// wf's worktrees of `repo` under `root` (one per assignment directory), with their state;
/// `base_of` gives an assignment's base branch when it is known.
pub async fn worktrees(
    config: &WorkspaceConfig,
    repo: &Repo,
    base_of: impl Fn(&str) -> Option<String>,
) -> Result<Vec<WorktreeState>, GitError> {
    let listing = git(&repo.top, &["worktree", "list", "--porcelain"]).await?;
    let remote = remote(config, repo).await;
    let mut out = Vec::new();
    for entry in listing.split("\n\n") {
        let mut path = None;
        let (mut head, mut branch) = (String::new(), None);
        for line in entry.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = Some(PathBuf::from(p));
            } else if let Some(h) = line.strip_prefix("HEAD ") {
                head = h.to_string();
            } else if let Some(b) = line.strip_prefix("branch refs/heads/") {
                branch = Some(b.to_string());
            }
        }
        let Some(path) = path.filter(|p| p.parent() == Some(config.root.as_path())) else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let assignment = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dirty = dirty_paths(&path).await?;
        let base = base_of(&assignment);
        let ahead = match &base {
            Some(b) => git(&path, &["rev-list", "--count", &format!("{b}..HEAD")])
                .await
                .ok()
                .and_then(|n| n.parse().ok()),
            None => None,
        };
        let merged = match &base {
            Some(b) => matches!(
                git_status(&path, &["merge-base", "--is-ancestor", "HEAD", b]).await,
                Ok((Some(0), _))
            ),
            None => false,
        };
        // What the remote has now, not what was last fetched.
        let remote_head = match (&remote, &branch) {
            (Some(r), Some(b)) => git(&path, &["ls-remote", "--heads", r, b])
                .await
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_string)),
            _ => None,
        };
        let pushed = remote_head.as_deref() == Some(head.as_str());
        let unpushed = match &remote_head {
            Some(r) => git(&path, &["rev-list", "--count", &format!("{r}..HEAD")])
                .await
                .ok()
                .and_then(|n| n.parse().ok()),
            None => None,
        };
        let disk_bytes = disk_use(&path);
        out.push(WorktreeState {
            assignment,
            path: path.display().to_string(),
            branch,
            head,
            dirty,
            ahead,
            pushed,
            unpushed,
            merged,
            disk_bytes,
        });
    }
    Ok(out)
}

/// Bytes of the regular files under `dir`, symlinks not followed.
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Removes the worktree at `path` (never `--force`: git itself refuses one with changes); its
/// branch and refs stay.
pub async fn remove(repo: &Repo, path: &str) -> Result<(), GitError> {
    let _lock = admin_lock(repo).await?;
    git(&repo.top, &["worktree", "remove", path]).await?;
    Ok(())
}

/// A worktree of its own for job `job` of a parallel group, on branch `<parent>.<job>` cut
/// from the assignment branch's current commit (re-used when an earlier attempt made it).
pub async fn create_sub(
    config: &WorkspaceConfig,
    repo: &Repo,
    parent: &Workspace,
    job: &str,
) -> Result<Workspace, GitError> {
    let _lock = admin_lock(repo).await?;
    let branch = format!("{}.{job}", parent.branch);
    let path = config.root.join(format!(
        "{}.{job}",
        Path::new(&parent.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if !path.join(".git").exists() {
        git(&repo.top, &["worktree", "prune"]).await?;
        let p = path.display().to_string();
        if has_ref(&repo.top, &format!("refs/heads/{branch}")).await {
            git(&repo.top, &["worktree", "add", "-q", &p, &branch]).await?;
        } else {
            let head = head(Path::new(&parent.path)).await?;
            git(
                &repo.top,
                &[
                    "worktree",
                    "add",
                    "-q",
                    "--no-track",
                    "-b",
                    &branch,
                    &p,
                    &head,
                ],
            )
            .await?;
        }
    }
    Ok(Workspace {
        branch,
        path: path.display().to_string(),
        ..parent.clone()
    })
}

/// Merges branch `sub` into the worktree `dir` (no fast-forward, hooks skipped). On a
/// conflict the merge is undone and the conflicting paths are returned.
pub async fn merge(
    repo: &Repo,
    dir: &Path,
    sub: &str,
    message: &str,
) -> Result<Result<(), Vec<String>>, GitError> {
    let _lock = admin_lock(repo).await?;
    let mut args = identity_args(dir).await;
    args.extend(
        [
            "merge",
            "--no-ff",
            "--no-verify",
            "--no-gpg-sign",
            "-q",
            "-m",
            message,
            sub,
        ]
        .map(str::to_string),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match git_status(dir, &args).await? {
        (Some(0), _) => Ok(Ok(())),
        _ => {
            let conflicted = git(dir, &["diff", "--name-only", "--diff-filter=U"])
                .await
                .unwrap_or_default();
            // Why: nothing to abort when the merge did not even start; the check below tells.
            let _ = git(dir, &["merge", "--abort"]).await;
            if dirty_paths(dir).await? > 0 {
                return Err(GitError {
                    args: "merge --abort".into(),
                    dir: dir.display().to_string(),
                    why: "the worktree is not clean after aborting the merge".into(),
                });
            }
            Ok(Err(conflicted.lines().map(str::to_string).collect()))
        }
    }
}
