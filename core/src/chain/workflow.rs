//! Workflow tasks in the chain: instantiation, dependencies (a task runs only when every task
//! it depends on succeeded or was skipped), human gates, `wf approve`, `wf skip-job`, failure
//! policies, and the rounds of bounded loops.
//!
//! A workflow's tasks are stored as pending jobs in units — one per level of the dependency
//! graph, a gate on its own — so the chain's rules (one unit at a time, a PM after each) hold
//! unchanged. What a unit needs that the chain cannot see, a claim checks: a human gate or a
//! task whose dependency failed turns the claim into a block with the reason, so an active
//! assignment is never left with nothing to run.

use std::collections::HashSet;

use super::*;
use crate::ids;
use crate::model::{Assignment, AssignmentStatus, FailureReason, Job, JobStatus, JobType, Millis};
use crate::workflow::{Gate, OnFailure, TaskSpec, WorkflowRef};

/// One task of a plan, ready to be inserted: the job and its task record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskJob {
    /// The job (id, type, harness, model, context flags).
    pub job: NewJob,
    /// Its place in the workflow.
    pub spec: TaskSpec,
}

/// Stores the units of a workflow as pending jobs at the end of the chain (a group per unit of
/// several), and the workflow it came from. `groups` gives the group id of each unit.
pub fn instantiate(
    doc: &mut Assignment,
    workflow: WorkflowRef,
    units: &[Vec<TaskJob>],
    groups: &[String],
    now: Millis,
) -> Result<(), ChainError> {
    if doc.workflow.is_some() {
        return Err(ChainError::Invalid(format!(
            "assignment {} already follows a workflow",
            doc.id
        )));
    }
    for (unit, group) in units.iter().zip(groups) {
        let group = (unit.len() > 1).then_some(group.as_str());
        for t in unit {
            let mut job = job_record(doc, &t.job, group, now);
            job.task = Some(t.spec.clone());
            doc.jobs.push(job);
        }
    }
    doc.workflow = Some(workflow);
    doc.updated_at = now;
    Ok(())
}

/// The latest job of task `task` in the document.
pub fn task_job<'a>(doc: &'a Assignment, task: &str) -> Option<&'a Job> {
    doc.jobs
        .iter()
        .rev()
        .find(|j| j.task.as_ref().is_some_and(|t| t.id == task))
}

/// Whether a finished task counts as done for the tasks that depend on it: it completed, was
/// skipped, or failed under `on_failure = "skip"`.
pub fn satisfies(job: &Job) -> bool {
    match job.status {
        JobStatus::Complete | JobStatus::Skipped => true,
        JobStatus::Failed => job
            .task
            .as_ref()
            .is_some_and(|t| t.on_failure == OnFailure::Skip),
        JobStatus::Pending | JobStatus::Running | JobStatus::WaitingRetry => false,
    }
}

/// Why task job `job` cannot run yet, if a task it depends on has not succeeded.
pub fn unmet(doc: &Assignment, job: &Job) -> Option<String> {
    let task = job.task.as_ref()?;
    for dep in &task.depends_on {
        let Some(d) = task_job(doc, dep) else {
            continue;
        };
        if satisfies(d) {
            continue;
        }
        let how = match (d.status, d.failure_reason, &d.failure_detail) {
            (JobStatus::Failed, Some(r), Some(detail)) => format!("failed ({r}: {detail})"),
            (JobStatus::Failed, Some(r), None) => format!("failed ({r})"),
            (s, _, _) => format!("is {s}"),
        };
        let mut reason = format!(
            "task `{}` (job {}) waits for `{dep}` (job {}), which {how}: run it again with `wf retry {}`, or skip `{}` with `wf skip-job {} --reason …`",
            task.id, job.id, d.id, d.id, task.id, job.id
        );
        if d.status == JobStatus::Failed {
            reason.push_str(", then resume the assignment");
        }
        return Some(reason.chars().take(MAX_REASON / 4).collect());
    }
    None
}

