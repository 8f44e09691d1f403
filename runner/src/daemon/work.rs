//! A unit's workspace and its verification: where the agents run, what the runner commits
//! after each job, and the checks it runs before the PM sees the work.
//!
//! In `worktree` mode the unit runs in its assignment's worktree, created (and set up) at the
//! first claim and recorded in the document; leftovers of an attempt whose runner died are
//! committed before the next one starts. After each attempt — complete, failed, cancelled,
//! timed out or shut down; not when the lease was lost, as the new owner may be working there
//! — the runner commits what the agent left, keeps `refs/wf/<aid>/<job>`, and pushes when
//! the branch has a remote. Checks run in the same directory, through the process layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::process::{self, Flow, Limits, Line};
use crate::workspace::{self, Repo};
use wf_core::chain;
use wf_core::clock::now_ms;
use wf_core::config::{CheckConfig, WorkspaceMode};
use wf_core::harness::{CommandSpec, Ended};
use wf_core::model::{Assignment, CheckResult, Job, JobCommits, Workspace};

/// Where a unit's agents run.
pub(super) struct Place {
    /// Their working directory.
    pub(super) dir: PathBuf,
    /// The worktree, in `worktree` mode.
    pub(super) worktree: Option<(Repo, Workspace)>,
}

impl Place {
    /// The commit checked out, in `worktree` mode.
    pub(super) async fn head(&self) -> Option<String> {
        match &self.worktree {
            Some(_) => workspace::head(&self.dir).await.ok(),
            None => None,
        }
    }
}

/// The workspace of `doc`'s unit (claimed under `epoch`): created, set up and recorded at the
/// assignment's first claim; re-added from its branch if its directory is gone; leftovers of
/// an interrupted attempt committed. The error is the reason to block the assignment.
pub(super) async fn prepare(ctx: &Ctx, doc: &Assignment, epoch: u64) -> Result<Place, String> {
    let in_place = Place {
        dir: ctx.config.workdir.clone(),
        worktree: None,
    };
    if ctx.workspace_mode == WorkspaceMode::InPlace {
        return Ok(in_place);
    }
    let Some(repo) = ctx.repo.clone() else {
        return Err(format!(
            "workspace.mode is worktree but {} is not in a git repository",
            ctx.config.workdir.display()
        ));
    };
    let ws = match &doc.workspace {
        Some(ws) if is_here(ctx, ws) => ws.clone(),
        Some(ws) => adopt(ctx, &repo, doc, epoch, ws).await?,
        None => create(ctx, &repo, doc, epoch).await?,
    };
    let dir = workspace::ensure_present(&repo, &ws)
        .await
        .map_err(|e| format!("cannot re-create the worktree {}: {e}", ws.path))?;
    // An attempt whose runner died left its work uncommitted: keep it before anything runs.
    match workspace::commit_all(&repo, &dir, &leftovers_message(doc)).await {
        Ok(Some(commit)) => {
            tracing::info!(assignment = %doc.id, %commit, "committed the leftovers of an interrupted attempt")
        }
        Ok(None) => {}
        Err(e) => {
            return Err(format!(
                "cannot commit what an interrupted attempt left in {}: {e}; the worktree is kept",
                ws.path
            ))
        }
    }
    Ok(Place {
        dir,
        worktree: Some((repo, ws)),
    })
}

/// Whether `ws` is a worktree of this runner's repository.
fn is_here(ctx: &Ctx, ws: &Workspace) -> bool {
    ws.host == ctx.host && Path::new(&ws.path).starts_with(&ctx.config.workspace.root)
}

/// Whether this runner can run `doc`'s next unit: its workspace is here, or it can fetch the
/// branch from the remote. Without a remote an assignment stays where its worktree is.
pub(super) fn runs_here(ctx: &Ctx, doc: &Assignment) -> bool {
    match &doc.workspace {
        Some(ws) if ctx.workspace_mode == WorkspaceMode::Worktree => {
            is_here(ctx, ws) || ctx.remote.is_some()
        }
        _ => true,
    }
}

/// Continues on this machine an assignment whose worktree is elsewhere: fetches its branch
/// (pushed after every job there) and records the new worktree.
async fn adopt(
    ctx: &Ctx,
    repo: &Repo,
    doc: &Assignment,
    epoch: u64,
    ws: &Workspace,
) -> Result<Workspace, String> {
    let Some(remote) = &ctx.remote else {
        return Err(format!(
            "the assignment's worktree is {} on {}; this repository has no remote to fetch its branch {} from",
            ws.path, ws.host, ws.branch
        ));
    };
    let path = workspace::adopt(&ctx.config.workspace, repo, &doc.id, remote, &ws.branch)
        .await
        .map_err(|e| format!("cannot fetch branch {} from {remote}: {e}", ws.branch))?;
    let moved = Workspace {
        path: path.display().to_string(),
        host: ctx.host.clone(),
        ..ws.clone()
    };
    ctx.store
        .update(&doc.id, |d| {
            chain::move_workspace(d, epoch, &moved, now_ms())
        })
        .await
        .map_err(|e| format!("cannot record the worktree {}: {e}", moved.path))?;
    tracing::info!(assignment = %doc.id, branch = %ws.branch, from = %ws.host, path = %moved.path, "continuing the assignment's branch here");
    Ok(moved)
}

