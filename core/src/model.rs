//! The domain records: the assignment document and the jobs inside it.
//!
//! One [`Assignment`] is one document in the store and the unit of atomicity: its job chain,
//! every job's status, the lease and the counters change together in one compare-and-swap.
//! These types are also the `--json` output of the CLI, so field names are camelCase and
//! statuses serialise as snake_case strings, exactly once, here.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire and display form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {:?} (expected one of: {})",
                        stringify!($name).to_lowercase().replace("status", " status")
                            .replace("jobtype", "job type").trim(),
                        s.chars().take(40).collect::<String>(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub(crate) use string_enum;

string_enum! {
    /// Where an assignment stands.
    AssignmentStatus {
        /// Created; no job has run yet.
        Pending => "pending",
        /// Work is under way.
        Active => "active",
        /// Waiting for a human (see `blockedReason`).
        Blocked => "blocked",
        /// Done; nothing more runs.
        Complete => "complete",
    }
}

string_enum! {
    /// Where a job stands.
    JobStatus {
        /// Waiting for its turn.
        Pending => "pending",
        /// An agent is running it under a lease.
        Running => "running",
        /// The agent succeeded.
        Complete => "complete",
        /// The agent failed; `failureReason` says how.
        Failed => "failed",
        /// Paused by a transient error (rate limit, overload); resumes after `retryAfter`.
        WaitingRetry => "waiting_retry",
        /// Not run: the PM or a workflow rule skipped it (`task.skipped` says why).
        Skipped => "skipped",
    }
}

string_enum! {
    /// The kind of work a job does; each has a prompt template.
    JobType {
        /// Plan the work.
        Plan => "plan",
        /// Change the code.
        Implement => "implement",
        /// Review a change.
        Review => "review",
        /// Check the result as a user would.
        Uat => "uat",
        /// Write the documentation.
        Document => "document",
        /// The PM shadow job that decides what happens next.
        Pm => "pm",
        /// A workflow's gate: no agent runs; a human (`wf approve`) or a command passes it.
        Gate => "gate",
    }
}

string_enum! {
    /// Why a job failed.
    FailureReason {
        /// The agent ended unsuccessfully (non-zero exit or an unsuccessful result event).
        Exit => "exit",
        /// The job ran longer than `timeoutMs`.
        Timeout => "timeout",
        /// The agent printed nothing for `idleTimeoutMs`.
        IdleTimeout => "idle_timeout",
        /// A human or the runner cancelled it.
        Cancelled => "cancelled",
        /// The agent exited without the result event its stream format requires.
        MalformedStream => "malformed_stream",
        /// The agent could not be started.
        SpawnError => "spawn_error",
        /// A budget of the assignment was exhausted.
        Budget => "budget",
        /// A required verification step failed after the agent's work.
        Verification => "verification",
        /// The runner could not prepare or commit the job's workspace.
        Workspace => "workspace",
        /// A workflow task's final message said `VERDICT: fail`, or gave no verdict.
        Verdict => "verdict",
    }
}

string_enum! {
    /// What kind of error an operation ended with: the same on the control socket and in the
    /// CLI, whose exit code follows from it.
    ErrorKind {
        /// Nothing matches the id (exit code 4).
        NotFound => "not_found",
        /// The request is wrong or the chain refused it (exit code 1).
        Invalid => "invalid",
        /// The store failed (exit code 3).
        Store => "store",
        /// The store or the runner could not be reached (exit code 3).
        Unavailable => "unavailable",
    }
}

impl JobStatus {
    /// True for statuses that end a job: it will not run again unless retried by a human.
    pub fn is_finished(self) -> bool {
        match self {
            JobStatus::Complete | JobStatus::Failed | JobStatus::Skipped => true,
            JobStatus::Pending | JobStatus::Running | JobStatus::WaitingRetry => false,
        }
    }
}

/// Tokens and money spent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in US dollars; `None` when the harness reports none and no price is known.
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Adds `other` to `self`. An unknown cost stays unknown only if both are unknown.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

/// One agent run in an assignment's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// The assignment the job belongs to.
    pub assignment_id: String,
    /// What kind of work it does.
    pub job_type: JobType,
    /// Which configured harness runs it (`claude`, `codex`, `gemini` or a custom one).
    pub harness: String,
    /// The model, when not the harness default.
    pub model: Option<String>,
    /// Where it stands.
    pub status: JobStatus,
    /// Jobs inserted together share a group and run in parallel.
    pub group_id: Option<String>,
    /// How many times an agent was started for it.
    pub attempt: u32,
    /// When it was inserted.
    pub created_at: Millis,
    /// When its latest attempt started.
    pub started_at: Option<Millis>,
    /// When it finished.
    pub completed_at: Option<Millis>,
    /// Why it failed, when it did.
    pub failure_reason: Option<FailureReason>,
    /// A short human explanation of the failure or pause.
    pub failure_detail: Option<String>,
    /// The agent's session id (for resuming by hand).
    pub session_id: Option<String>,
    /// What the job spent over all its attempts.
    pub usage: Usage,
    /// When a job paused by a transient error may run again.
    pub retry_after: Option<Millis>,
    /// How many times transient errors paused it.
    pub pauses: u32,
    /// Whether a context text is stored for the job.
    pub has_context: bool,
    /// Whether a result text is stored for the latest attempt.
    pub has_result: bool,
    /// Exit code of the latest attempt's agent (`None` while running, or when a signal killed
    /// it or it never started).
    pub exit_code: Option<i32>,
    /// The PM job whose `wf insert-job` created this job; `None` when a human (or the runner)
    /// inserted it.
    pub inserted_by: Option<String>,
    /// For PM jobs: the jobs it reviews.
    pub reviews: Vec<String>,
    /// For PM jobs: this is the second PM run, started because the first decided nothing.
    pub pm_reminder: bool,
    /// A human asked to cancel it while it ran; the runner holding it stops it.
    pub cancel_requested: bool,
    /// A fingerprint of its context, to notice a PM inserting the same job again and again.
    pub context_hash: Option<u64>,
    /// The workspace commits its latest attempt started from and ended on (worktree mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<JobCommits>,
    /// The verification steps the runner ran after its latest attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// The live counters of its running attempt, written every few seconds while it runs and
    /// dropped when its outcome is recorded (its usage stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    /// Its place in the assignment's workflow, when a workflow made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<crate::workflow::TaskSpec>,
}