/// The human gate the unit `jobs` is, if it is one: the gate job and its prompt.
fn human_gate<'a>(jobs: &[&'a Job]) -> Option<(&'a Job, &'a str)> {
    match jobs {
        [job] if job.status == JobStatus::Pending => match job.task.as_ref()?.gate.as_ref()? {
            Gate::Human { prompt } => Some((job, prompt)),
            Gate::Command { .. } => None,
        },
        _ => None,
    }
}

/// The reason an assignment waiting at human gate `job` is blocked with.
fn gate_reason(doc: &Assignment, job: &Job, prompt: &str) -> String {
    let task = job.task.as_ref().map_or("gate", |t| t.id.as_str());
    let text = format!(
        "waiting at gate `{task}`: {prompt} — pass it with `wf approve {} --note \"…\"`",
        doc.id
    );
    text.chars().take(MAX_REASON / 4).collect()
}

/// Why the unit `jobs` must not start, when a claim should block the assignment instead: a
/// human gate waits, or a task's dependency did not succeed.
pub fn stop_before(doc: &Assignment, jobs: &[&Job]) -> Option<String> {
    if let Some((job, prompt)) = human_gate(jobs) {
        return Some(gate_reason(doc, job, prompt));
    }
    jobs.iter().find_map(|j| unmet(doc, j))
}

/// The current unit's human gate, if the assignment waits at one.
fn waiting_gate(doc: &Assignment) -> Option<usize> {
    let unit = current_unit(doc)?;
    let jobs: Vec<&Job> = doc.jobs[unit.clone()].iter().collect();
    human_gate(&jobs).map(|_| unit.start)
}

/// Whether the assignment waits at a human gate (only `wf approve` goes on).
pub fn waits_at_gate(doc: &Assignment) -> bool {
    waiting_gate(doc).is_some()
}

/// `wf approve`: passes the human gate the assignment waits at; `note` (stored as the gate's
/// result by the caller when `has_note`) reaches the next task, and the next PM as a note.
pub fn approve(
    doc: &mut Assignment,
    note: Option<&str>,
    has_note: bool,
    now: Millis,
) -> Result<String, ChainError> {
    if doc.status == AssignmentStatus::Complete {
        return Err(ChainError::Invalid(format!(
            "assignment {} is complete",
            doc.id
        )));
    }
    let Some(idx) = waiting_gate(doc) else {
        return Err(ChainError::Invalid(format!(
            "assignment {} is not waiting at a human gate",
            doc.id
        )));
    };
    let job = &mut doc.jobs[idx];
    job.status = JobStatus::Complete;
    job.attempt = job.attempt.max(1);
    job.started_at.get_or_insert(now);
    job.completed_at = Some(now);
    job.has_result = has_note;
    let task = job.task.as_ref().map_or_else(String::new, |t| t.id.clone());
    let id = job.id.clone();
    let text = match note {
        Some(n) if !n.trim().is_empty() => format!("gate `{task}` approved: {}", n.trim()),
        _ => format!("gate `{task}` approved"),
    };
    push_note(doc, &text, now);
    doc.status = AssignmentStatus::Active;
    doc.blocked_reason = None;
    doc.updated_at = now;
    Ok(id)
}

fn push_note(doc: &mut Assignment, text: &str, now: Millis) {
    doc.notes.push(crate::model::Note {
        text: text.chars().take(MAX_REASON / 4).collect(),
        at: now,
    });
    let excess = doc.notes.len().saturating_sub(MAX_NOTES);
    doc.notes.drain(..excess);
}

fn append_decision(doc: &mut Assignment, line: &str) {
    if !doc.decisions.is_empty() && !doc.decisions.ends_with('\n') {
        doc.decisions.push('\n');
    }
    doc.decisions.push_str(line);
    super::update::fold_memory(&mut doc.decisions);
}

