//! Configuration: one JSON file (DESIGN §6), parsed strictly, then resolved into [`Config`].
//!
//! Found at `--config`, else `$WF_CONFIG`, else `.wf/config.json` in the current directory or
//! any parent, else built-in defaults rooted at the current directory. Unknown keys are errors
//! that name the key's path. [`parse_raw`] and [`resolve`] are pure; [`load`] adds the file
//! system lookups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Namespace;
use crate::model::{Budget, JobType};

/// Name of the directory that holds a project's config, store and runner state.
pub const STATE_DIR_NAME: &str = ".wf";

/// A configuration problem, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file (or `<built-in defaults>`).
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

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
}

/// How jobs paused by transient errors are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before retry n (1-based); the last entry repeats.
    pub backoff_ms: Vec<u64>,
    /// Pauses allowed per job before it fails.
    pub max_pauses: u32,
}

impl RetryPolicy {
    /// The wait before retry `n` (1-based).
    pub fn backoff(&self, n: u32) -> u64 {
        let idx = (n.max(1) as usize - 1).min(self.backoff_ms.len() - 1);
        self.backoff_ms[idx]
    }
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

/// Where state lives, resolved.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded sled database in this directory.
    Sled {
        /// Absolute database directory.
        path: PathBuf,
    },
    /// NATS JetStream.
    Nats(NatsConfig),
}

/// NATS connection settings.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URL(s).
    pub url: String,
    /// Credentials file.
    pub credentials: Option<PathBuf>,
    /// Token (never logged).
    pub token: Option<String>,
    /// CA certificate.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate.
    pub tls_cert: Option<PathBuf>,
    /// Client key.
    pub tls_key: Option<PathBuf>,
    /// Require TLS.
    pub tls_required: bool,
    /// Replicas of the bucket and stream when created.
    pub replicas: usize,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sled { path } => f.debug_struct("Sled").field("path", path).finish(),
            StoreConfig::Nats(n) => f
                .debug_struct("Nats")
                .field("url", &n.url)
                .field("credentials", &n.credentials)
                .field("token", &n.token.as_ref().map(|_| "<redacted>"))
                .field("tls_ca", &n.tls_ca)
                .finish(),
        }
    }
}

/// A stream format a harness speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Claude Code `--output-format stream-json`.
    Claude,
    /// Codex `exec --json`.
    Codex,
    /// Gemini CLI `--output-format stream-json`.
    Gemini,
    /// Plain text: every line is output; success is exit status 0.
    Text,
}

impl StreamFormat {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFormat::Claude => "claude",
            StreamFormat::Codex => "codex",
            StreamFormat::Gemini => "gemini",
            StreamFormat::Text => "text",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "claude" => Ok(StreamFormat::Claude),
            "codex" => Ok(StreamFormat::Codex),
            "gemini" => Ok(StreamFormat::Gemini),
            "text" => Ok(StreamFormat::Text),
            other => Err(format!(
                "format: unknown stream format {other:?} (expected: claude, codex, gemini, text)"
            )),
        }
    }
}

/// Codex's sandbox choices (`bypass` = `--dangerously-bypass-approvals-and-sandbox`).
pub const CODEX_SANDBOXES: &[&str] = &[
    "read-only",
    "workspace-write",
    "danger-full-access",
    "bypass",
];

/// Gemini's approval modes.
pub const GEMINI_APPROVAL_MODES: &[&str] = &["default", "auto_edit", "yolo", "plan"];

/// Claude's permission modes (`--permission-mode`).
pub const CLAUDE_PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "bypassPermissions",
    "dontAsk",
    "plan",
    "auto",
];