/// What a running attempt did so far, as its event stream tells (written every few seconds
/// while it changes, never once per event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobProgress {
    /// The attempt these counters are of.
    pub attempt: u32,
    /// Events seen (the next event's sequence number).
    pub events: u64,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Input tokens so far.
    pub input_tokens: u64,
    /// Output tokens so far.
    pub output_tokens: u64,
    /// Cost so far, when known.
    pub cost_usd: Option<f64>,
    /// When the latest event came (ms since the epoch): idle time is measured from it.
    pub last_event_at: Millis,
    /// What it did last, in one short line.
    pub last_activity: String,
}

/// Where a job's attempt started and ended in its workspace's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobCommits {
    /// The branch's commit when the attempt started.
    pub start: String,
    /// The commit the runner made of what the attempt left (`start` when it left nothing).
    pub end: String,
}

/// One verification step, as the runner ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckResult {
    /// Its name (`Tests`, `Lint`, …).
    pub name: String,
    /// The command, as run by `sh -c`.
    pub command: String,
    /// A failure fails the job.
    pub required: bool,
    /// The verdict: the command exited 0.
    pub passed: bool,
    /// Its exit code (`None`: killed by a signal, timed out, or not started).
    pub exit_code: Option<i32>,
    /// It ran past its timeout and was stopped.
    pub timed_out: bool,
    /// Test counts read from its output, best effort.
    pub counts: Option<TestCounts>,
    /// How long it ran.
    pub duration_ms: u64,
    /// The end of its output (stdout and stderr), a few lines.
    pub output_tail: String,
    /// The commit it ran on.
    pub commit: Option<String>,
}

/// Test counts read from a check's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests skipped or ignored.
    pub skipped: u64,
}

