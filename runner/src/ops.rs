//! Domain operations over a [`Store`]: what `wf` commands do, whoever executes them.
//!
//! The runner executes these for CLI requests that arrive on its control socket; the CLI
//! executes them itself when it holds the store (no runner, or NATS). Each mutation is one
//! [`Store::update`] with a pure [`chain`] function, preceded by the blob writes it links.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use wf_core::chain::{self, fingerprint, AssignmentUpdate, Caller, ChainError, NewJob, Position};
use wf_core::clock::now_ms;
use wf_core::config::Config;
use wf_core::ids::{self, IdError, Resolved};
use wf_core::model::{
    Assignment, AssignmentStatus, Budget, ErrorKind, Job, JobStatus, JobType, Millis,
};
use wf_store::{BlobKey, Store, StoreError, Unreadable, UpdateError};

/// Largest job context accepted, in bytes.
pub const MAX_CONTEXT: usize = 256 * 1024;

/// Why an operation failed. `kind()` is stable and travels over the control socket.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Nothing matches the id.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The chain refused the change.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runner could not be reached or answered nonsense.
    #[error("{0}")]
    Unavailable(String),
}

impl OpError {
    /// What kind of error it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpError::NotFound(_) | OpError::Store(StoreError::NotFound(_)) => ErrorKind::NotFound,
            OpError::Invalid(_) | OpError::Chain(_) => ErrorKind::Invalid,
            // Not the store's failure: the change is too big for the document.
            OpError::Store(StoreError::TooLarge { .. }) => ErrorKind::Invalid,
            OpError::Store(_) => ErrorKind::Store,
            OpError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }

    /// Rebuilds an error from its kind and message (the socket's wire form).
    pub fn from_wire(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::NotFound => OpError::NotFound(message),
            ErrorKind::Invalid => OpError::Invalid(message),
            ErrorKind::Unavailable => OpError::Unavailable(message),
            ErrorKind::Store => OpError::Store(StoreError::Backend(message)),
        }
    }
}

impl From<IdError> for OpError {
    fn from(e: IdError) -> Self {
        OpError::Invalid(e.to_string())
    }
}

impl From<UpdateError<ChainError>> for OpError {
    fn from(e: UpdateError<ChainError>) -> Self {
        match e {
            UpdateError::Refused(c) => OpError::Chain(c),
            UpdateError::Store(s) => OpError::Store(s),
        }
    }
}

/// A warning when `doc` has a cost budget that some of `jobs` cannot be held to: their harness
/// reports no cost (only Claude Code does) and `prices` has no entry for their model, so their
/// spend would count as $0 and the budget would never fire for them.
fn unmeasured_cost(config: &Config, doc: &Assignment, jobs: &[NewJob]) -> Option<String> {
    doc.budget.max_cost_usd?;
    let unpriced: Vec<String> = jobs
        .iter()
        .filter_map(|j| {
            let h = config.harnesses.get(&j.harness)?;
            if matches!(h.kind, wf_core::config::HarnessKind::Claude { .. }) {
                return None;
            }
            let model = j.model.as_deref().or(h.model.as_deref());
            match model {
                Some(m) if config.prices.contains_key(m) => None,
                Some(m) => Some(format!("{} (model {m})", j.harness)),
                None => Some(format!("{} (no model set)", j.harness)),
            }
        })
        .collect();
    (!unpriced.is_empty()).then(|| {
        format!(
            "maxCostUsd cannot be checked for {}: the harness reports no cost and `prices` in \
             the config has no price for the model, so their spend counts as $0",
            unpriced.join(", ")
        )
    })
}

/// What [`check_store`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreCheck {
    /// Readable assignments.
    pub assignments: usize,
    /// Documents that were skipped: corrupt, or written by a newer wf.
    pub unreadable: Vec<Unreadable>,
    /// The largest document the store accepts, in bytes.
    pub max_document_bytes: usize,
    /// Assignments whose document uses more than three quarters of that: (id, bytes).
    pub near_full: Vec<(String, usize)>,
}

