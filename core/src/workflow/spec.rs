//! What a workflow leaves in the stored documents: the assignment's [`WorkflowRef`] (name,
//! version, content hash, the bound parameters) and each task job's [`TaskSpec`] (its task
//! id, dependencies, gate, checks, retry, failure policy, loop and verdict).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{string_enum, FailureReason, Millis};

/// The workflow an assignment was instantiated from, as it was then: editing the file later
/// changes nothing in the assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowRef {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// A hash of the file's text (16 hex digits).
    pub hash: String,
    /// Where it came from: `project`, `user` or `builtin`.
    pub source: String,
    /// The parameters as bound (defaults included).
    pub params: BTreeMap<String, String>,
    /// The branch does not become a pull request when the assignment completes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_pull_request: bool,
    /// The trigger that created the assignment, and what fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerRef>,
}

/// The trigger that created an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRef {
    /// The trigger's id.
    pub id: String,
    /// What fired it: a slot, `issue/owner/repo#12`, `pr/owner/repo#7@<sha>`, `beads/<id>`.
    pub event: String,
}

string_enum! {
    /// What happens when a task fails for good (after its retries and loop rounds).
    OnFailure {
        /// The PM decides (wf's usual failure flow); tasks that depend on it wait.
        Pm => "pm",
        /// The assignment blocks for a human; tasks that depend on it wait.
        Block => "block",
        /// The task counts as skipped: tasks that depend on it run.
        Skip => "skip",
        /// Every pending task is skipped and the assignment blocks.
        Abort => "abort",
    }
}

string_enum! {
    /// What the runner does on the forge with a task's result once it completed.
    Publish {
        /// Posts the result as a comment on the assignment's issue.
        IssueComment => "issue-comment",
        /// Adds the labels the result names (`LABELS: a, b`) to the assignment's issue.
        IssueLabels => "issue-labels",
        /// Posts the result as a review of the assignment's pull request (request changes
        /// when the verdict is fail).
        PrReview => "pr-review",
        /// Opens the issues the result lists (a JSON array) with their dependencies and the
        /// ready label.
        Issues => "issues",
    }
}

/// A gate: a task no agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Gate {
    /// The assignment blocks with the prompt until a human runs `wf approve`.
    Human {
        /// What the human is asked.
        prompt: String,
    },
    /// The runner runs a command until it succeeds or the time is up.
    #[serde(rename_all = "camelCase")]
    Command {
        /// The command (`sh -c`, in the assignment's workspace).
        run: String,
        /// Wait between tries.
        every_ms: Millis,
        /// Longest wait for success.
        timeout_ms: Millis,
    },
}

/// How a task is run again after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRetry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The failure reasons retried.
    pub on: Vec<FailureReason>,
    /// Wait before the next attempt.
    pub backoff_ms: Millis,
}

impl TaskRetry {
    /// Whether a failure for `reason` at attempt `attempt` is tried again.
    pub fn covers(&self, reason: FailureReason, attempt: u32) -> bool {
        attempt < self.attempts && self.on.contains(&reason)
    }
}

/// A bounded loop: when the task's verdict is fail, the tasks from `from` to it run again,
/// at most `max` rounds in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoopSpec {
    /// The first task of the loop.
    pub from: String,
    /// The tasks run again, in order (`from` … this one).
    pub tasks: Vec<String>,
    /// Most rounds.
    pub max: u32,
}

/// A job's place in its workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The task's id in the workflow.
    pub id: String,
    /// The tasks that must have succeeded (or been skipped) before it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The loop round this job is (1 unless a loop inserted it).
    pub round: u32,
    /// No agent: a human or a command passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Commands the runner runs after the agent succeeded (all required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<String>,
    /// Its retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<TaskRetry>,
    /// What happens when it fails for good.
    pub on_failure: OnFailure,
    /// Its loop, if it ends one.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_spec: Option<LoopSpec>,
    /// Its final message must say `VERDICT: pass`; fail or no verdict fails it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verdict: bool,
    /// What the runner does on the forge with its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publish>,
    /// Its acceptance criteria (also in its context).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acceptance: Vec<String>,
    /// The job of the previous round whose result this round answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The job whose stored context this one uses (a loop's later rounds use their first
    /// round's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_job: Option<String>,
    /// Why it was skipped, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}
