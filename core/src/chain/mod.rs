//! The job chain: every state transition of an assignment document, as pure functions.
//!
//! Each function takes the document (as read from the store) and mutates it in place, or
//! refuses with a [`ChainError`]. The store runs them inside its compare-and-swap loop, so a
//! function may run several times against fresh copies; they must not do I/O and must be
//! idempotent where a write can be retried after an ambiguous failure (`insert_jobs`).
//!
//! Rules (DESIGN §2): the runnable *unit* is the first job that is not finished, or, when that
//! job belongs to a group, the jobs of that group. At most one unit of an assignment runs at a
//! time, under one lease with a fencing epoch. After a non-PM unit ends, a PM job is inserted
//! right after it. After a PM ends, something must be runnable: otherwise the PM is run once
//! more with a reminder, and after that the assignment is blocked.
//!
//! One file per topic, all re-exported here: [`insert`](insert_jobs) (new assignments, job
//! insertion, loop detection), `update` (`wf update-assignment`), `schedule` (readiness,
//! [`pick`], [`next_wakeup`]), `lease` (claim, renew, dead leases), `budget`, `cancel`
//! (cancel and retry), `record` (the end of an attempt, the PM and stall rules), `archive`
//! (old finished jobs out to blobs), `notify` (the outbox of notifications, filled by the
//! store's update loop), `workflow` (a workflow's tasks: dependencies, gates, approve, skip,
//! failure policies, loop rounds) and `invariants` ([`check_invariants`]).

mod archive;
mod budget;
mod cancel;
mod insert;
mod invariants;
mod lease;
mod notify;
mod record;
mod schedule;
mod update;
mod workflow;

pub use self::archive::*;
pub use self::budget::*;
pub use self::cancel::*;
pub use self::insert::*;
pub use self::invariants::*;
pub use self::lease::*;
pub use self::notify::*;
pub use self::record::*;
pub use self::schedule::*;
pub use self::update::*;
pub use self::workflow::*;

/// The reason written when a PM twice ends without deciding anything.
pub const NO_DECISION_REASON: &str = "PM made no decision";

/// Largest north star accepted, in bytes.
pub const MAX_NORTH_STAR: usize = 64 * 1024;
/// Largest artifacts or decisions text accepted, in bytes.
pub const MAX_MEMORY_TEXT: usize = 256 * 1024;
/// Largest blocked reason or note, in bytes.
pub const MAX_REASON: usize = 16 * 1024;
/// Most notes an assignment keeps (the newest).
pub const MAX_NOTES: usize = 20;
/// Most jobs one insert may add.
pub const MAX_JOBS_PER_INSERT: usize = 32;

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The assignment is complete and takes no more jobs.
    #[error(
        "assignment {0} is complete; reopen it first with `wf update-assignment {0} --status active`"
    )]
    AssignmentComplete(String),
    /// `--after` names a job the assignment does not have.
    #[error("assignment {assignment} has no job {job}")]
    NoSuchJob {
        /// The assignment.
        assignment: String,
        /// The job that was named.
        job: String,
    },
    /// Inserting there would put a pending job before one that already started.
    #[error("cannot insert after job {after}: job {started} after it has already started")]
    WouldPrecedeStarted {
        /// The anchor job.
        after: String,
        /// The job that already ran.
        started: String,
    },
    /// A field failed validation.
    #[error("{0}")]
    Invalid(String),
    /// The caller's lease is gone: someone else owns the job now.
    #[error("lease lost: epoch {0} no longer owns the job")]
    Fenced(u64),
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod workflow_tests;