/// Reads every document of the namespace and reports the ones that do not decode and the ones
/// close to the size limit.
pub async fn check_store(store: &Store) -> Result<StoreCheck, OpError> {
    let listing = store.list_all().await?;
    let limit = store.max_document();
    let near_full = listing
        .docs
        .iter()
        .map(|d| (d.id.clone(), serde_json::to_vec(d).map_or(0, |b| b.len())))
        .filter(|(_, bytes)| *bytes * 4 > limit * 3)
        .collect();
    Ok(StoreCheck {
        assignments: listing.docs.len(),
        unreadable: listing.unreadable,
        max_document_bytes: limit,
        near_full,
    })
}

/// One job of `wf insert-job --jobs` (the seed's shape; `type` is accepted for `jobType`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The job type.
    #[serde(alias = "type")]
    pub job_type: JobType,
    /// The harness; default from `harnessDefaults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<String>,
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the job is to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// `wf create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// The north star.
    pub north_star: String,
    /// Lower runs first among equals (default 10).
    pub priority: i64,
    /// Runs alongside other assignments.
    pub independent: bool,
    /// A first job to insert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<JobSpec>,
    /// Budget limits that replace the configured defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The forge issue it works on (`wf create --issue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<wf_core::model::ForgeLink>,
    /// The workflow it follows, instantiated (`wf create --workflow`): its tasks become the
    /// assignment's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<wf_core::workflow::Plan>>,
    /// The assignment id to use instead of a fresh one (a trigger's, derived from what fired
    /// it, so that firing twice creates it once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What `wf insert-job` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InsertResult {
    /// The assignment.
    pub assignment_id: String,
    /// The assignment's version after the insert (the order of commits).
    pub version: u64,
    /// The group, when several jobs were inserted.
    pub group_id: Option<String>,
    /// The jobs as stored.
    pub jobs: Vec<Job>,
    /// A warning for the user (e.g. the assignment is blocked).
    pub warning: Option<String>,
}

/// A job with its texts (`wf job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDetail {
    /// The job.
    pub job: Job,
    /// Its context.
    pub context: Option<String>,
    /// The result of its latest attempt.
    pub result: Option<String>,
    /// Its assignment's north star.
    pub north_star: String,
    /// Its assignment's status.
    pub assignment_status: AssignmentStatus,
}

/// Resolves an assignment id or unique prefix.
pub async fn find_assignment(store: &Store, prefix: &str) -> Result<Assignment, OpError> {
    let prefix = ids::parse_prefix(prefix)?;
    if prefix.len() == ids::ID_LEN {
        if let Some(doc) = store.get(&prefix).await? {
            return Ok(doc);
        }
    }
    // The ids alone resolve a prefix: no document is read but the one found.
    let all = store.ids().await?;
    match ids::resolve(&prefix, all.into_iter().map(|id| (id.clone(), id))) {
        Resolved::One(id) => store
            .get(&id)
            .await?
            .ok_or_else(|| OpError::NotFound(format!("no assignment matches {prefix:?}"))),
        Resolved::None => Err(OpError::NotFound(format!(
            "no assignment matches {prefix:?}"
        ))),
        Resolved::Ambiguous(ids) => Err(OpError::Invalid(format!(
            "assignment id {prefix:?} is ambiguous: it matches {}",
            ids.join(", ")
        ))),
    }
}

/// Resolves a job id or unique prefix, among all assignments (or within `doc`).
fn resolve_job<'a>(
    docs: impl IntoIterator<Item = &'a Assignment>,
    prefix: &str,
) -> Result<(&'a Assignment, &'a Job), OpError> {
    let prefix = ids::parse_prefix(prefix)?;
    let candidates = docs
        .into_iter()
        .flat_map(|d| d.jobs.iter().map(move |j| (j.id.clone(), (d, j))));
    match ids::resolve(&prefix, candidates) {
        Resolved::One(found) => Ok(found),
        Resolved::None => Err(OpError::NotFound(format!("no job matches {prefix:?}"))),
        Resolved::Ambiguous(ids) => Err(OpError::Invalid(format!(
            "job id {prefix:?} is ambiguous: it matches {}",
            ids.join(", ")
        ))),
    }
}