/// A harness, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessConfig {
    /// Its name in `harnesses`.
    pub name: String,
    /// Built-in harness, or a custom command that speaks a known format.
    pub kind: HarnessKind,
    /// The program.
    pub command: String,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Default model.
    pub model: Option<String>,
    /// The stream format of its stdout.
    pub format: StreamFormat,
    /// Claude permission mode.
    pub permission_mode: String,
    /// Claude allowed tools.
    pub allowed_tools: Vec<String>,
    /// Codex sandbox.
    pub sandbox: String,
    /// Gemini approval mode.
    pub approval_mode: String,
}

/// Whether wf builds the command line or the user gave all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HarnessKind {
    /// Claude Code: wf adds `-p --output-format stream-json --verbose`, model and permissions.
    Claude,
    /// Codex CLI: wf adds `exec --json --skip-git-repo-check`, sandbox and model.
    Codex,
    /// Gemini CLI: wf adds `--output-format stream-json --skip-trust`, approval mode and model.
    Gemini,
    /// A custom command: run as configured; the prompt goes on stdin, or replaces `{prompt}`
    /// in an argument.
    Custom,
}

impl HarnessKind {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            HarnessKind::Claude => "claude",
            HarnessKind::Codex => "codex",
            HarnessKind::Gemini => "gemini",
            HarnessKind::Custom => "custom",
        }
    }
}

/// A harness choice for a job type: harness name plus optional model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessChoice {
    /// Harness name.
    pub harness: String,
    /// Model override.
    pub model: Option<String>,
}

/// The fully resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, if one was found (absolute).
    pub file: Option<PathBuf>,
    /// The project root: base of relative paths and default working directory of agents.
    pub root: PathBuf,
    /// The namespace.
    pub namespace: Namespace,
    /// The store.
    pub store: StoreConfig,
    /// Runner state: control socket, transcripts, effective config.
    pub state_dir: PathBuf,
    /// Where agents run.
    pub workdir: PathBuf,
    /// Template overrides.
    pub templates_dir: PathBuf,
    /// Longest a job may run.
    pub timeout: Duration,
    /// Longest an agent may stay silent.
    pub idle_timeout: Duration,
    /// TERM → KILL grace.
    pub kill_grace: Duration,
    /// Assignments worked on at once per runner.
    pub max_concurrent: usize,
    /// How long running jobs may finish after the first shutdown signal.
    pub shutdown_grace: Duration,
    /// Lease length.
    pub lease: Duration,
    /// Harness per job type (`default` under the key `None`).
    pub harness_defaults: BTreeMap<Option<JobType>, Vec<HarnessChoice>>,
    /// Harnesses by name.
    pub harnesses: BTreeMap<String, HarnessConfig>,
    /// Prices per model.
    pub prices: BTreeMap<String, Price>,
    /// Retries of paused jobs.
    pub retry: RetryPolicy,
    /// Default budgets of new assignments.
    pub budgets: Budget,
    /// Loop detection threshold (`None`: off).
    pub loop_limit: Option<u32>,
}

impl Config {
    /// The harnesses a job of `job_type` runs on when none is given: more than one means a
    /// parallel group.
    pub fn harness_for(&self, job_type: JobType) -> &[HarnessChoice] {
        self.harness_defaults
            .get(&Some(job_type))
            .or_else(|| self.harness_defaults.get(&None))
            .map(Vec::as_slice)
            .expect("validated: harnessDefaults.default exists")
    }

    /// The PM harness: the first choice for `pm`.
    pub fn pm_harness(&self) -> &HarnessChoice {
        &self.harness_for(JobType::Pm)[0]
    }

