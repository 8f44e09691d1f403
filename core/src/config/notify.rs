//! The `notify` section: hooks run when an assignment completes or blocks, or a job fails.
//!
//! Each hook is a webhook (`url` or `urlEnv`, optional `secretEnv` for the HMAC signature,
//! `format` json or slack) or a command (`sh -c`, the event's JSON on stdin).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chain::NotifySet;
use crate::model::NotifyEvent;

/// Longest a webhook request may take (GitHub's own limit).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest run of a command hook.
const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 30_000;

/// One entry of `notify`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHook {
    /// A name for logs and for remembering who has a notice (default: derived from the
    /// target, without revealing it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The events: `complete`, `blocked`, `job_failed`.
    pub on: Vec<String>,
    /// Where to POST the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The environment variable holding the URL (for URLs that are secrets, like Slack's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// The environment variable holding the HMAC-SHA256 key of `X-Wf-Signature-256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `json` (the event, default) or `slack` (`{"text": …}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Extra request headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// A shell command run with the event's JSON on stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Longest the command may run (default 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What a webhook's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFormat {
    /// The event as JSON (with a `text` field).
    Json,
    /// `{"text": …}`, what Slack's (and Mattermost's, Discord's `/slack`) incoming webhooks take.
    Slack,
}

/// Where a webhook's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookUrl {
    /// Written in the config.
    Literal(String),
    /// Read from this environment variable when delivering.
    Env(String),
}

/// A hook's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookTarget {
    /// An HTTP POST.
    Webhook {
        /// Where.
        url: HookUrl,
        /// The variable holding the signing key.
        secret_env: Option<String>,
        /// The body.
        format: HookFormat,
        /// Extra headers.
        headers: BTreeMap<String, String>,
    },
    /// `sh -c COMMAND` with the JSON on stdin.
    Command {
        /// The command.
        command: String,
        /// Longest run.
        timeout: Duration,
    },
}

/// A resolved hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyHook {
    /// Its name (or the derived key).
    pub key: String,
    /// Whether `name` was written (kept for the effective config).
    named: bool,
    /// The events it wants.
    pub on: Vec<NotifyEvent>,
    /// Where it goes.
    pub target: HookTarget,
}

/// The events any of `hooks` wants: what writes record.
pub fn notify_set(hooks: &[NotifyHook]) -> NotifySet {
    NotifySet::of(hooks.iter().flat_map(|h| h.on.iter().copied()))
}

fn env_name(key: &str, value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(['=', '\0']) {
        return Err(format!("{key}: {value:?} is not a variable name"));
    }
    Ok(value.to_string())
}

/// FNV-1a of `text`, as a stable short key that does not reveal a secret URL.
fn fnv(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("hook-{hash:016x}")
}

/// Resolves `notify`.
pub(super) fn resolve_notify(raw: Option<&Vec<RawHook>>) -> Result<Vec<NotifyHook>, String> {
    let mut out: Vec<NotifyHook> = Vec::new();
    for (i, hook) in raw.into_iter().flatten().enumerate() {
        let at = format!("notify[{i}]");
        let resolved = resolve_hook(hook, &at)?;
        if out.iter().any(|h| h.key == resolved.key) {
            return Err(format!(
                "{at}: a second hook named {:?} (names must differ)",
                resolved.key
            ));
        }
        out.push(resolved);
    }
    Ok(out)
}