fn check_harness(config: &Config, name: &str) -> Result<(), OpError> {
    if config.harnesses.contains_key(name) {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "unknown harness {name:?} (configured: {})",
            config
                .harnesses
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Turns specs into new jobs: harness defaults applied (a list fans out), ids generated.
/// Returns the jobs with their contexts.
fn expand(config: &Config, specs: &[JobSpec]) -> Result<Vec<(NewJob, String)>, OpError> {
    if specs.is_empty() {
        return Err(OpError::Invalid("no jobs given (an empty list)".into()));
    }
    let mut out = Vec::new();
    for spec in specs {
        if spec.job_type == JobType::Gate {
            return Err(OpError::Invalid(
                "a gate comes only from a workflow (wf create --workflow); insert plan, implement, review, uat, document or pm".into(),
            ));
        }
        let context = spec.context.clone().unwrap_or_default();
        if context.len() > MAX_CONTEXT {
            return Err(OpError::Invalid(format!(
                "the context of a {} job is {} bytes; the limit is {} KiB",
                spec.job_type,
                context.len(),
                MAX_CONTEXT / 1024
            )));
        }
        let choices = match &spec.harness {
            Some(h) => {
                check_harness(config, h)?;
                vec![wf_core::config::HarnessChoice {
                    harness: h.clone(),
                    model: None,
                }]
            }
            None => config.harness_for(spec.job_type).to_vec(),
        };
        for choice in choices {
            out.push((
                NewJob {
                    id: crate::random::new_id(),
                    job_type: spec.job_type,
                    harness: choice.harness,
                    model: spec.model.clone().or(choice.model),
                    has_context: !context.is_empty(),
                    context_hash: (!context.is_empty()).then(|| fingerprint(&context)),
                },
                context.clone(),
            ));
        }
    }
    if out.len() > chain::MAX_JOBS_PER_INSERT {
        return Err(OpError::Invalid(format!(
            "{} jobs in one insert; the limit is {}",
            out.len(),
            chain::MAX_JOBS_PER_INSERT
        )));
    }
    Ok(out)
}

/// A PM job as the configuration says to run it.
pub fn pm_job(config: &Config) -> NewJob {
    let choice = config.pm_harness();
    NewJob {
        id: crate::random::new_id(),
        job_type: JobType::Pm,
        harness: choice.harness.clone(),
        model: choice.model.clone(),
        has_context: false,
        context_hash: None,
    }
}

/// `wf create`.
pub async fn create(
    store: &Store,
    config: &Config,
    req: &CreateRequest,
) -> Result<Assignment, OpError> {
    chain::validate_north_star(&req.north_star)?;
    let now = now_ms();
    let id = match &req.id {
        Some(id) => ids::parse_prefix(id)
            .ok()
            .filter(|p| p.len() == ids::ID_LEN)
            .ok_or_else(|| OpError::Invalid(format!("{id:?} is not an assignment id")))?,
        None => crate::random::new_id(),
    };
    let mut doc = chain::new_assignment(
        id,
        config.namespace.as_str(),
        req.north_star.clone(),
        req.priority,
        req.independent,
        now,
    );
    let defaults = &config.budgets;
    let given = req.budget.clone().unwrap_or_default();
    doc.budget = wf_core::config::validate_budget(Budget {
        max_cost_usd: given.max_cost_usd.or(defaults.max_cost_usd),
        max_jobs: given.max_jobs.or(defaults.max_jobs),
        max_pm_rounds: given.max_pm_rounds.or(defaults.max_pm_rounds),
        max_wall_ms: given.max_wall_ms.or(defaults.max_wall_ms),
        max_review_cycles: given.max_review_cycles.or(defaults.max_review_cycles),
    })
    .map_err(OpError::Invalid)?;
    doc.forge = req.forge.clone();
    if let Some(plan) = &req.plan {
        if req.start.is_some() {
            return Err(OpError::Invalid(
                "a workflow's assignment starts with its first task; --start does not go with --workflow".into(),
            ));
        }
        instantiate(store, config, &mut doc, plan, now).await?;
    }
    if let Some(start) = &req.start {
        let jobs = expand(config, std::slice::from_ref(start))?;
        write_contexts(store, &doc.id, &jobs).await?;
        let new: Vec<NewJob> = jobs.into_iter().map(|(j, _)| j).collect();
        let group = (new.len() > 1).then(crate::random::new_id);
        chain::insert_jobs(
            &mut doc,
            &new,
            group.as_deref(),
            &Position::End,
            Caller::Human,
            None,
            now,
        )?;
    }
    // A trigger's create that finds its own id (fired twice, or by another runner) fails
    // with `AlreadyExists`: the caller knows it was created once.
    store.create(&doc).await?;
    Ok(doc)
}

/// Puts the tasks of `plan` into `doc` as pending jobs, their contexts stored first.
async fn instantiate(
    store: &Store,
    config: &Config,
    doc: &mut Assignment,
    plan: &wf_core::workflow::Plan,
    now: u64,
) -> Result<(), OpError> {
    let mut units = Vec::new();
    let mut contexts = Vec::new();
    for unit in &plan.units {
        let mut jobs = Vec::new();
        for task in unit {
            let (harness, model) = if task.job_type == JobType::Gate {
                ("wf".to_string(), None)
            } else {
                let choice = &config.harness_for(task.job_type)[0];
                let harness = task
                    .harness
                    .clone()
                    .unwrap_or_else(|| choice.harness.clone());
                check_harness(config, &harness)
                    .map_err(|e| OpError::Invalid(format!("task `{}`: {e}", task.spec.id)))?;
                let model = task.model.clone().or_else(|| {
                    task.harness
                        .is_none()
                        .then(|| choice.model.clone())
                        .flatten()
                });
                (harness, model)
            };
            if task.context.len() > MAX_CONTEXT {
                return Err(OpError::Invalid(format!(
                    "task `{}`: its context is {} bytes; the limit is {} KiB",
                    task.spec.id,
                    task.context.len(),
                    MAX_CONTEXT / 1024
                )));
            }
            let job = NewJob {
                id: ids::from_random(fingerprint(&format!("{}/task/{}", doc.id, task.spec.id))),
                job_type: task.job_type,
                harness,
                model,
                has_context: !task.context.is_empty(),
                context_hash: (!task.context.is_empty()).then(|| fingerprint(&task.context)),
            };
            contexts.push((job.clone(), task.context.clone()));
            jobs.push(chain::TaskJob {
                job,
                spec: task.spec.clone(),
            });
        }
        units.push(jobs);
    }
    write_contexts(store, &doc.id, &contexts).await?;
    let groups: Vec<String> = (0..units.len())
        .map(|i| ids::from_random(fingerprint(&format!("{}/unit/{i}", doc.id))))
        .collect();
    chain::instantiate(doc, plan.workflow.clone(), &units, &groups, now)?;
    Ok(())
}

/// `wf approve`: passes the human gate the assignment waits at. Agents cannot: only a human
/// passes a gate.
pub async fn approve(
    store: &Store,
    assignment: &str,
    note: Option<&str>,
    caller: Option<&str>,
) -> Result<Assignment, OpError> {
    if let Some(job) = caller {
        return Err(OpError::Invalid(format!(
            "job {job} is an agent: only a human passes a gate"
        )));
    }
    if let Some(n) = note {
        chain::check_len("the note", n, chain::MAX_REASON)?;
    }
    let doc = find_assignment(store, assignment).await?;
    let gate = doc
        .jobs
        .iter()
        .find(|j| j.job_type == JobType::Gate && j.status == JobStatus::Pending)
        .map(|j| j.id.clone());
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    // The note is the gate's result, which the next task reads: stored before the CAS.
    if let (Some(gate), Some(text)) = (&gate, note) {
        let key = BlobKey::Result {
            assignment: doc.id.clone(),
            job: gate.clone(),
            attempt: 1,
        };
        store
            .put_blob(&key, format!("Approved by a human: {text}").as_bytes())
            .await?;
    }
    let (doc, _) = store
        .update(&doc.id, |d| {
            chain::approve(d, note, note.is_some(), now_ms())
        })
        .await?;
    Ok(doc)
}

/// `wf skip-job`: a pending job will not run; what depends on it goes ahead.
pub async fn skip_job(
    store: &Store,
    prefix: &str,
    reason: &str,
    caller: Option<&str>,
) -> Result<Assignment, OpError> {
    chain::check_len("the reason", reason, chain::MAX_REASON)?;
    let docs = job_owners(store, prefix).await?;
    let (doc, job) = resolve_job(&docs, prefix)?;
    let job_id = job.id.clone();
    let (doc, ()) = store
        .update(&doc.id, |d| {
            chain::skip_job(d, &job_id, reason, caller.is_some(), now_ms())
        })
        .await?;
    Ok(doc)
}

async fn write_contexts(
    store: &Store,
    assignment: &str,
    jobs: &[(NewJob, String)],
) -> Result<(), OpError> {
    for (job, context) in jobs.iter().filter(|(_, c)| !c.is_empty()) {
        let key = BlobKey::Context {
            assignment: assignment.to_string(),
            job: job.id.clone(),
        };
        store.put_blob(&key, context.as_bytes()).await?;
    }
    Ok(())
}

/// `wf insert-job`.
pub async fn insert_jobs(
    store: &Store,
    config: &Config,
    assignment: &str,
    specs: &[JobSpec],
    after: Option<&str>,
    caller: Option<&str>,
) -> Result<InsertResult, OpError> {
    let doc = find_assignment(store, assignment).await?;
    let mut jobs = expand(config, specs)?;
    let mut group = (jobs.len() > 1).then(crate::random::new_id);
    // An agent that runs the same `wf insert-job` again (after an ambiguous failure, a lost
    // acknowledgement) must not insert twice: its job ids follow from who asks (the calling
    // job and its attempt) and what is asked, so a retry finds its own insert.
    if let Some(attempt) = caller.and_then(|c| doc.job(c)).map(|j| j.attempt) {
        let seed = format!("{}/{}/{attempt}", doc.id, caller.unwrap_or_default());
        for (i, (job, context)) in jobs.iter_mut().enumerate() {
            let what = format!(
                "{seed}/{i}/{}/{}/{:?}/{}",
                job.job_type,
                job.harness,
                job.model,
                chain::fingerprint(context)
            );
            job.id = ids::from_random(chain::fingerprint(&what));
        }
        if group.is_some() {
            group = Some(ids::from_random(chain::fingerprint(&format!(
                "{seed}/group"
            ))));
        }
    }
    let position = match after {
        None => Position::End,
        Some(prefix) => Position::After(resolve_job([&doc], prefix)?.1.id.clone()),
    };
    if doc.status == AssignmentStatus::Complete {
        return Err(ChainError::AssignmentComplete(doc.id.clone()).into());
    }
    write_contexts(store, &doc.id, &jobs).await?;
    let new: Vec<NewJob> = jobs.into_iter().map(|(j, _)| j).collect();
    let caller = caller.map_or(Caller::Human, Caller::Job);
    let (doc, _) = store
        .update(&doc.id, |d| {
            chain::insert_jobs(
                d,
                &new,
                group.as_deref(),
                &position,
                caller,
                config.loop_limit,
                now_ms(),
            )
        })
        .await?;
    let ids: HashSet<&str> = new.iter().map(|j| j.id.as_str()).collect();
    let blocked = (doc.status == AssignmentStatus::Blocked).then(|| {
        format!(
            "assignment {} is blocked; the job(s) run after `wf update-assignment {} --status active`",
            doc.id, doc.id
        )
    });
    let warnings: Vec<String> = blocked
        .into_iter()
        .chain(unmeasured_cost(config, &doc, &new))
        .collect();
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    Ok(InsertResult {
        assignment_id: doc.id.clone(),
        version: doc.version,
        group_id: group,
        jobs: doc
            .jobs
            .iter()
            .filter(|j| ids.contains(j.id.as_str()))
            .cloned()
            .collect(),
        warning,
    })
}

/// `wf update-assignment`.
pub async fn update_assignment(
    store: &Store,
    config: &Config,
    assignment: &str,
    update: &AssignmentUpdate,
    caller: Option<&str>,
) -> Result<Assignment, OpError> {
    update.validate()?;
    let doc = find_assignment(store, assignment).await?;
    let pm = pm_job(config);
    let caller = caller.map_or(Caller::Human, Caller::Job);
    let (doc, _) = store
        .update(&doc.id, |d| {
            chain::update_assignment(d, update, caller, &pm, now_ms())
        })
        .await?;
    Ok(doc)
}

/// `wf assignments`: oldest first. A status other than complete is looked for among the open
/// assignments only (through the store's index): finished ones cost nothing.
pub async fn list_assignments(
    store: &Store,
    status: Option<AssignmentStatus>,
) -> Result<Vec<Assignment>, OpError> {
    let mut docs = match status {
        Some(s) if s != AssignmentStatus::Complete => store.list_open().await?,
        _ => store.list().await?,
    };
    docs.retain(|d| status.is_none_or(|s| d.status == s));
    docs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(docs)
}

/// `wf assignments --json`: the documents of [`list_assignments`], in its order, as one JSON
/// array of the documents as stored: only their heads are decoded (see
/// [`Store::list_stored`]), which makes a long list several times cheaper than decoding every
/// document to encode it again.
pub async fn list_assignments_json(
    store: &Store,
    status: Option<AssignmentStatus>,
) -> Result<Box<serde_json::value::RawValue>, OpError> {
    let open = status.is_some_and(|s| s != AssignmentStatus::Complete);
    let mut docs = store.list_stored(open).await?;
    docs.retain(|d| status.is_none_or(|s| d.head.status == s));
    docs.sort_by(|a, b| (a.head.created_at, &a.head.id).cmp(&(b.head.created_at, &b.head.id)));
    let mut json = String::with_capacity(docs.iter().map(|d| d.json.len() + 1).sum::<usize>() + 2);
    json.push('[');
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&d.json);
    }
    json.push(']');
    serde_json::value::RawValue::from_string(json).map_err(|e| {
        OpError::Store(StoreError::Backend(format!(
            "a stored document is not JSON: {e}"
        )))
    })
}

