//! The job chain: every state transition of an assignment document, as pure functions.
//!
//! Each function takes the document (as read from the store) and mutates it in place, or
//! refuses with a [`ChainError`]. The store runs them inside its compare-and-swap loop, so a
//! function may run several times against fresh copies; they must not do I/O and must be
//! idempotent where a write can be retried after an ambiguous failure (`insert_jobs`).
//!
//! Rules (DESIGN §2): the runnable *unit* is the first job that is not finished, or, when that
//! job belongs to a group, the jobs of that group. At most one unit of an assignment runs at a
//! time, under one lease with a fencing epoch. After a non-PM unit ends, a PM job is inserted
//! right after it. After a PM ends, something must be runnable: otherwise the PM is run once
//! more with a reminder, and after that the assignment is blocked.

use std::collections::HashSet;

use crate::model::{
    Assignment, AssignmentStatus, FailureReason, Job, JobStatus, JobType, Lease, Millis, Note,
    Usage,
};

/// The reason written when a PM twice ends without deciding anything.
pub const NO_DECISION_REASON: &str = "PM made no decision";

/// Largest north star accepted, in bytes.
pub const MAX_NORTH_STAR: usize = 64 * 1024;
/// Largest artifacts or decisions text accepted, in bytes.
pub const MAX_MEMORY_TEXT: usize = 256 * 1024;
/// Largest blocked reason or note, in bytes.
pub const MAX_REASON: usize = 16 * 1024;
/// Most jobs one insert may add.
pub const MAX_JOBS_PER_INSERT: usize = 32;

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The assignment is complete and takes no more jobs.
    #[error(
        "assignment {0} is complete; reopen it first with `wf update-assignment {0} --status active`"
    )]
    AssignmentComplete(String),
    /// `--after` names a job the assignment does not have.
    #[error("assignment {assignment} has no job {job}")]
    NoSuchJob {
        /// The assignment.
        assignment: String,
        /// The job that was named.
        job: String,
    },
    /// Inserting there would put a pending job before one that already started.
    #[error("cannot insert after job {after}: job {started} after it has already started")]
    WouldPrecedeStarted {
        /// The anchor job.
        after: String,
        /// The job that already ran.
        started: String,
    },
    /// A field failed validation.
    #[error("{0}")]
    Invalid(String),
    /// The caller's lease is gone: someone else owns the job now.
    #[error("lease lost: epoch {0} no longer owns the job")]
    Fenced(u64),
}

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

fn check_len(what: &str, text: &str, max: usize) -> Result<(), ChainError> {
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
    }
}

fn job_record(doc: &Assignment, new: &NewJob, group_id: Option<&str>, now: Millis) -> Job {
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
    }
}

/// The index range of the unit (group or single job) that contains job `idx`.
fn unit_range(jobs: &[Job], idx: usize) -> std::ops::Range<usize> {
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
fn previous_unit_ids(doc: &Assignment, at: usize) -> Vec<String> {
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

/// A change to an assignment's status or memory (`wf update-assignment`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentUpdate {
    /// The new status.
    pub status: Option<AssignmentStatus>,
    /// The reason, required with `blocked`.
    pub reason: Option<String>,
    /// Artifacts text: appended as a new line by an agent, replacing when a human sets it.
    pub artifacts: Option<String>,
    /// Decisions text: same rule as artifacts.
    pub decisions: Option<String>,
    /// A note for the next PM.
    pub note: Option<String>,
}

impl AssignmentUpdate {
    /// Checks the update on its own, before any document is read.
    pub fn validate(&self) -> Result<(), ChainError> {
        if self.status.is_none()
            && self.artifacts.is_none()
            && self.decisions.is_none()
            && self.note.is_none()
        {
            return Err(ChainError::Invalid(
                "nothing to update: give --status, --artifacts, --decisions or --note".into(),
            ));
        }
        match self.status {
            Some(AssignmentStatus::Pending) => {
                return Err(ChainError::Invalid(
                    "status pending cannot be set; use active, blocked or complete".into(),
                ))
            }
            Some(AssignmentStatus::Blocked) => {
                if self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return Err(ChainError::Invalid(
                        "--reason is required when setting status to blocked".into(),
                    ));
                }
            }
            _ => {
                if self.reason.is_some() {
                    return Err(ChainError::Invalid(
                        "--reason only goes with --status blocked".into(),
                    ));
                }
            }
        }
        for (what, text, max) in [
            ("the reason", &self.reason, MAX_REASON),
            ("the note", &self.note, MAX_REASON),
            ("the artifacts text", &self.artifacts, MAX_MEMORY_TEXT),
            ("the decisions text", &self.decisions, MAX_MEMORY_TEXT),
        ] {
            if let Some(text) = text {
                check_len(what, text, max)?;
            }
        }
        Ok(())
    }
}

