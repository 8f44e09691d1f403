//! Harnesses: how an agent CLI is started and how its stdout is understood.
//!
//! Every harness maps its stream onto one [`AgentEvent`] model, so the runner, the PM prompt
//! and the transcripts treat all agents alike. Building the command ([`command`]), parsing a
//! line ([`parse_line`]) and judging an attempt ([`judge`]) are pure functions; only
//! [`process`] touches the operating system.

pub mod claude;
pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::chain::Outcome;
use crate::config::{HarnessConfig, HarnessKind, StreamFormat};
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
    /// Assistant text.
    Text(String),
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
    /// The terminal event.
    Result(AgentResult),
}

/// The agent's own verdict on its run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentResult {
    /// The agent says it succeeded.
    pub success: bool,
    /// Final text on success; error text otherwise.
    pub text: String,
    /// Tokens and cost of the run.
    pub usage: Usage,
    /// The HTTP status of an API error, when the run failed on one.
    pub api_error_status: Option<u16>,
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

/// Parses one stdout line of a harness that speaks `format`.
pub fn parse_line(format: StreamFormat, line: &str) -> Parsed {
    match format {
        StreamFormat::Claude => claude::parse_line(line),
    }
}

/// A process to start: plain data, built by the harness, run by [`process`].
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

/// Builds the command for one attempt. The prompt always goes on stdin: argv strings are
/// limited to 128 KiB and some CLIs' variadic options would swallow a positional prompt.
pub fn command(
    harness: &HarnessConfig,
    model: Option<&str>,
    prompt: &str,
    cwd: PathBuf,
    running_as_root: bool,
) -> CommandSpec {
    let model = model.or(harness.model.as_deref());
    let mut env = harness.env.clone();
    let args = match harness.kind {
        HarnessKind::Claude => {
            let mut args: Vec<String> = [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(harness.permission_mode.clone());
            if let Some(m) = model {
                args.extend(["--model".to_string(), m.to_string()]);
            }
            args.extend(harness.args.iter().cloned());
            if harness.permission_mode == "bypassPermissions" && running_as_root {
                // Claude refuses to bypass permissions as root unless told it is sandboxed.
                env.entry("IS_SANDBOX".into()).or_insert_with(|| "1".into());
            }
            args
        }
        HarnessKind::Custom => {
            if let Some(m) = model {
                env.insert("WF_MODEL".into(), m.to_string());
            }
            harness.args.clone()
        }
    };
    CommandSpec {
        program: harness.command.clone(),
        args,
        env,
        cwd,
        stdin: Some(prompt.as_bytes().to_vec()),
    }
}

/// Longest assistant text kept when there is no result event, in bytes.
const MAX_FALLBACK_TEXT: usize = 64 * 1024;

/// Everything learnt from one attempt's stream.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    /// The session id.
    pub session_id: Option<String>,
    /// The terminal event, if one came.
    pub result: Option<AgentResult>,
    /// Assistant text seen so far (bounded), the fallback result.
    pub text: String,
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
            AgentEvent::Session { id, .. } => self.session_id = Some(id.clone()),
            AgentEvent::Text(t) => {
                if self.text.len() < MAX_FALLBACK_TEXT {
                    if !self.text.is_empty() {
                        self.text.push('\n');
                    }
                    self.text
                        .extend(t.chars().take(MAX_FALLBACK_TEXT - self.text.len()));
                }
            }
            AgentEvent::ToolUse { .. } => self.tool_calls += 1,
            AgentEvent::ToolResult { .. } => {}
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
            AgentEvent::Result(r) => self.result = Some(r.clone()),
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

/// Delay before retry number `n` (1-based) of a paused job: 1, 2, 5, 15, then 30 minutes.
pub fn backoff_ms(n: u32) -> u64 {
    const STEPS: [u64; 5] = [60_000, 120_000, 300_000, 900_000, 1_800_000];
    STEPS[(n.max(1) as usize - 1).min(STEPS.len() - 1)]
}

/// Judges an attempt from its stream and its end. `attempt` counts from 1.
///
/// Success needs the agent's own success result **and** exit code 0. Transient API errors and
/// refused rate limits pause the job instead of failing it. `Cancelled` is judged by the
/// caller, who knows why it cancelled; here it is reported as a cancelled failure.
pub fn judge(log: &RunLog, ended: &Ended, stderr_tail: &str, now: Millis, attempt: u32) -> Verdict {
    let usage = log
        .result
        .as_ref()
        .map(|r| r.usage.clone())
        .unwrap_or_default();
    let partial = || match &log.result {
        Some(r) => r.text.clone(),
        None => log.text.clone(),
    };
    let exit_code = match ended {
        Ended::Exited { code, .. } => *code,
        _ => None,
    };
    let fail = |reason: FailureReason, detail: String, text: String| Verdict {
        outcome: Outcome::Failed(reason),
        detail: Some(detail),
        text,
        usage: usage.clone(),
        exit_code,
    };
    let pause = |resets_at: Option<Millis>, detail: String| {
        let backoff = now + backoff_ms(attempt);
        let at = match resets_at {
            Some(reset) => (reset + 30_000).max(now + 60_000),
            None => backoff,
        };
        Verdict {
            outcome: Outcome::RetryAt(at),
            detail: Some(detail),
            text: partial(),
            usage: usage.clone(),
            exit_code,
        }
    };
    let stderr_hint = || {
        let tail = stderr_tail.trim();
        if tail.is_empty() {
            String::new()
        } else {
            let last: String = tail
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            format!("; stderr: {}", last.chars().take(400).collect::<String>())
        }
    };
    let (code, signal) = match ended {
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
    match &log.result {
        Some(r) if r.success && code == Some(0) => Verdict {
            outcome: Outcome::Complete,
            detail: None,
            text: r.text.clone(),
            usage,
            exit_code,
        },
        Some(r) if r.success => fail(
            FailureReason::Exit,
            format!(
                "the agent reported success but ended with {how}{}",
                stderr_hint()
            ),
            r.text.clone(),
        ),
        Some(r) => {
            let first_line: String = r
                .text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            match (r.api_error_status, log.rate_limited) {
                (_, Some(reset)) => pause(reset, format!("rate limited: {first_line}")),
                (Some(s), _) if is_transient_status(s) => {
                    pause(None, format!("transient API error {s}: {first_line}"))
                }
                _ => fail(
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
            fail(
                reason,
                format!("{what}{malformed}{}", stderr_hint()),
                partial(),
            )
        }
    }
}

#[cfg(test)]
mod tests;