/// `wf jobs`: every job (archived ones included), assignments oldest first, each in chain
/// order; or those of one assignment.
pub async fn list_jobs(
    store: &Store,
    status: Option<JobStatus>,
    assignment: Option<&str>,
) -> Result<Vec<Job>, OpError> {
    let docs = match assignment {
        Some(prefix) => vec![find_assignment(store, prefix).await?],
        None => list_assignments(store, None).await?,
    };
    let mut jobs = Vec::new();
    for doc in docs {
        jobs.extend(archived_jobs(store, &doc).await?);
        jobs.extend(doc.jobs);
    }
    jobs.retain(|j| status.is_none_or(|s| j.status == s));
    Ok(jobs)
}

/// The archived jobs of `doc`, oldest first.
pub async fn archived_jobs(store: &Store, doc: &Assignment) -> Result<Vec<Job>, OpError> {
    let mut jobs = Vec::new();
    for segment in &doc.archive.segments {
        let key = BlobKey::Archive {
            assignment: doc.id.clone(),
            segment: segment.clone(),
        };
        let bytes = store.get_blob(&key).await?.ok_or_else(|| {
            OpError::Store(StoreError::Backend(format!(
                "archive segment {segment} of assignment {} is missing from the store",
                doc.id
            )))
        })?;
        let part: Vec<Job> = serde_json::from_slice(&bytes).map_err(|e| {
            OpError::Store(StoreError::Backend(format!(
                "archive segment {segment} of assignment {} is unreadable: {e}",
                doc.id
            )))
        })?;
        jobs.extend(part);
    }
    Ok(jobs)
}

