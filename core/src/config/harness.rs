//! Harness definitions: the built-in CLIs with their typed settings, custom commands, and how a
//! `harnesses` entry of the file resolves onto them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RawHarness;
use crate::model::string_enum;

string_enum! {
    /// A stream format a harness speaks.
    StreamFormat {
        /// Claude Code `--output-format stream-json`.
        Claude => "claude",
        /// Codex `exec --json`.
        Codex => "codex",
        /// Gemini CLI `--output-format stream-json`.
        Gemini => "gemini",
        /// Plain text: every line is output; success is exit status 0.
        Text => "text",
    }
}

string_enum! {
    /// Claude Code's `--permission-mode`.
    PermissionMode {
        /// Ask before each tool use (useless headless; for completeness).
        Default => "default",
        /// Accept file edits; other tools per `allowedTools`.
        AcceptEdits => "acceptEdits",
        /// Allow every tool (as root only with `IS_SANDBOX=1`, which wf sets).
        BypassPermissions => "bypassPermissions",
        /// Refuse what is not allowed, without asking.
        DontAsk => "dontAsk",
        /// Plan only; change nothing.
        Plan => "plan",
        /// Let Claude decide per tool.
        Auto => "auto",
    }
}

string_enum! {
    /// Codex's sandbox.
    Sandbox {
        /// `--sandbox read-only`.
        ReadOnly => "read-only",
        /// `--sandbox workspace-write`.
        WorkspaceWrite => "workspace-write",
        /// `--sandbox danger-full-access`.
        DangerFullAccess => "danger-full-access",
        /// `--dangerously-bypass-approvals-and-sandbox`.
        Bypass => "bypass",
    }
}

string_enum! {
    /// Gemini CLI's `--approval-mode`.
    ApprovalMode {
        /// Ask for every tool (useless headless; for completeness).
        Default => "default",
        /// Accept edits automatically.
        AutoEdit => "auto_edit",
        /// Accept everything (`--yolo`).
        Yolo => "yolo",
        /// Plan only.
        Plan => "plan",
    }
}

/// What kind of harness it is, with the settings that only that kind has. For the built-in
/// CLIs wf builds the command line; a custom command is run as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarnessKind {
    /// Claude Code: wf adds `-p --output-format stream-json --verbose`, model and permissions.
    Claude {
        /// `--permission-mode`.
        permission_mode: PermissionMode,
        /// `--allowedTools` (by default `Bash(wf:*)`, so that PM jobs can run `wf`).
        allowed_tools: Vec<String>,
    },
    /// Codex CLI: wf adds `exec --json --skip-git-repo-check`, sandbox and model.
    Codex {
        /// The sandbox.
        sandbox: Sandbox,
    },
    /// Gemini CLI: wf adds `--output-format stream-json --skip-trust`, approval mode and model.
    Gemini {
        /// `--approval-mode`.
        approval_mode: ApprovalMode,
    },
    /// A custom command: run as configured; the prompt goes on stdin, or replaces `{prompt}`
    /// in an argument.
    Custom {
        /// The stream format of its stdout.
        format: StreamFormat,
    },
}

impl HarnessKind {
    /// Its name: `claude`, `codex`, `gemini` or `custom`.
    pub fn name(&self) -> &'static str {
        match self {
            HarnessKind::Claude { .. } => "claude",
            HarnessKind::Codex { .. } => "codex",
            HarnessKind::Gemini { .. } => "gemini",
            HarnessKind::Custom { .. } => "custom",
        }
    }

    /// The stream format of its stdout.
    pub fn format(&self) -> StreamFormat {
        match self {
            HarnessKind::Claude { .. } => StreamFormat::Claude,
            HarnessKind::Codex { .. } => StreamFormat::Codex,
            HarnessKind::Gemini { .. } => StreamFormat::Gemini,
            HarnessKind::Custom { format } => *format,
        }
    }
}

/// A harness, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessConfig {
    /// Its name in `harnesses`.
    pub name: String,
    /// Built-in harness (with its settings), or a custom command that speaks a known format.
    pub kind: HarnessKind,
    /// The program.
    pub command: String,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Default model.
    pub model: Option<String>,
}

impl HarnessConfig {
    /// The stream format of its stdout.
    pub fn format(&self) -> StreamFormat {
        self.kind.format()
    }

