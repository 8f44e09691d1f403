//! Claude Code `-p --output-format stream-json --verbose` (measured on 2.1.197).
//!
//! Lines are parsed as `serde_json::Value`, not typed structs: the schema drifts between
//! versions, unknown event types are ignored, and a bad line never stops the run.

use serde_json::Value;

use super::{json_event, shorten, str_of, AgentEvent, AgentResult, Parsed};
use crate::model::Usage;
use std::collections::BTreeMap;

use super::strings;
use crate::config::PermissionMode;

/// The arguments of `claude` for one attempt: headless, streaming JSON, the permission mode,
/// the model, the allowed tools, then the configured extra arguments.
pub(super) fn args(
    permission_mode: PermissionMode,
    allowed_tools: &[String],
    model: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut args = strings(&[
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
    ]);
    args.push(permission_mode.to_string());
    if let Some(m) = model {
        args.extend(["--model".to_string(), m.to_string()]);
    }
    if !allowed_tools.is_empty() {
        // Comma-separated in one argument: the flag is variadic.
        args.push(format!("--allowedTools={}", allowed_tools.join(",")));
    }
    args.extend(extra.iter().cloned());
    args
}

/// Claude refuses to bypass permissions as root unless told it is sandboxed.
pub(super) fn as_root(permission_mode: PermissionMode, env: &mut BTreeMap<String, String>) {
    if permission_mode == PermissionMode::BypassPermissions {
        env.entry("IS_SANDBOX".into()).or_insert_with(|| "1".into());
    }
}

/// `--max-budget-usd`: Claude stops by itself at the money left (at least a hundredth of a
/// cent, which it accepts).
pub(super) fn budget_args(remaining_usd: f64) -> Vec<String> {
    vec![
        "--max-budget-usd".to_string(),
        format!("{:.4}", remaining_usd.max(0.0001)),
    ]
}

/// Parses one stdout line: assistant turns and tool results through the fast path
/// (`claude_lean`), everything else — and what it cannot read — as a `serde_json::Value`.
pub fn parse_line(line: &str) -> Parsed {
    if let Some(events) = super::claude_lean::events(line.trim()) {
        return if events.is_empty() {
            Parsed::Ignored
        } else {
            Parsed::Events(events)
        };
    }
    parse_general(line)
}

/// Parses one stdout line as a `serde_json::Value`: the definition the fast path follows.
pub(super) fn parse_general(line: &str) -> Parsed {
    json_event(line, |kind, value| match kind {
        "system" => system(value),
        "assistant" => assistant(value),
        "user" => user(value),
        "rate_limit_event" => rate_limit(value),
        "result" => vec![AgentEvent::Result(result(value))],
        _ => Vec::new(),
    })
}

fn system(v: &Value) -> Vec<AgentEvent> {
    match str_of(v, "subtype") {
        Some("init") => match str_of(v, "session_id") {
            Some(id) => vec![AgentEvent::Session {
                id: id.to_string(),
                model: str_of(v, "model").map(str::to_string),
            }],
            None => Vec::new(),
        },
        Some("api_retry") => vec![AgentEvent::ApiRetry {
            status: v
                .get("error_status")
                .and_then(Value::as_u64)
                .map(|s| s as u16),
            error: str_of(v, "error").unwrap_or("api error").to_string(),
        }],
        _ => Vec::new(),
    }
}

fn content(v: &Value) -> &[Value] {
    v.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn assistant(v: &Value) -> Vec<AgentEvent> {
    let turn = v.get("message").and_then(turn_usage);
    content(v)
        .iter()
        .filter_map(|block| match str_of(block, "type") {
            Some("text") => str_of(block, "text").map(|t| AgentEvent::Text(t.to_string())),
            Some("tool_use") => Some(AgentEvent::ToolUse {
                id: str_of(block, "id").unwrap_or_default().to_string(),
                name: str_of(block, "name").unwrap_or("tool").to_string(),
                input: tool_input(block.get("input")),
            }),
            _ => None,
        })
        .chain(turn)
        .collect()
}

/// The usage an assistant message carries (`message.usage`), as a [`AgentEvent::TurnUsage`].
fn turn_usage(message: &Value) -> Option<AgentEvent> {
    let usage = message.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    Some(AgentEvent::TurnUsage {
        message_id: str_of(message, "id").map(str::to_string),
        usage: Usage {
            input_tokens: n("input_tokens") + cached + n("cache_creation_input_tokens"),
            output_tokens: n("output_tokens"),
            cost_usd: None,
        },
        cached_input_tokens: cached,
    })
}

/// A one-line rendering of a tool's input: the command or path when there is one.
pub(super) fn tool_input(input: Option<&Value>) -> String {
    let Some(input) = input else {
        return String::new();
    };
    for key in ["command", "file_path", "path", "pattern", "url"] {
        if let Some(s) = str_of(input, key) {
            return shorten(s, 200);
        }
    }
    shorten(&input.to_string(), 200)
}

fn user(v: &Value) -> Vec<AgentEvent> {
    content(v)
        .iter()
        .filter(|block| str_of(block, "type") == Some("tool_result"))
        .map(|block| AgentEvent::ToolResult {
            id: str_of(block, "tool_use_id").unwrap_or_default().to_string(),
            is_error: block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            output: super::event::tool_output(block.get("content")),
        })
        .collect()
}

fn rate_limit(v: &Value) -> Vec<AgentEvent> {
    let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
    let status = str_of(info, "status").unwrap_or("allowed");
    vec![AgentEvent::RateLimit {
        rejected: status == "rejected",
        // Claude gives seconds since the epoch.
        resets_at: info
            .get("resetsAt")
            .and_then(Value::as_u64)
            .map(|s| s * 1000),
    }]
}

fn result(v: &Value) -> AgentResult {
    let success = str_of(v, "subtype") == Some("success")
        && !v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    let text = match str_of(v, "result") {
        Some(t) => t.to_string(),
        None => v
            .get("errors")
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|| format!("{} (no result text)", str_of(v, "subtype").unwrap_or("?"))),
    };
    let api_error_status = v
        .get("api_error_status")
        .and_then(Value::as_u64)
        .map(|s| s as u16);
    // "Not logged in" and friends carry no status; their words decide.
    let transient = !success && api_error_status.is_none() && super::classify_error_text(&text).1;
    AgentResult {
        success,
        text,
        usage: usage(v),
        cached_input_tokens: 0,
        api_error_status,
        transient,
        budget_exceeded: str_of(v, "subtype") == Some("error_max_budget_usd"),
    }
}

/// Tokens from `modelUsage` (right even when `usage` is zeroed, as on `error_max_budget_usd`),
/// else from `usage`. Cached input counts as input.
fn usage(v: &Value) -> Usage {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cost = v.get("total_cost_usd").and_then(Value::as_f64);
    if let Some(models) = v
        .get("modelUsage")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        let mut u = Usage {
            cost_usd: cost,
            ..Usage::default()
        };
        for m in models.values() {
            u.input_tokens += n(m, "inputTokens")
                + n(m, "cacheReadInputTokens")
                + n(m, "cacheCreationInputTokens");
            u.output_tokens += n(m, "outputTokens");
        }
        return u;
    }
    let usage = v.get("usage").unwrap_or(&Value::Null);
    Usage {
        input_tokens: n(usage, "input_tokens")
            + n(usage, "cache_read_input_tokens")
            + n(usage, "cache_creation_input_tokens"),
        output_tokens: n(usage, "output_tokens"),
        cost_usd: cost,
    }
}
