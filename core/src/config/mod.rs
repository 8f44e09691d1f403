//! Configuration: one JSON file (DESIGN §6), parsed strictly, then resolved into [`Config`].
//!
//! Found at `--config`, else `$WF_CONFIG`, else `.wf/config.json` in the current directory or
//! any parent, else built-in defaults rooted at the current directory. Unknown keys are errors
//! that name the key's path. [`parse_raw`] and [`resolve`] are pure; [`load`] adds the file
//! system lookups.
//!
//! `raw` is the file as written; `resolve` turns it into [`Config`]; `harness` holds the
//! harness kinds and their typed settings; `workspace` the `workspace` and `verify` sections;
//! `notify` the notification hooks; `load` finds and reads the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::ids::Namespace;
use crate::model::{Budget, JobType};

mod harness;
mod load;
mod notify;
mod raw;
mod resolve;
mod workspace;

pub use self::harness::*;
pub use self::load::*;
pub use self::notify::*;
pub use self::raw::*;
pub use self::resolve::*;
pub use self::workspace::*;

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

/// The harness each job type runs on when a job names none: more than one means a parallel
/// group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessDefaults {
    /// For job types without an entry of their own.
    pub default: Vec<HarnessChoice>,
    /// Per job type.
    pub by_type: BTreeMap<JobType, Vec<HarnessChoice>>,
}

impl HarnessDefaults {
    /// The choices for `job_type`.
    pub fn get(&self, job_type: JobType) -> &[HarnessChoice] {
        self.by_type.get(&job_type).unwrap_or(&self.default)
    }

    /// Every entry with its key in the file (`default` first, then the job types).
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &[HarnessChoice])> {
        std::iter::once(("default", self.default.as_slice())).chain(
            self.by_type
                .iter()
                .map(|(t, choices)| (t.as_str(), choices.as_slice())),
        )
    }
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
    /// Harness per job type.
    pub harness_defaults: HarnessDefaults,
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
    /// The largest stored document, in bytes.
    pub max_document_bytes: usize,
    /// Where the runner serves the dashboard, if anywhere (`--http` overrides it).
    pub http_listen: Option<std::net::SocketAddr>,
    /// Where assignments' work happens.
    pub workspace: WorkspaceConfig,
    /// Verification steps (`None`: detected from the repository).
    pub verify: Option<Vec<CheckConfig>>,
    /// The job types verification runs after.
    pub verify_after: Vec<JobType>,
    /// The forge issues come from and pull requests go to.
    pub forge: ForgeConfig,
    /// Hooks told when an assignment completes or blocks, or a job fails.
    pub notify: Vec<NotifyHook>,
}

impl Config {
    /// The harnesses a job of `job_type` runs on when none is given: more than one means a
    /// parallel group.
    pub fn harness_for(&self, job_type: JobType) -> &[HarnessChoice] {
        self.harness_defaults.get(job_type)
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
}

#[cfg(test)]
mod tests;