fn leftovers_message(doc: &Assignment) -> String {
    let running: Vec<String> = doc
        .lease
        .iter()
        .flat_map(|l| l.job_ids.iter().cloned())
        .collect();
    format!(
        "wf: work left by an interrupted attempt\n\nThe runner of the previous attempt stopped before committing it.\n\nWf-Assignment: {}\nWf-Job: {}\n",
        doc.id,
        running.join(", ")
    )
}

async fn create(ctx: &Ctx, repo: &Repo, doc: &Assignment, epoch: u64) -> Result<Workspace, String> {
    // An issue's work goes on fix/issue-<n> or feature/issue-<n>.
    let branch = doc
        .forge
        .as_ref()
        .and_then(|f| f.issue.as_ref())
        .map(wf_core::forge::branch_for_issue);
    let ws = workspace::create(
        &ctx.config.workspace,
        repo,
        &doc.id,
        branch.as_deref(),
        &ctx.host,
    )
    .await
    .map_err(|e| format!("cannot create the assignment's worktree: {e}"))?;
    tracing::info!(assignment = %doc.id, branch = %ws.branch, path = %ws.path, base = %ws.base_branch, base_commit = %ws.base_commit, "created the worktree");
    for command in &ctx.config.workspace.setup {
        let check = CheckConfig {
            name: "setup".into(),
            command: command.clone(),
            timeout: ctx.config.timeout,
            required: true,
        };
        let env = setup_env(ctx, &ws);
        let (result, _) =
            run_check(&check, Path::new(&ws.path), &env, &CancellationToken::new()).await;
        if !result.passed {
            return Err(format!(
                "workspace setup command {command:?} failed in {} ({}): {}",
                ws.path,
                result.summary(),
                result.output_tail.lines().last().unwrap_or("")
            ));
        }
    }
    ctx.store
        .update(&doc.id, |d| {
            chain::attach_workspace(d, epoch, &ws, now_ms())
        })
        .await
        .map_err(|e| format!("cannot record the worktree {}: {e}", ws.path))?;
    Ok(ws)
}

