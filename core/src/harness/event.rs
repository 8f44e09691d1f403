//! The one event model every stream parser maps onto, and the helpers the parsers share.

use super::{claude, codex, gemini};
use crate::config::StreamFormat;
use crate::model::{Millis, Usage};

/// One thing an agent reported, whatever its CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// The session started.
    Session {
        /// Session (thread) id, for resuming by hand.
        id: String,
        /// Model in use, when reported.
        model: Option<String>,
    },
    /// A complete assistant message.
    Text(String),
    /// A chunk of an assistant message (Gemini streams its text in deltas).
    TextDelta(String),
    /// The agent called a tool.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// A short rendering of the input.
        input: String,
    },
    /// A tool answered.
    ToolResult {
        /// Call id.
        id: String,
        /// Whether the tool failed.
        is_error: bool,
        /// The start of what it answered, shortened.
        output: String,
    },
    /// The CLI is retrying an API call by itself.
    ApiRetry {
        /// HTTP status, when known.
        status: Option<u16>,
        /// Error kind as the CLI names it.
        error: String,
    },
    /// The provider's rate limit state.
    RateLimit {
        /// Whether the request was refused.
        rejected: bool,
        /// When the limit resets (ms since the epoch), when known.
        resets_at: Option<Millis>,
    },
    /// A non-fatal error or warning the CLI reported.
    Warning(String),
    /// What one model turn used so far (Claude reports it with every assistant message; the
    /// events of one message repeat it, so the latest per message id counts). Only the
    /// transcript of an attempt that never reached its result needs it.
    TurnUsage {
        /// The message id, when reported.
        message_id: Option<String>,
        /// Tokens of the turn (cached input counted as input); no cost.
        usage: Usage,
        /// Of the input tokens, how many were cached (for pricing).
        cached_input_tokens: u64,
    },
    /// The terminal event.
    Result(AgentResult),
}

/// The agent's own verdict on its run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentResult {
    /// The agent says it succeeded.
    pub success: bool,
    /// Final text on success (empty when the format carries it in messages); error text
    /// otherwise.
    pub text: String,
    /// Tokens and cost of the run.
    pub usage: Usage,
    /// Of the input tokens, how many were cached (for pricing).
    pub cached_input_tokens: u64,
    /// The HTTP status of an API error, when the run failed on one.
    pub api_error_status: Option<u16>,
    /// The error looks transient (rate limit, overload, server error) even without a status.
    pub transient: bool,
    /// The agent stopped itself at the spending limit wf gave it.
    pub budget_exceeded: bool,
}

/// What one stdout line meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Events to record.
    Events(Vec<AgentEvent>),
    /// A valid line of no interest (unknown event types are ignored, as the research advises).
    Ignored,
    /// Not a valid line; counted and shown, never fatal.
    Malformed(String),
}

/// The string at `key` of a JSON object.
pub(crate) fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// `s` cut to `n` characters, with an ellipsis when cut.
pub(crate) fn shorten(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        None => s.to_string(),
        Some((cut, _)) => {
            let mut out = String::with_capacity(cut + '…'.len_utf8());
            out.push_str(&s[..cut]);
            out.push('…');
            out
        }
    }
}

/// Longest tool output kept on an event, in characters: enough to see what happened.
pub const TOOL_OUTPUT_CHARS: usize = 300;

/// The text of a tool's answer: a string, or the text blocks of an array of content blocks.
pub(crate) fn tool_output(v: Option<&serde_json::Value>) -> String {
    let text = match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| str_of(b, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    shorten(&text, TOOL_OUTPUT_CHARS)
}

/// Parses a JSON-lines event and hands it, with its `"type"`, to `events`. Blank lines are
/// ignored; a line that is not a JSON object with a `"type"` is malformed.
pub(crate) fn json_event(
    line: &str,
    events: impl FnOnce(&str, &serde_json::Value) -> Vec<AgentEvent>,
) -> Parsed {
    let line = line.trim();
    if line.is_empty() {
        return Parsed::Ignored;
    }
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Parsed::Malformed(format!("not JSON ({e}): {}", shorten(line, 120))),
    };
    let Some(kind) = str_of(&value, "type") else {
        return Parsed::Malformed(format!("no \"type\": {}", shorten(line, 120)));
    };
    match events(kind, &value) {
        events if events.is_empty() => Parsed::Ignored,
        events => Parsed::Events(events),
    }
}

/// Parses one stdout line of a harness that speaks `format`.
pub fn parse_line(format: StreamFormat, line: &str) -> Parsed {
    match format {
        StreamFormat::Claude => claude::parse_line(line),
        StreamFormat::Codex => codex::parse_line(line),
        StreamFormat::Gemini => gemini::parse_line(line),
        StreamFormat::Text => Parsed::Events(vec![AgentEvent::TextDelta(format!("{line}\n"))]),
    }
}

/// Whether `event` is a format's terminal event.
pub fn is_terminal(parsed: &Parsed) -> bool {
    matches!(parsed, Parsed::Events(events) if events.iter().any(|e| matches!(e, AgentEvent::Result(_))))
}
