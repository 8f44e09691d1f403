//! Judging an attempt: how it ended for the chain (complete, failed with a reason, paused until
//! a time), what it cost, and how error texts are classified.

use std::collections::BTreeMap;

use super::{AgentResult, Ended, RunLog};
use crate::chain::Outcome;
use crate::config::{Price, RetryPolicy, StreamFormat};
use crate::model::{FailureReason, Millis, Usage};

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
    let j = Judging { log, input };
    let (code, signal) = match input.ended {
        Ended::TimedOut => {
            return j.fail(
                FailureReason::Timeout,
                "ran longer than timeoutMs and was stopped".into(),
                j.partial(),
            )
        }
        Ended::IdleTimedOut => {
            return j.fail(
                FailureReason::IdleTimeout,
                "printed nothing for idleTimeoutMs and was stopped".into(),
                j.partial(),
            )
        }
        Ended::Cancelled => {
            return j.fail(FailureReason::Cancelled, "cancelled".into(), j.partial())
        }
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
            j.verdict(Outcome::Complete, None, log.text.trim_end().to_string())
        } else {
            j.fail(
                FailureReason::Exit,
                format!("ended with {how}{}", j.stderr_hint()),
                j.partial(),
            )
        };
    }
    match &log.result {
        Some(r) => j.with_result(r, code, &how),
        None => j.without_result(code, &how),
    }
}

/// The cost of `usage` for an agent that reported none, at the price configured for its model
/// (the job's, else the harness's, else the one the agent reported).
pub fn priced(
    usage: &mut Usage,
    log: &RunLog,
    model: Option<&str>,
    prices: &BTreeMap<String, Price>,
) {
    if usage.cost_usd.is_some() {
        return;
    }
    let model = model.or(log.model.as_deref());
    if let Some(price) = model.and_then(|m| prices.get(m)) {
        let cached = log.usage_so_far().1;
        usage.cost_usd = Some(cost(usage, cached, price));
    }
}

/// One judgement in progress: the stream, the end, and the verdicts it can give.
struct Judging<'a> {
    log: &'a RunLog,
    input: &'a JudgeInput<'a>,
}

impl Judging<'_> {
    fn verdict(&self, outcome: Outcome, detail: Option<String>, text: String) -> Verdict {
        Verdict {
            outcome,
            detail,
            text,
            usage: self
                .log
                .result
                .as_ref()
                .map(|r| r.usage.clone())
                .unwrap_or_default(),
            exit_code: match self.input.ended {
                Ended::Exited { code, .. } => *code,
                _ => None,
            },
        }
    }

    fn fail(&self, reason: FailureReason, detail: String, text: String) -> Verdict {
        self.verdict(Outcome::Failed(reason), Some(detail), text)
    }

    /// What the agent said so far, for a job that did not finish.
    fn partial(&self) -> String {
        match &self.log.result {
            Some(r) if !r.text.is_empty() => r.text.clone(),
            _ => self.log.text.clone(),
        }
    }

    /// A pause until `resets_at` (plus a margin) or the policy's next backoff; a failure once
    /// the job has been paused `max_pauses` times.
    fn pause(&self, resets_at: Option<Millis>, detail: String) -> Verdict {
        let input = self.input;
        if input.pauses >= input.retry.max_pauses {
            return self.fail(
                FailureReason::Exit,
                format!(
                    "gave up after {} pauses for transient errors; last: {detail}",
                    input.pauses
                ),
                self.partial(),
            );
        }
        let at = match resets_at {
            Some(reset) => (reset + RESET_MARGIN_MS).max(input.now + MIN_RESET_WAIT_MS),
            None => input.now + input.retry.backoff(input.pauses + 1),
        };
        self.verdict(Outcome::RetryAt(at), Some(detail), self.partial())
    }

    /// The last lines of stderr, for failure details.
    fn stderr_hint(&self) -> String {
        let tail = self.input.stderr_tail.trim();
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.lines().rev().take(3).collect();
        let last: String = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
        format!("; stderr: {}", last.chars().take(400).collect::<String>())
    }

    /// The agent sent its result event: success, budget, pause or failure.
    fn with_result(&self, r: &AgentResult, code: Option<i32>, how: &str) -> Verdict {
        if r.success && code == Some(0) {
            return self.verdict(Outcome::Complete, None, self.log.final_text(r));
        }
        if r.success {
            return self.fail(
                FailureReason::Exit,
                format!(
                    "the agent reported success but ended with {how}{}",
                    self.stderr_hint()
                ),
                self.log.final_text(r),
            );
        }
        if r.budget_exceeded {
            return self.fail(
                FailureReason::Budget,
                format!(
                    "budget exceeded: the agent stopped at the cost limit it was given ({})",
                    r.text.trim()
                ),
                r.text.clone(),
            );
        }
        let first_line: String = r
            .text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        let transient = r.transient || r.api_error_status.is_some_and(is_transient_status);
        match (self.log.rate_limited, transient) {
            (Some(reset), _) => self.pause(reset, format!("rate limited: {first_line}")),
            (None, true) => self.pause(
                None,
                match r.api_error_status {
                    Some(s) => format!("transient API error {s}: {first_line}"),
                    None => format!("transient API error: {first_line}"),
                },
            ),
            (None, false) => self.fail(
                FailureReason::Exit,
                format!("the agent reported failure ({how}): {first_line}"),
                r.text.clone(),
            ),
        }
    }

    /// The agent ended without its result event: a refused rate limit pauses, anything else
    /// fails with what can be said about the stream.
    fn without_result(&self, code: Option<i32>, how: &str) -> Verdict {
        let log = self.log;
        if let Some(reset) = log.rate_limited {
            return self.pause(reset, format!("rate limited ({how}, no result event)"));
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
        self.fail(
            reason,
            format!("{what}{malformed}{warning}{}", self.stderr_hint()),
            self.partial(),
        )
    }
}

/// A rate limit with a known reset time resumes this long after it.
const RESET_MARGIN_MS: Millis = 30_000;
/// ... and never sooner than this from now.
const MIN_RESET_WAIT_MS: Millis = 60_000;
