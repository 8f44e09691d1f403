//! Codex CLI `exec --json` (measured on 0.169.0).
//!
//! Items are read as `serde_json::Value`: a `web_search` item carries the key `"id"` twice,
//! which a derived struct refuses (`Value` keeps the last). A top-level `error` event is not
//! fatal by itself (`Reconnecting... 1/2` is followed by success); `turn.completed` or
//! `turn.failed` ends the run. Usage in `turn.completed` is the thread's running total, so the
//! latest one replaces any earlier one.

use serde_json::Value;

use super::strings;
use super::{classify_error_text, json_event, shorten, str_of, AgentEvent, AgentResult, Parsed};
use crate::config::Sandbox;
use crate::model::Usage;

/// The arguments of `codex` for one attempt: `exec --json`, the sandbox, the model, the
/// configured extra arguments, and `-` (the prompt is on stdin).
pub(super) fn args(sandbox: Sandbox, model: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut args = strings(&["exec", "--json", "--skip-git-repo-check"]);
    match sandbox {
        Sandbox::Bypass => args.push("--dangerously-bypass-approvals-and-sandbox".into()),
        sandbox => args.extend(["--sandbox".to_string(), sandbox.to_string()]),
    }
    if let Some(m) = model {
        args.extend(["--model".to_string(), m.to_string()]);
    }
    args.extend(extra.iter().cloned());
    // `-`: read the prompt from stdin.
    args.push("-".into());
    args
}

/// Parses one stdout line.
pub fn parse_line(line: &str) -> Parsed {
    json_event(line, |kind, value| match kind {
        "thread.started" => str_of(value, "thread_id")
            .map(|id| {
                vec![AgentEvent::Session {
                    id: id.to_string(),
                    model: None,
                }]
            })
            .unwrap_or_default(),
        "item.started" => item_started(value.get("item").unwrap_or(&Value::Null)),
        "item.completed" => item_completed(value.get("item").unwrap_or(&Value::Null)),
        "error" => vec![AgentEvent::Warning(
            str_of(value, "message").unwrap_or("error").to_string(),
        )],
        "turn.completed" => vec![AgentEvent::Result(completed(value))],
        "turn.failed" => vec![AgentEvent::Result(failed(value))],
        _ => Vec::new(),
    })
}

const TOOL_ITEMS: &[&str] = &[
    "command_execution",
    "file_change",
    "mcp_tool_call",
    "web_search",
    "collab_tool_call",
];

fn tool_name(item: &Value) -> String {
    match (
        str_of(item, "type"),
        str_of(item, "server"),
        str_of(item, "tool"),
    ) {
        (Some("mcp_tool_call"), Some(server), Some(tool)) => format!("mcp__{server}__{tool}"),
        (Some(t), _, _) => t.to_string(),
        _ => "tool".to_string(),
    }
}

fn tool_input(item: &Value) -> String {
    if let Some(c) = str_of(item, "command").or_else(|| str_of(item, "query")) {
        return shorten(c, 200);
    }
    if let Some(changes) = item.get("changes").and_then(Value::as_array) {
        let paths: Vec<&str> = changes.iter().filter_map(|c| str_of(c, "path")).collect();
        return shorten(&paths.join(", "), 200);
    }
    item.get("arguments")
        .map(|a| shorten(&a.to_string(), 200))
        .unwrap_or_default()
}

fn item_started(item: &Value) -> Vec<AgentEvent> {
    match str_of(item, "type") {
        Some(t) if TOOL_ITEMS.contains(&t) => vec![AgentEvent::ToolUse {
            id: str_of(item, "id").unwrap_or_default().to_string(),
            name: tool_name(item),
            input: tool_input(item),
        }],
        _ => Vec::new(),
    }
}

fn item_completed(item: &Value) -> Vec<AgentEvent> {
    match str_of(item, "type") {
        Some("agent_message") => str_of(item, "text")
            .map(|t| vec![AgentEvent::Text(t.to_string())])
            .unwrap_or_default(),
        Some("error") => vec![AgentEvent::Warning(
            str_of(item, "message").unwrap_or("error").to_string(),
        )],
        Some(t) if TOOL_ITEMS.contains(&t) => {
            let status = str_of(item, "status").unwrap_or("completed");
            let exit = item.get("exit_code").and_then(Value::as_i64);
            vec![AgentEvent::ToolResult {
                id: str_of(item, "id").unwrap_or_default().to_string(),
                is_error: matches!(status, "failed" | "declined") || exit.is_some_and(|c| c != 0),
                output: super::event::tool_output(item.get("aggregated_output")),
            }]
        }
        _ => Vec::new(),
    }
}

fn completed(v: &Value) -> AgentResult {
    let usage = v.get("usage").unwrap_or(&Value::Null);
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    AgentResult {
        success: true,
        text: String::new(),
        usage: Usage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cost_usd: None,
        },
        cached_input_tokens: n("cached_input_tokens"),
        api_error_status: None,
        transient: false,
        budget_exceeded: false,
    }
}

fn failed(v: &Value) -> AgentResult {
    let message = v
        .get("error")
        .and_then(|e| str_of(e, "message"))
        .unwrap_or("turn failed without a message")
        .to_string();
    let (status, transient) = classify_error_text(&message);
    AgentResult {
        success: false,
        text: message,
        usage: Usage::default(),
        cached_input_tokens: 0,
        api_error_status: status,
        transient,
        budget_exceeded: false,
    }
}