/// `wf skip-job`: a pending job is not run; tasks that depend on it go ahead. A PM (`by_agent`)
/// cannot skip a gate: only a human passes one.
pub fn skip_job(
    doc: &mut Assignment,
    job_id: &str,
    reason: &str,
    by_agent: bool,
    now: Millis,
) -> Result<(), ChainError> {
    if reason.trim().is_empty() {
        return Err(ChainError::Invalid("a skip needs a reason".into()));
    }
    let idx = doc.job_index(job_id).ok_or_else(|| ChainError::NoSuchJob {
        assignment: doc.id.clone(),
        job: job_id.to_string(),
    })?;
    let job = &doc.jobs[idx];
    if job.status != JobStatus::Pending {
        return Err(ChainError::Invalid(format!(
            "job {job_id} is {}; only a pending job can be skipped",
            job.status
        )));
    }
    if job.job_type == JobType::Pm {
        return Err(ChainError::Invalid(format!(
            "job {job_id} is a PM; a PM cannot be skipped"
        )));
    }
    if by_agent && job.job_type == JobType::Gate {
        return Err(ChainError::Invalid(format!(
            "job {job_id} is a gate: only a human passes it (`wf approve`)"
        )));
    }
    let reason: String = reason.trim().chars().take(MAX_REASON / 4).collect();
    let job = &mut doc.jobs[idx];
    job.status = JobStatus::Skipped;
    job.completed_at = Some(now);
    job.failure_detail = Some(reason.clone());
    let what = match job.task.as_mut() {
        Some(t) => {
            t.skipped = Some(reason.clone());
            format!("task `{}` (job {job_id})", t.id)
        }
        None => format!("job {job_id} ({})", job.job_type),
    };
    let who = if by_agent { "the PM" } else { "a human" };
    append_decision(doc, &format!("Skipped {what}, by {who}: {reason}"));
    doc.updated_at = now;
    Ok(())
}

/// Skips every pending job, with `reason` (an aborted workflow, a completed assignment).
fn skip_pending(doc: &mut Assignment, reason: &str, now: Millis) -> usize {
    let mut n = 0;
    for job in doc
        .jobs
        .iter_mut()
        .filter(|j| j.status == JobStatus::Pending && j.task.is_some())
    {
        job.status = JobStatus::Skipped;
        job.completed_at = Some(now);
        job.failure_detail = Some(reason.to_string());
        if let Some(t) = job.task.as_mut() {
            t.skipped = Some(reason.to_string());
        }
        n += 1;
    }
    n
}

/// When an assignment completes, its pending tasks will not run: they are marked skipped and
/// the decisions say which.
pub fn skip_rest_on_complete(doc: &mut Assignment, now: Millis) {
    let left: Vec<String> = doc
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Pending)
        .filter_map(|j| j.task.as_ref().map(|t| format!("`{}`", t.id)))
        .collect();
    if left.is_empty() {
        return;
    }
    skip_pending(doc, "the assignment was completed before it ran", now);
    append_decision(
        doc,
        &format!(
            "Completed with planned tasks left unrun: {}",
            left.join(", ")
        ),
    );
}

/// Whether a failure for `reason` at the job's current attempt is retried by its task's
/// policy.
pub fn task_retries(job: &Job, reason: FailureReason) -> Option<Millis> {
    let retry = job.task.as_ref()?.retry.as_ref()?;
    retry
        .covers(reason, job.attempt)
        .then_some(retry.backoff_ms)
}

/// The next round of the loop that task job `idx` ends, when its verdict failed and rounds are
/// left: fresh copies of the loop's tasks, the first answering this job's result.
fn next_round(doc: &Assignment, idx: usize, now: Millis) -> Option<Vec<Job>> {
    let job = &doc.jobs[idx];
    let spec = job.task.as_ref()?;
    let lp = spec.loop_spec.as_ref()?;
    if job.status != JobStatus::Failed
        || job.failure_reason != Some(FailureReason::Verdict)
        || spec.round >= lp.max
    {
        return None;
    }
    let round = spec.round + 1;
    let mut out = Vec::new();
    for (i, task) in lp.tasks.iter().enumerate() {
        let model = task_job(doc, task)?;
        let id = ids::from_random(fingerprint(&format!(
            "{}/{}/loop/{task}/{round}",
            doc.id, job.id
        )));
        let mut copy = job_record(
            doc,
            &NewJob {
                id,
                job_type: model.job_type,
                harness: model.harness.clone(),
                model: model.model.clone(),
                has_context: model.has_context,
                context_hash: model.context_hash,
            },
            None,
            now,
        );
        let mut t = model.task.clone().expect("a task job");
        t.round = round;
        t.context_job = t.context_job.clone().or_else(|| Some(model.id.clone()));
        t.feedback = (i == 0).then(|| job.id.clone());
        t.skipped = None;
        copy.task = Some(t);
        out.push(copy);
    }
    Some(out)
}

