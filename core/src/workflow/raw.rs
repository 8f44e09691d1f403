//! A workflow file as written (TOML, snake_case keys): parsed strictly, unknown keys refused
//! with their line.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// Its name.
    pub workflow: String,
    /// Its version (bump on change).
    pub version: u32,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The north star when `wf create` gives none (a template over the parameters).
    #[serde(default)]
    pub north_star: Option<String>,
    /// The parameter naming the forge issue the assignment works on (`issue` for the issue
    /// workflow): its issue and pull request are the assignment's.
    #[serde(default)]
    pub forge_issue: Option<String>,
    /// The parameter naming the pull request the assignment is about (`review-pr`).
    #[serde(default)]
    pub forge_pull_request: Option<String>,
    /// Whether the assignment's branch becomes a pull request when it completes (default
    /// true; triage, a review or a plan of issues change no code).
    #[serde(default)]
    pub pull_request: Option<bool>,
    /// Its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, RawParam>,
    /// Defaults of its tasks.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Its tasks.
    #[serde(default)]
    pub tasks: Vec<RawTask>,
}

/// One parameter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    /// What it means.
    #[serde(default)]
    pub description: Option<String>,
    /// It must be given (when it has no default).
    #[serde(default)]
    pub required: bool,
    /// Its value when not given.
    #[serde(default)]
    pub default: Option<String>,
    /// The values allowed.
    #[serde(default, rename = "enum")]
    pub choices: Option<Vec<String>>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// The harness of tasks that name none.
    #[serde(default)]
    pub harness: Option<String>,
    /// The model of tasks that name none.
    #[serde(default)]
    pub model: Option<String>,
    /// The retry policy of tasks that have none.
    #[serde(default)]
    pub retry: Option<RawRetry>,
    /// The failure policy of tasks that have none.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// A retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all.
    pub attempts: u32,
    /// Failure reasons retried (default: timeout, idle_timeout, malformed_stream,
    /// spawn_error).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// Wait before the next attempt (`30s`, `5m`; default 30s).
    #[serde(default)]
    pub backoff: Option<String>,
}

/// One task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    /// Its id.
    pub id: String,
    /// Its job type (none for a gate).
    #[serde(default, rename = "type")]
    pub job_type: Option<String>,
    /// What the agent is to do (a template over `params`, `north_star`, `workflow`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// When it is done.
    #[serde(default)]
    pub acceptance: Vec<String>,
    /// Tasks that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Its harness.
    #[serde(default)]
    pub harness: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// Commands the runner runs after the agent succeeded.
    #[serde(default)]
    pub verify: Vec<String>,
    /// A gate instead of an agent.
    #[serde(default)]
    pub gate: Option<RawGate>,
    /// Its retry policy.
    #[serde(default)]
    pub retry: Option<RawRetry>,
    /// `pm`, `block`, `skip` or `abort`.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// A bounded loop back to an earlier task while its verdict is fail.
    #[serde(default, rename = "loop")]
    pub loop_spec: Option<RawLoop>,
    /// Its final message must carry `VERDICT: pass` or `VERDICT: fail`.
    #[serde(default)]
    pub verdict: bool,
    /// What the runner does on the forge with its result.
    #[serde(default)]
    pub publish: Option<String>,
}

/// A gate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// `human` or `command`.
    pub kind: String,
    /// What a human is asked.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The command to run until it succeeds.
    #[serde(default)]
    pub run: Option<String>,
    /// Wait between tries (default 30s).
    #[serde(default)]
    pub every: Option<String>,
    /// Longest wait (default 1h).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoop {
    /// The first task run again.
    pub from: String,
    /// Most rounds in all (mandatory, 1–10).
    pub max: u32,
}
