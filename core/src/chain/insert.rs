//! New assignments and job insertion: units, positions, loop detection.

use super::*;
use crate::model::{Assignment, AssignmentStatus, Job, JobStatus, JobType, Millis, Usage};

/// A job to insert, fully resolved (harness chosen, id generated, context stored).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The new job's id.
    pub id: String,
    /// What kind of work.
    pub job_type: JobType,
    /// The harness that runs it.
    pub harness: String,
    /// The model, if not the harness default.
    pub model: Option<String>,
    /// Whether a context text was stored for it.
    pub has_context: bool,
    /// A fingerprint of the context ([`fingerprint`]), for loop detection.
    pub context_hash: Option<u64>,
}

/// A stable fingerprint of a text (FNV-1a over its trimmed bytes).
pub fn fingerprint(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.trim().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where inserted jobs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// At the end of the chain.
    End,
    /// Right after this job (after its whole group, if it is in one).
    After(String),
}

/// Who is making a change: a human at a terminal, or an agent job through `wf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A human (no `WF_JOB_ID`).
    Human,
    /// The agent of this job (`WF_JOB_ID`).
    Job(&'a str),
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The jobs were added.
    Added,
    /// The jobs were already there: a retried write that had in fact been stored.
    AlreadyPresent,
}

/// Checks a north star for `wf create`.
pub fn validate_north_star(text: &str) -> Result<(), ChainError> {
    if text.trim().is_empty() {
        return Err(ChainError::Invalid("the north star is empty".into()));
    }
    check_len("the north star", text, MAX_NORTH_STAR)
}

/// Refuses `text` (named `what` in the error) when it is longer than `max` bytes.
pub fn check_len(what: &str, text: &str, max: usize) -> Result<(), ChainError> {
    if text.len() > max {
        return Err(ChainError::Invalid(format!(
            "{what} is {} bytes; the limit is {} KiB",
            text.len(),
            max / 1024
        )));
    }
    Ok(())
}

/// A new assignment document.
pub fn new_assignment(
    id: String,
    namespace: &str,
    north_star: String,
    priority: i64,
    independent: bool,
    now: Millis,
) -> Assignment {
    Assignment {
        // Version 1 until the shape needs 2 (an archive, `chain::archive_segment`): older wfs
        // keep reading every document they can (ARCHITECTURE.md, rolling upgrades).
        schema_version: 1,
        id,
        namespace: namespace.to_string(),
        north_star,
        status: AssignmentStatus::Pending,
        blocked_reason: None,
        priority,
        independent,
        artifacts: String::new(),
        decisions: String::new(),
        jobs: Vec::new(),
        created_at: now,
        updated_at: now,
        version: 0,
        epoch: 0,
        lease: None,
        usage: Usage::default(),
        pm_rounds: 0,
        notes: Vec::new(),
        budget: Default::default(),
        started_at: None,
        archive: Default::default(),
        workspace: None,
        forge: None,
        outbox: Vec::new(),
        workflow: None,
    }
}

/// The record of PM job `pm`, reviewing the jobs `reviews`.
pub(super) fn pm_record(doc: &Assignment, pm: &NewJob, reviews: Vec<String>, now: Millis) -> Job {
    let mut job = job_record(doc, pm, None, now);
    job.job_type = JobType::Pm;
    job.reviews = reviews;
    job
}

pub(super) fn job_record(
    doc: &Assignment,
    new: &NewJob,
    group_id: Option<&str>,
    now: Millis,
) -> Job {
    Job {
        id: new.id.clone(),
        assignment_id: doc.id.clone(),
        job_type: new.job_type,
        harness: new.harness.clone(),
        model: new.model.clone(),
        status: JobStatus::Pending,
        group_id: group_id.map(str::to_string),
        attempt: 0,
        created_at: now,
        started_at: None,
        completed_at: None,
        failure_reason: None,
        failure_detail: None,
        session_id: None,
        usage: Usage::default(),
        retry_after: None,
        pauses: 0,
        has_context: new.has_context,
        has_result: false,
        exit_code: None,
        inserted_by: None,
        reviews: Vec::new(),
        pm_reminder: false,
        cancel_requested: false,
        context_hash: new.context_hash,
        commits: None,
        checks: Vec::new(),
        progress: None,
        task: None,
    }
}

/// The index range of the unit (group or single job) that contains job `idx`.
pub(super) fn unit_range(jobs: &[Job], idx: usize) -> std::ops::Range<usize> {
    match &jobs[idx].group_id {
        None => idx..idx + 1,
        Some(g) => {
            let same = |j: &Job| j.group_id.as_deref() == Some(g.as_str());
            let mut start = idx;
            while start > 0 && same(&jobs[start - 1]) {
                start -= 1;
            }
            let mut end = idx + 1;
            while end < jobs.len() && same(&jobs[end]) {
                end += 1;
            }
            start..end
        }
    }
}

/// The unit that runs next: the one holding the first unfinished job.
pub fn current_unit(doc: &Assignment) -> Option<std::ops::Range<usize>> {
    let first = doc.jobs.iter().position(|j| !j.status.is_finished())?;
    Some(unit_range(&doc.jobs, first))
}