impl CheckResult {
    /// One line: `✅ Tests: 42 passed, 0 failed` or `❌ Lint: exit 3`.
    pub fn summary(&self) -> String {
        let mark = if self.passed { "✅" } else { "❌" };
        let what = match (self.counts, self.timed_out, self.exit_code) {
            (_, true, _) => "timed out".to_string(),
            (Some(c), _, _) => {
                let mut s = format!("{} passed, {} failed", c.passed, c.failed);
                if c.skipped > 0 {
                    s.push_str(&format!(", {} skipped", c.skipped));
                }
                s
            }
            (None, _, Some(0)) => "passed".to_string(),
            (None, _, Some(code)) => format!("exit {code}"),
            (None, _, None) => "killed".to_string(),
        };
        let optional = if self.required { "" } else { " (optional)" };
        format!("{mark} {}{optional}: {what}", self.name)
    }
}

/// A runner's claim on the running unit (a job or a group) of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    /// The jobs the lease covers (one job, or the unfinished jobs of a group).
    pub job_ids: Vec<String>,
    /// The runner that holds it (unique per runner process).
    pub runner_id: String,
    /// The host the runner runs on.
    pub host: String,
    /// The fencing token: every write about these jobs' outcome must carry it.
    pub epoch: u64,
    /// The lease is dead after this instant unless renewed.
    pub expires_at: Millis,
}

/// A note from a human, waiting to be shown to the next PM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Note {
    /// The text.
    pub text: String,
    /// When it was written.
    pub at: Millis,
}

/// The newest schema version of the [`Assignment`] documents this wf reads and writes.
/// Version 2 added `archive`, `workspace`, `forge`, `budget.maxReviewCycles`, the jobs' `commits` and `checks`, and the failure
/// reasons `verification` and `workspace`; a document is written at 2 only once it uses one.
/// Version 3 added the jobs' live `progress`; version 4 the `outbox` of notifications;
/// version 5 workflows: the assignment's `workflow`, the jobs' `task`, the job status
/// `skipped`, the job type `gate` and the failure reason `verdict`.
///
/// The upgrade rule (ARCHITECTURE.md, "Stored documents and rolling upgrades"): any change to
/// the stored shape bumps it; a document with a newer version is left alone — not claimed,
/// not written, listed by `wf doctor` — by a wf that reads only older ones.
pub const SCHEMA_VERSION: u32 = 5;

/// Documents written before the field existed are version 1.
fn first_schema_version() -> u32 {
    1
}

/// The assignment document: a north star and its chain of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    /// The shape of this document ([`SCHEMA_VERSION`] when this wf created it).
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
    /// The assignment id.
    pub id: String,
    /// The namespace (one repository) it belongs to.
    pub namespace: String,
    /// The intent, as the user stated it. Never changes.
    pub north_star: String,
    /// Where it stands.
    pub status: AssignmentStatus,
    /// Why it is blocked, when it is.
    pub blocked_reason: Option<String>,
    /// Among assignments of the same age, a lower number runs first (default 10, as in the seed).
    pub priority: i64,
    /// Independent assignments run alongside others; dependent ones one at a time.
    pub independent: bool,
    /// What the work produced so far (files, branches, links), kept by the PM.
    pub artifacts: String,
    /// Decisions taken so far, kept by the PM.
    pub decisions: String,
    /// The chain, in order.
    pub jobs: Vec<Job>,
    /// When it was created.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// Bumped by every write; the store's compare-and-swap compares it.
    pub version: u64,
    /// The last fencing token handed out.
    pub epoch: u64,
    /// The lease of the running unit, if any.
    pub lease: Option<Lease>,
    /// What all its jobs spent.
    pub usage: Usage,
    /// How many PM runs finished.
    pub pm_rounds: u32,
    /// Notes from humans for the next PM.
    pub notes: Vec<Note>,
    /// Limits on what the assignment may spend.
    pub budget: Budget,
    /// When its first job started (for the wall-time budget).
    pub started_at: Option<Millis>,
    /// The oldest finished jobs, moved out of the document into blobs to keep it small.
    #[serde(default, skip_serializing_if = "JobArchive::is_empty")]
    pub archive: JobArchive,
    /// Its git worktree and branch (worktree mode), once the runner created them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    /// The forge issue it works on and the pull request it became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeLink>,
    /// Notifications recorded by the write that caused them and not yet delivered
    /// (`wf_core::chain::notify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Notice>,
    /// The workflow it was instantiated from, as it was then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::workflow::WorkflowRef>,
}

