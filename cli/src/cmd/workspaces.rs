//! `wf workspaces` and `wf gc`: the assignments' worktrees on this machine, and removing the
//! finished ones that hold nothing that is not also elsewhere.

use std::collections::HashMap;

use super::*;
use crate::args::{GcArgs, PrArgs, RollbackArgs, WorkspacesArgs};
use wf_core::config::Config;
use wf_runner::workspace::{self, Repo, WorktreeState};

async fn repo_and_docs(
    backend: &mut Backend,
    config: &Config,
) -> Result<(Repo, HashMap<String, Assignment>)> {
    let repo = workspace::find_repo(&config.workdir).await.ok_or_else(|| {
        Failure::usage(format!(
            "{} is not in a git repository: there are no worktrees",
            config.workdir.display()
        ))
    })?;
    let docs: Vec<Assignment> = call(
        backend,
        api::ListAssignments {
            status: None,
            open: false,
        },
    )
    .await?;
    Ok((repo, docs.into_iter().map(|d| (d.id.clone(), d)).collect()))
}

async fn states(
    config: &Config,
    repo: &Repo,
    docs: &HashMap<String, Assignment>,
) -> Result<Vec<WorktreeState>> {
    workspace::worktrees(&config.workspace, repo, |aid| {
        docs.get(aid)
            .and_then(|d| d.workspace.as_ref())
            .map(|w| w.base_branch.clone())
    })
    .await
    .map_err(|e| Failure {
        code: crate::exit::ERROR,
        message: e.to_string(),
    })
}

pub(crate) async fn list(
    backend: &mut Backend,
    config: &Config,
    args: WorkspacesArgs,
) -> Result<()> {
    let (repo, docs) = repo_and_docs(backend, config).await?;
    let rows = states(config, &repo, &docs).await?;
    if args.json.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        outln!("no worktrees under {}", config.workspace.root.display());
        return Ok(());
    }
    let table = rows
        .iter()
        .map(|w| {
            let status = docs
                .get(&w.assignment)
                .map_or("(no assignment)".to_string(), |d| d.status.to_string());
            vec![
                w.assignment.clone(),
                status,
                w.branch.clone().unwrap_or_else(|| "(detached)".into()),
                state_text(w),
                output::bytes(w.disk_bytes),
                w.path.clone(),
            ]
        })
        .collect();
    outln!(
        "{}",
        output::plain_table(
            &["ASSIGNMENT", "STATUS", "BRANCH", "STATE", "DISK", "PATH"],
            table
        )
    );
    Ok(())
}

fn state_text(w: &WorktreeState) -> String {
    let mut parts = Vec::new();
    if w.dirty > 0 {
        parts.push(format!("{} uncommitted", w.dirty));
    }
    if let Some(n) = w.ahead {
        parts.push(format!("{n} ahead"));
    }
    parts.push(
        match (w.pushed, w.merged) {
            (_, true) => "merged",
            (true, false) => "pushed",
            (false, false) => "unpushed",
        }
        .to_string(),
    );
    parts.join(", ")
}

/// What `wf gc` did with one worktree.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GcEntry {
    assignment: String,
    path: String,
    removed: bool,
    reason: String,
}

pub(crate) async fn gc(backend: &mut Backend, config: &Config, args: GcArgs) -> Result<()> {
    let (repo, docs) = repo_and_docs(backend, config).await?;
    let mut entries = Vec::new();
    for w in states(config, &repo, &docs).await? {
        let verdict = match docs.get(&w.assignment) {
            Some(d) if d.status != AssignmentStatus::Complete => {
                Err(format!("its assignment is {}", d.status))
            }
            Some(d) if d.lease.is_some() => Err("a job of its assignment is running".to_string()),
            _ => w.safe_to_remove(),
        };
        let (removed, reason) = match verdict {
            Err(why) => (false, format!("kept: {why}")),
            Ok(()) if args.dry_run => (false, "would be removed".to_string()),
            Ok(()) => match workspace::remove(&repo, &w.path).await {
                Ok(()) => (true, "removed (its branch stays)".to_string()),
                Err(e) => (false, format!("kept: {e}")),
            },
        };
        entries.push(GcEntry {
            assignment: w.assignment,
            path: w.path,
            removed,
            reason,
        });
    }
    if args.json.json {
        return print_json(&entries);
    }
    if entries.is_empty() {
        outln!("no worktrees under {}", config.workspace.root.display());
    }
    for e in &entries {
        outln!("{}  {}  {}", e.assignment, e.reason, e.path);
    }
    Ok(())
}

pub(crate) async fn pr(backend: &mut Backend, _config: &Config, args: PrArgs) -> Result<()> {
    let assignment = assignment_arg(args.assignment.as_ref())?;
    let pr = call(backend, api::OpenPullRequest { assignment }).await?;
    if args.json.json {
        return print_json(&pr);
    }
    outln!(
        "{}{}",
        pr.url,
        if pr.draft {
            " (draft: a required check failed)"
        } else {
            ""
        }
    );
    Ok(())
}

pub(crate) async fn rollback(backend: &mut Backend, args: RollbackArgs) -> Result<()> {
    let req = wf_runner::rollback::RollbackRequest {
        assignment: assignment_arg(args.assignment.as_ref())?,
        last: args.last,
        to: args.to,
        hard: args.hard,
        force: args.force,
    };
    let report = call(backend, req).await?;
    if args.json.json {
        return print_json(&report);
    }
    outln!("{}: {}", report.assignment, report.done);
    Ok(())
}
