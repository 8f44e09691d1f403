//! `wf rollback`: stop an assignment, and optionally take its branch back to before some of
//! its jobs, or remove its worktree and branch — never destroying work that exists nowhere
//! else without `--force`.
//!
//! Soft (no flags): the assignment is stopped (running jobs cancelled, or it is blocked),
//! branch and worktree are kept for a human. `--last N` / `--to JOB`: the branch is reset to
//! where the first of those jobs started; the old head stays reachable under
//! `refs/wf/<aid>/rollback-<ms>`, and the decision is recorded for the next PM. `--hard`: the
//! open pull request is closed, the worktree and the branch are deleted (`refs/wf/<aid>/…`
//! keep every job's commit).

use std::path::Path;

use serde::{Deserialize, Serialize};

use wf_core::chain;
use wf_core::clock::now_ms;
use wf_core::config::Config;
use wf_core::model::{Assignment, Job};
use wf_store::Store;

use crate::git::git;
use crate::ops::{self, OpError};
use crate::workspace;

/// What to roll back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// Assignment id or prefix.
    pub assignment: String,
    /// Undo the last N jobs that changed the branch.
    pub last: Option<u32>,
    /// Undo this job and every job after it.
    pub to: Option<String>,
    /// Delete the worktree and the branch, and close the open pull request.
    pub hard: bool,
    /// Also when it destroys uncommitted or unpushed work, or rewrites a pushed branch.
    pub force: bool,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackReport {
    /// The assignment.
    pub assignment: String,
    /// What was done, in words.
    pub done: String,
    /// The commit the branch now points at (reset), if it was reset.
    pub reset_to: Option<String>,
    /// The ref that keeps the old head reachable.
    pub saved_ref: Option<String>,
}

fn invalid(msg: impl Into<String>) -> OpError {
    OpError::Invalid(msg.into())
}

fn git_err(e: crate::git::GitError) -> OpError {
    OpError::Invalid(e.to_string())
}

/// Carries out `req`.
// Long: the checks all three forms share (running, dirty, remote), then one form.
pub async fn rollback(
    store: &Store,
    config: &Config,
    req: &RollbackRequest,
    runner: Option<&str>,
) -> Result<RollbackReport, OpError> {
    let doc = ops::find_assignment(store, &req.assignment).await?;
    let undo = req.last.is_some() || req.to.is_some();
    if undo && req.hard {
        return Err(invalid(
            "--hard deletes the branch; it does not go with --last or --to",
        ));
    }
    let running = doc.lease.as_ref().is_some_and(|l| l.expires_at > now_ms());
    if !undo && !req.hard {
        return soft(store, &doc, running, runner).await;
    }
    if running {
        return Err(invalid(format!(
            "a job of assignment {} is running; stop it first with `wf rollback {}`",
            doc.id, doc.id
        )));
    }
    let ws = doc.workspace.clone().ok_or_else(|| {
        invalid(format!(
            "assignment {} has no workspace (worktree mode): nothing to roll back",
            doc.id
        ))
    })?;
    let repo = workspace::main_repo(&config.workdir, &ws)
        .await
        .map_err(OpError::Invalid)?;
    let dir = Path::new(&ws.path);
    let dirty = workspace::dirty_paths(dir).await.map_err(git_err)?;
    if dirty > 0 && !req.force {
        return Err(invalid(format!(
            "the worktree {} has {dirty} uncommitted paths; commit them, or pass --force to lose them",
            ws.path
        )));
    }
    let remote = workspace::remote(&config.workspace, &repo).await;
    let remote_head = match &remote {
        Some(r) => git(dir, &["ls-remote", "--heads", r, &ws.branch])
            .await
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string)),
        None => None,
    };
    if req.hard {
        hard(
            store,
            config,
            &doc,
            &repo,
            &ws,
            remote_head.as_deref(),
            req.force,
        )
        .await
    } else {
        let all: Vec<Job> = ops::archived_jobs(store, &doc)
            .await?
            .into_iter()
            .chain(doc.jobs.iter().cloned())
            .collect();
        let undone = jobs_to_undo(&all, req)?;
        reset(
            store,
            &doc,
            &repo,
            &ws,
            &undone,
            remote.as_deref(),
            remote_head.as_deref(),
            req.force,
        )
        .await
    }
}

