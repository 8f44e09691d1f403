//! `wf update-assignment`: status changes, artifacts, decisions and notes.

use super::*;
use crate::model::{Assignment, AssignmentStatus, Millis, Note};

/// A change to an assignment's status or memory (`wf update-assignment`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentUpdate {
    /// The new status.
    pub status: Option<AssignmentStatus>,
    /// The reason, required with `blocked`.
    pub reason: Option<String>,
    /// Artifacts text: appended as a new line by an agent, replacing when a human sets it.
    pub artifacts: Option<String>,
    /// Decisions text: same rule as artifacts.
    pub decisions: Option<String>,
    /// A note for the next PM.
    pub note: Option<String>,
}

impl AssignmentUpdate {
    /// Checks the update on its own, before any document is read.
    pub fn validate(&self) -> Result<(), ChainError> {
        if self.status.is_none()
            && self.artifacts.is_none()
            && self.decisions.is_none()
            && self.note.is_none()
        {
            return Err(ChainError::Invalid(
                "nothing to update: give --status, --artifacts, --decisions or --note".into(),
            ));
        }
        match self.status {
            Some(AssignmentStatus::Pending) => {
                return Err(ChainError::Invalid(
                    "status pending cannot be set; use active, blocked or complete".into(),
                ))
            }
            Some(AssignmentStatus::Blocked) => {
                if self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    return Err(ChainError::Invalid(
                        "--reason is required when setting status to blocked".into(),
                    ));
                }
            }
            _ => {
                if self.reason.is_some() {
                    return Err(ChainError::Invalid(
                        "--reason only goes with --status blocked".into(),
                    ));
                }
            }
        }
        for (what, text, max) in [
            ("the reason", &self.reason, MAX_REASON),
            ("the note", &self.note, MAX_REASON),
            ("the artifacts text", &self.artifacts, MAX_MEMORY_TEXT),
            ("the decisions text", &self.decisions, MAX_MEMORY_TEXT),
        ] {
            if let Some(text) = text {
                check_len(what, text, max)?;
            }
        }
        Ok(())
    }
}

/// What an update did besides changing fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// Fields changed.
    Changed,
    /// The assignment was resumed with nothing to run, so a PM job was inserted.
    PmInserted(String),
}

fn merge_memory(current: &mut String, text: &str, caller: Caller<'_>) {
    match caller {
        // The same text appended again is a retried command, not new information.
        Caller::Job(_) if current.ends_with(text) => {}
        Caller::Job(_) if !current.is_empty() && !text.is_empty() => {
            current.push('\n');
            current.push_str(text);
            fold(current, MAX_MEMORY_TEXT);
        }
        Caller::Job(_) if text.is_empty() => {}
        _ => *current = text.to_string(),
    }
}

/// Keeps an artifacts or decisions text within [`MAX_MEMORY_TEXT`] (see [`fold`]).
pub(super) fn fold_memory(text: &mut String) {
    fold(text, MAX_MEMORY_TEXT);
}

/// The marker that replaces the oldest lines of a memory text grown past its cap.
pub const FOLDED: &str = "[… earlier lines folded to keep the assignment small …]";

/// Keeps `text` within `max` bytes by dropping its oldest lines (agents append; the newest
/// matter most), behind [`FOLDED`].
fn fold(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let keep = max.saturating_sub(FOLDED.len() + 1);
    let mut cut = text.len() - keep;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    // Start at a line when there is one in the kept part.
    if let Some(nl) = text[cut..].find('\n') {
        cut += nl + 1;
    }
    *text = format!("{FOLDED}\n{}", &text[cut..]);
}

/// Applies `wf update-assignment`. `pm` is used when resuming leaves nothing runnable.
pub fn update_assignment(
    doc: &mut Assignment,
    update: &AssignmentUpdate,
    caller: Caller<'_>,
    pm: &NewJob,
    now: Millis,
) -> Result<Updated, ChainError> {
    update.validate()?;
    if let Some(text) = &update.artifacts {
        merge_memory(&mut doc.artifacts, text, caller);
    }
    if let Some(text) = &update.decisions {
        merge_memory(&mut doc.decisions, text, caller);
    }
    let repeated_note = matches!(caller, Caller::Job(_))
        && update.note.is_some()
        && doc.notes.last().map(|n| &n.text) == update.note.as_ref();
    if let Some(text) = update.note.as_ref().filter(|_| !repeated_note) {
        doc.notes.push(Note {
            text: text.clone(),
            at: now,
        });
        // Only the newest notes are kept: every PM sees them, and the document must stay small.
        let excess = doc.notes.len().saturating_sub(MAX_NOTES);
        doc.notes.drain(..excess);
    }
    let mut result = Updated::Changed;
    match update.status {
        None | Some(AssignmentStatus::Pending) => {}
        Some(AssignmentStatus::Blocked) => {
            doc.status = AssignmentStatus::Blocked;
            doc.blocked_reason = update.reason.clone();
        }
        Some(AssignmentStatus::Complete) => {
            doc.status = AssignmentStatus::Complete;
            doc.blocked_reason = None;
            skip_rest_on_complete(doc, now);
        }
        Some(AssignmentStatus::Active) if waits_at_gate(doc) => {
            return Err(ChainError::Invalid(format!(
                "assignment {} waits at a human gate; pass it with `wf approve {} --note \"…\"`",
                doc.id, doc.id
            )));
        }
        Some(AssignmentStatus::Active) => {
            doc.status = AssignmentStatus::Active;
            doc.blocked_reason = None;
            if doc.lease.is_none() && current_unit(doc).is_none() {
                let reviews = previous_unit_ids(doc, doc.jobs.len());
                let job = pm_record(doc, pm, reviews, now);
                doc.jobs.push(job);
                result = Updated::PmInserted(pm.id.clone());
            }
        }
    }
    doc.updated_at = now;
    Ok(result)
}
