//! `wf cancel` and `wf retry`.

use super::*;
use crate::model::{Assignment, AssignmentStatus, FailureReason, Job, JobStatus, Millis};

/// What `wf cancel` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelTarget<'a> {
    /// Everything the assignment is running or about to run.
    Assignment,
    /// One job.
    Job(&'a str),
}

fn cancel_job(job: &mut Job, lease_live: bool, now: Millis) -> Result<(), ChainError> {
    match job.status {
        JobStatus::Running if lease_live => job.cancel_requested = true,
        JobStatus::Running | JobStatus::Pending | JobStatus::WaitingRetry => {
            job.status = JobStatus::Failed;
            job.failure_reason = Some(FailureReason::Cancelled);
            job.failure_detail = Some("cancelled by a human".into());
            job.completed_at = Some(now);
            job.retry_after = None;
        }
        JobStatus::Complete | JobStatus::Failed | JobStatus::Skipped => {
            return Err(ChainError::Invalid(format!(
                "job {} already finished ({})",
                job.id, job.status
            )))
        }
    }
    Ok(())
}

/// `wf cancel`: stops running jobs (the runner holding them sees `cancelRequested`; with no
/// live lease they are marked cancelled at once), cancels the waiting ones, and blocks the
/// assignment so that nothing else starts until a human resumes it.
pub fn cancel(
    doc: &mut Assignment,
    target: CancelTarget<'_>,
    view: &LeaseView<'_>,
) -> Result<(), ChainError> {
    if doc.status == AssignmentStatus::Complete {
        return Err(ChainError::Invalid(format!(
            "assignment {} is complete; nothing to cancel",
            doc.id
        )));
    }
    let lease_live = doc.lease.as_ref().is_some_and(|l| view.is_live(l));
    let ids: Vec<String> = match target {
        CancelTarget::Job(id) => vec![id.to_string()],
        CancelTarget::Assignment => match current_unit(doc) {
            Some(unit) => doc.jobs[unit]
                .iter()
                .filter(|j| !j.status.is_finished())
                .map(|j| j.id.clone())
                .collect(),
            None => Vec::new(),
        },
    };
    for id in &ids {
        let held = doc.lease.as_ref().is_some_and(|l| l.job_ids.contains(id));
        let job =
            doc.jobs
                .iter_mut()
                .find(|j| &j.id == id)
                .ok_or_else(|| ChainError::NoSuchJob {
                    assignment: doc.id.clone(),
                    job: id.clone(),
                })?;
        cancel_job(job, lease_live && held, view.now)?;
    }
    if !lease_live {
        if let Some(lease) = doc.lease.take() {
            // The lease is dead: its running jobs go back to pending (they were not cancelled).
            for job in doc
                .jobs
                .iter_mut()
                .filter(|j| lease.job_ids.contains(&j.id) && j.status == JobStatus::Running)
            {
                job.status = JobStatus::Pending;
            }
        }
    }
    let reason = match target {
        CancelTarget::Assignment => "cancelled by a human".to_string(),
        CancelTarget::Job(id) => format!("job {id} cancelled by a human"),
    };
    block(doc, reason, view.now);
    Ok(())
}

/// `wf retry`: a failed (or cancelled) job goes back to pending, in place, and the assignment
/// becomes active again.
pub fn retry(doc: &mut Assignment, job_id: &str, now: Millis) -> Result<(), ChainError> {
    let job = doc
        .jobs
        .iter_mut()
        .find(|j| j.id == job_id)
        .ok_or_else(|| ChainError::NoSuchJob {
            assignment: doc.id.clone(),
            job: job_id.to_string(),
        })?;
    if job.status != JobStatus::Failed {
        return Err(ChainError::Invalid(format!(
            "job {job_id} is {}; only failed or cancelled jobs can be retried",
            job.status
        )));
    }
    job.status = JobStatus::Pending;
    job.failure_reason = None;
    job.failure_detail = None;
    job.completed_at = None;
    job.retry_after = None;
    job.cancel_requested = false;
    job.pauses = 0;
    // What depends on a retried task ran without it: it runs again after it.
    let idx = doc.job_index(job_id).expect("found above");
    for i in dependents_after(doc, idx) {
        let dep = &mut doc.jobs[i];
        dep.status = JobStatus::Pending;
        dep.failure_reason = None;
        dep.failure_detail = None;
        dep.completed_at = None;
        dep.retry_after = None;
        if let Some(t) = dep.task.as_mut() {
            t.skipped = None;
        }
    }
    doc.status = AssignmentStatus::Active;
    doc.blocked_reason = None;
    doc.updated_at = now;
    Ok(())
}
