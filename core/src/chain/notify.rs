//! Notifications: the assignment's outbox.
//!
//! A notification is recorded in the document by the same compare-and-swap that made the
//! change it reports ([`note_transitions`], called by the store's update loop), so a crash
//! between the change and the delivery loses nothing. A runner delivers a notice after
//! claiming it by CAS ([`claim_notice`]: one claimant at a time, taken over when the claim
//! expires or, on the embedded store, when its runner is gone), marks each hook that has it
//! ([`notice_delivered`]) and removes it at the end ([`finish_notice`]). The id is stable
//! across retries and runners, so a receiver can drop the one duplicate a crash in the middle
//! of a POST can cause.

use serde_json::{json, Value};

use super::{ChainError, LeaseView};
use crate::harness::shorten;
use crate::model::{
    Assignment, AssignmentStatus, FailureReason, JobStatus, Millis, Notice, NoticeClaim, NoticeJob,
    NotifyEvent,
};

/// Most notices an outbox keeps; past it the oldest is dropped.
pub const MAX_OUTBOX: usize = 32;
/// Longest reason kept on a notice, in characters.
const REASON_CHARS: usize = 500;
/// Longest north star in a payload, in characters.
const NORTH_STAR_CHARS: usize = 500;
/// Longest north star in a notification's text, in characters.
const TEXT_NORTH_STAR_CHARS: usize = 120;

/// A set of [`NotifyEvent`]s: the ones some configured hook wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifySet(u8);

impl NotifySet {
    /// The set of `events`.
    pub fn of(events: impl IntoIterator<Item = NotifyEvent>) -> Self {
        Self(events.into_iter().fold(0, |bits, e| bits | Self::bit(e)))
    }

    fn bit(e: NotifyEvent) -> u8 {
        1 << NotifyEvent::ALL
            .iter()
            .position(|x| *x == e)
            .expect("listed")
    }

    /// Whether `e` is in it.
    pub fn contains(self, e: NotifyEvent) -> bool {
        self.0 & Self::bit(e) != 0
    }

    /// Whether nothing is.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits (to keep it in an atomic).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set of these bits.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
}

/// Records in `after` the notices `wanted` asks for that the change from `before` causes: the
/// assignment became complete or blocked, a job ended failed (cancelled jobs excepted: a
/// human asked for that). `after.version` must be the version being written: it makes the ids.
pub fn note_transitions(
    before: &Assignment,
    after: &mut Assignment,
    wanted: NotifySet,
    now: Millis,
) {
    // An assignment a trigger made records its completion whatever the hooks: the trigger's
    // `on_complete` may act on it.
    let from_trigger = after.workflow.as_ref().is_some_and(|w| w.trigger.is_some());
    let wanted = if from_trigger {
        NotifySet::of(
            NotifyEvent::ALL
                .iter()
                .copied()
                .filter(|e| wanted.contains(*e) || *e == NotifyEvent::Complete),
        )
    } else {
        wanted
    };
    if wanted.is_empty() {
        return;
    }
    let mut new = Vec::new();
    let became = |s: AssignmentStatus| after.status == s && before.status != s;
    if wanted.contains(NotifyEvent::JobFailed) {
        for job in &after.jobs {
            let was_failed = before
                .jobs
                .iter()
                .any(|b| b.id == job.id && b.status == JobStatus::Failed);
            if job.status != JobStatus::Failed
                || was_failed
                || job.failure_reason == Some(FailureReason::Cancelled)
            {
                continue;
            }
            let reason = match (&job.failure_reason, &job.failure_detail) {
                (Some(r), Some(d)) => Some(format!("{r}: {d}")),
                (Some(r), None) => Some(r.to_string()),
                (None, d) => d.clone(),
            };
            let mut notice = new_notice(after, NotifyEvent::JobFailed, reason, now);
            notice.id.push('-');
            notice.id.push_str(&job.id);
            notice.job = Some(NoticeJob {
                id: job.id.clone(),
                job_type: job.job_type,
                harness: job.harness.clone(),
                attempt: job.attempt,
                failure_reason: job.failure_reason,
            });
            new.push(notice);
        }
    }
    if wanted.contains(NotifyEvent::Blocked) && became(AssignmentStatus::Blocked) {
        let reason = after.blocked_reason.clone();
        new.push(new_notice(after, NotifyEvent::Blocked, reason, now));
    }
    if wanted.contains(NotifyEvent::Complete) && became(AssignmentStatus::Complete) {
        new.push(new_notice(after, NotifyEvent::Complete, None, now));
    }
    after.outbox.extend(new);
    let excess = after.outbox.len().saturating_sub(MAX_OUTBOX);
    after.outbox.drain(..excess);
}