string_enum! {
    /// What a notification is about.
    NotifyEvent {
        /// The assignment became complete.
        Complete => "complete",
        /// The assignment became blocked: a human must act.
        Blocked => "blocked",
        /// A job ended failed (not paused, not cancelled).
        JobFailed => "job_failed",
    }
}

impl NotifyEvent {
    /// The `event` field of the payload and the `X-Wf-Event` header.
    pub fn wire_name(self) -> &'static str {
        match self {
            NotifyEvent::Complete => "assignment.completed",
            NotifyEvent::Blocked => "assignment.blocked",
            NotifyEvent::JobFailed => "job.failed",
        }
    }
}

/// A notification waiting in an assignment's outbox: what happened, as it was when it did,
/// and how far its delivery got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notice {
    /// Stable across retries and runners: the assignment, the document version whose write
    /// caused it, the event (and the job).
    pub id: String,
    /// What happened.
    pub event: NotifyEvent,
    /// When.
    pub at: Millis,
    /// The blocked reason, or the job's failure reason and detail (cut).
    pub reason: Option<String>,
    /// The job, for `job_failed`.
    pub job: Option<NoticeJob>,
    /// What the assignment had spent then.
    pub cost_usd: Option<f64>,
    /// The hooks (by key) that are done with it: delivered, or refused for good.
    pub delivered: Vec<String>,
    /// The runner delivering it, until when.
    pub claim: Option<NoticeClaim>,
    /// Delivery rounds that ended with a hook still failing.
    pub failed_rounds: u32,
    /// Not before this instant (after a failed round).
    pub retry_at: Option<Millis>,
}

/// The job a `job_failed` notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticeJob {
    /// Its id.
    pub id: String,
    /// Its type.
    pub job_type: JobType,
    /// Its harness.
    pub harness: String,
    /// Its attempt.
    pub attempt: u32,
    /// Why it failed.
    pub failure_reason: Option<FailureReason>,
}

/// Who is delivering a notice: it stays theirs until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticeClaim {
    /// The runner.
    pub runner_id: String,
    /// Another runner may take it over after this instant.
    pub until: Millis,
}

/// An assignment's place on the forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForgeLink {
    /// `owner/repo`.
    pub repo: String,
    /// The issue it was created from.
    pub issue: Option<IssueRef>,
    /// The pull request the runner opened (or, for a `review-pr` workflow, the one reviewed).
    pub pull_request: Option<PullRequestRef>,
    /// The id of the living progress comment on the issue.
    pub progress_comment: Option<u64>,
}

/// A forge issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRef {
    /// Its number.
    pub number: u64,
    /// Its title.
    pub title: String,
    /// Its web address.
    pub url: String,
    /// Its labels.
    pub labels: Vec<String>,
}

/// A pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullRequestRef {
    /// Its number.
    pub number: u64,
    /// Its web address.
    pub url: String,
    /// Opened as a draft (a required check failed).
    pub draft: bool,
}

/// An assignment's workspace: a git worktree on its own branch, cut from a recorded base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workspace {
    /// The branch its jobs commit to.
    pub branch: String,
    /// The branch it was cut from.
    pub base_branch: String,
    /// The commit it was cut from.
    pub base_commit: String,
    /// The worktree's absolute path on `host`.
    pub path: String,
    /// The machine whose repository holds the worktree.
    pub host: String,
}