fn setup_env(ctx: &Ctx, ws: &Workspace) -> BTreeMap<String, String> {
    [
        ("WF_MAIN_CHECKOUT", ctx.config.root.display().to_string()),
        ("WF_WORKTREE", ws.path.clone()),
        ("WF_BRANCH", ws.branch.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Commits what `job`'s attempt left in the worktree, keeps its ref and pushes the branch
/// when there is a remote. Returns the job's end commit.
pub(super) async fn commit_job(
    ctx: &Ctx,
    place: &Place,
    doc: &Assignment,
    job: &Job,
    outcome: &str,
) -> Result<Option<String>, String> {
    let Some((repo, ws)) = &place.worktree else {
        return Ok(None);
    };
    let message = format!(
        "wf: {} job {} ({outcome})\n\nWhat the agent of attempt {} left in the worktree.\n\nWf-Assignment: {}\nWf-Job: {}\n",
        job.job_type, job.id, job.attempt, doc.id, job.id
    );
    let committed = workspace::commit_all(repo, &place.dir, &message)
        .await
        .map_err(|e| {
            format!(
                "cannot commit job {}'s work in {}: {e}; the worktree is kept",
                job.id, ws.path
            )
        })?;
    let end = match committed {
        Some(c) => c,
        None => workspace::head(&place.dir)
            .await
            .map_err(|e| format!("cannot read the worktree's commit in {}: {e}", ws.path))?,
    };
    if let Err(e) = workspace::keep_ref(repo, &doc.id, &job.id, &end).await {
        tracing::warn!(job = %job.id, %e, "cannot keep the job's ref");
    }
    let push = ctx.config.workspace.push;
    if push != Some(false) {
        if let Some(remote) = &ctx.remote {
            match workspace::push(&place.dir, remote, &ws.branch).await {
                Ok(()) => tracing::info!(branch = %ws.branch, %remote, "pushed"),
                Err(e) => {
                    tracing::warn!(branch = %ws.branch, %e, "cannot push the branch; it stays on this machine")
                }
            }
        }
    }
    Ok(Some(end))
}

/// The job's start and end commits, when both are known.
pub(super) fn commits(start: Option<String>, end: Option<String>) -> Option<JobCommits> {
    Some(JobCommits {
        start: start?,
        end: end?,
    })
}

/// The checks to run in `dir`: the configured ones, else those its manifests imply.
pub(super) fn checks_for(ctx: &Ctx, dir: &Path) -> Vec<CheckConfig> {
    match &ctx.config.verify {
        Some(list) => list.clone(),
        None => wf_core::verify::detect_checks(|p| std::fs::read_to_string(dir.join(p)).ok()),
    }
}

/// Runs every check in `dir`, in order, each to its end (a later one may still say something
/// useful when an earlier one failed); stops early only when `stop` fires.
pub(super) async fn verify(
    checks: &[CheckConfig],
    dir: &Path,
    commit: Option<&str>,
    log_dir: &Path,
    stop: &CancellationToken,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for check in checks {
        if stop.is_cancelled() {
            break;
        }
        let (mut result, output) = run_check(check, dir, &BTreeMap::new(), stop).await;
        result.commit = commit.map(str::to_string);
        let log = log_dir.join(format!("check-{}.log", sanitize(&check.name)));
        if let Err(e) = std::fs::write(&log, output) {
            tracing::debug!(%e, "cannot write the check log");
        }
        tracing::info!(check = %check.name, passed = result.passed, exit = ?result.exit_code, counts = ?result.counts, "verification step finished");
        out.push(result);
    }
    out
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Most output kept on the job per check.
const TAIL_BYTES: usize = 1500;
/// Most output scanned for test counts.
const SCAN_BYTES: usize = 4 * 1024 * 1024;

/// Runs one check by `sh -c` in `dir` through the process layer; the verdict is its exit code.
/// Returns the result and the output (its first 4 MiB).
async fn run_check(
    check: &CheckConfig,
    dir: &Path,
    env: &BTreeMap<String, String>,
    stop: &CancellationToken,
) -> (CheckResult, String) {
    let spec = CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), format!("exec 2>&1; {}", check.command)],
        env: BTreeMap::new(),
        cwd: dir.to_path_buf(),
        stdin: None,
    };
    let limits = Limits::new(check.timeout, check.timeout, Duration::from_secs(5));
    let started = Instant::now();
    let mut output = String::new();
    let exit = process::run(
        &spec,
        env,
        &limits,
        stop,
        |_| {},
        |line| {
            if let Line::Text(t) = line {
                if output.len() < SCAN_BYTES {
                    output.push_str(t);
                    output.push('\n');
                }
            }
            Flow::Continue
        },
    )
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (exit_code, timed_out, tail) = match exit {
        Ok(exit) => {
            let code = match exit.ended {
                Ended::Exited { code, .. } => code,
                _ => None,
            };
            let timed_out = matches!(exit.ended, Ended::TimedOut | Ended::IdleTimedOut);
            (code, timed_out, String::new())
        }
        Err(e) => (None, false, e.to_string()),
    };
    let counts = wf_core::verify::parse_counts(&output);
    let mut output_tail = tail_of(&output, TAIL_BYTES);
    output_tail.push_str(&tail);
    let result = CheckResult {
        name: check.name.clone(),
        command: check.command.clone(),
        required: check.required,
        passed: exit_code == Some(0),
        exit_code,
        timed_out,
        counts,
        duration_ms,
        output_tail,
        commit: None,
    };
    (result, output)
}

/// The last `n` bytes of `text`, starting at a line.
fn tail_of(text: &str, n: usize) -> String {
    if text.len() <= n {
        return text.to_string();
    }
    let mut cut = text.len() - n;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let rest = &text[cut..];
    match rest.find('\n') {
        Some(i) => rest[i + 1..].to_string(),
        None => rest.to_string(),
    }
}

/// Why required checks failed, if any did.
pub(super) fn failed_required(checks: &[CheckResult]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.required && !c.passed)
        .map(CheckResult::summary)
        .collect();
    (!failed.is_empty()).then(|| format!("verification failed: {}", failed.join("; ")))
}