async fn soft(
    store: &Store,
    doc: &Assignment,
    running: bool,
    runner: Option<&str>,
) -> Result<RollbackReport, OpError> {
    if running {
        ops::cancel(store, &doc.id, runner).await?;
    } else {
        let reason = "rolled back by a human: stopped; the branch and worktree are kept";
        store
            .update(&doc.id, |d| {
                chain::record_rollback(d, "", reason, false, now_ms())
            })
            .await
            .map_err(|e| match e {
                wf_store::UpdateError::Refused(c) => OpError::Chain(c),
                wf_store::UpdateError::Store(s) => OpError::Store(s),
            })?;
    }
    Ok(RollbackReport {
        assignment: doc.id.clone(),
        done: "stopped; branch and worktree kept".into(),
        reset_to: None,
        saved_ref: None,
    })
}

/// The jobs `--last N` or `--to JOB` undoes, oldest first: only jobs that changed the branch.
fn jobs_to_undo(all: &[Job], req: &RollbackRequest) -> Result<Vec<Job>, OpError> {
    let changed: Vec<&Job> = all
        .iter()
        .filter(|j| j.commits.as_ref().is_some_and(|c| c.start != c.end))
        .collect();
    let from = match (&req.last, &req.to) {
        (Some(n), _) => {
            let n = *n as usize;
            if n == 0 || n > changed.len() {
                return Err(invalid(format!(
                    "--last {n}: the assignment has {} jobs that changed its branch",
                    changed.len()
                )));
            }
            changed.len() - n
        }
        (None, Some(to)) => {
            let at = all
                .iter()
                .position(|j| j.id == *to || (to.len() >= 4 && j.id.starts_with(to.as_str())))
                .ok_or_else(|| OpError::NotFound(format!("no job {to:?} in the assignment")))?;
            changed
                .iter()
                .position(|j| all.iter().position(|a| a.id == j.id) >= Some(at))
                .ok_or_else(|| invalid(format!("job {to} and the jobs after it changed nothing")))?
        }
        (None, None) => unreachable!("checked by the caller"),
    };
    Ok(changed[from..].iter().map(|j| (*j).clone()).collect())
}

// Long: checks, the saved ref, the reset, the push and the record, in the order that loses
// nothing if any step fails.
#[expect(
    clippy::too_many_arguments,
    reason = "the steps share what rollback gathered"
)]
async fn reset(
    store: &Store,
    doc: &Assignment,
    repo: &workspace::Repo,
    ws: &wf_core::model::Workspace,
    undone: &[Job],
    remote: Option<&str>,
    remote_head: Option<&str>,
    force: bool,
) -> Result<RollbackReport, OpError> {
    let target = undone[0].commits.as_ref().expect("filtered").start.clone();
    let dir = Path::new(&ws.path);
    let head = workspace::head(dir).await.map_err(git_err)?;
    if remote_head.is_some() && !force {
        return Err(invalid(format!(
            "branch {} is on the remote; resetting it rewrites pushed history: pass --force (the old commits stay under refs/wf/{}/)",
            ws.branch, doc.id
        )));
    }
    let saved = format!("refs/wf/{}/rollback-{}", doc.id, now_ms());
    {
        let _lock = workspace::admin_lock(repo).await.map_err(git_err)?;
        git(&repo.top, &["update-ref", &saved, &head])
            .await
            .map_err(git_err)?;
        git(dir, &["reset", "-q", "--hard", &target])
            .await
            .map_err(git_err)?;
        git(dir, &["clean", "-q", "-fd"]).await.map_err(git_err)?;
    }
    if let (Some(r), Some(old)) = (remote, remote_head) {
        git(
            dir,
            &[
                "push",
                "-q",
                &format!("--force-with-lease=refs/heads/{}:{old}", ws.branch),
                r,
                &format!("HEAD:refs/heads/{}", ws.branch),
            ],
        )
        .await
        .map_err(git_err)?;
    }
    let names: Vec<String> = undone
        .iter()
        .map(|j| format!("{} {}", j.job_type, j.id))
        .collect();
    let decision = format!(
        "Rolled back by a human: {} undone; branch {} reset to {} (the old head {} is kept at {saved}).",
        names.join(", "),
        ws.branch,
        short(&target),
        short(&head)
    );
    let reason = format!(
        "rolled back {} jobs by a human; resume with `wf update-assignment {} --status active`",
        undone.len(),
        doc.id
    );
    record(store, doc, &decision, &reason, false).await?;
    Ok(RollbackReport {
        assignment: doc.id.clone(),
        done: decision,
        reset_to: Some(target),
        saved_ref: Some(saved),
    })
}

