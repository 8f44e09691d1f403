//! Readiness and the scheduling rule: what may start now, and when to look again.

use std::collections::HashSet;

use super::*;
use crate::model::{Assignment, AssignmentStatus, JobStatus, Lease, Millis};

/// How to judge leases held by runners.
#[derive(Debug, Clone, Copy)]
pub struct LeaseView<'a> {
    /// The current time.
    pub now: Millis,
    /// The runner asking.
    pub me: &'a str,
    /// True when this runner is the only one that can exist (embedded store): a lease held by
    /// any other runner id belongs to a dead process.
    pub exclusive: bool,
}

impl LeaseView<'_> {
    /// Whether `lease` still protects its jobs.
    pub fn is_live(&self, lease: &Lease) -> bool {
        lease.expires_at > self.now && !(self.exclusive && lease.runner_id != self.me)
    }
}

/// What can happen next in an assignment, as seen by a scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Blocked, complete, or no unfinished job.
    Idle,
    /// These jobs can be claimed now.
    Ready(Vec<String>),
    /// Nothing can start before this instant: a paused job, or a live lease (another runner's,
    /// which may die; or this runner's own, whose unit may have ended without releasing it —
    /// self-fenced, or a record that gave up — and must be looked at again when it expires).
    WaitUntil(Millis),
}

/// What an assignment offers a scheduler right now.
pub fn readiness(doc: &Assignment, view: &LeaseView<'_>) -> Readiness {
    if !matches!(
        doc.status,
        AssignmentStatus::Pending | AssignmentStatus::Active
    ) {
        return Readiness::Idle;
    }
    if let Some(lease) = &doc.lease {
        if view.is_live(lease) {
            return Readiness::WaitUntil(lease.expires_at);
        }
    }
    let Some(unit) = current_unit(doc) else {
        return Readiness::Idle;
    };
    let mut ready = Vec::new();
    let mut wait: Option<Millis> = None;
    for job in &doc.jobs[unit] {
        match job.status {
            JobStatus::Pending | JobStatus::Running => ready.push(job.id.clone()),
            JobStatus::WaitingRetry => {
                let at = job.retry_after.unwrap_or(0);
                if at <= view.now {
                    ready.push(job.id.clone());
                } else {
                    wait = Some(wait.map_or(at, |w| w.min(at)));
                }
            }
            JobStatus::Complete | JobStatus::Failed | JobStatus::Skipped => {}
        }
    }
    match (ready.is_empty(), wait) {
        (false, _) => Readiness::Ready(ready),
        (true, Some(at)) => Readiness::WaitUntil(at),
        (true, None) => Readiness::Idle,
    }
}

/// Picks which assignments to claim next, given the ones this runner already runs.
///
/// Seed rules: independent assignments run side by side; dependent (`independent: false`)
/// ones run one at a time — an active one keeps the turn until it is blocked or complete.
/// Order: oldest first, then lower priority number. At most `slots` are returned.
pub fn pick<'a>(
    docs: impl IntoIterator<Item = &'a Assignment>,
    running: &HashSet<String>,
    slots: usize,
    view: &LeaseView<'_>,
) -> Vec<String> {
    let docs: Vec<&Assignment> = docs.into_iter().collect();
    let order = |a: &&Assignment, b: &&Assignment| {
        (a.created_at, a.priority, &a.id).cmp(&(b.created_at, b.priority, &b.id))
    };
    let ready = |d: &Assignment| {
        !running.contains(&d.id) && matches!(readiness(d, view), Readiness::Ready(_))
    };
    let mut sequential: Vec<&Assignment> = docs
        .iter()
        .copied()
        .filter(|d| !d.independent && d.status == AssignmentStatus::Active)
        .collect();
    sequential.sort_by(order);
    let turn = match sequential.first() {
        Some(active) => Some(*active),
        None => {
            let mut waiting: Vec<&Assignment> = docs
                .iter()
                .copied()
                .filter(|d| !d.independent && d.status == AssignmentStatus::Pending && ready(d))
                .collect();
            waiting.sort_by(order);
            waiting.first().copied()
        }
    };
    let mut chosen: Vec<&Assignment> = docs
        .iter()
        .copied()
        .filter(|d| d.independent && ready(d))
        .collect();
    if let Some(doc) = turn.filter(|d| ready(d)) {
        chosen.push(doc);
    }
    chosen.sort_by(order);
    chosen
        .into_iter()
        .take(slots)
        .map(|d| d.id.clone())
        .collect()
}

/// The earliest instant at which [`readiness`] of some document may change by itself.
pub fn next_wakeup<'a>(
    docs: impl IntoIterator<Item = &'a Assignment>,
    view: &LeaseView<'_>,
) -> Option<Millis> {
    docs.into_iter()
        .filter_map(|d| match readiness(d, view) {
            Readiness::WaitUntil(at) => Some(at),
            _ => None,
        })
        .min()
}
