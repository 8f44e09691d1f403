//! Claiming a unit under a lease, renewing it, and releasing dead leases.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::model::{
    Assignment, AssignmentStatus, FailureReason, Job, JobStatus, JobType, Lease, Millis, Usage,
};

/// What attempts that were abandoned (their runner died before recording them) spent, as read
/// from their transcripts, by job id and attempt number. The transition that ends such an
/// attempt — a claim of its job, or settling its dead lease — adds it to the job and the
/// assignment, once: the attempt is then over, so no later transition finds it again.
pub type Recovered = BTreeMap<(String, u32), Usage>;

/// Adds what the abandoned attempt of `doc.jobs[idx]` spent, if it is known.
fn recover_usage(doc: &mut Assignment, idx: usize, recovered: &Recovered) {
    let job = &mut doc.jobs[idx];
    if job.status != JobStatus::Running {
        return;
    }
    if let Some(usage) = recovered.get(&(job.id.clone(), job.attempt)) {
        job.usage.add(usage);
        doc.usage.add(usage);
    }
}

/// Indices of the jobs of `ids`.
fn indices(doc: &Assignment, ids: &[String]) -> Vec<usize> {
    (0..doc.jobs.len())
        .filter(|&i| ids.contains(&doc.jobs[i].id))
        .collect()
}

/// A successful claim: the jobs to run and the fencing epoch that owns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The fencing token.
    pub epoch: u64,
    /// The jobs to start.
    pub job_ids: Vec<String>,
}

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The jobs are this runner's to run.
    Run(Claim),
    /// The unit must not start — a budget is spent, a human gate waits, a task's dependency
    /// failed — so the assignment was blocked instead, with this reason.
    Blocked(String),
}

/// Claims the ready jobs of the current unit for runner `view.me` — or, when they must not
/// start (a budget, a human gate, a failed dependency), blocks the assignment instead. `None`: nothing to claim. Jobs whose
/// earlier attempt was abandoned get what it spent from `recovered`.
pub fn claim(
    doc: &mut Assignment,
    view: &LeaseView<'_>,
    host: &str,
    lease_ms: u64,
    recovered: &Recovered,
) -> Option<Claimed> {
    finish_decided_pms(doc, view, recovered);
    let Readiness::Ready(job_ids) = readiness(doc, view) else {
        return None;
    };
    let unit: Vec<&Job> = doc
        .jobs
        .iter()
        .filter(|j| job_ids.contains(&j.id))
        .collect();
    if let Some(reason) = stop_before(doc, &unit).or_else(|| over_budget(doc, &unit, view.now)) {
        block(doc, reason.clone(), view.now);
        return Some(Claimed::Blocked(reason));
    }
    doc.epoch += 1;
    for idx in indices(doc, &job_ids) {
        recover_usage(doc, idx, recovered);
        let job = &mut doc.jobs[idx];
        job.status = JobStatus::Running;
        job.attempt += 1;
        job.started_at = Some(view.now);
        job.progress = None;
        job.completed_at = None;
        job.exit_code = None;
        job.retry_after = None;
        job.failure_reason = None;
        job.failure_detail = None;
    }
    doc.status = AssignmentStatus::Active;
    doc.started_at.get_or_insert(view.now);
    doc.lease = Some(Lease {
        job_ids: job_ids.clone(),
        runner_id: view.me.to_string(),
        host: host.to_string(),
        epoch: doc.epoch,
        expires_at: view.now + lease_ms,
    });
    doc.updated_at = view.now;
    Some(Claimed::Run(Claim {
        epoch: doc.epoch,
        job_ids,
    }))
}

/// Blocks the assignment with `reason` (cut to a quarter of [`MAX_REASON`]).
pub(super) fn block(doc: &mut Assignment, reason: String, now: Millis) {
    doc.status = AssignmentStatus::Blocked;
    doc.blocked_reason = Some(reason.chars().take(MAX_REASON / 4).collect());
    doc.updated_at = now;
}