/// Moves the oldest finished jobs of assignment `aid` to archive blobs while it has enough of
/// them (`chain::next_segment`): each segment's blob first, then the CAS that links it.
/// Returns the document as last written, if anything was archived.
pub async fn archive_finished(store: &Store, aid: &str) -> Result<Option<Assignment>, OpError> {
    let mut written = None;
    let Some(mut doc) = store.get(aid).await? else {
        return Ok(None);
    };
    while let Some(segment) = chain::next_segment(&doc) {
        let key = BlobKey::Archive {
            assignment: doc.id.clone(),
            segment: segment.name.clone(),
        };
        store.put_blob(&key, &segment.encode()).await?;
        match store
            .update(aid, |d| chain::archive_segment(d, &segment))
            .await
        {
            Ok((after, ())) => {
                doc = after.clone();
                written = Some(after);
            }
            // Someone changed the first jobs meanwhile (or linked the segment): next time.
            Err(UpdateError::Refused(chain::Unchanged)) => break,
            Err(UpdateError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// The documents to look for job `prefix` in: the open ones when one of their jobs matches (a
/// job asked for by id is almost always of a running assignment), else every one.
async fn job_owners(store: &Store, prefix: &str) -> Result<Vec<Assignment>, OpError> {
    let open = store.list_open().await?;
    if resolve_job(&open, prefix).is_ok() {
        return Ok(open);
    }
    Ok(store.list().await?)
}

/// Resolves a job id or unique prefix, archived jobs included: its assignment and the job.
pub async fn find_job(store: &Store, prefix: &str) -> Result<(Assignment, Job), OpError> {
    let mut docs = job_owners(store, prefix).await?;
    if matches!(resolve_job(&docs, prefix), Err(OpError::NotFound(_))) {
        // Not among the documents' jobs: look among the archived ones.
        for doc in docs.iter_mut().filter(|d| !d.archive.is_empty()) {
            let mut all = archived_jobs(store, doc).await?;
            all.append(&mut doc.jobs);
            doc.jobs = all;
        }
    }
    let (doc, job) = resolve_job(&docs, prefix)?;
    Ok((doc.clone(), job.clone()))
}

/// `wf job` (an archived job too): a job with its texts.
pub async fn job_detail(store: &Store, prefix: &str) -> Result<JobDetail, OpError> {
    let (doc, job) = find_job(store, prefix).await?;
    let (doc, job) = (&doc, &job);
    let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let context = if job.has_context {
        text(
            store
                .get_blob(&BlobKey::Context {
                    assignment: doc.id.clone(),
                    job: job.id.clone(),
                })
                .await?,
        )
    } else {
        None
    };
    let result = if job.has_result {
        text(
            store
                .get_blob(&BlobKey::Result {
                    assignment: doc.id.clone(),
                    job: job.id.clone(),
                    attempt: job.attempt,
                })
                .await?,
        )
    } else {
        None
    };
    Ok(JobDetail {
        job: job.clone(),
        context,
        result,
        north_star: doc.north_star.clone(),
        assignment_status: doc.status,
    })
}

/// `wf queue`: what is running, next and waiting, per unfinished assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueView {
    /// Pending, active and blocked assignments, oldest first.
    pub assignments: Vec<QueueEntry>,
}

/// One assignment in [`QueueView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueEntry {
    /// Assignment id.
    pub id: String,
    /// Its status.
    pub status: AssignmentStatus,
    /// Its north star.
    pub north_star: String,
    /// Independent or sequential.
    pub independent: bool,
    /// Priority.
    pub priority: i64,
    /// Jobs running now, with the runner holding them.
    pub running: Vec<RunningJob>,
    /// The jobs that run next.
    pub next: Vec<NextJob>,
    /// When a paused job may run again.
    pub waiting_until: Option<Millis>,
    /// Why it is blocked.
    pub blocked_reason: Option<String>,
    /// Its branch and the machine holding its worktree (with no remote to fetch the branch
    /// from, only a runner there runs it).
    #[serde(default)]
    pub workspace: Option<wf_core::model::Workspace>,
}

/// A running job in [`QueueEntry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunningJob {
    /// Job id.
    pub job_id: String,
    /// Job type.
    pub job_type: JobType,
    /// Harness.
    pub harness: String,
    /// The runner holding the lease.
    pub runner_id: String,
    /// The runner's host.
    pub host: String,
    /// When this attempt started.
    pub started_at: Option<Millis>,
    /// When the lease expires unless renewed.
    pub lease_expires_at: Millis,
}

/// A job waiting its turn in [`QueueEntry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NextJob {
    /// Job id.
    pub job_id: String,
    /// Job type.
    pub job_type: JobType,
    /// Harness.
    pub harness: String,
}

