//! What one attempt's stream said, accumulated line by line with bounded memory.

use super::{AgentEvent, AgentResult, Parsed};
use crate::model::{Millis, Usage};

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
    /// Usage of the model turns before the latest one (see [`AgentEvent::TurnUsage`]).
    turns: (Usage, u64),
    /// The latest turn: its message id, usage and cached input tokens.
    turn: Option<(Option<String>, Usage, u64)>,
}

impl RunLog {
    /// The log of a whole stream read back, e.g. from the transcript of an attempt whose
    /// runner died.
    pub fn of_transcript(format: crate::config::StreamFormat, transcript: &str) -> Self {
        let mut log = RunLog::default();
        for line in transcript.lines() {
            log.push(&super::parse_line(format, line));
        }
        log
    }

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
            AgentEvent::TurnUsage {
                message_id,
                usage,
                cached_input_tokens,
            } => {
                let same = matches!(&self.turn, Some((id, ..)) if id.is_some() && id == message_id);
                if let (false, Some((_, done, cached))) = (same, self.turn.take()) {
                    self.turns.0.add(&done);
                    self.turns.1 += cached;
                }
                self.turn = Some((message_id.clone(), usage.clone(), *cached_input_tokens));
            }
        }
    }

    /// What the attempt spent as far as its stream tells: the result's usage when it came,
    /// else the sum of the turns reported so far (no cost; see [`super::priced`]). The second
    /// value is how many of the input tokens were cached.
    pub fn usage_so_far(&self) -> (Usage, u64) {
        if let Some(r) = &self.result {
            return (r.usage.clone(), r.cached_input_tokens);
        }
        let (mut usage, mut cached) = self.turns.clone();
        if let Some((_, last, c)) = &self.turn {
            usage.add(last);
            cached += c;
        }
        (usage, cached)
    }

    /// The text the job's result is: the result event's, else the last message.
    pub(super) fn final_text(&self, result: &AgentResult) -> String {
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
