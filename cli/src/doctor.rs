//! `wf doctor`: is every configured harness installed, which version, how to log in; is the
//! store reachable, and can every stored document be read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use wf_core::config::{Config, HarnessConfig, HarnessKind, StoreConfig};
use wf_runner::api;
use wf_runner::client::Backend;

use crate::{output, Failure, Result};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HarnessReport {
    name: String,
    kind: &'static str,
    command: String,
    path: Option<String>,
    version: Option<String>,
    used_for: Vec<String>,
    auth: String,
    api_key: Option<String>,
    ok: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreReport {
    kind: &'static str,
    reachable: bool,
    detail: String,
    /// Documents no runner can read: corrupt, or written by a newer wf.
    unreadable: Vec<wf_store::Unreadable>,
    /// What may not hold as one expects, without stopping anything.
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    config: Option<String>,
    namespace: String,
    harnesses: Vec<HarnessReport>,
    store: StoreReport,
    ok: bool,
}

/// Finds `command` the way a spawn would: a path as given, a name on `PATH`.
fn locate(command: &str, cwd: &Path) -> Option<PathBuf> {
    let candidate = Path::new(command);
    if command.contains('/') {
        let p = if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            cwd.join(candidate)
        };
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(command))
        .find(|p| p.is_file())
}

async fn version(path: &Path) -> Option<String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    #[expect(
        clippy::disallowed_methods,
        reason = "wf doctor runs `<cli> --version`, a short-lived helper, not an agent"
    )]
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    out.status.success().then(|| output::one_line(&line, 60))
}

/// How to log in, and which API key variable the harness reads.
fn auth(h: &HarnessConfig) -> (String, &'static [&'static str]) {
    match h.kind {
        HarnessKind::Claude { .. } => (
            "run `claude` once and `/login`, or set ANTHROPIC_API_KEY".into(),
            &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"],
        ),
        HarnessKind::Codex { .. } => ("run `codex login`, or set OPENAI_API_KEY".into(), &["OPENAI_API_KEY"]),
        HarnessKind::Gemini { .. } => (
            "set GEMINI_API_KEY (with security.auth.selectedType \"gemini-api-key\" in ~/.gemini/settings.json), or run `gemini` once to log in".into(),
            &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        ),
        HarnessKind::Custom { .. } => ("see the tool's own documentation".into(), &[]),
    }
}

async fn store_report(config: &Config) -> StoreReport {
    let kind = match config.store {
        StoreConfig::Sled { .. } => "sled",
        StoreConfig::Nats(_) => "nats",
    };
    let unreachable = |detail: String| StoreReport {
        kind,
        reachable: false,
        detail,
        unreadable: Vec::new(),
        warnings: Vec::new(),
    };
    let mut backend = match Backend::open(config).await {
        Ok(b) => b,
        Err(e) => return unreachable(e.to_string()),
    };
    let warnings = match &backend {
        Backend::Direct {
            store: wf_store::Store::Nats(n),
            ..
        } if n.bucket_replicas() < 2 => vec![format!(
            "the state bucket has 1 replica: nats-server acknowledges a write before it is on \
             disk and fsyncs every sync_interval (2 minutes by default), so a power loss or \
             kernel panic (not a process crash) can lose acknowledged writes; run a cluster \
             with store.replicas 3, or set `jetstream {{ sync_interval: always }}` on the server"
        )],
        _ => Vec::new(),
    };
    let runner_id = match &mut backend {
        Backend::Runner(client) => client
            .welcome()
            .await
            .map_or_else(|e| format!("(unreachable: {e})"), |w| w.runner_id.clone()),
        Backend::Direct { .. } => String::new(),
    };
    let detail = match &backend {
        Backend::Runner(_) => format!("runner {runner_id} serves it on its control socket"),
        Backend::Direct { store, .. } => match store {
            wf_store::Store::Nats(n) => format!(
                "NATS {} at {}; no runner needed for wf",
                n.server_version(),
                n.server_url()
            ),
            wf_store::Store::Sled(s) => format!(
                "{} (no runner running; wf opened it directly)",
                s.path().display()
            ),
        },
    };
    match backend.call(api::CheckStore {}).await {
        Ok(check) => {
            let skipped = match check.unreadable.len() {
                0 => String::new(),
                n => format!("; {n} UNREADABLE document(s), skipped by every runner"),
            };
            let mut warnings = warnings;
            warnings.extend(check.near_full.iter().map(|(id, bytes)| {
                format!(
                    "assignment {id} uses {bytes} of the {} bytes a document may hold; near the \
                     limit its next outcome may not fit and it is blocked (shorten its artifacts \
                     or decisions)",
                    check.max_document_bytes
                )
            }));
            StoreReport {
                kind,
                reachable: true,
                detail: format!("{detail}; {} assignment(s){skipped}", check.assignments),
                unreadable: check.unreadable,
                warnings,
            }
        }
        Err(e) => unreachable(e.to_string()),
    }
}