/// Builds the queue view from the documents (oldest first).
pub fn queue_view(mut docs: Vec<Assignment>) -> QueueView {
    docs.retain(|d| d.status != AssignmentStatus::Complete);
    docs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let assignments = docs
        .into_iter()
        .map(|d| {
            let running = match &d.lease {
                Some(lease) => lease
                    .job_ids
                    .iter()
                    .filter_map(|id| d.job(id))
                    .map(|j| RunningJob {
                        job_id: j.id.clone(),
                        job_type: j.job_type,
                        harness: j.harness.clone(),
                        runner_id: lease.runner_id.clone(),
                        host: lease.host.clone(),
                        started_at: j.started_at,
                        lease_expires_at: lease.expires_at,
                    })
                    .collect(),
                None => Vec::new(),
            };
            let unit = chain::current_unit(&d).map(|r| &d.jobs[r]).unwrap_or(&[]);
            let next = if d.lease.is_some() {
                Vec::new()
            } else {
                unit.iter()
                    .filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running))
                    .map(|j| NextJob {
                        job_id: j.id.clone(),
                        job_type: j.job_type,
                        harness: j.harness.clone(),
                    })
                    .collect()
            };
            let waiting_until = unit
                .iter()
                .filter(|j| j.status == JobStatus::WaitingRetry)
                .filter_map(|j| j.retry_after)
                .min();
            QueueEntry {
                id: d.id.clone(),
                status: d.status,
                north_star: d.north_star.clone(),
                independent: d.independent,
                priority: d.priority,
                running,
                next,
                waiting_until,
                blocked_reason: d.blocked_reason.clone(),
                workspace: d.workspace.clone(),
            }
        })
        .collect();
    QueueView { assignments }
}

