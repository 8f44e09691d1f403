//! Harnesses: how an agent CLI is started and how its stdout is understood.
//!
//! Every harness maps its stream onto one [`AgentEvent`] model, so the runner, the PM prompt
//! and the transcripts treat all agents alike. Building the command ([`command`]), parsing a
//! line ([`parse_line`]) and judging an attempt ([`judge`]) are pure functions; the runner's
//! process layer (`wf_runner::process`) runs the command.

pub mod claude;
pub mod codex;
pub mod gemini;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::chain::Outcome;
use crate::config::{HarnessConfig, HarnessKind, Price, RetryPolicy, StreamFormat};
use crate::model::{FailureReason, Millis, Usage};

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
    let mut out: String = s.chars().take(n).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
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

/// A process to start: plain data, built by the harness, run by the runner's process layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (a path or a name looked up in `PATH`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment added to the runner's own.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Bytes written to stdin, which is then closed; `None` gives `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

/// Longest prompt that may go in an argument (Linux refuses single argv strings over 128 KiB).
pub const MAX_ARG_PROMPT: usize = 128 * 1024 - 1;

/// The prompt does not fit where the harness wants it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the prompt is {0} bytes, too long for a command-line argument (limit 128 KiB); let the harness read it on stdin")]
pub struct PromptTooLong(pub usize);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Builds the command for one attempt.
///
/// Built-in harnesses get the prompt on stdin, which is then closed: argv strings are limited to
/// 128 KiB, some CLIs' variadic options swallow a positional prompt, and Codex reads stdin to its
/// end. A custom harness gets it on stdin too, unless an argument contains `{prompt}`.
pub fn command(
    harness: &HarnessConfig,
    model: Option<&str>,
    prompt: &str,
    cwd: PathBuf,
    running_as_root: bool,
) -> Result<CommandSpec, PromptTooLong> {
    let model = model.or(harness.model.as_deref());
    let mut env = harness.env.clone();
    let mut stdin = Some(prompt.as_bytes().to_vec());
    let args = match harness.kind {
        HarnessKind::Claude => {
            let mut args = strings(&[
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
            ]);
            args.push(harness.permission_mode.clone());
            if let Some(m) = model {
                args.extend(["--model".to_string(), m.to_string()]);
            }
            if !harness.allowed_tools.is_empty() {
                // Comma-separated in one argument: the flag is variadic.
                args.push(format!(
                    "--allowedTools={}",
                    harness.allowed_tools.join(",")
                ));
            }
            args.extend(harness.args.iter().cloned());
            if harness.permission_mode == "bypassPermissions" && running_as_root {
                // Claude refuses to bypass permissions as root unless told it is sandboxed.
                env.entry("IS_SANDBOX".into()).or_insert_with(|| "1".into());
            }
            args
        }
        HarnessKind::Codex => {
            let mut args = strings(&["exec", "--json", "--skip-git-repo-check"]);
            match harness.sandbox.as_str() {
                "bypass" => args.push("--dangerously-bypass-approvals-and-sandbox".into()),
                sandbox => args.extend(["--sandbox".to_string(), sandbox.to_string()]),
            }
            if let Some(m) = model {
                args.extend(["--model".to_string(), m.to_string()]);
            }
            args.extend(harness.args.iter().cloned());
            // `-`: read the prompt from stdin.
            args.push("-".into());
            args
        }
        HarnessKind::Gemini => {
            let mut args = strings(&["--output-format", "stream-json", "--skip-trust"]);
            match harness.approval_mode.as_str() {
                "yolo" => args.push("--yolo".into()),
                mode => args.extend(["--approval-mode".to_string(), mode.to_string()]),
            }
            if let Some(m) = model {
                args.extend(["--model".to_string(), m.to_string()]);
            }
            args.extend(harness.args.iter().cloned());
            args
        }
        HarnessKind::Custom => {
            if let Some(m) = model {
                env.insert("WF_MODEL".into(), m.to_string());
            }
            let mut args = harness.args.clone();
            if args.iter().any(|a| a.contains("{prompt}")) {
                if prompt.len() > MAX_ARG_PROMPT {
                    return Err(PromptTooLong(prompt.len()));
                }
                for a in &mut args {
                    *a = a.replace("{prompt}", prompt);
                }
                stdin = None;
            }
            for a in &mut args {
                *a = a.replace("{model}", model.unwrap_or(""));
            }
            args
        }
    };
    Ok(CommandSpec {
        program: harness.command.clone(),
        args,
        env,
        cwd,
        stdin,
    })
}