fn resolve_hook(hook: &RawHook, at: &str) -> Result<NotifyHook, String> {
    if hook.on.is_empty() {
        return Err(format!(
            "{at}.on: empty (expected some of: complete, blocked, job_failed)"
        ));
    }
    let on = hook
        .on
        .iter()
        .map(|e| {
            e.parse::<NotifyEvent>()
                .map_err(|m| format!("{at}.on: {m}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = match (&hook.url, &hook.url_env, &hook.command) {
        (None, None, Some(command)) => resolve_command(hook, command, at)?,
        (url, url_env, None) if url.is_some() != url_env.is_some() => resolve_webhook(hook, at)?,
        _ => return Err(format!("{at}: give exactly one of url, urlEnv or command")),
    };
    let key = match &hook.name {
        Some(name) if name.trim().is_empty() || name.len() > 64 => {
            return Err(format!("{at}.name: {name:?} must be 1 to 64 characters"))
        }
        Some(name) => name.clone(),
        None => fnv(&match &target {
            HookTarget::Webhook {
                url: HookUrl::Literal(u),
                ..
            } => u.clone(),
            HookTarget::Webhook {
                url: HookUrl::Env(v),
                ..
            } => format!("env:{v}"),
            HookTarget::Command { command, .. } => command.clone(),
        }),
    };
    Ok(NotifyHook {
        key,
        named: hook.name.is_some(),
        on,
        target,
    })
}

fn resolve_command(hook: &RawHook, command: &str, at: &str) -> Result<HookTarget, String> {
    let webhook_keys = hook.url_env.is_some()
        || hook.secret_env.is_some()
        || hook.format.is_some()
        || hook.headers.is_some();
    if webhook_keys {
        return Err(format!(
            "{at}: urlEnv, secretEnv, format and headers belong to a webhook, not a command"
        ));
    }
    if command.trim().is_empty() {
        return Err(format!("{at}.command: empty"));
    }
    let ms = hook.timeout_ms.unwrap_or(DEFAULT_COMMAND_TIMEOUT_MS);
    if ms == 0 {
        return Err(format!("{at}.timeoutMs: must be more than 0"));
    }
    Ok(HookTarget::Command {
        command: command.to_string(),
        timeout: Duration::from_millis(ms),
    })
}

fn resolve_webhook(hook: &RawHook, at: &str) -> Result<HookTarget, String> {
    if hook.timeout_ms.is_some() {
        return Err(format!(
            "{at}.timeoutMs: a webhook's timeout is fixed at 10 s"
        ));
    }
    let url = match (&hook.url, &hook.url_env) {
        (Some(u), _) => {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(format!("{at}.url: {u:?} is not an http(s) URL"));
            }
            HookUrl::Literal(u.clone())
        }
        (None, Some(v)) => HookUrl::Env(env_name(&format!("{at}.urlEnv"), v)?),
        (None, None) => return Err(format!("{at}: give exactly one of url, urlEnv or command")),
    };
    let format = match hook.format.as_deref() {
        None | Some("json") => HookFormat::Json,
        Some("slack") => HookFormat::Slack,
        Some(other) => {
            return Err(format!(
                "{at}.format: unknown format {other:?} (expected json or slack)"
            ))
        }
    };
    let secret_env = hook
        .secret_env
        .as_deref()
        .map(|v| env_name(&format!("{at}.secretEnv"), v))
        .transpose()?;
    let headers = hook.headers.clone().unwrap_or_default();
    for name in headers.keys() {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!("{at}.headers: {name:?} is not a header name"));
        }
    }
    Ok(HookTarget::Webhook {
        url,
        secret_env,
        format,
        headers,
    })
}

impl NotifyHook {
    /// The hook as written, for the effective config.
    pub(super) fn to_raw(&self) -> RawHook {
        let mut raw = RawHook {
            name: self.named.then(|| self.key.clone()),
            on: self.on.iter().map(|e| e.as_str().to_string()).collect(),
            ..RawHook::default()
        };
        match &self.target {
            HookTarget::Webhook {
                url,
                secret_env,
                format,
                headers,
            } => {
                match url {
                    HookUrl::Literal(u) => raw.url = Some(u.clone()),
                    HookUrl::Env(v) => raw.url_env = Some(v.clone()),
                }
                raw.secret_env = secret_env.clone();
                raw.format = Some(match format {
                    HookFormat::Json => "json".into(),
                    HookFormat::Slack => "slack".into(),
                });
                raw.headers = (!headers.is_empty()).then(|| headers.clone());
            }
            HookTarget::Command { command, timeout } => {
                raw.command = Some(command.clone());
                raw.timeout_ms = Some(timeout.as_millis() as u64);
            }
        }
        raw
    }
}