    /// This harness as a `harnesses` entry of the file.
    pub fn to_raw(&self) -> RawHarness {
        let mut raw = RawHarness {
            command: Some(self.command.clone()),
            args: Some(self.args.clone()),
            env: Some(self.env.clone()),
            model: self.model.clone(),
            ..RawHarness::default()
        };
        match &self.kind {
            HarnessKind::Claude {
                permission_mode,
                allowed_tools,
            } => {
                raw.permission_mode = Some(permission_mode.to_string());
                raw.allowed_tools = Some(allowed_tools.clone());
            }
            HarnessKind::Codex { sandbox } => raw.sandbox = Some(sandbox.to_string()),
            HarnessKind::Gemini { approval_mode } => {
                raw.approval_mode = Some(approval_mode.to_string())
            }
            HarnessKind::Custom { format } => raw.format = Some(format.to_string()),
        }
        raw
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

/// The names of the built-in harnesses.
pub const BUILTIN_HARNESSES: [&str; 3] = ["claude", "codex", "gemini"];

/// The built-in harness called `name`, if there is one, with its default settings.
pub fn builtin_harness(name: &str) -> Option<HarnessConfig> {
    let kind = match name {
        "claude" => HarnessKind::Claude {
            permission_mode: PermissionMode::AcceptEdits,
            allowed_tools: vec!["Bash(wf:*)".to_string()],
        },
        "codex" => HarnessKind::Codex {
            sandbox: Sandbox::WorkspaceWrite,
        },
        "gemini" => HarnessKind::Gemini {
            approval_mode: ApprovalMode::AutoEdit,
        },
        _ => return None,
    };
    Some(HarnessConfig {
        name: name.to_string(),
        kind,
        command: name.to_string(),
        args: Vec::new(),
        env: BTreeMap::new(),
        model: None,
    })
}

/// `value` as one of `T`'s forms, or an error naming `key` and every allowed value.
fn one_of<T: FromStr + Copy + fmt::Display + 'static>(
    key: &str,
    value: &str,
    all: &[T],
) -> Result<T, String> {
    value.parse().map_err(|_| {
        let allowed: Vec<String> = all.iter().map(T::to_string).collect();
        format!(
            "{key}: unknown value {value:?} (expected one of: {})",
            allowed.join(", ")
        )
    })
}

/// Resolves the `harnesses.<name>` entry `raw`: over the built-in harness of that name, or as a
/// custom command. Settings of another kind of harness are refused, naming the key.
pub(super) fn resolve_harness(name: &str, raw: RawHarness) -> Result<HarnessConfig, String> {
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
        kind: HarnessKind::Custom {
            format: StreamFormat::Text,
        },
        command: String::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        model: None,
    });
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
    let kind_name = h.kind.name();
    let only = |key: &str, kind: &str| -> String {
        format!("{key} applies only to the {kind} harness, not to a {kind_name} one")
    };
    if let Some(format) = raw.format {
        let HarnessKind::Custom { format: f } = &mut h.kind else {
            return Err(format!(
                "format: the {name} harness speaks its own format; format is for custom harnesses"
            ));
        };
        *f = format.parse().map_err(|_| {
            format!(
                "format: unknown stream format {format:?} (expected: claude, codex, gemini, text)"
            )
        })?;
    }
    if let Some(mode) = raw.permission_mode {
        let HarnessKind::Claude {
            permission_mode, ..
        } = &mut h.kind
        else {
            return Err(only("permissionMode", "claude"));
        };
        *permission_mode = one_of("permissionMode", &mode, PermissionMode::ALL)?;
    }
    if let Some(tools) = raw.allowed_tools {
        let HarnessKind::Claude { allowed_tools, .. } = &mut h.kind else {
            return Err(only("allowedTools", "claude"));
        };
        *allowed_tools = tools;
    }
    if let Some(value) = raw.sandbox {
        let HarnessKind::Codex { sandbox } = &mut h.kind else {
            return Err(only("sandbox", "codex"));
        };
        *sandbox = one_of("sandbox", &value, Sandbox::ALL)?;
    }
    if let Some(mode) = raw.approval_mode {
        let HarnessKind::Gemini { approval_mode } = &mut h.kind else {
            return Err(only("approvalMode", "gemini"));
        };
        *approval_mode = one_of("approvalMode", &mode, ApprovalMode::ALL)?;
    }
    Ok(h)
}