/// After a unit was recorded: a complete assignment with a branch gets its pull request (when
/// it came from an issue or `forge.repo` is set); one from an issue gets its progress comment
/// brought up to date. Returns the document when this wrote it.
pub(super) async fn after_unit(ctx: &Ctx, doc: &Assignment) -> Option<Assignment> {
    doc.workspace.as_ref()?;
    let wants_pr = (doc.forge.is_some() || ctx.config.forge.repo.is_some())
        && !doc.workflow.as_ref().is_some_and(|w| w.no_pull_request);
    let has_pr = doc.forge.as_ref().is_some_and(|f| f.pull_request.is_some());
    if doc.status == wf_core::model::AssignmentStatus::Complete && wants_pr && !has_pr {
        match crate::forge::deliver(&ctx.config, &ctx.store, &doc.id).await {
            Ok(pr) => {
                tracing::info!(assignment = %doc.id, url = %pr.url, draft = pr.draft, "pull request opened")
            }
            Err(e) => {
                tracing::warn!(assignment = %doc.id, %e, "cannot open the pull request; `wf pr` tries again")
            }
        }
        return ctx.store.get(&doc.id).await.ok().flatten();
    }
    let last = doc
        .jobs
        .iter()
        .rev()
        .find(|j| j.status.is_finished())
        .map(|j| format!("{} job `{}` {}", j.job_type, j.id, j.status));
    if let Some(event) = last {
        crate::forge::progress(&ctx.config, &ctx.store, doc, &event, false).await;
    }
    None
}

/// The job types that change files: in a parallel group each gets a worktree of its own.
fn writes(job_type: wf_core::model::JobType) -> bool {
    matches!(
        job_type,
        wf_core::model::JobType::Implement | wf_core::model::JobType::Document
    )
}

/// The places of a unit's jobs: when a parallel group has two or more jobs that write
/// (implement, document), each of them gets a worktree of its own on a sub-branch of the
/// assignment's branch; every other job runs in the assignment's worktree.
pub(super) async fn group_places(
    ctx: &Ctx,
    doc: &Assignment,
    main: &Place,
    job_ids: &[String],
) -> Result<Vec<(String, Place)>, String> {
    let Some((repo, ws)) = &main.worktree else {
        return Ok(Vec::new());
    };
    let writers: Vec<&Job> = job_ids
        .iter()
        .filter_map(|id| doc.job(id))
        .filter(|j| writes(j.job_type))
        .collect();
    if writers.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for job in writers {
        let sub = workspace::create_sub(&ctx.config.workspace, repo, ws, &job.id)
            .await
            .map_err(|e| format!("cannot create the worktree of job {}: {e}", job.id))?;
        out.push((
            job.id.clone(),
            Place {
                dir: PathBuf::from(&sub.path),
                worktree: Some((repo.clone(), sub)),
            },
        ));
    }
    Ok(out)
}

/// Merges the group's sub-branches into the assignment's branch, in group order, once every
/// job of the group has committed. A conflict leaves that job's branch unmerged and is
/// returned (with the conflicting paths) for the PM; merged sub-worktrees are removed.
pub(super) async fn merge_group(
    ctx: &Ctx,
    main: &Place,
    doc: &Assignment,
    subs: &[(String, Place)],
) -> Vec<String> {
    let Some((repo, ws)) = &main.worktree else {
        return Vec::new();
    };
    let mut conflicts = Vec::new();
    for (job_id, place) in subs {
        let Some((_, sub)) = &place.worktree else {
            continue;
        };
        let job_type = doc.job(job_id).map_or("", |j| j.job_type.as_str());
        let message = format!(
            "wf: merge {job_type} job {job_id}\n\nWf-Assignment: {}\nWf-Job: {job_id}\n",
            doc.id
        );
        match workspace::merge(repo, &main.dir, &sub.branch, &message).await {
            Ok(Ok(())) => {
                if let Err(e) = workspace::remove(repo, &sub.path).await {
                    tracing::warn!(path = %sub.path, %e, "cannot remove a merged job's worktree");
                }
            }
            Ok(Err(paths)) => conflicts.push(format!(
                "Merging {job_type} job {job_id} into {} conflicts in {}; its work is on branch {} (worktree {}), not merged.",
                ws.branch,
                paths.join(", "),
                sub.branch,
                sub.path
            )),
            Err(e) => conflicts.push(format!(
                "Merging {job_type} job {job_id} into {} failed: {e}; its work is on branch {}.",
                ws.branch, sub.branch
            )),
        }
    }
    if let Some(remote) = &ctx.remote {
        if ctx.config.workspace.push != Some(false) {
            if let Err(e) = workspace::push(&main.dir, remote, &ws.branch).await {
                tracing::warn!(branch = %ws.branch, %e, "cannot push the merged branch");
            }
        }
    }
    conflicts
}

/// Says on the assignment's issue (when it has one) that its unit started.
pub(super) async fn unit_started(ctx: &Ctx, doc: &Assignment, job_ids: &[String]) {
    if doc.forge.as_ref().is_none_or(|f| f.issue.is_none()) {
        return;
    }
    let started: Vec<String> = job_ids
        .iter()
        .filter_map(|id| doc.job(id))
        .map(|j| format!("{} job `{}`", j.job_type, j.id))
        .collect();
    let event = format!("{} started", started.join(", "));
    crate::forge::progress(&ctx.config, &ctx.store, doc, &event, false).await;
}
