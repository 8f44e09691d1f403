//! The live view of an attempt: the events its agent produces, numbered in order, redacted,
//! and the frames a reader of that stream receives (`wf logs -f`, `wf watch`, the dashboard).
//!
//! The runner turns each [`AgentEvent`] into a [`LiveEvent`] with the next sequence number of
//! the attempt; readers replay from any number and then follow; a reader that falls behind is
//! told how many events it missed ([`EventFrame::Missed`]); [`LiveKind::Exit`] is always last.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::harness::{shorten, AgentEvent};
use crate::model::{JobProgress, Millis, Usage};

/// Longest tool input kept on an event, in characters.
pub const INPUT_CHARS: usize = 300;
/// Longest result text kept on an event, in characters (the result blob keeps all of it).
pub const RESULT_CHARS: usize = 4000;
/// Longest activity line kept on a job's progress, in characters.
pub const ACTIVITY_CHARS: usize = 120;

/// One numbered event of one attempt. (Unknown fields are not refused: the kind is flattened
/// in, which serde's `deny_unknown_fields` does not support.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveEvent {
    /// Its place in the attempt's stream, from 0, without gaps.
    pub seq: u64,
    /// When the runner saw it (ms since the epoch).
    pub at: Millis,
    /// What happened.
    #[serde(flatten)]
    pub kind: LiveKind,
}

/// What happened, as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum LiveKind {
    /// The session started.
    Session {
        /// Session id.
        id: String,
        /// Model, when reported.
        model: Option<String>,
    },
    /// Assistant text; `delta` when it continues the previous text.
    Text {
        /// The text.
        text: String,
        /// A chunk to append to the previous text.
        #[serde(default)]
        delta: bool,
    },
    /// A tool call.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// The input, shortened.
        input: String,
    },
    /// A tool's answer.
    ToolResult {
        /// Call id.
        id: String,
        /// The tool failed.
        is_error: bool,
        /// The start of its output.
        output: String,
    },
    /// What the attempt used so far.
    Usage {
        /// Input tokens, cached ones included.
        input_tokens: u64,
        /// Output tokens.
        output_tokens: u64,
        /// Cost so far, when known.
        cost_usd: Option<f64>,
    },
    /// The provider's rate limit.
    RateLimit {
        /// The request was refused (the attempt pauses).
        rejected: bool,
        /// When the limit resets.
        resets_at: Option<Millis>,
    },
    /// The CLI retries an API call by itself.
    ApiRetry {
        /// HTTP status, when known.
        status: Option<u16>,
        /// The error as the CLI names it.
        error: String,
    },
    /// A warning or non-fatal error.
    Warning {
        /// What it said.
        message: String,
    },
    /// A line of the stream that is not a valid event.
    Malformed {
        /// Why, with the start of the line.
        message: String,
    },
    /// The agent's own verdict.
    Result {
        /// It says it succeeded.
        success: bool,
        /// Its final text (or error), shortened.
        text: String,
    },
    /// The attempt is over, as the runner judged it: always the last event.
    Exit {
        /// `complete`, `failed: <reason>`, `paused`, `interrupted`.
        outcome: String,
        /// Why, when it did not complete.
        detail: Option<String>,
        /// The agent's exit code.
        exit_code: Option<i32>,
        /// What the attempt spent.
        usage: Usage,
    },
}

/// One frame of an event stream as a reader receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum EventFrame {
    /// The next event.
    Event(LiveEvent),
    /// This many events were dropped because the reader fell behind; the stream goes on.
    Missed(u64),
    /// One line of the attempt's transcript (raw streams).
    Line(String),
    /// Nothing more comes: the attempt ended (or, without `follow`, the replay is done).
    End {},
}

impl LiveKind {
    /// Whether this is the last event of an attempt.
    pub fn is_exit(&self) -> bool {
        matches!(self, LiveKind::Exit { .. })
    }