/// A PM whose runner died after it decided (it inserted jobs) must not run again: that would
/// be the same job twice, deciding twice. Such an orphaned PM ends complete.
fn finish_decided_pms(doc: &mut Assignment, view: &LeaseView<'_>, recovered: &Recovered) {
    if doc.lease.as_ref().is_some_and(|l| view.is_live(l)) {
        return;
    }
    let decided: Vec<String> = doc
        .jobs
        .iter()
        .filter(|j| j.job_type == JobType::Pm && j.status == JobStatus::Running)
        .filter(|pm| {
            doc.jobs
                .iter()
                .any(|j| j.inserted_by.as_deref() == Some(pm.id.as_str()))
        })
        .map(|pm| pm.id.clone())
        .collect();
    for idx in indices(doc, &decided) {
        recover_usage(doc, idx, recovered);
        let pm = &mut doc.jobs[idx];
        let id = pm.id.clone();
        pm.status = JobStatus::Complete;
        pm.completed_at = Some(view.now);
        pm.failure_detail =
            Some("its runner stopped after it decided; no result was recorded".into());
        doc.pm_rounds += 1;
        if doc.lease.as_ref().is_some_and(|l| l.job_ids.contains(&id)) {
            doc.lease = None;
        }
    }
}

/// Releases a dead lease of an assignment that is not active (blocked or completed while its
/// runner died). On a completed assignment nothing runs again: a PM job that was running had
/// done its work (it completed the assignment) and ends complete, other jobs end cancelled. On a
/// blocked one, jobs a human cancelled end cancelled and the others go back to pending, to run
/// when the assignment is resumed. Each such attempt gets what it spent from `recovered`.
pub fn settle_dead_lease(
    doc: &mut Assignment,
    view: &LeaseView<'_>,
    recovered: &Recovered,
) -> Result<(), Unchanged> {
    let dead = doc.lease.as_ref().is_some_and(|l| !view.is_live(l));
    if !dead
        || matches!(
            doc.status,
            AssignmentStatus::Active | AssignmentStatus::Pending
        )
    {
        return Err(Unchanged);
    }
    let lease = doc.lease.take().expect("checked");
    let complete = doc.status == AssignmentStatus::Complete;
    for idx in indices(doc, &lease.job_ids) {
        if doc.jobs[idx].status != JobStatus::Running {
            continue;
        }
        recover_usage(doc, idx, recovered);
        let job = &mut doc.jobs[idx];
        let (status, reason, detail) = match (complete, job.job_type, job.cancel_requested) {
            (true, JobType::Pm, _) => (
                JobStatus::Complete,
                None,
                "its runner stopped after the assignment was completed; no result was recorded",
            ),
            (true, _, _) => (
                JobStatus::Failed,
                Some(FailureReason::Cancelled),
                "stopped: the assignment was completed while it ran",
            ),
            (false, _, true) => (
                JobStatus::Failed,
                Some(FailureReason::Cancelled),
                "cancelled by a human",
            ),
            (false, _, false) => {
                job.status = JobStatus::Pending;
                continue;
            }
        };
        job.status = status;
        job.failure_reason = reason;
        job.failure_detail = Some(detail.into());
        job.completed_at = Some(view.now);
    }
    doc.updated_at = view.now;
    Ok(())
}

/// Extends the lease held with `epoch`. Fails when the lease moved on (self-fencing).
pub fn renew(
    doc: &mut Assignment,
    epoch: u64,
    now: Millis,
    lease_ms: u64,
) -> Result<(), ChainError> {
    match &mut doc.lease {
        Some(lease) if lease.epoch == epoch => {
            lease.expires_at = now + lease_ms;
            Ok(())
        }
        _ => Err(ChainError::Fenced(epoch)),
    }
}

/// Stores the live counters of a running job, for the holder of the lease with `epoch` only.
pub fn note_progress(
    doc: &mut Assignment,
    epoch: u64,
    job_id: &str,
    progress: &crate::model::JobProgress,
) -> Result<(), ChainError> {
    let held = doc
        .lease
        .as_ref()
        .is_some_and(|l| l.epoch == epoch && l.job_ids.iter().any(|j| j == job_id));
    let idx = doc
        .job_index(job_id)
        .filter(|_| held)
        .ok_or(ChainError::Fenced(epoch))?;
    let job = &mut doc.jobs[idx];
    if job.status != crate::model::JobStatus::Running || job.attempt != progress.attempt {
        return Err(ChainError::Fenced(epoch));
    }
    job.progress = Some(progress.clone());
    Ok(())
}

/// Nothing to do: the document needs no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nothing to change")]
pub struct Unchanged;

/// Expires at once a lease held by one of `dead` runners (known dead: an earlier incarnation
/// of this runner). Refuses when there is nothing to expire.
pub fn expire_dead_lease(doc: &mut Assignment, dead: &HashSet<String>) -> Result<(), Unchanged> {
    match &mut doc.lease {
        Some(lease) if dead.contains(&lease.runner_id) && lease.expires_at > 0 => {
            lease.expires_at = 0;
            Ok(())
        }
        _ => Err(Unchanged),
    }
}