fn new_notice(doc: &Assignment, event: NotifyEvent, reason: Option<String>, now: Millis) -> Notice {
    Notice {
        id: format!("{}-v{}-{}", doc.id, doc.version, event),
        event,
        at: now,
        reason: reason.map(|r| shorten(&r, REASON_CHARS)),
        job: None,
        cost_usd: doc.usage.cost_usd,
        delivered: Vec::new(),
        claim: None,
        failed_rounds: 0,
        retry_at: None,
    }
}

/// Whether `claim` still keeps a notice from others (the rule of leases: expired, or on the
/// embedded store held by another — dead — runner, it does not).
fn claim_live(claim: &NoticeClaim, view: &LeaseView<'_>) -> bool {
    claim.until > view.now && !(view.exclusive && claim.runner_id != view.me)
}

/// The notices of `doc` a runner may claim now.
pub fn deliverable<'a>(doc: &'a Assignment, view: &LeaseView<'_>) -> Vec<&'a Notice> {
    doc.outbox
        .iter()
        .filter(|n| n.claim.as_ref().is_none_or(|c| !claim_live(c, view)))
        .filter(|n| n.retry_at.is_none_or(|t| t <= view.now))
        .collect()
}

/// When a notice of `doc` that cannot be claimed now may be: a claim's expiry or a retry time.
pub fn next_notice_at(doc: &Assignment, view: &LeaseView<'_>) -> Option<Millis> {
    doc.outbox
        .iter()
        .filter_map(|n| match &n.claim {
            Some(c) if claim_live(c, view) => Some(c.until),
            _ => n.retry_at.filter(|t| *t > view.now),
        })
        .min()
}

fn find<'a>(doc: &'a mut Assignment, id: &str) -> Result<&'a mut Notice, ChainError> {
    let aid = doc.id.clone();
    doc.outbox
        .iter_mut()
        .find(|n| n.id == id)
        .ok_or_else(|| ChainError::Invalid(format!("assignment {aid} has no notice {id}")))
}

/// Claims notice `id` for `view.me` until `until` (or extends `view.me`'s own claim), and
/// returns it as claimed. Refused when it is gone (delivered) or claimed by another live
/// runner.
pub fn claim_notice(
    doc: &mut Assignment,
    id: &str,
    view: &LeaseView<'_>,
    until: Millis,
) -> Result<Notice, ChainError> {
    let notice = find(doc, id)?;
    let mine = notice
        .claim
        .as_ref()
        .is_some_and(|c| c.runner_id == view.me);
    if !mine && notice.claim.as_ref().is_some_and(|c| claim_live(c, view)) {
        return Err(ChainError::Invalid(format!(
            "notice {id} is being delivered by another runner"
        )));
    }
    if !mine && notice.retry_at.is_some_and(|t| t > view.now) {
        return Err(ChainError::Invalid(format!(
            "notice {id} waits for its retry time"
        )));
    }
    notice.claim = Some(NoticeClaim {
        runner_id: view.me.to_string(),
        until,
    });
    Ok(notice.clone())
}

fn mine<'a>(doc: &'a mut Assignment, id: &str, me: &str) -> Result<&'a mut Notice, ChainError> {
    let notice = find(doc, id)?;
    if notice.claim.as_ref().is_none_or(|c| c.runner_id != me) {
        return Err(ChainError::Invalid(format!(
            "notice {id} is no longer claimed by this runner"
        )));
    }
    Ok(notice)
}