/// What an update did besides changing fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// Fields changed.
    Changed,
    /// The assignment was resumed with nothing to run, so a PM job was inserted.
    PmInserted(String),
}

fn merge_memory(current: &mut String, text: &str, caller: Caller<'_>) {
    match caller {
        Caller::Job(_) if !current.is_empty() && !text.is_empty() => {
            current.push('\n');
            current.push_str(text);
        }
        Caller::Job(_) if text.is_empty() => {}
        _ => *current = text.to_string(),
    }
}

/// Applies `wf update-assignment`. `pm` is used when resuming leaves nothing runnable.
pub fn update_assignment(
    doc: &mut Assignment,
    update: &AssignmentUpdate,
    caller: Caller<'_>,
    pm: &NewJob,
    now: Millis,
) -> Result<Updated, ChainError> {
    update.validate()?;
    if let Some(text) = &update.artifacts {
        merge_memory(&mut doc.artifacts, text, caller);
    }
    if let Some(text) = &update.decisions {
        merge_memory(&mut doc.decisions, text, caller);
    }
    if let Some(text) = &update.note {
        doc.notes.push(Note {
            text: text.clone(),
            at: now,
        });
    }
    let mut result = Updated::Changed;
    match update.status {
        None | Some(AssignmentStatus::Pending) => {}
        Some(AssignmentStatus::Blocked) => {
            doc.status = AssignmentStatus::Blocked;
            doc.blocked_reason = update.reason.clone();
        }
        Some(AssignmentStatus::Complete) => {
            doc.status = AssignmentStatus::Complete;
            doc.blocked_reason = None;
        }
        Some(AssignmentStatus::Active) => {
            doc.status = AssignmentStatus::Active;
            doc.blocked_reason = None;
            if doc.lease.is_none() && current_unit(doc).is_none() {
                let mut job = job_record(doc, pm, None, now);
                job.job_type = JobType::Pm;
                job.reviews = previous_unit_ids(doc, doc.jobs.len());
                doc.jobs.push(job);
                result = Updated::PmInserted(pm.id.clone());
            }
        }
    }
    doc.updated_at = now;
    Ok(result)
}

/// How to judge leases held by runners.
#[derive(Debug, Clone, Copy)]
pub struct LeaseView<'a> {
    /// The current time.
    pub now: Millis,
    /// The runner asking.
    pub me: &'a str,
    /// True when this runner is the only one that can exist (embedded store): a lease held by
    /// any other runner id belongs to a dead process.
    pub exclusive: bool,
}

impl LeaseView<'_> {
    /// Whether `lease` still protects its jobs.
    pub fn is_live(&self, lease: &Lease) -> bool {
        lease.expires_at > self.now && !(self.exclusive && lease.runner_id != self.me)
    }
}

/// What can happen next in an assignment, as seen by a scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Blocked, complete, or no unfinished job.
    Idle,
    /// A live lease covers the current unit.
    Leased,
    /// These jobs can be claimed now.
    Ready(Vec<String>),
    /// Nothing can start before this instant (a paused job, or a lease about to expire).
    WaitUntil(Millis),
}