/// Longest assistant text kept when there is no result event, in bytes.
const MAX_FALLBACK_TEXT: usize = 256 * 1024;

fn push_bounded(buf: &mut String, text: &str) {
    if buf.len() < MAX_FALLBACK_TEXT {
        let room = MAX_FALLBACK_TEXT - buf.len();
        if text.len() <= room {
            buf.push_str(text);
        } else {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            buf.push_str(&text[..cut]);
        }
    }
}

/// Everything learnt from one attempt's stream.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    /// The session id.
    pub session_id: Option<String>,
    /// The model the agent reported.
    pub model: Option<String>,
    /// The terminal event, if one came.
    pub result: Option<AgentResult>,
    /// All assistant text seen so far (bounded): the fallback result.
    pub text: String,
    /// The assistant's latest message: the last complete one, or the deltas since the last tool
    /// event (bounded).
    pub last_message: String,
    /// Tool calls made.
    pub tool_calls: u32,
    /// Lines that were not valid events.
    pub malformed: u32,
    /// The first malformed line, shortened.
    pub first_malformed: Option<String>,
    /// A refused rate limit, with its reset time.
    pub rate_limited: Option<Option<Millis>>,
    /// API retries the CLI made by itself.
    pub api_retries: u32,
    /// The HTTP status of the last API retry.
    pub last_retry_status: Option<u16>,
    /// The last warning the CLI reported.
    pub last_warning: Option<String>,
}

impl RunLog {
    /// Records one parsed line.
    pub fn push(&mut self, parsed: &Parsed) {
        match parsed {
            Parsed::Ignored => {}
            Parsed::Malformed(why) => {
                self.malformed += 1;
                if self.first_malformed.is_none() {
                    self.first_malformed = Some(why.chars().take(200).collect());
                }
            }
            Parsed::Events(events) => events.iter().for_each(|e| self.push_event(e)),
        }
    }

    fn push_event(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::Session { id, model } => {
                self.session_id = Some(id.clone());
                if model.is_some() {
                    self.model = model.clone();
                }
            }
            AgentEvent::Text(t) => {
                if !self.text.is_empty() {
                    push_bounded(&mut self.text, "\n");
                }
                push_bounded(&mut self.text, t);
                self.last_message.clear();
                push_bounded(&mut self.last_message, t);
            }
            AgentEvent::TextDelta(t) => {
                push_bounded(&mut self.text, t);
                push_bounded(&mut self.last_message, t);
            }
            AgentEvent::ToolUse { .. } => {
                self.tool_calls += 1;
                self.last_message.clear();
            }
            AgentEvent::ToolResult { .. } => self.last_message.clear(),
            AgentEvent::ApiRetry { status, .. } => {
                self.api_retries += 1;
                self.last_retry_status = *status;
            }
            AgentEvent::RateLimit {
                rejected,
                resets_at,
            } => {
                if *rejected {
                    self.rate_limited = Some(*resets_at);
                }
            }
            AgentEvent::Warning(w) => self.last_warning = Some(w.chars().take(500).collect()),
            AgentEvent::Result(r) => self.result = Some(r.clone()),
        }
    }

    /// The text the job's result is: the result event's, else the last message.
    fn final_text(&self, result: &AgentResult) -> String {
        if result.text.is_empty() {
            self.last_message.trim().to_string()
        } else {
            result.text.clone()
        }
    }
}

/// How the process ended, as the process layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself.
    Exited {
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Signal, if a signal killed it.
        signal: Option<i32>,
    },
    /// It ran past `timeoutMs` and was killed.
    TimedOut,
    /// It printed nothing for `idleTimeoutMs` and was killed.
    IdleTimedOut,
    /// The runner stopped it (the caller knows why).
    Cancelled,
    /// It printed its terminal event but did not exit within the settle time, so it was stopped.
    Lingered,
}