/// What a workflow's rules do when the non-PM unit `unit` has ended on an active assignment,
/// before the PM rule: the next rounds of failed loops go in at `at`; a failure under
/// `abort` skips every pending task and blocks, under `block` blocks. Returns whether the
/// assignment is still active (and the PM should run) and how many jobs went in at `at`.
pub(super) fn after_task_unit(
    doc: &mut Assignment,
    unit: std::ops::Range<usize>,
    at: usize,
    now: Millis,
) -> (bool, usize) {
    let mut rounds = Vec::new();
    let mut looped = HashSet::new();
    for idx in unit.clone() {
        if let Some(jobs) = next_round(doc, idx, now) {
            looped.insert(idx);
            rounds.extend(jobs);
        }
    }
    let failed: Vec<(String, OnFailure, String)> = unit
        .clone()
        .filter(|i| !looped.contains(i))
        .filter_map(|i| {
            let j = &doc.jobs[i];
            let t = j.task.as_ref()?;
            (j.status == JobStatus::Failed).then(|| {
                let why = match (&j.failure_reason, &j.failure_detail) {
                    (Some(r), Some(d)) => format!("{r}: {d}"),
                    (Some(r), None) => r.to_string(),
                    (None, _) => "failed".into(),
                };
                (t.id.clone(), t.on_failure, why)
            })
        })
        .collect();
    let added = rounds.len();
    doc.jobs.splice(at..at, rounds);
    if let Some((task, _, why)) = failed.iter().find(|f| f.1 == OnFailure::Abort) {
        let reason = format!("workflow aborted: task `{task}` failed ({why})");
        skip_pending(doc, &format!("aborted: task `{task}` failed"), now);
        block(doc, reason, now);
        return (false, added);
    }
    if let Some((task, _, why)) = failed.iter().find(|f| f.1 == OnFailure::Block) {
        let job = task_job(doc, task).map_or_else(String::new, |j| j.id.clone());
        let reason = format!(
            "task `{task}` failed ({why}); the tasks that depend on it wait. Run it again with `wf retry {job}`, or skip what depends on it with `wf skip-job`"
        );
        block(doc, reason, now);
        return (false, added);
    }
    (true, added)
}

/// Whether the unit `unit` is a gate that passed: no PM reviews it.
pub(super) fn passed_gate(doc: &Assignment, unit: &std::ops::Range<usize>) -> bool {
    doc.jobs[unit.clone()]
        .iter()
        .all(|j| j.job_type == JobType::Gate && j.status == JobStatus::Complete)
}

/// The finished jobs after `idx` whose tasks depend, directly or not, on the task of job
/// `idx`: `wf retry` runs them again too.
pub(super) fn dependents_after(doc: &Assignment, idx: usize) -> Vec<usize> {
    let Some(root) = doc.jobs[idx].task.as_ref().map(|t| t.id.clone()) else {
        return Vec::new();
    };
    let mut tainted: HashSet<String> = HashSet::from([root]);
    let mut out = Vec::new();
    for (i, job) in doc.jobs.iter().enumerate().skip(idx + 1) {
        let Some(t) = job.task.as_ref() else {
            continue;
        };
        if t.depends_on.iter().any(|d| tainted.contains(d)) {
            tainted.insert(t.id.clone());
            if job.status.is_finished() && job.job_type != JobType::Gate {
                out.push(i);
            }
        }
    }
    out
}

/// The task ids and job ids the unfinished jobs still need in the document (to check their
/// dependencies and show their results): archiving stops before them.
pub(super) fn still_needed(doc: &Assignment) -> (HashSet<String>, HashSet<String>) {
    let mut tasks = HashSet::new();
    let mut jobs = HashSet::new();
    for job in doc.jobs.iter().filter(|j| !j.status.is_finished()) {
        if let Some(t) = &job.task {
            tasks.extend(t.depends_on.iter().cloned());
            jobs.extend(t.feedback.iter().cloned());
        }
    }
    (tasks, jobs)
}
