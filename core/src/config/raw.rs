//! The config file as written: camelCase keys, every key optional, unknown keys refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Config, ConfigError, StoreConfig};
use crate::model::Budget;

/// The file as written: camelCase keys, every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// Namespace of this repository's assignments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where state lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<RawStore>,
    /// Directory for the control socket, transcripts and runner files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Directory the agents run in (default: the project root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Directory of template overrides (default: `.wf/templates`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates_dir: Option<String>,
    /// Longest a job may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Longest an agent may stay silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Time between TERM and KILL when stopping an agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// How many assignments a runner works on at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// On the first SIGTERM/SIGINT, how long running jobs may go on before they are stopped
    /// and returned to pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_ms: Option<u64>,
    /// Lease length; renewed every third of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Harness (or fan-out list of harnesses) per job type, plus `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness_defaults: Option<BTreeMap<String, Value>>,
    /// Harness definitions by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harnesses: Option<BTreeMap<String, RawHarness>>,
    /// Prices per model, for harnesses that report no cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices: Option<BTreeMap<String, Price>>,
    /// Waits before each retry of a job paused by a transient error (the last repeats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<Vec<u64>>,
    /// How many times one job may be paused by transient errors before it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pauses: Option<u32>,
    /// Default budgets of new assignments (`wf create` may override them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budget>,
    /// A PM inserting the same job type with the same context this many times in a row blocks
    /// the assignment (0: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_limit: Option<u32>,
    /// The largest an assignment's stored document may grow, in bytes (NATS: never more than
    /// the server's `max_payload` allows). A write that would pass it is refused; a runner
    /// then blocks the assignment instead of running its job again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_document_bytes: Option<usize>,
    /// Where `wf-runner` serves the dashboard (`host:port`); not served when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// Where assignments' work happens: a git worktree per assignment, or in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<super::RawWorkspace>,
    /// Checks the runner runs after a job (default: detected from the repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Vec<super::RawCheck>>,
    /// The job types verification runs after (default: `["implement"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_after: Option<Vec<String>>,
    /// The forge: where `wf create --issue` reads issues and pull requests are opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forge: Option<super::RawForge>,
    /// Hooks run when an assignment completes or blocks, or a job fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<super::RawHook>>,
}

/// The `store` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum RawStore {
    /// The embedded store.
    Sled {
        /// Database directory.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// NATS JetStream.
    Nats {
        /// Server URL(s), comma separated.
        url: String,
        /// A `.creds` file.
        #[serde(skip_serializing_if = "Option::is_none")]
        credentials: Option<String>,
        /// An auth token.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// A CA certificate to trust (enables TLS).
        #[serde(skip_serializing_if = "Option::is_none", rename = "tlsCa")]
        tls_ca: Option<String>,
        /// Client certificate (mutual TLS).
        #[serde(skip_serializing_if = "Option::is_none", rename = "tlsCert")]
        tls_cert: Option<String>,
        /// Client key (mutual TLS).
        #[serde(skip_serializing_if = "Option::is_none", rename = "tlsKey")]
        tls_key: Option<String>,
        /// Require TLS.
        #[serde(skip_serializing_if = "Option::is_none", rename = "tlsRequired")]
        tls_required: Option<bool>,
        /// Copies of the bucket and the token stream when wf creates them (a cluster: 3).
        #[serde(skip_serializing_if = "Option::is_none")]
        replicas: Option<usize>,
    },
}

/// One entry of `harnesses`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHarness {
    /// The program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Extra arguments, appended after the harness's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// The default model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Custom harnesses: the stream format of stdout (`claude`, `codex`, `gemini`, `text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Claude: `--permission-mode` (`acceptEdits` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Claude: `--allowedTools` (by default `Bash(wf:*)`, so that PM jobs can run `wf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// Codex: the sandbox (`read-only`, `workspace-write`, `danger-full-access`, or `bypass`
    /// for `--dangerously-bypass-approvals-and-sandbox`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Gemini: `--approval-mode` (`default`, `auto_edit`, `yolo`, `plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<String>,
}

/// A price for computing the cost of harnesses that report none (Codex, Gemini).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    /// US dollars per million input tokens (cached ones included, unless priced below).
    pub input_per_m_tok: f64,
    /// US dollars per million output tokens.
    pub output_per_m_tok: f64,
    /// US dollars per million cached input tokens, when cheaper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_m_tok: Option<f64>,
}

/// Parses config text. `origin` names the file in errors.
pub fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ConfigError::Invalid {
            path: origin.to_string(),
            message,
        }
    })
}

impl Config {
    /// This configuration as a file with absolute paths (what `effective-config.json` holds).
    pub fn to_raw(&self) -> RawConfig {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        RawConfig {
            namespace: Some(self.namespace.to_string()),
            store: Some(match &self.store {
                StoreConfig::Sled { path: p } => RawStore::Sled {
                    path: Some(path(p)),
                },
                StoreConfig::Nats(n) => RawStore::Nats {
                    url: n.url.clone(),
                    credentials: n.credentials.as_deref().map(path),
                    token: n.token.clone(),
                    tls_ca: n.tls_ca.as_deref().map(path),
                    tls_cert: n.tls_cert.as_deref().map(path),
                    tls_key: n.tls_key.as_deref().map(path),
                    tls_required: Some(n.tls_required),
                    replicas: Some(n.replicas),
                },
            }),
            state_dir: Some(path(&self.state_dir)),
            workdir: Some(path(&self.workdir)),
            templates_dir: Some(path(&self.templates_dir)),
            timeout_ms: Some(self.timeout.as_millis() as u64),
            idle_timeout_ms: Some(self.idle_timeout.as_millis() as u64),
            kill_grace_ms: Some(self.kill_grace.as_millis() as u64),
            max_concurrent: Some(self.max_concurrent),
            shutdown_grace_ms: Some(self.shutdown_grace.as_millis() as u64),
            lease_ms: Some(self.lease.as_millis() as u64),
            harness_defaults: Some(
                self.harness_defaults
                    .entries()
                    .map(|(key, choices)| {
                        let list = choices
                            .iter()
                            .map(|c| serde_json::json!({"harness": c.harness, "model": c.model}))
                            .collect();
                        (key.to_string(), Value::Array(list))
                    })
                    .collect(),
            ),
            prices: Some(self.prices.clone()),
            retry_backoff_ms: Some(self.retry.backoff_ms.clone()),
            max_pauses: Some(self.retry.max_pauses),
            budgets: Some(self.budgets.clone()),
            loop_limit: Some(self.loop_limit.unwrap_or(0)),
            max_document_bytes: Some(self.max_document_bytes),
            http_listen: self.http_listen.map(|a| a.to_string()),
            workspace: Some(self.workspace.to_raw()),
            verify: self
                .verify
                .as_ref()
                .map(|v| v.iter().map(super::CheckConfig::to_raw).collect()),
            verify_after: Some(self.verify_after.iter().map(|t| t.to_string()).collect()),
            forge: Some(self.forge.to_raw()),
            notify: Some(self.notify.iter().map(super::NotifyHook::to_raw).collect()),
            harnesses: Some(
                self.harnesses
                    .iter()
                    .map(|(name, h)| (name.clone(), h.to_raw()))
                    .collect(),
            ),
        }
    }
}