/// Where an assignment's archived jobs are: segments of finished jobs, oldest first, each a
/// blob holding the JSON array of its jobs (`BlobKey::Archive`). The jobs they hold are the
/// ones before `Assignment::jobs`, in chain order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobArchive {
    /// The segments' names (their blob keys within the assignment), oldest first.
    pub segments: Vec<String>,
    /// How many jobs they hold.
    pub jobs: u32,
    /// Of those, how many non-PM jobs were started (the `maxJobs` budget counts them).
    pub started: u32,
    /// Of those, how many review jobs were started (`maxReviewCycles`).
    #[serde(default)]
    pub reviews: u32,
}

impl JobArchive {
    /// Nothing was archived.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Limits on what one assignment may spend. `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// Most money, in US dollars, over all its jobs.
    pub max_cost_usd: Option<f64>,
    /// Most non-PM jobs started.
    pub max_jobs: Option<u32>,
    /// Most PM runs.
    pub max_pm_rounds: Option<u32>,
    /// Most time from its first job's start, in milliseconds.
    pub max_wall_ms: Option<u64>,
    /// Most review jobs started; `None` means [`DEFAULT_MAX_REVIEW_CYCLES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_review_cycles: Option<u32>,
}

/// Review jobs an assignment may start when its budget names no `maxReviewCycles` (as the
/// seed's workflow package): after that, a human decides.
pub const DEFAULT_MAX_REVIEW_CYCLES: u32 = 3;

impl Assignment {
    /// The oldest schema version that can hold this document: 2 once it uses a field that
    /// version 2 added (`archive`), else 1. The store writes at least this version.
    pub fn required_schema_version(&self) -> u32 {
        let v5_job = |j: &Job| {
            j.task.is_some()
                || j.status == JobStatus::Skipped
                || j.job_type == JobType::Gate
                || j.failure_reason == Some(FailureReason::Verdict)
        };
        if self.workflow.is_some() || self.jobs.iter().any(v5_job) {
            return 5;
        }
        if !self.outbox.is_empty() {
            return 4;
        }
        if self.jobs.iter().any(|j| j.progress.is_some()) {
            return 3;
        }
        let v2_job = |j: &Job| {
            j.commits.is_some()
                || !j.checks.is_empty()
                || matches!(
                    j.failure_reason,
                    Some(FailureReason::Verification | FailureReason::Workspace)
                )
        };
        if self.archive.is_empty()
            && self.budget.max_review_cycles.is_none()
            && self.workspace.is_none()
            && self.forge.is_none()
            && !self.jobs.iter().any(v2_job)
        {
            1
        } else {
            2
        }
    }

    /// Whether the assignment is open: anything may still happen to it without a human — it
    /// is not complete, or it still holds a lease or notices to deliver. Runners keep only
    /// open documents in memory; the store indexes them so that nothing else has to read the
    /// finished ones.
    pub fn is_open(&self) -> bool {
        self.status != AssignmentStatus::Complete || self.lease.is_some() || !self.outbox.is_empty()
    }

    /// The job with id `id`.
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// The index of the job with id `id`.
    pub fn job_index(&self, id: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_strings() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in AssignmentStatus::ALL {
            assert_eq!(s.as_str().parse::<AssignmentStatus>().unwrap(), *s);
        }
        for t in JobType::ALL {
            assert_eq!(t.as_str().parse::<JobType>().unwrap(), *t);
        }
        assert_eq!(FailureReason::IdleTimeout.as_str(), "idle_timeout");
    }

    #[test]
    fn unknown_values_name_the_choices() {
        let err = "bogus".parse::<JobType>().unwrap_err();
        assert!(err.contains("unknown job type \"bogus\""), "{err}");
        assert!(err.contains("plan, implement"), "{err}");
        let err = "x".parse::<AssignmentStatus>().unwrap_err();
        assert!(err.starts_with("unknown assignment status"), "{err}");
    }

    #[test]
    fn usage_adds_and_keeps_unknown_cost_unknown() {
        let mut u = Usage::default();
        u.add(&Usage {
            input_tokens: 3,
            output_tokens: 4,
            cost_usd: None,
        });
        assert_eq!(u.cost_usd, None);
        u.add(&Usage {
            input_tokens: 1,
            output_tokens: 1,
            cost_usd: Some(0.5),
        });
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cost_usd),
            (4, 5, Some(0.5))
        );
    }
}