    /// The file agents get as `WF_CONFIG`: the config file, or the effective config the runner
    /// writes when there is none.
    pub fn agent_config_path(&self) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("effective-config.json"))
    }

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
                    .iter()
                    .map(|(k, v)| {
                        let key = k.map_or("default", JobType::as_str).to_string();
                        let list = v
                            .iter()
                            .map(|c| serde_json::json!({"harness": c.harness, "model": c.model}))
                            .collect();
                        (key, Value::Array(list))
                    })
                    .collect(),
            ),
            prices: Some(self.prices.clone()),
            retry_backoff_ms: Some(self.retry.backoff_ms.clone()),
            max_pauses: Some(self.retry.max_pauses),
            budgets: Some(self.budgets.clone()),
            loop_limit: Some(self.loop_limit.unwrap_or(0)),
            harnesses: Some(
                self.harnesses
                    .iter()
                    .map(|(name, h)| {
                        (
                            name.clone(),
                            RawHarness {
                                command: Some(h.command.clone()),
                                args: Some(h.args.clone()),
                                env: Some(h.env.clone()),
                                model: h.model.clone(),
                                format: (h.kind == HarnessKind::Custom)
                                    .then(|| h.format.as_str().to_string()),
                                permission_mode: (h.kind == HarnessKind::Claude)
                                    .then(|| h.permission_mode.clone()),
                                allowed_tools: (h.kind == HarnessKind::Claude)
                                    .then(|| h.allowed_tools.clone()),
                                sandbox: (h.kind == HarnessKind::Codex).then(|| h.sandbox.clone()),
                                approval_mode: (h.kind == HarnessKind::Gemini)
                                    .then(|| h.approval_mode.clone()),
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }
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

/// Resolves a parsed file. `root` is the project root that relative paths start from.
pub fn resolve(raw: RawConfig, file: Option<PathBuf>, root: &Path) -> Result<Config, ConfigError> {
    let origin = file.as_ref().map_or_else(
        || "<built-in defaults>".to_string(),
        |p| p.display().to_string(),
    );
    let invalid = |message: String| ConfigError::Invalid {
        path: origin.clone(),
        message,
    };
    let abs = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let namespace = match &raw.namespace {
        Some(name) => Namespace::new(name).map_err(|e| invalid(format!("namespace: {e}")))?,
        None => default_namespace(root),
    };
    let state_dir = raw
        .state_dir
        .as_deref()
        .map_or_else(|| root.join(STATE_DIR_NAME), abs);
    let store = match raw.store.clone() {
        None | Some(RawStore::Sled { path: None }) => StoreConfig::Sled {
            path: state_dir.join("db"),
        },
        Some(RawStore::Sled { path: Some(p) }) => StoreConfig::Sled { path: abs(&p) },
        Some(RawStore::Nats {
            url,
            credentials,
            token,
            tls_ca,
            tls_cert,
            tls_key,
            tls_required,
            replicas,
        }) => {
            if url.trim().is_empty() {
                return Err(invalid("store.url: empty".into()));
            }
            if tls_cert.is_some() != tls_key.is_some() {
                return Err(invalid("store: tlsCert and tlsKey go together".into()));
            }
            let replicas = replicas.unwrap_or(1);
            if !(1..=5).contains(&replicas) {
                return Err(invalid(format!("store.replicas: {replicas} (1 to 5)")));
            }
            StoreConfig::Nats(NatsConfig {
                url,
                credentials: credentials.as_deref().map(abs),
                token,
                tls_ca: tls_ca.as_deref().map(abs),
                tls_cert: tls_cert.as_deref().map(abs),
                tls_key: tls_key.as_deref().map(abs),
                tls_required: tls_required.unwrap_or(false),
                replicas,
            })
        }
    };
    let ms = |key: &str, v: Option<u64>, default: u64, min: u64| -> Result<Duration, ConfigError> {
        let v = v.unwrap_or(default);
        if v < min {
            return Err(invalid(format!("{key}: {v} is too small (minimum {min})")));
        }
        Ok(Duration::from_millis(v))
    };
    let timeout = ms("timeoutMs", raw.timeout_ms, 3_600_000, 1)?;
    let idle_timeout = ms("idleTimeoutMs", raw.idle_timeout_ms, 600_000, 1)?;
    let kill_grace = ms("killGraceMs", raw.kill_grace_ms, 5_000, 0)?;
    let lease = ms("leaseMs", raw.lease_ms, 30_000, 300)?;
    if kill_grace * 2 > lease {
        return Err(invalid(format!(
            "killGraceMs ({} ms) must be at most half of leaseMs ({} ms): a runner that cannot \
             renew its lease stops its agents before the lease expires",
            kill_grace.as_millis(),
            lease.as_millis()
        )));
    }
    let shutdown_grace = ms("shutdownGraceMs", raw.shutdown_grace_ms, 30_000, 0)?;
    let max_concurrent = raw.max_concurrent.unwrap_or(2);
    if max_concurrent == 0 {
        return Err(invalid("maxConcurrent: must be at least 1".into()));
    }

    let mut harnesses = BTreeMap::new();
    for name in ["claude", "codex", "gemini"] {
        harnesses.insert(name.to_string(), builtin_harness(name).expect("built in"));
    }
    for (name, h) in raw.harnesses.clone().unwrap_or_default() {
        let harness =
            resolve_harness(&name, h).map_err(|m| invalid(format!("harnesses.{name}: {m}")))?;
        harnesses.insert(name, harness);
    }

    let mut harness_defaults = BTreeMap::new();
    harness_defaults.insert(
        None,
        vec![HarnessChoice {
            harness: "claude".into(),
            model: None,
        }],
    );
    for (key, value) in raw.harness_defaults.clone().unwrap_or_default() {
        let job_type = if key == "default" {
            None
        } else {
            Some(
                key.parse::<JobType>()
                    .map_err(|e| invalid(format!("harnessDefaults.{key}: {e}")))?,
            )
        };
        let choices =
            parse_choices(&value).map_err(|m| invalid(format!("harnessDefaults.{key}: {m}")))?;
        for c in &choices {
            if !harnesses.contains_key(&c.harness) {
                return Err(invalid(format!(
                    "harnessDefaults.{key}: unknown harness {:?} (configured: {})",
                    c.harness,
                    harnesses.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if job_type == Some(JobType::Pm) && choices.len() > 1 {
            return Err(invalid(
                "harnessDefaults.pm: the PM runs on one harness, not a list".into(),
            ));
        }
        harness_defaults.insert(job_type, choices);
    }

    let backoff_ms = raw
        .retry_backoff_ms
        .clone()
        .unwrap_or_else(|| vec![60_000, 120_000, 300_000, 900_000, 1_800_000]);
    if backoff_ms.is_empty() {
        return Err(invalid("retryBackoffMs: give at least one wait".into()));
    }
    for (model, price) in raw.prices.iter().flatten() {
        let values = [
            Some(price.input_per_m_tok),
            Some(price.output_per_m_tok),
            price.cached_input_per_m_tok,
        ];
        if values.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(invalid(format!(
                "prices.{model}: prices are non-negative numbers"
            )));
        }
    }
    Ok(Config {
        file,
        prices: raw.prices.clone().unwrap_or_default(),
        retry: RetryPolicy {
            backoff_ms,
            max_pauses: raw.max_pauses.unwrap_or(8),
        },
        budgets: validate_budget(raw.budgets.clone().unwrap_or_default())
            .map_err(|m| invalid(format!("budgets.{m}")))?,
        loop_limit: match raw.loop_limit {
            None => Some(3),
            Some(0) => None,
            Some(n) => Some(n),
        },
        root: root.to_path_buf(),
        namespace,
        store,
        workdir: raw
            .workdir
            .as_deref()
            .map_or_else(|| root.to_path_buf(), abs),
        templates_dir: raw
            .templates_dir
            .as_deref()
            .map_or_else(|| root.join(STATE_DIR_NAME).join("templates"), abs),
        state_dir,
        timeout,
        idle_timeout,
        kill_grace,
        max_concurrent,
        shutdown_grace,
        lease,
        harness_defaults,
        harnesses,
    })
}

/// The built-in harness called `name`, if there is one.
fn builtin_harness(name: &str) -> Option<HarnessConfig> {
    let (kind, format) = match name {
        "claude" => (HarnessKind::Claude, StreamFormat::Claude),
        "codex" => (HarnessKind::Codex, StreamFormat::Codex),
        "gemini" => (HarnessKind::Gemini, StreamFormat::Gemini),
        _ => return None,
    };
    Some(HarnessConfig {
        name: name.to_string(),
        kind,
        command: name.to_string(),
        args: Vec::new(),
        env: BTreeMap::new(),
        model: None,
        format,
        permission_mode: "acceptEdits".to_string(),
        allowed_tools: vec!["Bash(wf:*)".to_string()],
        sandbox: "workspace-write".to_string(),
        approval_mode: "auto_edit".to_string(),
    })
}

fn one_of(key: &str, value: String, allowed: &[&str]) -> Result<String, String> {
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(format!(
            "{key}: unknown value {value:?} (expected one of: {})",
            allowed.join(", ")
        ))
    }
}

fn resolve_harness(name: &str, raw: RawHarness) -> Result<HarnessConfig, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("harness names use letters, digits, - and _".into());
    }
    let builtin = builtin_harness(name);
    let custom = builtin.is_none();
    let mut h = builtin.unwrap_or_else(|| HarnessConfig {
        name: name.to_string(),
        kind: HarnessKind::Custom,
        format: StreamFormat::Text,
        ..builtin_harness("claude").expect("claude is built in")
    });
    let only = |key: &str, kind: HarnessKind| -> Result<(), String> {
        if h.kind == kind {
            Ok(())
        } else {
            Err(format!(
                "{key} applies only to the {} harness, not to a {} one",
                kind.as_str(),
                h.kind.as_str()
            ))
        }
    };
    match raw.command {
        Some(c) if c.trim().is_empty() => return Err("command: empty".into()),
        Some(c) => h.command = c,
        None if custom => return Err("command: required for a custom harness".into()),
        None => {}
    }
    if let Some(args) = raw.args {
        h.args = args;
    }
    if let Some(env) = raw.env {
        h.env = env;
    }
    if raw.model.is_some() {
        h.model = raw.model;
    }
    if let Some(format) = raw.format {
        if !custom {
            return Err(format!(
                "format: the {name} harness speaks its own format; format is for custom harnesses"
            ));
        }
        h.format = StreamFormat::parse(&format)?;
    }
    if let Some(mode) = raw.permission_mode {
        only("permissionMode", HarnessKind::Claude)?;
        h.permission_mode = one_of("permissionMode", mode, CLAUDE_PERMISSION_MODES)?;
    }
    if let Some(tools) = raw.allowed_tools {
        only("allowedTools", HarnessKind::Claude)?;
        h.allowed_tools = tools;
    }
    if let Some(sandbox) = raw.sandbox {
        only("sandbox", HarnessKind::Codex)?;
        h.sandbox = one_of("sandbox", sandbox, CODEX_SANDBOXES)?;
    }
    if let Some(mode) = raw.approval_mode {
        only("approvalMode", HarnessKind::Gemini)?;
        h.approval_mode = one_of("approvalMode", mode, GEMINI_APPROVAL_MODES)?;
    }
    Ok(h)
}

/// Checks a budget: limits are positive.
pub fn validate_budget(b: Budget) -> Result<Budget, String> {
    if let Some(c) = b.max_cost_usd {
        if !c.is_finite() || c <= 0.0 {
            return Err(format!("maxCostUsd: {c} (a positive amount of US dollars)"));
        }
    }
    for (key, v) in [
        ("maxJobs", b.max_jobs.map(u64::from)),
        ("maxPmRounds", b.max_pm_rounds.map(u64::from)),
        ("maxWallMs", b.max_wall_ms),
    ] {
        if v == Some(0) {
            return Err(format!(
                "{key}: 0 (at least 1, or leave it out for no limit)"
            ));
        }
    }
    Ok(b)
}

/// `"claude"`, `{"harness": "claude", "model": "m"}`, or a list of those (a fan-out).
fn parse_choices(value: &Value) -> Result<Vec<HarnessChoice>, String> {
    let one = |v: &Value| -> Result<HarnessChoice, String> {
        match v {
            Value::String(s) => Ok(HarnessChoice {
                harness: s.clone(),
                model: None,
            }),
            Value::Object(map) => {
                for key in map.keys() {
                    if key != "harness" && key != "model" {
                        return Err(format!("unknown key {key:?} (expected harness, model)"));
                    }
                }
                let harness = map
                    .get("harness")
                    .and_then(Value::as_str)
                    .ok_or("missing \"harness\" (a string)")?
                    .to_string();
                let model = match map.get("model") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(m)) => Some(m.clone()),
                    Some(_) => return Err("\"model\" must be a string".into()),
                };
                Ok(HarnessChoice { harness, model })
            }
            _ => Err("expected a harness name, {\"harness\", \"model\"}, or a list of them".into()),
        }
    };
    match value {
        Value::Array(list) if list.is_empty() => Err("empty list".into()),
        Value::Array(list) => list.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

/// A namespace from the project directory's name.
fn default_namespace(root: &Path) -> Namespace {
    let name: String = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['-', '_']);
    let name: String = name.chars().take(64).collect();
    Namespace::new(&name).unwrap_or_else(|_| Namespace::new("default").expect("valid"))
}

/// The project root for a config file: the parent of `.wf/` when the file lives there, else the
/// file's own directory.
pub fn root_of(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == STATE_DIR_NAME) {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Finds and loads the configuration (see the module docs for the order).
pub fn load(explicit: Option<&Path>, cwd: &Path) -> Result<Config, ConfigError> {
    let file = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match std::env::var_os("WF_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => cwd
                .ancestors()
                .map(|d| d.join(STATE_DIR_NAME).join("config.json"))
                .find(|p| p.is_file()),
        },
    };
    match file {
        None => resolve(RawConfig::default(), None, cwd),
        Some(path) => {
            let path = if path.is_absolute() {
                path
            } else {
                cwd.join(path)
            };
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let raw = parse_raw(&text, &path.display().to_string())?;
            let root = root_of(&path);
            resolve(raw, Some(path), &root)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        resolve(
            parse_raw(text, "test.json")?,
            None,
            Path::new("/proj/my-repo"),
        )
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../config.example.json");
        let c = parse(text).unwrap();
        assert_eq!(c.namespace.as_str(), "my-repo");
        assert!(c.harnesses.contains_key("claude"));
        assert_eq!(c.pm_harness().harness, "claude");
    }

    #[test]
    fn defaults_are_rooted_at_the_project() {
        let c = parse("{}").unwrap();
        assert_eq!(c.namespace.as_str(), "my-repo");
        assert_eq!(
            c.store,
            StoreConfig::Sled {
                path: "/proj/my-repo/.wf/db".into()
            }
        );
        assert_eq!(c.state_dir, PathBuf::from("/proj/my-repo/.wf"));
        assert_eq!(c.workdir, PathBuf::from("/proj/my-repo"));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.max_concurrent, 2);
        assert_eq!(c.harness_for(JobType::Review)[0].harness, "claude");
        assert_eq!(c.harnesses["claude"].permission_mode, "acceptEdits");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = parse(r#"{"namespace": "x", "leaseMS": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `leaseMS`"), "{err}");
        let err = parse(r#"{"harnesses": {"claude": {"comand": "c"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("harnesses.claude") && err.contains("`comand`"),
            "{err}"
        );
        let err = parse(r#"{"store": {"kind": "sled", "pth": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pth`"), "{err}");
        let err = parse(r#"{"store": {"kind": "redis"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_clearly() {
        for (text, needle) in [
            (r#"{"namespace": "Bad NS"}"#, "namespace"),
            (r#"{"maxConcurrent": 0}"#, "maxConcurrent"),
            (r#"{"leaseMs": 10}"#, "leaseMs"),
            (r#"{"timeoutMs": "10"}"#, "timeoutMs"),
            (
                r#"{"harnessDefaults": {"plan": "nope"}}"#,
                "unknown harness \"nope\"",
            ),
            (
                r#"{"harnessDefaults": {"bogus": "claude"}}"#,
                "unknown job type",
            ),
            (r#"{"harnessDefaults": {"review": []}}"#, "empty list"),
            (
                r#"{"harnessDefaults": {"pm": ["claude", "claude"]}}"#,
                "one harness",
            ),
            (
                r#"{"harnesses": {"mine": {"args": []}}}"#,
                "required for a custom harness",
            ),
            (
                r#"{"harnesses": {"claude": {"permissionMode": "yolo"}}}"#,
                "permissionMode",
            ),
            (
                r#"{"harnesses": {"x": {"command": "x", "format": "xml"}}}"#,
                "format",
            ),
            (
                r#"{"harnesses": {"codex": {"permissionMode": "plan"}}}"#,
                "permissionMode applies only to the claude harness",
            ),
            (
                r#"{"harnesses": {"claude": {"sandbox": "bypass"}}}"#,
                "sandbox applies only to the codex harness",
            ),
            (
                r#"{"harnesses": {"codex": {"sandbox": "open"}}}"#,
                "sandbox: unknown value",
            ),
            (
                r#"{"harnesses": {"gemini": {"approvalMode": "yes"}}}"#,
                "approvalMode: unknown value",
            ),
            (
                r#"{"harnesses": {"gemini": {"format": "text"}}}"#,
                "format is for custom harnesses",
            ),
            (
                r#"{"prices": {"m": {"inputPerMTok": -1, "outputPerMTok": 1}}}"#,
                "prices.m",
            ),
            (r#"{"prices": {"m": {"inputPerMTok": 1}}}"#, "outputPerMTok"),
            (r#"{"retryBackoffMs": []}"#, "retryBackoffMs"),
            (
                r#"{"leaseMs": 3000, "killGraceMs": 2000}"#,
                "killGraceMs (2000 ms) must be at most half of leaseMs (3000 ms)",
            ),
            ("{", "EOF"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn fan_out_and_models() {
        let c = parse(
            r#"{"harnesses": {"alt": {"command": "alt-agent", "format": "claude"}},
                "harnessDefaults": {"review": ["claude", {"harness": "alt", "model": "m2"}]}}"#,
        )
        .unwrap();
        let review = c.harness_for(JobType::Review);
        assert_eq!(review.len(), 2);
        assert_eq!(
            review[1],
            HarnessChoice {
                harness: "alt".into(),
                model: Some("m2".into())
            }
        );
        assert_eq!(c.harnesses["alt"].kind, HarnessKind::Custom);
    }

    #[test]
    fn effective_config_round_trips() {
        let c = parse(r#"{"namespace": "abc", "maxConcurrent": 5}"#).unwrap();
        let text = serde_json::to_string(&c.to_raw()).unwrap();
        let again = resolve(
            parse_raw(&text, "eff").unwrap(),
            None,
            Path::new("/elsewhere"),
        )
        .unwrap();
        assert_eq!(again.namespace, c.namespace);
        assert_eq!(again.store, c.store);
        assert_eq!(again.workdir, c.workdir);
        assert_eq!(again.max_concurrent, 5);
        assert_eq!(again.harness_defaults, c.harness_defaults);
    }

    #[test]
    fn root_of_a_config_inside_dot_wf_is_its_parent() {
        assert_eq!(
            root_of(Path::new("/p/.wf/config.json")),
            PathBuf::from("/p")
        );
        assert_eq!(
            root_of(Path::new("/p/conf/wf.json")),
            PathBuf::from("/p/conf")
        );
    }
}