/// What an assignment offers a scheduler right now.
pub fn readiness(doc: &Assignment, view: &LeaseView<'_>) -> Readiness {
    if !matches!(
        doc.status,
        AssignmentStatus::Pending | AssignmentStatus::Active
    ) {
        return Readiness::Idle;
    }
    if let Some(lease) = &doc.lease {
        if view.is_live(lease) {
            return if view.exclusive {
                Readiness::Leased
            } else {
                // Another machine's runner may die; look again when its lease would expire.
                Readiness::WaitUntil(lease.expires_at)
            };
        }
    }
    let Some(unit) = current_unit(doc) else {
        return Readiness::Idle;
    };
    let mut ready = Vec::new();
    let mut wait: Option<Millis> = None;
    for job in &doc.jobs[unit] {
        match job.status {
            JobStatus::Pending | JobStatus::Running => ready.push(job.id.clone()),
            JobStatus::WaitingRetry => {
                let at = job.retry_after.unwrap_or(0);
                if at <= view.now {
                    ready.push(job.id.clone());
                } else {
                    wait = Some(wait.map_or(at, |w| w.min(at)));
                }
            }
            JobStatus::Complete | JobStatus::Failed => {}
        }
    }
    match (ready.is_empty(), wait) {
        (false, _) => Readiness::Ready(ready),
        (true, Some(at)) => Readiness::WaitUntil(at),
        (true, None) => Readiness::Idle,
    }
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
    /// A budget of the assignment is spent: it was blocked instead, with this reason.
    OverBudget(String),
}

fn money(v: f64) -> String {
    format!("${v:.2}")
}

fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Why starting `unit` now would break a budget, if it would.
fn over_budget(doc: &Assignment, unit: &[&Job], now: Millis) -> Option<String> {
    let b = &doc.budget;
    if let Some(reason) = cost_over_budget(doc) {
        return Some(reason);
    }
    if let (Some(max), Some(start)) = (b.max_wall_ms, doc.started_at) {
        if now.saturating_sub(start) >= max {
            return Some(format!(
                "budget exceeded: running for {}, maxWallMs is {}",
                duration_text(now - start),
                duration_text(max)
            ));
        }
    }
    let new_work = unit
        .iter()
        .filter(|j| j.job_type != JobType::Pm && j.attempt == 0)
        .count() as u32;
    if let Some(max) = b.max_jobs {
        let started = doc
            .jobs
            .iter()
            .filter(|j| j.job_type != JobType::Pm && j.attempt > 0)
            .count() as u32;
        if new_work > 0 && started + new_work > max {
            return Some(format!(
                "budget exceeded: {started} jobs started, maxJobs is {max}"
            ));
        }
    }
    if let Some(max) = b.max_pm_rounds {
        if unit
            .iter()
            .any(|j| j.job_type == JobType::Pm && j.attempt == 0)
            && doc.pm_rounds >= max
        {
            return Some(format!(
                "budget exceeded: {} PM rounds, maxPmRounds is {max}",
                doc.pm_rounds
            ));
        }
    }
    None
}

/// The reason, if the assignment has spent more than its cost budget.
pub fn cost_over_budget(doc: &Assignment) -> Option<String> {
    let max = doc.budget.max_cost_usd?;
    let spent = doc.usage.cost_usd.unwrap_or(0.0);
    (spent >= max).then(|| {
        format!(
            "budget exceeded: spent {}, maxCostUsd is {}",
            money(spent),
            money(max)
        )
    })
}

/// When the wall-time budget of `doc` runs out, if it has one.
pub fn wall_deadline(doc: &Assignment) -> Option<Millis> {
    Some(doc.started_at? + doc.budget.max_wall_ms?)
}