/// Inserts `jobs` (one group when more than one) at `position`.
///
/// Idempotent: if the first job id is already present the insert is reported as already done.
pub fn insert_jobs(
    doc: &mut Assignment,
    jobs: &[NewJob],
    group_id: Option<&str>,
    position: &Position,
    caller: Caller<'_>,
    loop_limit: Option<u32>,
    now: Millis,
) -> Result<Inserted, ChainError> {
    let Some(first) = jobs.first() else {
        return Err(ChainError::Invalid("no jobs to insert".into()));
    };
    if doc.job(&first.id).is_some() {
        return Ok(Inserted::AlreadyPresent);
    }
    if doc.status == AssignmentStatus::Complete {
        return Err(ChainError::AssignmentComplete(doc.id.clone()));
    }
    if jobs.len() > MAX_JOBS_PER_INSERT {
        return Err(ChainError::Invalid(format!(
            "{} jobs in one insert; the limit is {MAX_JOBS_PER_INSERT}",
            jobs.len()
        )));
    }
    if jobs.len() > 1 && jobs.iter().any(|j| j.job_type == JobType::Pm) {
        return Err(ChainError::Invalid(
            "a pm job cannot be part of a group; insert it on its own".into(),
        ));
    }
    let at = insertion_index(doc, position, caller)?;
    let group = if jobs.len() > 1 { group_id } else { None };
    let inserted_by = match caller {
        Caller::Job(id) if doc.job(id).is_some() => Some(id.to_string()),
        _ => None,
    };
    let reviews = previous_unit_ids(doc, at);
    let records: Vec<Job> = jobs
        .iter()
        .map(|new| {
            let mut job = job_record(doc, new, group, now);
            job.inserted_by = inserted_by.clone();
            if job.job_type == JobType::Pm {
                job.reviews = reviews.clone();
            }
            job
        })
        .collect();
    let looping = match (caller, loop_limit) {
        (Caller::Job(_), Some(limit)) => records.iter().find_map(|r| repeats(doc, at, r, limit)),
        _ => None,
    };
    doc.jobs.splice(at..at, records);
    doc.updated_at = now;
    if let Some(reason) = looping {
        block(doc, reason, now);
    }
    Ok(Inserted::Added)
}

/// Whether inserting `new` at `at` makes the same job type with the same context `limit` times
/// in a row (counting the non-PM jobs before it).
fn repeats(doc: &Assignment, at: usize, new: &Job, limit: u32) -> Option<String> {
    let hash = new.context_hash?;
    let same = doc.jobs[..at]
        .iter()
        .rev()
        .filter(|j| j.job_type != JobType::Pm)
        .take_while(|j| j.job_type == new.job_type && j.context_hash == Some(hash))
        .count() as u32;
    (same + 1 >= limit).then(|| {
        format!(
            "loop: a {} job with the same context was inserted {} times in a row",
            new.job_type,
            same + 1
        )
    })
}

/// The ids of the non-PM unit that ends right before index `at`.
pub(super) fn previous_unit_ids(doc: &Assignment, at: usize) -> Vec<String> {
    let mut end = at;
    while end > 0 && doc.jobs[end - 1].job_type == JobType::Pm {
        end -= 1;
    }
    if end == 0 {
        return Vec::new();
    }
    doc.jobs[unit_range(&doc.jobs, end - 1)]
        .iter()
        .map(|j| j.id.clone())
        .collect()
}

/// Where an insert lands.
///
/// With `--after`, right after the anchor's unit. Without it, a job's own inserts go after
/// the job and after what it inserted before (so two `wf insert-job` calls by one PM keep their
/// order, unlike the seed); a human's go at the end of the chain.
fn insertion_index(
    doc: &Assignment,
    position: &Position,
    caller: Caller<'_>,
) -> Result<usize, ChainError> {
    let at = match (position, caller) {
        (Position::After(anchor), _) => {
            let idx = doc.job_index(anchor).ok_or_else(|| ChainError::NoSuchJob {
                assignment: doc.id.clone(),
                job: anchor.clone(),
            })?;
            unit_range(&doc.jobs, idx).end
        }
        (Position::End, Caller::Job(me)) if doc.job(me).is_some() => {
            let idx = doc.job_index(me).expect("checked above");
            let mut at = unit_range(&doc.jobs, idx).end;
            while at < doc.jobs.len() && doc.jobs[at].inserted_by.as_deref() == Some(me) {
                at = unit_range(&doc.jobs, at).end;
            }
            at
        }
        (Position::End, _) => doc.jobs.len(),
    };
    if let Some(started) = doc.jobs[at..]
        .iter()
        .find(|j| j.attempt > 0 || j.status.is_finished())
    {
        let after = match position {
            Position::After(a) => a.clone(),
            Position::End => doc.jobs[at - 1].id.clone(),
        };
        return Err(ChainError::WouldPrecedeStarted {
            after,
            started: started.id.clone(),
        });
    }
    Ok(at)
}