async fn hard(
    store: &Store,
    config: &Config,
    doc: &Assignment,
    repo: &workspace::Repo,
    ws: &wf_core::model::Workspace,
    remote_head: Option<&str>,
    force: bool,
) -> Result<RollbackReport, OpError> {
    let dir = Path::new(&ws.path);
    let head = workspace::head(dir).await.map_err(git_err)?;
    let merged = matches!(
        crate::git::git_status(
            dir,
            &["merge-base", "--is-ancestor", "HEAD", &ws.base_branch]
        )
        .await,
        Ok((Some(0), _))
    );
    if remote_head != Some(head.as_str()) && !merged && !force {
        return Err(invalid(format!(
            "branch {} has commits that are neither pushed nor merged; pass --force to delete it (every job's commit stays under refs/wf/{}/)",
            ws.branch, doc.id
        )));
    }
    let mut closed = String::new();
    if let Some(pr) = doc.forge.as_ref().and_then(|f| f.pull_request.clone()) {
        let name = &doc.forge.as_ref().expect("checked").repo;
        let client = crate::forge::GitHub::new(&config.forge, name)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        client
            .close_pr(pr.number)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        closed = format!(", pull request {} closed", pr.url);
    }
    let saved = format!("refs/wf/{}/rollback-{}", doc.id, now_ms());
    {
        let _lock = workspace::admin_lock(repo).await.map_err(git_err)?;
        git(&repo.top, &["update-ref", &saved, &head])
            .await
            .map_err(git_err)?;
        let mut remove = vec!["worktree", "remove"];
        if force {
            remove.push("--force");
        }
        remove.push(&ws.path);
        git(&repo.top, &remove).await.map_err(git_err)?;
        git(&repo.top, &["branch", "-q", "-D", &ws.branch])
            .await
            .map_err(git_err)?;
    }
    let decision = format!(
        "Rolled back by a human (hard): worktree and branch {} deleted{closed}; the last head {} is kept at {saved}.",
        ws.branch,
        short(&head)
    );
    record(
        store,
        doc,
        &decision,
        "rolled back by a human (hard): worktree and branch deleted",
        true,
    )
    .await?;
    Ok(RollbackReport {
        assignment: doc.id.clone(),
        done: decision,
        reset_to: None,
        saved_ref: Some(saved),
    })
}

async fn record(
    store: &Store,
    doc: &Assignment,
    decision: &str,
    reason: &str,
    removed: bool,
) -> Result<(), OpError> {
    store
        .update(&doc.id, |d| {
            chain::record_rollback(d, decision, reason, removed, now_ms())
        })
        .await
        .map(drop)
        .map_err(|e| match e {
            wf_store::UpdateError::Refused(c) => OpError::Chain(c),
            wf_store::UpdateError::Store(s) => OpError::Store(s),
        })
}

fn short(sha: &str) -> String {
    sha.chars().take(10).collect()
}