/// Records that hook `key` is done with notice `id`: it has it, or refused it for good (a
/// 4xx other than 408, 425 or 429). Refused unless `me` holds the claim.
pub fn notice_delivered(
    doc: &mut Assignment,
    id: &str,
    key: &str,
    me: &str,
) -> Result<(), ChainError> {
    let notice = mine(doc, id, me)?;
    if !notice.delivered.iter().any(|k| k == key) {
        notice.delivered.push(key.to_string());
    }
    Ok(())
}

/// Ends `me`'s round of notice `id`: removed when `retry_at` is `None` (every hook has it, or
/// the runner gave up), otherwise released to be tried again at `retry_at`.
pub fn finish_notice(
    doc: &mut Assignment,
    id: &str,
    me: &str,
    retry_at: Option<Millis>,
) -> Result<(), ChainError> {
    let notice = mine(doc, id, me)?;
    match retry_at {
        None => doc.outbox.retain(|n| n.id != id),
        Some(at) => {
            notice.claim = None;
            notice.failed_rounds += 1;
            notice.retry_at = Some(at);
        }
    }
    Ok(())
}

/// The JSON a hook receives for `notice` of `doc`.
pub fn payload(doc: &Assignment, notice: &Notice) -> Value {
    let status = match notice.event {
        NotifyEvent::Complete => AssignmentStatus::Complete,
        NotifyEvent::Blocked => AssignmentStatus::Blocked,
        NotifyEvent::JobFailed => doc.status,
    };
    let forge = doc.forge.as_ref();
    json!({
        "id": notice.id,
        "event": notice.event.wire_name(),
        "at": notice.at,
        "text": text(doc, notice),
        "assignment": {
            "id": doc.id,
            "namespace": doc.namespace,
            "northStar": shorten(&doc.north_star, NORTH_STAR_CHARS),
            "status": status,
            "reason": notice.reason,
            "costUsd": notice.cost_usd,
            "branch": doc.workspace.as_ref().map(|w| &w.branch),
            "issue": forge.and_then(|f| f.issue.as_ref()).map(|i| &i.url),
            "pullRequest": forge.and_then(|f| f.pull_request.as_ref()).map(|p| &p.url),
        },
        "job": notice.job,
    })
}

