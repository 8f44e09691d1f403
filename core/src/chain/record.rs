//! Recording the end of an attempt: the fenced outcome, the PM rule, the stall rule.

use super::*;
use crate::model::{
    Assignment, AssignmentStatus, FailureReason, Job, JobStatus, JobType, Millis, Usage,
};

/// How a job's attempt ended, as the runner determined it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success.
    Complete,
    /// Failure.
    Failed(FailureReason),
    /// A transient error: run again at this instant.
    RetryAt(Millis),
    /// Not the job's fault (runner shutting down): back to pending.
    Requeue,
}

/// What the runner reports about one finished attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    /// How it ended.
    pub outcome: Outcome,
    /// A short explanation for failures and pauses.
    pub detail: Option<String>,
    /// The agent's session id.
    pub session_id: Option<String>,
    /// What the attempt spent.
    pub usage: Usage,
    /// Whether a result text was stored for this attempt.
    pub has_result: bool,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// Where the attempt started and ended in the workspace (worktree mode).
    pub commits: Option<crate::model::JobCommits>,
    /// The verification steps run after it.
    pub checks: Vec<crate::model::CheckResult>,
}

/// What recording an attempt did to the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Other jobs of the unit still run under the lease.
    UnitRunning,
    /// The unit ended; nothing else happened (assignment not active, or more work queued).
    UnitEnded,
    /// The unit ended and this PM job was inserted after it.
    PmInserted(String),
    /// The PM decided nothing; this reminder PM job was inserted.
    PmReminderInserted(String),
    /// The PM decided nothing twice; the assignment is now blocked.
    Blocked,
}

/// Records the end of job `job_id`'s attempt under lease `epoch`.
///
/// When this was the last running job of the lease, the lease is released and the PM rule
/// applies. `pm` is the job inserted if one is needed.
pub fn record_attempt(
    doc: &mut Assignment,
    epoch: u64,
    job_id: &str,
    report: &AttemptReport,
    pm: &NewJob,
    now: Millis,
) -> Result<Recorded, ChainError> {
    let idx = running_under(doc, epoch, job_id)?;
    apply_report(&mut doc.jobs[idx], report, now);
    doc.usage.add(&report.usage);
    doc.updated_at = now;
    // A budget that ran out blocks the assignment (the stopped job, or its cost, says which).
    let over = match (&report.outcome, &report.detail) {
        (Outcome::Failed(FailureReason::Budget), Some(detail)) => Some(detail.clone()),
        _ => cost_over_budget(doc),
    };
    if let Some(reason) = over {
        if doc.status == AssignmentStatus::Active {
            block(doc, reason, now);
        }
    }

    let lease = doc.lease.as_mut().expect("ownership checked above");
    lease.job_ids.retain(|j| j != job_id);
    if !lease.job_ids.is_empty() {
        return Ok(Recorded::UnitRunning);
    }
    doc.lease = None;

    Ok(after_unit(doc, idx, pm, now))
}

/// Where a PM reviewing the unit that ends before `after` goes: right after it, unless a job
/// after it has already started (a retried unit earlier in the chain) — then at the end, where
/// the PM can insert its next job after itself.
fn pm_position(doc: &Assignment, after: usize) -> usize {
    if doc.jobs[after..]
        .iter()
        .any(|j| j.status != JobStatus::Pending)
    {
        doc.jobs.len()
    } else {
        after
    }
}

/// The index of job `job_id` if it is running under the lease of `epoch`; else the caller's
/// lease is gone.
fn running_under(doc: &Assignment, epoch: u64, job_id: &str) -> Result<usize, ChainError> {
    let owns = doc
        .lease
        .as_ref()
        .is_some_and(|l| l.epoch == epoch && l.job_ids.iter().any(|j| j == job_id));
    let idx = doc
        .job_index(job_id)
        .filter(|&i| doc.jobs[i].status == JobStatus::Running);
    match (owns, idx) {
        (true, Some(idx)) => Ok(idx),
        _ => Err(ChainError::Fenced(epoch)),
    }
}

