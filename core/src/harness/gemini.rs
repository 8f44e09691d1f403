//! Gemini CLI `--output-format stream-json` (measured on 0.61.0).
//!
//! The final text is the assistant's deltas after the last tool call (the `result` event
//! carries none); API errors end with `result.status == "error"` and exit code = HTTP status mod
//! 256; auth and trust failures print no `result` at all, which is a failure.

use serde_json::Value;

use super::strings;
use super::{classify_error_text, json_event, shorten, str_of, AgentEvent, AgentResult, Parsed};
use crate::config::ApprovalMode;
use crate::model::Usage;

/// The arguments of `gemini` for one attempt: streaming JSON, the approval mode, the model,
/// then the configured extra arguments (the prompt is on stdin).
pub(super) fn args(
    approval_mode: ApprovalMode,
    model: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut args = strings(&["--output-format", "stream-json", "--skip-trust"]);
    match approval_mode {
        ApprovalMode::Yolo => args.push("--yolo".into()),
        mode => args.extend(["--approval-mode".to_string(), mode.to_string()]),
    }
    if let Some(m) = model {
        args.extend(["--model".to_string(), m.to_string()]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// Parses one stdout line.
pub fn parse_line(line: &str) -> Parsed {
    json_event(line, |kind, value| match kind {
        "init" => str_of(value, "session_id")
            .map(|id| {
                vec![AgentEvent::Session {
                    id: id.to_string(),
                    model: str_of(value, "model").map(str::to_string),
                }]
            })
            .unwrap_or_default(),
        "message" if str_of(value, "role") == Some("assistant") => str_of(value, "content")
            .map(|c| vec![AgentEvent::TextDelta(c.to_string())])
            .unwrap_or_default(),
        "tool_use" => vec![AgentEvent::ToolUse {
            id: str_of(value, "tool_id").unwrap_or_default().to_string(),
            name: str_of(value, "tool_name").unwrap_or("tool").to_string(),
            input: tool_input(value.get("parameters")),
        }],
        "tool_result" => vec![AgentEvent::ToolResult {
            id: str_of(value, "tool_id").unwrap_or_default().to_string(),
            is_error: str_of(value, "status") == Some("error"),
            output: super::event::tool_output(value.get("output").or(value.get("error"))),
        }],
        "error" => vec![AgentEvent::Warning(
            str_of(value, "message").unwrap_or("error").to_string(),
        )],
        "result" => vec![AgentEvent::Result(result(value))],
        _ => Vec::new(),
    })
}

fn tool_input(params: Option<&Value>) -> String {
    let Some(p) = params else {
        return String::new();
    };
    for key in [
        "command",
        "file_path",
        "absolute_path",
        "path",
        "pattern",
        "query",
    ] {
        if let Some(s) = str_of(p, key) {
            return shorten(s, 200);
        }
    }
    shorten(&p.to_string(), 200)
}

fn result(v: &Value) -> AgentResult {
    let success = str_of(v, "status") == Some("success");
    let stats = v.get("stats").unwrap_or(&Value::Null);
    let n = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
    let usage = Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cost_usd: None,
    };
    if success {
        return AgentResult {
            success,
            text: String::new(),
            usage,
            cached_input_tokens: n("cached"),
            api_error_status: None,
            transient: false,
            budget_exceeded: false,
        };
    }
    let error = v.get("error").unwrap_or(&Value::Null);
    let message = str_of(error, "message")
        .unwrap_or("the run failed without a message")
        .to_string();
    let (status, transient) = classify_error_text(&message);
    AgentResult {
        success,
        text: message,
        usage,
        cached_input_tokens: n("cached"),
        api_error_status: status,
        transient,
        budget_exceeded: false,
    }
}