    /// The live form of an agent event, redacted; `None` for events readers do not see
    /// (turn usage arrives as [`LiveKind::Usage`] from the runner's running total).
    pub fn of_agent(event: &AgentEvent, redactor: &Redactor) -> Option<LiveKind> {
        let clean = |s: &str| redactor.redact(s).into_owned();
        Some(match event {
            AgentEvent::Session { id, model } => LiveKind::Session {
                id: id.clone(),
                model: model.clone(),
            },
            AgentEvent::Text(t) => LiveKind::Text {
                text: clean(t),
                delta: false,
            },
            AgentEvent::TextDelta(t) => LiveKind::Text {
                text: clean(t),
                delta: true,
            },
            AgentEvent::ToolUse { id, name, input } => LiveKind::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: clean(&shorten(input, INPUT_CHARS)),
            },
            AgentEvent::ToolResult {
                id,
                is_error,
                output,
            } => LiveKind::ToolResult {
                id: id.clone(),
                is_error: *is_error,
                output: clean(output),
            },
            AgentEvent::ApiRetry { status, error } => LiveKind::ApiRetry {
                status: *status,
                error: clean(error),
            },
            AgentEvent::RateLimit {
                rejected,
                resets_at,
            } => LiveKind::RateLimit {
                rejected: *rejected,
                resets_at: *resets_at,
            },
            AgentEvent::Warning(w) => LiveKind::Warning { message: clean(w) },
            AgentEvent::TurnUsage { .. } => return None,
            AgentEvent::Result(r) => LiveKind::Result {
                success: r.success,
                text: clean(&shorten(&r.text, RESULT_CHARS)),
            },
        })
    }
}

/// Updates a running job's counters with one event.
pub fn apply_progress(progress: &mut JobProgress, event: &LiveEvent) {
    progress.events = event.seq + 1;
    progress.last_event_at = event.at;
    match &event.kind {
        LiveKind::ToolUse { name, input, .. } => {
            progress.tool_calls += 1;
            progress.last_activity = shorten(&format!("[{name}] {input}"), ACTIVITY_CHARS);
        }
        LiveKind::Text { text, .. } => {
            if let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
                progress.last_activity = shorten(line, ACTIVITY_CHARS);
            }
        }
        LiveKind::Usage {
            input_tokens,
            output_tokens,
            cost_usd,
        } => {
            progress.input_tokens = *input_tokens;
            progress.output_tokens = *output_tokens;
            progress.cost_usd = *cost_usd;
        }
        LiveKind::RateLimit { rejected: true, .. } => {
            progress.last_activity = "rate limited".into();
        }
        LiveKind::ApiRetry { status, .. } => {
            progress.last_activity = match status {
                Some(s) => format!("retrying the API (status {s})"),
                None => "retrying the API".into(),
            };
        }
        _ => {}
    }
}