/// Writes what the attempt reported into its job.
fn apply_report(job: &mut Job, report: &AttemptReport, now: Millis) {
    job.session_id = report.session_id.clone().or(job.session_id.take());
    job.usage.add(&report.usage);
    job.failure_detail = report.detail.clone();
    job.has_result = report.has_result;
    job.exit_code = report.exit_code;
    job.commits = report.commits.clone().or(job.commits.take());
    job.checks = report.checks.clone();
    // The live counters served while it ran; its usage says what it spent.
    job.progress = None;
    match report.outcome {
        Outcome::Complete => {
            job.status = JobStatus::Complete;
            job.completed_at = Some(now);
        }
        Outcome::Failed(reason) => match task_retries(job, reason) {
            // The task's retry policy runs it again: a pause, not a failure.
            Some(backoff) => {
                job.status = JobStatus::WaitingRetry;
                job.retry_after = Some(now + backoff);
                job.failure_reason = Some(reason);
                let detail = job.failure_detail.take().unwrap_or_default();
                job.failure_detail = Some(format!(
                    "attempt {} failed ({reason}{}{detail}); retried by the task's policy",
                    job.attempt,
                    if detail.is_empty() { "" } else { ": " }
                ));
            }
            None => {
                job.status = JobStatus::Failed;
                job.failure_reason = Some(reason);
                job.completed_at = Some(now);
            }
        },
        Outcome::RetryAt(at) => {
            job.status = JobStatus::WaitingRetry;
            job.retry_after = Some(at);
            job.pauses += 1;
        }
        Outcome::Requeue => {
            job.status = JobStatus::Pending;
            job.started_at = None;
            job.failure_detail = None;
        }
    }
}

/// The PM rule, once the unit of job `idx` has ended and its lease is released: a non-PM unit
/// gets its PM; a PM that left nothing to run is run once more with a reminder; a reminded PM
/// that again decides nothing blocks the assignment.
fn after_unit(doc: &mut Assignment, idx: usize, pm: &NewJob, now: Millis) -> Recorded {
    let unit = unit_range(&doc.jobs, idx);
    if !doc.jobs[unit.clone()]
        .iter()
        .all(|j| j.status.is_finished())
    {
        return Recorded::UnitEnded;
    }
    let finished_pm = doc.jobs[idx].job_type == JobType::Pm;
    if finished_pm {
        doc.pm_rounds += 1;
    }
    if doc.status != AssignmentStatus::Active {
        return Recorded::UnitEnded;
    }
    if !finished_pm {
        if passed_gate(doc, &unit) {
            return Recorded::UnitEnded;
        }
        let at = pm_position(doc, unit.end);
        // A workflow's rules first: a loop's next round goes in after the PM, a failure
        // under `block` or `abort` stops here.
        let (active, _) = after_task_unit(doc, unit.clone(), at, now);
        if !active {
            return Recorded::UnitEnded;
        }
        let reviews = doc.jobs[unit.clone()]
            .iter()
            .map(|j| j.id.clone())
            .collect();
        let job = pm_record(doc, pm, reviews, now);
        doc.jobs.insert(at, job);
        return Recorded::PmInserted(pm.id.clone());
    }
    // The PM decided if it left something to run (or changed the status, handled above).
    if doc.jobs.iter().any(|j| !j.status.is_finished()) {
        return Recorded::UnitEnded;
    }
    let this_pm = &doc.jobs[idx];
    if this_pm.pm_reminder {
        doc.status = AssignmentStatus::Blocked;
        doc.blocked_reason = Some(NO_DECISION_REASON.to_string());
        return Recorded::Blocked;
    }
    let reviews = this_pm.reviews.clone();
    let mut job = pm_record(doc, pm, reviews, now);
    job.pm_reminder = true;
    let at = pm_position(doc, idx + 1);
    doc.jobs.insert(at, job);
    Recorded::PmReminderInserted(pm.id.clone())
}

/// The reason written when even [`full_document_reason`] does not fit.
pub const FULL_DOCUMENT_SHORT_REASON: &str =
    "the assignment's document is full (maxDocumentBytes); make room, then resume it; `wf doctor` shows the sizes";

/// Why an assignment whose document is full is blocked; `detail` is the store's refusal.
pub fn full_document_reason(detail: &str) -> String {
    format!(
        "the assignment's document is full: {detail}; make room (shorter artifacts or decisions \
         with `wf update-assignment`, or a new assignment), then resume it"
    )
}

