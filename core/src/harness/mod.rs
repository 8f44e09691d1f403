//! Harnesses: how an agent CLI is started and how its stdout is understood.
//!
//! Every harness maps its stream onto one [`AgentEvent`] model, so the runner, the PM prompt
//! and the transcripts treat all agents alike. Building the command ([`command`]), parsing a
//! line ([`parse_line`]) and judging an attempt ([`judge`]) are pure functions; the runner's
//! process layer (`wf_runner::process`) runs the command.
//!
//! `event` is the event model and the JSON-lines helpers; `command` dispatches to each CLI's
//! own module (`claude`, `codex`, `gemini`, `custom`), which builds its argv and parses its
//! stream; `log` accumulates an attempt's events; `judge` decides how the attempt ended and
//! what it cost.

pub mod claude;
mod claude_lean;
pub mod codex;
mod command;
pub mod custom;
mod event;
pub mod gemini;
mod judge;
mod log;

pub use self::command::*;
pub use self::event::*;
pub use self::judge::*;
pub use self::log::*;

#[cfg(test)]
mod tests;
