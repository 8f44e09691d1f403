//! Resolving the file into [`Config`]: defaults, absolute paths, and every check, each
//! failure naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::harness::{builtin_harness, resolve_harness, BUILTIN_HARNESSES};
use super::{
    Config, ConfigError, HarnessChoice, HarnessConfig, HarnessDefaults, NatsConfig, RawConfig,
    RawStore, RetryPolicy, StoreConfig, STATE_DIR_NAME,
};
use crate::ids::Namespace;
use crate::model::{Budget, JobType};

/// The default of `maxDocumentBytes`: under NATS's default `max_payload` (1 MiB), with room
/// for a message's headers.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 1_000_000;
/// The smallest `maxDocumentBytes` accepted.
pub const MIN_DOCUMENT_BYTES: usize = 16 * 1024;

/// Resolves a parsed file. `root` is the project root that relative paths start from.
pub fn resolve(raw: RawConfig, file: Option<PathBuf>, root: &Path) -> Result<Config, ConfigError> {
    resolve_sections(&raw, file.clone(), root).map_err(|message| ConfigError::Invalid {
        path: file.as_ref().map_or_else(
            || "<built-in defaults>".to_string(),
            |p| p.display().to_string(),
        ),
        message,
    })
}

/// `p` made absolute against `root`.
pub(super) fn absolute(root: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

fn resolve_sections(raw: &RawConfig, file: Option<PathBuf>, root: &Path) -> Result<Config, String> {
    let abs = |p: &str| absolute(root, p);
    let namespace = match &raw.namespace {
        Some(name) => Namespace::new(name).map_err(|e| format!("namespace: {e}"))?,
        None => default_namespace(root),
    };
    let state_dir = raw
        .state_dir
        .as_deref()
        .map_or_else(|| root.join(STATE_DIR_NAME), abs);
    let store = resolve_store(raw.store.clone(), root, &state_dir)?;
    let timings = Timings::resolve(raw)?;
    let max_concurrent = raw.max_concurrent.unwrap_or(2);
    if max_concurrent == 0 {
        return Err("maxConcurrent: must be at least 1".into());
    }
    let harnesses = resolve_harnesses(raw)?;
    let harness_defaults = resolve_harness_defaults(raw, &harnesses)?;
    let workspace = super::resolve_workspace(raw.workspace.as_ref(), root, &state_dir)?;
    let (verify, verify_after) =
        super::resolve_verify(raw.verify.as_ref(), raw.verify_after.as_ref())?;
    Ok(Config {
        file,
        workspace,
        verify,
        verify_after,
        forge: super::resolve_forge(raw.forge.as_ref())?,
        notify: super::resolve_notify(raw.notify.as_ref())?,
        prices: resolve_prices(raw)?,
        retry: resolve_retry(raw)?,
        budgets: validate_budget(raw.budgets.clone().unwrap_or_default())
            .map_err(|m| format!("budgets.{m}"))?,
        loop_limit: match raw.loop_limit {
            None => Some(3),
            Some(0) => None,
            Some(n) => Some(n),
        },
        http_listen: match &raw.http_listen {
            None => None,
            Some(a) => Some(a.parse().map_err(|e| {
                format!("httpListen: {a:?} is not an address like 127.0.0.1:8787 ({e})")
            })?),
        },
        max_document_bytes: match raw.max_document_bytes {
            None => DEFAULT_MAX_DOCUMENT_BYTES,
            Some(n) if n < MIN_DOCUMENT_BYTES => {
                return Err(format!(
                    "maxDocumentBytes: {n} is too small (minimum {MIN_DOCUMENT_BYTES})"
                ))
            }
            Some(n) => n,
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
        timeout: timings.timeout,
        idle_timeout: timings.idle_timeout,
        kill_grace: timings.kill_grace,
        max_concurrent,
        shutdown_grace: timings.shutdown_grace,
        lease: timings.lease,
        harness_defaults,
        harnesses,
    })
}

fn resolve_store(
    raw: Option<RawStore>,
    root: &Path,
    state_dir: &Path,
) -> Result<StoreConfig, String> {
    let abs = |p: &str| absolute(root, p);
    Ok(match raw {
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
                return Err("store.url: empty".into());
            }
            if tls_cert.is_some() != tls_key.is_some() {
                return Err("store: tlsCert and tlsKey go together".into());
            }
            let replicas = replicas.unwrap_or(1);
            if !(1..=5).contains(&replicas) {
                return Err(format!("store.replicas: {replicas} (1 to 5)"));
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
    })
}

/// The timeouts and graces, checked against each other.
struct Timings {
    timeout: Duration,
    idle_timeout: Duration,
    kill_grace: Duration,
    lease: Duration,
    shutdown_grace: Duration,
}

impl Timings {
    fn resolve(raw: &RawConfig) -> Result<Self, String> {
        let ms = |key: &str, v: Option<u64>, default: u64, min: u64| -> Result<Duration, String> {
            let v = v.unwrap_or(default);
            if v < min {
                return Err(format!("{key}: {v} is too small (minimum {min})"));
            }
            Ok(Duration::from_millis(v))
        };
        let timings = Timings {
            timeout: ms("timeoutMs", raw.timeout_ms, 3_600_000, 1)?,
            idle_timeout: ms("idleTimeoutMs", raw.idle_timeout_ms, 600_000, 1)?,
            kill_grace: ms("killGraceMs", raw.kill_grace_ms, 5_000, 0)?,
            lease: ms("leaseMs", raw.lease_ms, 30_000, 300)?,
            shutdown_grace: ms("shutdownGraceMs", raw.shutdown_grace_ms, 30_000, 0)?,
        };
        if timings.kill_grace * 2 > timings.lease {
            return Err(format!(
                "killGraceMs ({} ms) must be at most half of leaseMs ({} ms): a runner that cannot \
                 renew its lease stops its agents before the lease expires",
                timings.kill_grace.as_millis(),
                timings.lease.as_millis()
            ));
        }
        Ok(timings)
    }
}

/// The built-in harnesses, overridden or joined by the file's `harnesses`.
fn resolve_harnesses(raw: &RawConfig) -> Result<BTreeMap<String, HarnessConfig>, String> {
    let mut harnesses = BTreeMap::new();
    for name in BUILTIN_HARNESSES {
        harnesses.insert(name.to_string(), builtin_harness(name).expect("built in"));
    }
    for (name, h) in raw.harnesses.clone().unwrap_or_default() {
        let harness = resolve_harness(&name, h).map_err(|m| format!("harnesses.{name}: {m}"))?;
        harnesses.insert(name, harness);
    }
    Ok(harnesses)
}

fn resolve_harness_defaults(
    raw: &RawConfig,
    harnesses: &BTreeMap<String, HarnessConfig>,
) -> Result<HarnessDefaults, String> {
    let mut defaults = HarnessDefaults {
        default: vec![HarnessChoice {
            harness: "claude".into(),
            model: None,
        }],
        by_type: BTreeMap::new(),
    };
    for (key, value) in raw.harness_defaults.clone().unwrap_or_default() {
        let job_type = if key == "default" {
            None
        } else {
            Some(
                key.parse::<JobType>()
                    .map_err(|e| format!("harnessDefaults.{key}: {e}"))?,
            )
        };
        let choices = parse_choices(&value).map_err(|m| format!("harnessDefaults.{key}: {m}"))?;
        for c in &choices {
            if !harnesses.contains_key(&c.harness) {
                return Err(format!(
                    "harnessDefaults.{key}: unknown harness {:?} (configured: {})",
                    c.harness,
                    harnesses.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if job_type == Some(JobType::Pm) && choices.len() > 1 {
            return Err("harnessDefaults.pm: the PM runs on one harness, not a list".into());
        }
        match job_type {
            None => defaults.default = choices,
            Some(t) => {
                defaults.by_type.insert(t, choices);
            }
        }
    }
    Ok(defaults)
}

fn resolve_retry(raw: &RawConfig) -> Result<RetryPolicy, String> {
    let backoff_ms = raw
        .retry_backoff_ms
        .clone()
        .unwrap_or_else(|| vec![60_000, 120_000, 300_000, 900_000, 1_800_000]);
    if backoff_ms.is_empty() {
        return Err("retryBackoffMs: give at least one wait".into());
    }
    Ok(RetryPolicy {
        backoff_ms,
        max_pauses: raw.max_pauses.unwrap_or(8),
    })
}

fn resolve_prices(raw: &RawConfig) -> Result<BTreeMap<String, super::Price>, String> {
    for (model, price) in raw.prices.iter().flatten() {
        let values = [
            Some(price.input_per_m_tok),
            Some(price.output_per_m_tok),
            price.cached_input_per_m_tok,
        ];
        if values.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!("prices.{model}: prices are non-negative numbers"));
        }
    }
    Ok(raw.prices.clone().unwrap_or_default())
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
        ("maxReviewCycles", b.max_review_cycles.map(u64::from)),
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