/// Records the end of job `job_id`'s attempt when the full record does not fit in the store:
/// its outcome and usage (without the failure detail), and the assignment blocked with
/// `reason`, with no PM job inserted — so the paid job is not run again in a loop. The lease is
/// released when this was its last running job.
pub fn record_when_full(
    doc: &mut Assignment,
    epoch: u64,
    job_id: &str,
    report: &AttemptReport,
    reason: &str,
    now: Millis,
) -> Result<(), ChainError> {
    let idx = running_under(doc, epoch, job_id)?;
    apply_report(&mut doc.jobs[idx], report, now);
    doc.jobs[idx].failure_detail = None;
    doc.usage.add(&report.usage);
    doc.updated_at = now;
    let lease = doc.lease.as_mut().expect("ownership checked above");
    lease.job_ids.retain(|j| j != job_id);
    if lease.job_ids.is_empty() {
        doc.lease = None;
    }
    block(doc, reason.to_string(), now);
    Ok(())
}

/// Refuses unless the lease of `doc` is the one handed out with `epoch`.
fn holds(doc: &Assignment, epoch: u64) -> Result<(), ChainError> {
    match &doc.lease {
        Some(l) if l.epoch == epoch => Ok(()),
        _ => Err(ChainError::Fenced(epoch)),
    }
}

/// Blocks the assignment whose unit runs under `epoch` with `reason`, releasing the lease and
/// leaving the unit's jobs as they are, to run again when a human resumes it (the runner could
/// not prepare or keep the unit's workspace, or record its outcome).
pub fn block_unit(
    doc: &mut Assignment,
    epoch: u64,
    reason: &str,
    now: Millis,
) -> Result<(), ChainError> {
    holds(doc, epoch)?;
    doc.lease = None;
    block(doc, reason.to_string(), now);
    Ok(())
}

/// Moves the assignment's workspace to `workspace` (the same branch, checked out on the
/// machine of the runner holding `epoch`, which fetched it from the remote).
pub fn move_workspace(
    doc: &mut Assignment,
    epoch: u64,
    workspace: &crate::model::Workspace,
    now: Millis,
) -> Result<(), ChainError> {
    holds(doc, epoch)?;
    match &doc.workspace {
        Some(old) if old.branch == workspace.branch => {}
        _ => {
            return Err(ChainError::Invalid(format!(
                "assignment {} has no workspace on branch {}",
                doc.id, workspace.branch
            )))
        }
    }
    doc.workspace = Some(workspace.clone());
    doc.updated_at = now;
    Ok(())
}

/// After a human's rollback: the assignment is stopped (blocked, with `reason`, unless it is
/// complete), `decision` is appended to its decisions for the next PM, and, when the worktree
/// is gone, so is its record. Refuses while a unit runs under a live lease.
pub fn record_rollback(
    doc: &mut Assignment,
    decision: &str,
    reason: &str,
    workspace_removed: bool,
    now: Millis,
) -> Result<(), ChainError> {
    if doc.lease.as_ref().is_some_and(|l| l.expires_at > now) {
        return Err(ChainError::Invalid(format!(
            "a job of assignment {} is running; stop it first with `wf rollback {}` (no flags) or `wf cancel`",
            doc.id, doc.id
        )));
    }
    if !decision.is_empty() {
        if !doc.decisions.is_empty() && !doc.decisions.ends_with('\n') {
            doc.decisions.push('\n');
        }
        doc.decisions.push_str(decision);
        super::update::fold_memory(&mut doc.decisions);
    }
    if doc.status != AssignmentStatus::Complete {
        block(doc, reason.to_string(), now);
    }
    if workspace_removed {
        doc.workspace = None;
    }
    doc.updated_at = now;
    Ok(())
}

/// Records the workspace the runner holding `epoch` created for the assignment. Refuses when
/// the lease moved on, or a workspace is already recorded.
pub fn attach_workspace(
    doc: &mut Assignment,
    epoch: u64,
    workspace: &crate::model::Workspace,
    now: Millis,
) -> Result<(), ChainError> {
    holds(doc, epoch)?;
    if let Some(existing) = &doc.workspace {
        return Err(ChainError::Invalid(format!(
            "assignment {} already has a workspace (branch {})",
            doc.id, existing.branch
        )));
    }
    doc.workspace = Some(workspace.clone());
    doc.updated_at = now;
    Ok(())
}

/// Blocks an assignment whose next claim does not fit in the store, with `reason`.
pub fn block_unclaimable(doc: &mut Assignment, reason: &str, now: Millis) -> Result<(), Unchanged> {
    if !matches!(
        doc.status,
        AssignmentStatus::Active | AssignmentStatus::Pending
    ) {
        return Err(Unchanged);
    }
    block(doc, reason.to_string(), now);
    doc.updated_at = now;
    Ok(())
}