/// `wf doctor`.
pub(crate) async fn run(config: &Config, json: bool) -> Result<()> {
    let mut harnesses = Vec::new();
    for h in config.harnesses.values() {
        let mut used_for: Vec<String> = Vec::new();
        for (job_type, choices) in config.harness_defaults.entries() {
            if choices.iter().any(|c| c.harness == h.name) {
                used_for.push(job_type.to_string());
            }
        }
        let path = locate(&h.command, &config.root);
        let version = match &path {
            Some(p) => version(p).await,
            None => None,
        };
        let (hint, keys) = auth(h);
        let key_set = keys.iter().find(|k| {
            h.env.contains_key(**k) || std::env::var_os(k).is_some_and(|v| !v.is_empty())
        });
        harnesses.push(HarnessReport {
            name: h.name.clone(),
            kind: h.kind.name(),
            command: h.command.clone(),
            path: path.as_ref().map(|p| p.display().to_string()),
            version,
            ok: path.is_some() || used_for.is_empty(),
            used_for,
            auth: hint,
            api_key: key_set.map(|k| k.to_string()),
        });
    }
    let store = store_report(config).await;
    let ok = store.reachable && store.unreadable.is_empty() && harnesses.iter().all(|h| h.ok);
    let report = Report {
        config: config.file.as_ref().map(|p| p.display().to_string()),
        namespace: config.namespace.to_string(),
        harnesses,
        store,
        ok,
    };
    if json {
        crate::cmd::print_json(&report)?;
    } else {
        crate::cmd::print_out(&render(&report))?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure {
            code: crate::exit::ERROR,
            message: "doctor found problems: a harness the config uses is missing, or the store is unreachable".into(),
        })
    }
}

fn render(r: &Report) -> String {
    let mut out = format!(
        "config       {}\nnamespace    {}\nstore        {} — {} ({})\n\n",
        r.config.as_deref().unwrap_or("(built-in defaults)"),
        r.namespace,
        r.store.kind,
        if r.store.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        },
        r.store.detail
    );
    for w in &r.store.warnings {
        out.push_str(&format!("  warning      {w}\n"));
    }
    for u in &r.store.unreadable {
        out.push_str(&format!("  unreadable   {}: {}\n", u.key, u.reason));
    }
    if !r.store.unreadable.is_empty() || !r.store.warnings.is_empty() {
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = r
        .harnesses
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                if h.used_for.is_empty() {
                    "-".into()
                } else {
                    h.used_for.join(", ")
                },
                match &h.path {
                    Some(p) => p.clone(),
                    None if h.used_for.is_empty() => format!("{} (not found; unused)", h.command),
                    None => format!("{} NOT FOUND", h.command),
                },
                h.version.clone().unwrap_or_else(|| "-".into()),
                match &h.api_key {
                    Some(k) => format!("{k} is set"),
                    None => h.auth.clone(),
                },
            ]
        })
        .collect();
    out.push_str(&output::plain_table(
        &["HARNESS", "USED FOR", "COMMAND", "VERSION", "AUTH"],
        rows,
    ));
    out.push('\n');
    out
}