/// What `wf cancel` names: an assignment or one job (by id or prefix).
pub async fn cancel(
    store: &Store,
    prefix: &str,
    runner: Option<&str>,
) -> Result<Assignment, OpError> {
    let prefix = ids::parse_prefix(prefix)?;
    // Assignments by their ids alone; jobs among the open assignments (a cancel is for work
    // under way), else among all.
    let all_ids = store.ids().await?;
    let mut docs = store.list_open().await?;
    let matches_job = |docs: &[Assignment]| {
        docs.iter()
            .any(|d| d.jobs.iter().any(|j| j.id.starts_with(&prefix)))
    };
    let matches_assignment = all_ids.iter().any(|id| id.starts_with(&prefix));
    if !matches_assignment && !matches_job(&docs) {
        docs = store.list().await?;
    }
    let assignments = all_ids.iter().map(|id| (id.clone(), (id.clone(), None)));
    let jobs = docs.iter().flat_map(|d| {
        d.jobs
            .iter()
            .map(move |j| (j.id.clone(), (d.id.clone(), Some(j.id.clone()))))
    });
    let (aid, job) = match ids::resolve(&prefix, assignments.chain(jobs)) {
        Resolved::One(found) => found,
        Resolved::None => {
            return Err(OpError::NotFound(format!(
                "no assignment or job matches {prefix:?}"
            )))
        }
        Resolved::Ambiguous(ids) => {
            return Err(OpError::Invalid(format!(
                "id {prefix:?} is ambiguous: it matches {}",
                ids.join(", ")
            )))
        }
    };
    let target_job = job.clone();
    let exclusive = store.exclusive();
    let (doc, ()) = store
        .update(&aid, |d| {
            // With the embedded store, only the runner executing this request can hold a live
            // lease; a CLI holding the store itself means no runner runs.
            let me = runner.unwrap_or("");
            let view = chain::LeaseView {
                now: now_ms(),
                me,
                exclusive,
            };
            let target = match &target_job {
                Some(j) => chain::CancelTarget::Job(j),
                None => chain::CancelTarget::Assignment,
            };
            chain::cancel(d, target, &view)
        })
        .await?;
    Ok(doc)
}

/// `wf retry`: puts a failed or cancelled job back to pending, in place.
pub async fn retry(store: &Store, prefix: &str) -> Result<Assignment, OpError> {
    let docs = job_owners(store, prefix).await?;
    let (doc, job) = resolve_job(&docs, prefix)?;
    let job_id = job.id.clone();
    let (doc, ()) = store
        .update(&doc.id, |d| chain::retry(d, &job_id, now_ms()))
        .await?;
    Ok(doc)
}