/// Claims the ready jobs of the current unit for runner `view.me` — or, when starting them
/// would break a budget, blocks the assignment instead. `None`: nothing to claim.
pub fn claim(
    doc: &mut Assignment,
    view: &LeaseView<'_>,
    host: &str,
    lease_ms: u64,
) -> Option<Claimed> {
    finish_decided_pms(doc, view);
    let Readiness::Ready(job_ids) = readiness(doc, view) else {
        return None;
    };
    let unit: Vec<&Job> = doc
        .jobs
        .iter()
        .filter(|j| job_ids.contains(&j.id))
        .collect();
    if let Some(reason) = over_budget(doc, &unit, view.now) {
        block(doc, reason.clone(), view.now);
        return Some(Claimed::OverBudget(reason));
    }
    doc.epoch += 1;
    for job in doc.jobs.iter_mut().filter(|j| job_ids.contains(&j.id)) {
        job.status = JobStatus::Running;
        job.attempt += 1;
        job.started_at = Some(view.now);
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

fn block(doc: &mut Assignment, reason: String, now: Millis) {
    doc.status = AssignmentStatus::Blocked;
    doc.blocked_reason = Some(reason);
    doc.updated_at = now;
}

/// A PM whose runner died after it decided (it inserted jobs) must not run again: that would
/// be the same job twice, deciding twice. Such an orphaned PM ends complete.
fn finish_decided_pms(doc: &mut Assignment, view: &LeaseView<'_>) {
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
    for id in decided {
        let pm = doc
            .jobs
            .iter_mut()
            .find(|j| j.id == id)
            .expect("found above");
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
        JobStatus::Complete | JobStatus::Failed => {
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
    doc.status = AssignmentStatus::Active;
    doc.blocked_reason = None;
    doc.updated_at = now;
    Ok(())
}

/// Releases a dead lease of an assignment that is not active (blocked or completed while its
/// runner died). On a completed assignment nothing runs again: a PM job that was running had
/// done its work (it completed the assignment) and ends complete, other jobs end cancelled. On a
/// blocked one, jobs a human cancelled end cancelled and the others go back to pending, to run
/// when the assignment is resumed.
pub fn settle_dead_lease(doc: &mut Assignment, view: &LeaseView<'_>) -> Result<(), Unchanged> {
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
    for job in doc
        .jobs
        .iter_mut()
        .filter(|j| lease.job_ids.contains(&j.id) && j.status == JobStatus::Running)
    {
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
    let owns = doc
        .lease
        .as_ref()
        .is_some_and(|l| l.epoch == epoch && l.job_ids.iter().any(|j| j == job_id));
    let idx = doc
        .job_index(job_id)
        .filter(|&i| doc.jobs[i].status == JobStatus::Running);
    let (true, Some(idx)) = (owns, idx) else {
        return Err(ChainError::Fenced(epoch));
    };
    let job = &mut doc.jobs[idx];
    job.session_id = report.session_id.clone().or(job.session_id.take());
    job.usage.add(&report.usage);
    job.failure_detail = report.detail.clone();
    job.has_result = report.has_result;
    job.exit_code = report.exit_code;
    match report.outcome {
        Outcome::Complete => {
            job.status = JobStatus::Complete;
            job.completed_at = Some(now);
        }
        Outcome::Failed(reason) => {
            job.status = JobStatus::Failed;
            job.failure_reason = Some(reason);
            job.completed_at = Some(now);
        }
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

    let unit = unit_range(&doc.jobs, idx);
    if !doc.jobs[unit.clone()]
        .iter()
        .all(|j| j.status.is_finished())
    {
        return Ok(Recorded::UnitEnded);
    }
    let finished_pm = doc.jobs[idx].job_type == JobType::Pm;
    if finished_pm {
        doc.pm_rounds += 1;
    }
    if doc.status != AssignmentStatus::Active {
        return Ok(Recorded::UnitEnded);
    }
    if !finished_pm {
        let reviews = doc.jobs[unit.clone()]
            .iter()
            .map(|j| j.id.clone())
            .collect();
        let mut job = job_record(doc, pm, None, now);
        job.job_type = JobType::Pm;
        job.reviews = reviews;
        doc.jobs.insert(unit.end, job);
        return Ok(Recorded::PmInserted(pm.id.clone()));
    }
    // The PM decided if it left something to run (or changed the status, handled above).
    if doc.jobs.iter().any(|j| !j.status.is_finished()) {
        return Ok(Recorded::UnitEnded);
    }
    let this_pm = &doc.jobs[idx];
    if this_pm.pm_reminder {
        doc.status = AssignmentStatus::Blocked;
        doc.blocked_reason = Some(NO_DECISION_REASON.to_string());
        return Ok(Recorded::Blocked);
    }
    let reviews = this_pm.reviews.clone();
    let mut job = job_record(doc, pm, None, now);
    job.job_type = JobType::Pm;
    job.reviews = reviews;
    job.pm_reminder = true;
    doc.jobs.insert(idx + 1, job);
    Ok(Recorded::PmReminderInserted(pm.id.clone()))
}

/// Checks the structural invariants of a document; used by tests and fuzzers to detect a
/// corrupted store. Returns the first violation.
pub fn check_invariants(doc: &Assignment) -> Result<(), String> {
    let mut seen = HashSet::new();
    for job in &doc.jobs {
        if !seen.insert(job.id.as_str()) {
            return Err(format!("job {} appears twice", job.id));
        }
        if job.assignment_id != doc.id {
            return Err(format!(
                "job {} names assignment {}",
                job.id, job.assignment_id
            ));
        }
        if job.job_type == JobType::Pm && job.group_id.is_some() {
            return Err(format!("pm job {} is in a group", job.id));
        }
    }
    let mut groups_done = HashSet::new();
    let mut current: Option<&str> = None;
    for job in &doc.jobs {
        let g = job.group_id.as_deref();
        if g != current {
            if let Some(prev) = current {
                groups_done.insert(prev);
            }
            if let Some(g) = g {
                if groups_done.contains(g) {
                    return Err(format!("group {g} is split"));
                }
            }
            current = g;
        }
    }
    if let Some(lease) = &doc.lease {
        if lease.epoch > doc.epoch {
            return Err(format!(
                "lease epoch {} is ahead of the document's {}",
                lease.epoch, doc.epoch
            ));
        }
        for id in &lease.job_ids {
            match doc.job(id) {
                Some(j) if j.status == JobStatus::Running => {}
                Some(j) => return Err(format!("leased job {id} is {}", j.status)),
                None => return Err(format!("leased job {id} does not exist")),
            }
        }
    }
    Ok(())
}

/// Picks which assignments to claim next, given the ones this runner already runs.
///
/// Seed rules: independent assignments run side by side; dependent (`independent: false`)
/// ones run one at a time — an active one keeps the turn until it is blocked or complete.
/// Order: oldest first, then lower priority number. At most `slots` are returned.
pub fn pick<'a>(
    docs: impl IntoIterator<Item = &'a Assignment>,
    running: &HashSet<String>,
    slots: usize,
    view: &LeaseView<'_>,
) -> Vec<String> {
    let docs: Vec<&Assignment> = docs.into_iter().collect();
    let order = |a: &&Assignment, b: &&Assignment| {
        (a.created_at, a.priority, &a.id).cmp(&(b.created_at, b.priority, &b.id))
    };
    let ready = |d: &Assignment| {
        !running.contains(&d.id) && matches!(readiness(d, view), Readiness::Ready(_))
    };
    let mut sequential: Vec<&Assignment> = docs
        .iter()
        .copied()
        .filter(|d| !d.independent && d.status == AssignmentStatus::Active)
        .collect();
    sequential.sort_by(order);
    let turn = match sequential.first() {
        Some(active) => Some(*active),
        None => {
            let mut waiting: Vec<&Assignment> = docs
                .iter()
                .copied()
                .filter(|d| !d.independent && d.status == AssignmentStatus::Pending && ready(d))
                .collect();
            waiting.sort_by(order);
            waiting.first().copied()
        }
    };
    let mut chosen: Vec<&Assignment> = docs
        .iter()
        .copied()
        .filter(|d| d.independent && ready(d))
        .collect();
    if let Some(doc) = turn.filter(|d| ready(d)) {
        chosen.push(doc);
    }
    chosen.sort_by(order);
    chosen
        .into_iter()
        .take(slots)
        .map(|d| d.id.clone())
        .collect()
}

/// The earliest instant at which [`readiness`] of some document may change by itself.
pub fn next_wakeup<'a>(
    docs: impl IntoIterator<Item = &'a Assignment>,
    view: &LeaseView<'_>,
) -> Option<Millis> {
    docs.into_iter()
        .filter_map(|d| match readiness(d, view) {
            Readiness::WaitUntil(at) => Some(at),
            _ => None,
        })
        .min()
}

#[cfg(test)]
mod tests;