/// What a human reads for one event in `wf logs`; `None` for events not worth a line. Text
/// deltas come back as they are (the caller joins them).
pub fn render(event: &LiveEvent) -> Option<String> {
    let first_line = |s: &str| shorten(s.lines().next().unwrap_or(""), 200);
    Some(match &event.kind {
        LiveKind::Session { id, model } => match model {
            Some(m) => format!("── session {id} ({m})"),
            None => format!("── session {id}"),
        },
        LiveKind::Text { text, .. } => text.clone(),
        LiveKind::ToolUse { name, input, .. } => format!("→ [{name}] {input}"),
        LiveKind::ToolResult {
            is_error, output, ..
        } => format!(
            "  {} {}",
            if *is_error { "✗" } else { "✓" },
            first_line(output)
        ),
        LiveKind::Usage { .. } => return None,
        LiveKind::RateLimit {
            rejected: false, ..
        } => return None,
        LiveKind::RateLimit { resets_at, .. } => match resets_at {
            Some(at) => format!("⏸ rate limited; resets at {}", clock_text(*at)),
            None => "⏸ rate limited".into(),
        },
        LiveKind::ApiRetry { status, error } => match status {
            Some(s) => format!("↻ API retry (status {s}): {error}"),
            None => format!("↻ API retry: {error}"),
        },
        LiveKind::Warning { message } => format!("! {message}"),
        LiveKind::Malformed { message } => format!("! unreadable line: {message}"),
        LiveKind::Result { success, text } => {
            let verdict = if *success { "success" } else { "failure" };
            if text.is_empty() {
                format!("══ result: {verdict}")
            } else {
                format!("══ result: {verdict}\n{text}")
            }
        }
        LiveKind::Exit {
            outcome,
            detail,
            exit_code,
            usage,
        } => {
            let mut line = format!("══ {outcome}");
            if let Some(d) = detail {
                line.push_str(&format!(": {d}"));
            }
            if let Some(c) = exit_code {
                line.push_str(&format!(" · exit {c}"));
            }
            line.push_str(&format!(
                " · {} in / {} out tokens · {}",
                usage.input_tokens,
                usage.output_tokens,
                usage
                    .cost_usd
                    .map_or("cost unknown".to_string(), |c| format!("${c:.4}"))
            ));
            line
        }
    })
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
pub fn clock_text(at: Millis) -> String {
    let secs = at / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Removes secrets from text readers see: the values it was given (tokens from the runner's
/// configuration and environment) and anything shaped like a well-known token or key.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// What a secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Prefixes of well-known tokens, each followed by at least [`MIN_TOKEN_TAIL`] token characters.
const TOKEN_PREFIXES: &[&str] = &[
    "sk-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "xapp-",
    "AKIA",
    "ASIA",
    "AIza",
    "npm_",
    "hf_",
];
/// Characters after a token prefix before it counts as a token.
const MIN_TOKEN_TAIL: usize = 16;

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Redactor {
    /// A redactor for these secret values (values shorter than 8 characters are ignored: they
    /// would redact ordinary words).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 8).collect();
        // Longest first, so that a secret containing another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` without its secrets.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        match redact_shapes(&out) {
            Some(cleaned) => Cow::Owned(cleaned),
            None => out,
        }
    }
}

/// `text` with token-shaped words, bearer tokens, JWTs and private key blocks replaced;
/// `None` when there were none. One pass over the words: a secret starts at a word start and
/// is either long (a token prefix and at least [`MIN_TOKEN_TAIL`] more characters) or starts
/// with `Bearer `, `eyJ` or `-----BEGIN `, so `secret_at` is asked only there; every other word
/// is skipped whole (agents print megabytes a second, and every line goes through here).
fn redact_shapes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    // Invariant: at the top of the loop, the byte before `i` is not a token byte.
    while i < bytes.len() {
        let b = bytes[i];
        if !TOKEN_BYTE[b as usize] {
            i += 1;
            continue;
        }
        let end = bytes[i..]
            .iter()
            .position(|&c| !TOKEN_BYTE[c as usize])
            .map_or(bytes.len(), |k| i + k);
        if may_start_secret(&bytes[i..], end - i) {
            // An ASCII byte: `i` is a character boundary.
            if let Some(len) = secret_at(&text[i..]) {
                out.push_str(&text[copied..i]);
                out.push_str(REDACTED);
                i += len;
                copied = i;
                // The rest of a word the secret ended inside is no word start.
                if TOKEN_BYTE[bytes[i - 1] as usize] {
                    while i < bytes.len() && TOKEN_BYTE[bytes[i] as usize] {
                        i += 1;
                    }
                }
                continue;
            }
        }
        i = end;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The bytes of [`token_char`]s.
const TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// The first bytes of the token prefixes.
const PREFIX_START: [bool; 256] = {
    let mut table = [false; 256];
    let mut k = 0;
    while k < TOKEN_PREFIXES.len() {
        table[TOKEN_PREFIXES[k].as_bytes()[0] as usize] = true;
        k += 1;
    }
    table
};

/// Whether a secret may start at `rest`, a word of `word_len` token bytes (and what follows):
/// a token prefix's first byte in a word long enough for a token, or the start of a bearer
/// token, a JWT or a PEM block.
fn may_start_secret(rest: &[u8], word_len: usize) -> bool {
    (PREFIX_START[rest[0] as usize] && word_len >= MIN_TOKEN_WORD)
        || rest.starts_with(b"Bearer ")
        || rest.starts_with(b"eyJ")
        || rest.starts_with(b"-----BEGIN ")
}

/// The shortest word a token prefix starts: the shortest prefix and its tail.
const MIN_TOKEN_WORD: usize = 3 + MIN_TOKEN_TAIL;

/// The length of the secret `rest` starts with, if it starts with one.
fn secret_at(rest: &str) -> Option<usize> {
    let tail_len = |s: &str| s.find(|c: char| !token_char(c)).unwrap_or(s.len());
    if rest.starts_with("-----BEGIN ") {
        let header_end = rest
            .find("-----\n")
            .or_else(|| rest[11..].find("-----").map(|p| p + 11))?;
        if rest[..header_end].ends_with("PRIVATE KEY") {
            let end = rest.find("-----END ").map_or(rest.len(), |e| {
                rest[e + 9..]
                    .find("-----")
                    .map_or(rest.len(), |p| e + 9 + p + 5)
            });
            return Some(end);
        }
        return None;
    }
    for prefix in TOKEN_PREFIXES {
        if let Some(after) = rest.strip_prefix(prefix) {
            let n = tail_len(after);
            if n >= MIN_TOKEN_TAIL {
                return Some(prefix.len() + n);
            }
        }
    }
    if let Some(after) = rest.strip_prefix("Bearer ") {
        let n = after
            .find(|c: char| !(token_char(c) || c == '.' || c == '=' || c == '+' || c == '/'))
            .unwrap_or(after.len());
        if n >= MIN_TOKEN_TAIL {
            return Some("Bearer ".len() + n);
        }
    }
    if rest.starts_with("eyJ") {
        // A JWT: three base64url parts joined by dots.
        let parts: Vec<&str> = rest
            .split(|c: char| !(token_char(c) || c == '.'))
            .next()?
            .split('.')
            .collect();
        if parts.len() == 3 && parts[1].starts_with("eyJ") && parts.iter().all(|p| p.len() >= 8) {
            return Some(parts.iter().map(|p| p.len()).sum::<usize>() + 2);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_and_token_shapes_are_redacted() {
        let r = Redactor::new(["s3cr3t-value-1234".to_string(), "short".to_string()]);
        let cases = [
            ("token s3cr3t-value-1234 here", "token [redacted] here"),
            ("short stays", "short stays"),
            (
                "export GH=ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "export GH=[redacted]",
            ),
            (
                "key sk-ant-api03-AbCdEfGhIjKlMnOpQrSt done",
                "key [redacted] done",
            ),
            (
                "Authorization: Bearer abcdefghijklmnop.qrs",
                "Authorization: [redacted]",
            ),
            ("AKIAIOSFODNN7EXAMPLE1", "[redacted]"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijk ok",
                "jwt [redacted] ok",
            ),
            (
                "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nb",
                "a\n[redacted]\nb",
            ),
            (
                "ask-me sk-short desk_abcdefghijklmnopqrstuvwxyz",
                "ask-me sk-short desk_abcdefghijklmnopqrstuvwxyz",
            ),
            (
                "naïve ünïcode ghp_abcdefghijklmnopqrstuv ✓",
                "naïve ünïcode [redacted] ✓",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB",
                "-----BEGIN CERTIFICATE-----\nMIIB",
            ),
            (
                "é=hf_abcdefghijklmnop,xoxb-abcdefghijklmnopq.",
                "é=[redacted],[redacted].",
            ),
            ("hf_abcdefghijklmno", "hf_abcdefghijklmno"),
        ];
        for (text, want) in cases {
            assert_eq!(r.redact(text), want, "{text:?}");
        }
        let shortest = TOKEN_PREFIXES.iter().map(|p| p.len()).min().unwrap();
        assert_eq!(MIN_TOKEN_WORD, shortest + MIN_TOKEN_TAIL);
    }

    #[test]
    fn events_have_a_stable_wire_form() {
        let e = LiveEvent {
            seq: 3,
            at: 7,
            kind: LiveKind::ToolResult {
                id: "t1".into(),
                is_error: false,
                output: "ok".into(),
            },
        };
        let text = serde_json::to_string(&EventFrame::Event(e.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"event":{"seq":3,"at":7,"kind":"tool_result","id":"t1","isError":false,"output":"ok"}}"#
        );
        assert_eq!(
            serde_json::from_str::<EventFrame>(&text).unwrap(),
            EventFrame::Event(e)
        );
        assert_eq!(
            serde_json::to_string(&EventFrame::Missed(2)).unwrap(),
            r#"{"missed":2}"#
        );
        assert_eq!(
            serde_json::to_string(&EventFrame::End {}).unwrap(),
            r#"{"end":{}}"#
        );
    }

    #[test]
    fn progress_counts_tools_and_keeps_the_latest_activity() {
        let mut p = JobProgress::default();
        let ev = |seq, kind| LiveEvent {
            seq,
            at: 100 + seq,
            kind,
        };
        apply_progress(
            &mut p,
            &ev(
                0,
                LiveKind::Text {
                    text: "\n  Looking at the tests\nmore".into(),
                    delta: false,
                },
            ),
        );
        assert_eq!(p.last_activity, "Looking at the tests");
        apply_progress(
            &mut p,
            &ev(
                1,
                LiveKind::ToolUse {
                    id: "1".into(),
                    name: "Bash".into(),
                    input: "cargo test".into(),
                },
            ),
        );
        apply_progress(
            &mut p,
            &ev(
                2,
                LiveKind::Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_usd: Some(0.5),
                },
            ),
        );
        assert_eq!(
            (
                p.tool_calls,
                p.events,
                p.last_event_at,
                p.input_tokens,
                p.cost_usd
            ),
            (1, 3, 102, 10, Some(0.5))
        );
        assert_eq!(p.last_activity, "[Bash] cargo test");
    }
}