/// The runner's judgement of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// How the attempt ends for the chain.
    pub outcome: Outcome,
    /// Why, in one line, for failures and pauses.
    pub detail: Option<String>,
    /// The result text stored for the job (shown to the PM).
    pub text: String,
    /// What it spent.
    pub usage: Usage,
    /// The agent's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
}

/// True for HTTP statuses that mean "try again later".
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 409 || status == 429 || status == 529 || (500..600).contains(&status)
}

/// The HTTP status an error message names, and whether its words mean "try again later".
/// CLIs report API errors as text (Codex, Gemini); this reads the common shapes.
pub fn classify_error_text(text: &str) -> (Option<u16>, bool) {
    let lower = text.to_ascii_lowercase();
    let mut status = None;
    for marker in [
        "status ",
        "status: ",
        "\"code\":",
        "\"code\": ",
        "http ",
        "error: ",
        "api error: ",
    ] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            let digits: String = lower[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.len() == 3 {
                if let Ok(n) = digits.parse::<u16>() {
                    if (400..600).contains(&n) {
                        status = Some(n);
                        break;
                    }
                }
            }
            from = start;
        }
        if status.is_some() {
            break;
        }
    }
    let words = [
        ("too many requests", 429),
        ("rate limit", 429),
        ("resource has been exhausted", 429),
        ("resource_exhausted", 429),
        ("overloaded", 529),
        ("high demand", 503),
        ("service unavailable", 503),
        ("\"unavailable\"", 503),
        ("internal server error", 500),
        ("unauthorized", 401),
        ("invalid api key", 401),
    ];
    if status.is_none() {
        status = words
            .iter()
            .find(|(w, _)| lower.contains(w))
            .map(|(_, s)| *s);
    }
    let transient = status.is_some_and(is_transient_status)
        || [
            "rate limit",
            "overloaded",
            "high demand",
            "temporar",
            "try again",
        ]
        .iter()
        .any(|w| lower.contains(w));
    (status, transient)
}

/// The cost of `usage` at `price`, counting `cached` of the input tokens at the cached price.
pub fn cost(usage: &Usage, cached: u64, price: &Price) -> f64 {
    let cached = cached.min(usage.input_tokens);
    let cached_price = price
        .cached_input_per_m_tok
        .unwrap_or(price.input_per_m_tok);
    ((usage.input_tokens - cached) as f64 * price.input_per_m_tok
        + cached as f64 * cached_price
        + usage.output_tokens as f64 * price.output_per_m_tok)
        / 1_000_000.0
}

/// What [`judge`] needs besides the stream.
#[derive(Debug, Clone)]
pub struct JudgeInput<'a> {
    /// How the process ended.
    pub ended: &'a Ended,
    /// The end of its stderr.
    pub stderr_tail: &'a str,
    /// The stream format (plain text has no terminal event).
    pub format: StreamFormat,
    /// Now.
    pub now: Millis,
    /// How many times this job was already paused by transient errors.
    pub pauses: u32,
    /// The retry policy.
    pub retry: &'a RetryPolicy,
}