/// One line for a person (and Slack's `text`).
pub fn text(doc: &Assignment, notice: &Notice) -> String {
    let first_line = doc.north_star.lines().next().unwrap_or_default();
    let star = shorten(first_line, TEXT_NORTH_STAR_CHARS);
    let reason = notice.reason.as_deref().unwrap_or("no reason given");
    let mut out = match (notice.event, &notice.job) {
        (NotifyEvent::Complete, _) => format!("wf: assignment {} is complete: {star}", doc.id),
        (NotifyEvent::Blocked, _) => format!(
            "wf: assignment {} is blocked and needs a human: {reason} ({star}). Resume with `wf update-assignment {} --status active --note …`",
            doc.id, doc.id
        ),
        (NotifyEvent::JobFailed, Some(job)) => format!(
            "wf: job {} ({}, {}, attempt {}) of assignment {} failed: {reason} ({star})",
            job.id, job.job_type, job.harness, job.attempt, doc.id
        ),
        (NotifyEvent::JobFailed, None) => {
            format!("wf: a job of assignment {} failed: {reason} ({star})", doc.id)
        }
    };
    if let Some(cost) = notice.cost_usd {
        out.push_str(&format!(" — ${cost:.2} spent"));
    }
    if let Some(pr) = doc.forge.as_ref().and_then(|f| f.pull_request.as_ref()) {
        out.push_str(&format!(" — {}", pr.url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::new_assignment;
    use crate::model::{Job, JobType};

    const ALL: [NotifyEvent; 3] = [
        NotifyEvent::Complete,
        NotifyEvent::Blocked,
        NotifyEvent::JobFailed,
    ];

    fn view(now: Millis, me: &str, exclusive: bool) -> LeaseView<'_> {
        LeaseView { now, me, exclusive }
    }

    fn failed_job(doc: &Assignment, reason: FailureReason) -> Job {
        Job {
            status: JobStatus::Failed,
            failure_reason: Some(reason),
            failure_detail: Some("exit code 1".into()),
            ..serde_json::from_value(serde_json::json!({
                "id": "j1", "assignmentId": doc.id, "jobType": "implement", "harness": "claude",
                "model": null, "status": "running", "groupId": null, "attempt": 2,
                "createdAt": 1, "startedAt": 1, "completedAt": null, "failureReason": null,
                "failureDetail": null, "sessionId": null,
                "usage": {"inputTokens": 0, "outputTokens": 0, "costUsd": null},
                "retryAfter": null, "pauses": 0, "hasContext": false, "hasResult": false,
                "exitCode": null, "insertedBy": null, "reviews": [], "pmReminder": false,
                "cancelRequested": false, "contextHash": null
            }))
            .expect("a job")
        }
    }

    /// `before` changed by `change` and written as the next version, as the store does.
    fn write(
        before: &Assignment,
        wanted: NotifySet,
        change: impl FnOnce(&mut Assignment),
    ) -> Assignment {
        let mut after = before.clone();
        change(&mut after);
        after.version = before.version + 1;
        note_transitions(before, &mut after, wanted, 5_000);
        after
    }

    #[test]
    fn the_write_that_blocks_completes_or_fails_a_job_records_its_notice_once() {
        let all = NotifySet::of(ALL);
        let doc = new_assignment("a1".into(), "ns", "ship it\nmore".into(), 10, false, 1_000);
        let blocked = write(&doc, all, |d| {
            d.status = AssignmentStatus::Blocked;
            d.blocked_reason = Some("PM asked a question".into());
        });
        assert_eq!(blocked.outbox.len(), 1);
        let n = &blocked.outbox[0];
        assert_eq!(
            (n.id.as_str(), n.event),
            ("a1-v1-blocked", NotifyEvent::Blocked)
        );
        assert_eq!(n.reason.as_deref(), Some("PM asked a question"));
        // Writing again while blocked (a note, a claim) adds nothing.
        let again = write(&blocked, all, |d| d.decisions.push('x'));
        assert_eq!(again.outbox.len(), 1);
        let done = write(&again, all, |d| d.status = AssignmentStatus::Complete);
        assert_eq!(done.outbox[1].id, "a1-v3-complete");
        assert_eq!(done.outbox[1].event, NotifyEvent::Complete);

        let mut running = doc.clone();
        running.jobs.push(Job {
            status: JobStatus::Running,
            ..failed_job(&doc, FailureReason::Exit)
        });
        let failed = write(&running, all, |d| {
            d.jobs[0] = failed_job(d, FailureReason::Exit)
        });
        let n = &failed.outbox[0];
        assert_eq!(n.id, "a1-v1-job_failed-j1");
        assert_eq!(n.reason.as_deref(), Some("exit: exit code 1"));
        let job = n.job.as_ref().expect("the job");
        assert_eq!((job.job_type, job.attempt), (JobType::Implement, 2));
        let cancelled = write(&running, all, |d| {
            d.jobs[0] = failed_job(d, FailureReason::Cancelled)
        });
        assert!(
            cancelled.outbox.is_empty(),
            "a cancel is a human's own doing"
        );
        // Nobody listens for blocks: nothing recorded.
        let only_complete = NotifySet::of([NotifyEvent::Complete]);
        let quiet = write(&doc, only_complete, |d| {
            d.status = AssignmentStatus::Blocked
        });
        assert!(quiet.outbox.is_empty());
        assert!(write(&doc, NotifySet::default(), |d| d.status =
            AssignmentStatus::Complete)
        .outbox
        .is_empty());
    }

    #[test]
    fn the_outbox_keeps_the_newest_notices() {
        let all = NotifySet::of(ALL);
        let mut doc = new_assignment("a1".into(), "ns", "x".into(), 10, false, 1_000);
        for _ in 0..(MAX_OUTBOX + 5) {
            doc = write(&doc, all, |d| d.status = AssignmentStatus::Blocked);
            doc = write(&doc, all, |d| d.status = AssignmentStatus::Active);
        }
        assert_eq!(doc.outbox.len(), MAX_OUTBOX);
        assert_eq!(
            doc.outbox.last().unwrap().id,
            format!("a1-v{}-blocked", doc.version - 1)
        );
    }

    #[test]
    fn one_runner_at_a_time_delivers_and_a_dead_claim_is_taken_over() {
        let all = NotifySet::of(ALL);
        let doc = new_assignment("a1".into(), "ns", "x".into(), 10, false, 1_000);
        let mut doc = write(&doc, all, |d| d.status = AssignmentStatus::Complete);
        let id = doc.outbox[0].id.clone();
        // Two runners of a fleet (not exclusive).
        let r1 = view(10_000, "r1", false);
        let r2 = view(10_000, "r2", false);
        assert_eq!(deliverable(&doc, &r1).len(), 1);
        claim_notice(&mut doc, &id, &r1, 20_000).unwrap();
        assert!(deliverable(&doc, &r2).is_empty());
        assert!(claim_notice(&mut doc, &id, &r2, 30_000).is_err());
        assert_eq!(next_notice_at(&doc, &r2), Some(20_000));
        assert!(notice_delivered(&mut doc, &id, "hook", "r2").is_err());
        notice_delivered(&mut doc, &id, "hook", "r1").unwrap();
        // r1 dies; after the claim expires r2 takes over and sees what was delivered.
        let later = view(20_001, "r2", false);
        let taken = claim_notice(&mut doc, &id, &later, 40_000).unwrap();
        assert_eq!(taken.delivered, ["hook"]);
        assert!(finish_notice(&mut doc, &id, "r1", None).is_err());
        // A failed round is retried later, then the notice goes.
        finish_notice(&mut doc, &id, "r2", Some(50_000)).unwrap();
        assert!(deliverable(&doc, &later).is_empty());
        assert_eq!(next_notice_at(&doc, &later), Some(50_000));
        assert_eq!(doc.outbox[0].failed_rounds, 1);
        let then = view(50_000, "r2", false);
        claim_notice(&mut doc, &id, &then, 60_000).unwrap();
        finish_notice(&mut doc, &id, "r2", None).unwrap();
        assert!(doc.outbox.is_empty());
        assert!(
            claim_notice(&mut doc, &id, &then, 60_000).is_err(),
            "delivered: gone"
        );
        // On the embedded store a claim by another runner id is a dead runner's.
        let mut doc = write(&doc, all, |d| d.status = AssignmentStatus::Blocked);
        let id = doc.outbox[0].id.clone();
        claim_notice(&mut doc, &id, &view(1, "old", true), u64::MAX).unwrap();
        assert!(claim_notice(&mut doc, &id, &view(2, "new", true), 3).is_ok());
    }

    #[test]
    fn the_payload_says_what_happened_as_it_was() {
        let all = NotifySet::of(ALL);
        let doc = new_assignment(
            "a1".into(),
            "ns",
            "ship it\nin detail".into(),
            10,
            false,
            1_000,
        );
        let mut blocked = write(&doc, all, |d| {
            d.status = AssignmentStatus::Blocked;
            d.blocked_reason = Some("which database?".into());
            d.usage.cost_usd = Some(1.5);
        });
        // The assignment moved on before delivery; the payload still tells of the block.
        blocked.status = AssignmentStatus::Active;
        let p = payload(&blocked, &blocked.outbox[0]);
        assert_eq!(p["id"], "a1-v1-blocked");
        assert_eq!(p["event"], "assignment.blocked");
        assert_eq!(p["assignment"]["status"], "blocked");
        assert_eq!(p["assignment"]["reason"], "which database?");
        assert_eq!(p["assignment"]["costUsd"], 1.5);
        let text = p["text"].as_str().unwrap();
        assert!(
            text.contains("a1 is blocked and needs a human: which database? (ship it)"),
            "{text}"
        );
        assert!(text.contains("$1.50"), "{text}");
    }
}