/// Judges an attempt from its stream and its end.
///
/// Success needs the agent's own success result **and** exit code 0 (plain-text harnesses:
/// exit code 0). Transient API errors and refused rate limits pause the job — until the reset
/// time when one is known, else after the policy's backoff — and after `max_pauses` pauses the
/// job fails. `Cancelled` is judged by the caller, who knows why it cancelled; here it is
/// reported as a cancelled failure.
pub fn judge(log: &RunLog, input: &JudgeInput<'_>) -> Verdict {
    let usage = log
        .result
        .as_ref()
        .map(|r| r.usage.clone())
        .unwrap_or_default();
    let exit_code = match input.ended {
        Ended::Exited { code, .. } => *code,
        _ => None,
    };
    let partial = || match &log.result {
        Some(r) if !r.text.is_empty() => r.text.clone(),
        _ => log.text.clone(),
    };
    let verdict = |outcome: Outcome, detail: Option<String>, text: String| Verdict {
        outcome,
        detail,
        text,
        usage: usage.clone(),
        exit_code,
    };
    let fail = |reason: FailureReason, detail: String, text: String| {
        verdict(Outcome::Failed(reason), Some(detail), text)
    };
    let pause = |resets_at: Option<Millis>, detail: String| {
        if input.pauses >= input.retry.max_pauses {
            return fail(
                FailureReason::Exit,
                format!(
                    "gave up after {} pauses for transient errors; last: {detail}",
                    input.pauses
                ),
                partial(),
            );
        }
        let backoff = input.now + input.retry.backoff(input.pauses + 1);
        let at = match resets_at {
            Some(reset) => (reset + 30_000).max(input.now + 60_000),
            None => backoff,
        };
        verdict(Outcome::RetryAt(at), Some(detail), partial())
    };
    let stderr_hint = || {
        let tail = input.stderr_tail.trim();
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.lines().rev().take(3).collect();
            let last: String = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
            format!("; stderr: {}", last.chars().take(400).collect::<String>())
        }
    };
    let (code, signal) = match input.ended {
        Ended::TimedOut => {
            return fail(
                FailureReason::Timeout,
                "ran longer than timeoutMs and was stopped".into(),
                partial(),
            )
        }
        Ended::IdleTimedOut => {
            return fail(
                FailureReason::IdleTimeout,
                "printed nothing for idleTimeoutMs and was stopped".into(),
                partial(),
            )
        }
        Ended::Cancelled => return fail(FailureReason::Cancelled, "cancelled".into(), partial()),
        // It delivered its result; stopping a straggler does not make the run a failure.
        Ended::Lingered => (Some(0), None),
        Ended::Exited { code, signal } => (*code, *signal),
    };
    let how = match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "unknown exit".to_string(),
    };
    if input.format == StreamFormat::Text {
        return if code == Some(0) {
            verdict(Outcome::Complete, None, log.text.trim_end().to_string())
        } else {
            fail(
                FailureReason::Exit,
                format!("ended with {how}{}", stderr_hint()),
                partial(),
            )
        };
    }
    match &log.result {
        Some(r) if r.success && code == Some(0) => {
            verdict(Outcome::Complete, None, log.final_text(r))
        }
        Some(r) if r.success => fail(
            FailureReason::Exit,
            format!(
                "the agent reported success but ended with {how}{}",
                stderr_hint()
            ),
            log.final_text(r),
        ),
        Some(r) if r.budget_exceeded => fail(
            FailureReason::Budget,
            format!(
                "budget exceeded: the agent stopped at the cost limit it was given ({})",
                r.text.trim()
            ),
            r.text.clone(),
        ),
        Some(r) => {
            let first_line: String = r
                .text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            let transient = r.transient || r.api_error_status.is_some_and(is_transient_status);
            match (log.rate_limited, transient) {
                (Some(reset), _) => pause(reset, format!("rate limited: {first_line}")),
                (None, true) => pause(
                    None,
                    match r.api_error_status {
                        Some(s) => format!("transient API error {s}: {first_line}"),
                        None => format!("transient API error: {first_line}"),
                    },
                ),
                (None, false) => fail(
                    FailureReason::Exit,
                    format!("the agent reported failure ({how}): {first_line}"),
                    r.text.clone(),
                ),
            }
        }
        None => {
            if let Some(reset) = log.rate_limited {
                return pause(reset, format!("rate limited ({how}, no result event)"));
            }
            let (reason, what) = if code == Some(0) {
                (
                    FailureReason::MalformedStream,
                    "exited with code 0 but without a result event".to_string(),
                )
            } else {
                (
                    FailureReason::Exit,
                    format!("ended with {how} without a result event"),
                )
            };
            let malformed = match (&log.first_malformed, log.malformed) {
                (Some(first), n) => format!("; {n} malformed line(s), first: {first}"),
                (None, _) => String::new(),
            };
            let warning = log
                .last_warning
                .as_ref()
                .map(|w| format!("; last error: {w}"))
                .unwrap_or_default();
            fail(
                reason,
                format!("{what}{malformed}{warning}{}", stderr_hint()),
                partial(),
            )
        }
    }
}

#[cfg(test)]
mod tests;
