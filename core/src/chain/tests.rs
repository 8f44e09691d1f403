//! State-transition tests for the chain.

use std::collections::HashSet;

use super::*;
use crate::model::{
    Assignment, AssignmentStatus, FailureReason, JobStatus, JobType, Millis, Usage,
};

fn ins(
    doc: &mut Assignment,
    jobs: &[NewJob],
    group: Option<&str>,
    position: &Position,
    caller: Caller<'_>,
    now: Millis,
) -> Result<Inserted, ChainError> {
    insert_jobs(doc, jobs, group, position, caller, None, now)
}

fn claim_run(
    doc: &mut Assignment,
    view: &LeaseView<'_>,
    host: &str,
    lease_ms: u64,
) -> Option<Claim> {
    match claim(doc, view, host, lease_ms, &Recovered::new())? {
        Claimed::Run(c) => Some(c),
        Claimed::Blocked(reason) => panic!("over budget: {reason}"),
    }
}

const LEASE: u64 = 30_000;

fn doc() -> Assignment {
    new_assignment("a1".into(), "ns", "ship it".into(), 10, false, 1_000)
}

fn new_job(id: &str, job_type: JobType) -> NewJob {
    NewJob {
        id: id.into(),
        job_type,
        harness: "claude".into(),
        model: None,
        has_context: false,
        context_hash: None,
    }
}

fn pm(id: &str) -> NewJob {
    new_job(id, JobType::Pm)
}

fn view(now: Millis) -> LeaseView<'static> {
    LeaseView {
        now,
        me: "r1",
        exclusive: true,
    }
}

fn report(outcome: Outcome) -> AttemptReport {
    AttemptReport {
        outcome,
        detail: None,
        session_id: Some("s".into()),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: Some(0.25),
        },
        has_result: true,
        exit_code: Some(0),
        commits: None,
        checks: Vec::new(),
    }
}

fn ids(doc: &Assignment) -> Vec<&str> {
    doc.jobs.iter().map(|j| j.id.as_str()).collect()
}

fn insert(doc: &mut Assignment, id: &str, t: JobType) {
    ins(
        doc,
        &[new_job(id, t)],
        None,
        &Position::End,
        Caller::Human,
        2_000,
    )
    .unwrap();
}

/// Claims and completes the current unit, returning what recording the last job did.
fn run_unit(doc: &mut Assignment, pm_id: &str, outcome: Outcome) -> Recorded {
    let claim = claim_run(doc, &view(3_000), "host", LEASE).expect("claimable");
    let mut last = None;
    for job in &claim.job_ids {
        last = Some(
            record_attempt(
                doc,
                claim.epoch,
                job,
                &report(outcome.clone()),
                &pm(pm_id),
                4_000,
            )
            .unwrap(),
        );
    }
    last.unwrap()
}

#[test]
fn inserts_append_for_humans_and_follow_the_caller_for_agents() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    assert_eq!(ids(&d), ["j1", "j2"]);

    // An agent (job j1) inserting twice keeps its order, right after itself.
    for id in ["k1", "k2"] {
        ins(
            &mut d,
            &[new_job(id, JobType::Review)],
            None,
            &Position::End,
            Caller::Job("j1"),
            5,
        )
        .unwrap();
    }
    assert_eq!(ids(&d), ["j1", "k1", "k2", "j2"]);
    assert_eq!(d.job("k1").unwrap().inserted_by.as_deref(), Some("j1"));

    // --after lands after the anchor.
    ins(
        &mut d,
        &[new_job("x", JobType::Uat)],
        None,
        &Position::After("k1".into()),
        Caller::Human,
        5,
    )
    .unwrap();
    assert_eq!(ids(&d), ["j1", "k1", "x", "k2", "j2"]);
}

#[test]
fn insert_is_idempotent_and_validates() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let again = ins(
        &mut d,
        &[new_job("j1", JobType::Plan)],
        None,
        &Position::End,
        Caller::Human,
        9,
    )
    .unwrap();
    assert_eq!(again, Inserted::AlreadyPresent);
    assert_eq!(d.jobs.len(), 1);

    let err = ins(
        &mut d,
        &[new_job("j2", JobType::Plan)],
        None,
        &Position::After("nope".into()),
        Caller::Human,
        9,
    )
    .unwrap_err();
    assert!(matches!(err, ChainError::NoSuchJob { .. }));

    let group = [new_job("g1", JobType::Review), new_job("g2", JobType::Pm)];
    let err = ins(&mut d, &group, Some("g"), &Position::End, Caller::Human, 9).unwrap_err();
    assert!(err.to_string().contains("pm job cannot be part of a group"));

    d.status = AssignmentStatus::Complete;
    let err = ins(
        &mut d,
        &[new_job("j3", JobType::Plan)],
        None,
        &Position::End,
        Caller::Human,
        9,
    )
    .unwrap_err();
    assert!(matches!(err, ChainError::AssignmentComplete(_)));
}

#[test]
fn cannot_insert_before_a_started_job() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    d.jobs[1].status = JobStatus::Complete;
    d.jobs[1].attempt = 1;
    let err = ins(
        &mut d,
        &[new_job("x", JobType::Uat)],
        None,
        &Position::After("j1".into()),
        Caller::Human,
        5,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ChainError::WouldPrecedeStarted {
            after: "j1".into(),
            started: "j2".into()
        }
    );
}

#[test]
fn claim_runs_one_unit_under_a_fenced_lease() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    let c = claim_run(&mut d, &view(3_000), "h", LEASE).unwrap();
    assert_eq!(
        c,
        Claim {
            epoch: 1,
            job_ids: vec!["j1".into()]
        }
    );
    assert_eq!(d.status, AssignmentStatus::Active);
    assert_eq!(d.jobs[0].status, JobStatus::Running);
    assert_eq!(d.jobs[0].attempt, 1);
    // A second claim while the lease lives gets nothing.
    assert!(claim_run(&mut d, &view(3_001), "h", LEASE).is_none());
    // Renewing with the right epoch works; a stale epoch is fenced.
    renew(&mut d, 1, 4_000, LEASE).unwrap();
    assert_eq!(d.lease.as_ref().unwrap().expires_at, 4_000 + LEASE);
    assert_eq!(renew(&mut d, 0, 4_000, LEASE), Err(ChainError::Fenced(0)));
    // A stale epoch cannot record an outcome.
    let err = record_attempt(&mut d, 7, "j1", &report(Outcome::Complete), &pm("p"), 5).unwrap_err();
    assert_eq!(err, ChainError::Fenced(7));
}

#[test]
fn a_dead_runners_lease_is_taken_over_with_a_new_epoch() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let first = claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "old",
            exclusive: true,
        },
        "h",
        LEASE,
    )
    .unwrap();
    // Embedded store: a different runner id means the old runner is dead.
    let second = claim_run(
        &mut d,
        &LeaseView {
            now: 11,
            me: "new",
            exclusive: true,
        },
        "h",
        LEASE,
    )
    .unwrap();
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(d.jobs[0].attempt, 2);
    // The old runner's late report is fenced.
    assert!(record_attempt(
        &mut d,
        first.epoch,
        "j1",
        &report(Outcome::Complete),
        &pm("p"),
        12
    )
    .is_err());

    // Shared store: another runner's lease is respected until it expires.
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "a",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    let b = LeaseView {
        now: 11,
        me: "b",
        exclusive: false,
    };
    assert_eq!(readiness(&d, &b), Readiness::WaitUntil(10 + LEASE));
    assert!(claim_run(&mut d, &b, "h", LEASE).is_none());
    let later = LeaseView {
        now: 10 + LEASE,
        me: "b",
        exclusive: false,
    };
    assert!(claim_run(&mut d, &later, "h", LEASE).is_some());
}

#[test]
fn pm_is_inserted_after_every_non_pm_unit_even_a_failed_one() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    let r = run_unit(&mut d, "p1", Outcome::Failed(FailureReason::Exit));
    assert_eq!(r, Recorded::PmInserted("p1".into()));
    assert_eq!(ids(&d), ["j1", "p1", "j2"]);
    let p1 = d.job("p1").unwrap();
    assert_eq!(p1.reviews, vec!["j1".to_string()]);
    assert_eq!(p1.job_type, JobType::Pm);
    assert!(d.lease.is_none());
    assert_eq!(d.usage.cost_usd, Some(0.25));
    assert_eq!(d.jobs[0].failure_reason, Some(FailureReason::Exit));
}

#[test]
fn a_group_runs_together_and_gets_one_pm() {
    let mut d = doc();
    let group = [
        new_job("r1", JobType::Review),
        new_job("r2", JobType::Review),
    ];
    ins(&mut d, &group, Some("g1"), &Position::End, Caller::Human, 5).unwrap();
    let c = claim_run(&mut d, &view(10), "h", LEASE).unwrap();
    assert_eq!(c.job_ids, vec!["r1".to_string(), "r2".into()]);
    let first = record_attempt(
        &mut d,
        c.epoch,
        "r1",
        &report(Outcome::Complete),
        &pm("p"),
        20,
    )
    .unwrap();
    assert_eq!(first, Recorded::UnitRunning);
    let second = record_attempt(
        &mut d,
        c.epoch,
        "r2",
        &report(Outcome::Complete),
        &pm("p"),
        30,
    )
    .unwrap();
    assert_eq!(second, Recorded::PmInserted("p".into()));
    assert_eq!(
        d.job("p").unwrap().reviews,
        vec!["r1".to_string(), "r2".into()]
    );
    assert_eq!(ids(&d), ["r1", "r2", "p"]);
}

#[test]
fn a_silent_pm_is_reminded_once_then_the_assignment_blocks() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    // The PM runs and inserts nothing.
    let r = run_unit(&mut d, "p2", Outcome::Complete);
    assert_eq!(r, Recorded::PmReminderInserted("p2".into()));
    assert!(d.job("p2").unwrap().pm_reminder);
    assert_eq!(d.job("p2").unwrap().reviews, vec!["j1".to_string()]);
    let r = run_unit(&mut d, "p3", Outcome::Failed(FailureReason::Exit));
    assert_eq!(r, Recorded::Blocked);
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert_eq!(d.blocked_reason.as_deref(), Some(NO_DECISION_REASON));
    assert_eq!(d.pm_rounds, 2);
}

#[test]
fn a_pm_that_inserts_or_completes_has_decided() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    let c = claim_run(&mut d, &view(10), "h", LEASE).unwrap();
    ins(
        &mut d,
        &[new_job("j2", JobType::Implement)],
        None,
        &Position::End,
        Caller::Job("p1"),
        11,
    )
    .unwrap();
    let r = record_attempt(
        &mut d,
        c.epoch,
        "p1",
        &report(Outcome::Complete),
        &pm("x"),
        12,
    )
    .unwrap();
    assert_eq!(r, Recorded::UnitEnded);
    assert_eq!(ids(&d), ["j1", "p1", "j2"]);

    run_unit(&mut d, "p2", Outcome::Complete);
    let c = claim_run(&mut d, &view(20), "h", LEASE).unwrap();
    let complete = AssignmentUpdate {
        status: Some(AssignmentStatus::Complete),
        ..Default::default()
    };
    update_assignment(&mut d, &complete, Caller::Job("p2"), &pm("unused"), 21).unwrap();
    let r = record_attempt(
        &mut d,
        c.epoch,
        "p2",
        &report(Outcome::Complete),
        &pm("x"),
        22,
    )
    .unwrap();
    assert_eq!(r, Recorded::UnitEnded);
    assert_eq!(d.status, AssignmentStatus::Complete);
    assert_eq!(readiness(&d, &view(30)), Readiness::Idle);
}

#[test]
fn transient_errors_pause_and_resume() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let r = run_unit(&mut d, "p", Outcome::RetryAt(9_000));
    assert_eq!(r, Recorded::UnitEnded);
    assert_eq!(d.jobs[0].status, JobStatus::WaitingRetry);
    assert_eq!(readiness(&d, &view(8_999)), Readiness::WaitUntil(9_000));
    assert_eq!(next_wakeup([&d], &view(8_999)), Some(9_000));
    let c = claim_run(&mut d, &view(9_000), "h", LEASE).unwrap();
    assert_eq!(c.job_ids, vec!["j1".to_string()]);
    assert_eq!(d.jobs[0].attempt, 2);
    assert_eq!(d.jobs[0].retry_after, None);
}

#[test]
fn requeue_returns_the_job_to_pending() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let r = run_unit(&mut d, "p", Outcome::Requeue);
    assert_eq!(r, Recorded::UnitEnded);
    assert_eq!(d.jobs[0].status, JobStatus::Pending);
    assert!(matches!(readiness(&d, &view(1)), Readiness::Ready(_)));
}

#[test]
fn update_rules() {
    let mut d = doc();
    let blocked_no_reason = AssignmentUpdate {
        status: Some(AssignmentStatus::Blocked),
        ..Default::default()
    };
    assert!(
        update_assignment(&mut d, &blocked_no_reason, Caller::Human, &pm("p"), 1)
            .unwrap_err()
            .to_string()
            .contains("--reason is required")
    );
    assert!(AssignmentUpdate::default().validate().is_err());
    let pending = AssignmentUpdate {
        status: Some(AssignmentStatus::Pending),
        ..Default::default()
    };
    assert!(pending.validate().is_err());

    // Agents append memory as new lines; humans replace it.
    let mem = |t: &str| AssignmentUpdate {
        artifacts: Some(t.into()),
        decisions: Some(t.into()),
        ..Default::default()
    };
    update_assignment(&mut d, &mem("a"), Caller::Job("p"), &pm("p"), 1).unwrap();
    update_assignment(&mut d, &mem("b"), Caller::Job("p"), &pm("p"), 1).unwrap();
    assert_eq!(d.artifacts, "a\nb");
    assert_eq!(d.decisions, "a\nb");
    update_assignment(&mut d, &mem("c"), Caller::Human, &pm("p"), 1).unwrap();
    assert_eq!(d.artifacts, "c");

    // Blocking and resuming: resuming with nothing to run inserts a PM.
    let block = AssignmentUpdate {
        status: Some(AssignmentStatus::Blocked),
        reason: Some("which db?".into()),
        ..Default::default()
    };
    update_assignment(&mut d, &block, Caller::Human, &pm("p"), 2).unwrap();
    assert_eq!(d.blocked_reason.as_deref(), Some("which db?"));
    let resume = AssignmentUpdate {
        status: Some(AssignmentStatus::Active),
        note: Some("use sqlite".into()),
        ..Default::default()
    };
    let r = update_assignment(&mut d, &resume, Caller::Human, &pm("p9"), 3).unwrap();
    assert_eq!(r, Updated::PmInserted("p9".into()));
    assert_eq!(d.blocked_reason, None);
    assert_eq!(d.notes.len(), 1);
    assert!(matches!(readiness(&d, &view(4)), Readiness::Ready(v) if v == ["p9"]));
}

fn assignment(id: &str, created: Millis, priority: i64, independent: bool) -> Assignment {
    let mut d = new_assignment(id.into(), "ns", "x".into(), priority, independent, created);
    insert(&mut d, &format!("{id}-j"), JobType::Plan);
    d
}

#[test]
fn pick_follows_the_seed_rules() {
    let none = HashSet::new();
    let v = view(100);
    let docs = [
        assignment("s-new", 30, 1, false),
        assignment("s-old", 10, 10, false),
        assignment("i-1", 20, 10, true),
        assignment("i-2", 40, 10, true),
    ];
    // One sequential (the oldest) plus all independent, oldest first.
    assert_eq!(pick(&docs, &none, 10, &v), ["s-old", "i-1", "i-2"]);
    // Slots limit the count.
    assert_eq!(pick(&docs, &none, 2, &v), ["s-old", "i-1"]);
    // Same age: lower priority number first.
    let tie = [assignment("b", 5, 10, true), assignment("a", 5, 1, true)];
    assert_eq!(pick(&tie, &none, 10, &v), ["a", "b"]);

    // An active sequential assignment keeps the turn, even while it is running.
    let mut docs = docs;
    docs[0].status = AssignmentStatus::Active;
    assert_eq!(pick(&docs, &none, 10, &v), ["i-1", "s-new", "i-2"]);
    let running: HashSet<String> = ["s-new".to_string()].into();
    assert_eq!(pick(&docs, &running, 10, &v), ["i-1", "i-2"]);
    // Blocked ones do not hold the turn.
    docs[0].status = AssignmentStatus::Blocked;
    assert_eq!(pick(&docs, &none, 10, &v), ["s-old", "i-1", "i-2"]);
}

#[test]
fn budgets_block_instead_of_starting_work() {
    let mut d = doc();
    d.budget.max_jobs = Some(1);
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    run_unit(&mut d, "p1", Outcome::Complete);
    run_unit(&mut d, "p2", Outcome::Complete);
    // j1 ran; starting j2 would be the second non-PM job.
    let r = claim(&mut d, &view(5_000), "h", LEASE, &Recovered::new()).unwrap();
    assert_eq!(
        r,
        Claimed::Blocked("budget exceeded: 1 jobs started, maxJobs is 1".into())
    );
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert_eq!(
        d.blocked_reason.as_deref(),
        Some("budget exceeded: 1 jobs started, maxJobs is 1")
    );

    // Cost: spent at or over the limit blocks when the job that spent it ends.
    let mut d = doc();
    d.budget.max_cost_usd = Some(0.20);
    insert(&mut d, "j1", JobType::Plan);
    let r = run_unit(&mut d, "p1", Outcome::Complete);
    assert_eq!(
        r,
        Recorded::UnitEnded,
        "blocked: no PM until a human resumes it"
    );
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert_eq!(
        d.blocked_reason.as_deref(),
        Some("budget exceeded: spent $0.25, maxCostUsd is $0.20")
    );

    // Wall time, counted from the first job's start.
    let mut d = doc();
    d.budget.max_wall_ms = Some(1_000);
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    assert_eq!(d.started_at, Some(3_000));
    assert_eq!(wall_deadline(&d), Some(4_000));
    let r = claim(&mut d, &view(4_000), "h", LEASE, &Recovered::new()).unwrap();
    assert!(
        matches!(r, Claimed::Blocked(ref m) if m.contains("maxWallMs")),
        "{r:?}"
    );

    // PM rounds.
    let mut d = doc();
    d.budget.max_pm_rounds = Some(1);
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    run_unit(&mut d, "p1", Outcome::Complete);
    run_unit(&mut d, "p2", Outcome::Complete);
    run_unit(&mut d, "p3", Outcome::Complete);
    let r = claim(&mut d, &view(9_000), "h", LEASE, &Recovered::new()).unwrap();
    assert!(
        matches!(r, Claimed::Blocked(ref m) if m.contains("1 PM rounds")),
        "{r:?}"
    );
}

#[test]
fn a_budget_stop_blocks_with_its_reason() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let c = claim_run(&mut d, &view(10), "h", LEASE).unwrap();
    let report = AttemptReport {
        outcome: Outcome::Failed(FailureReason::Budget),
        detail: Some("budget exceeded: maxWallMs is 5 ms and the time is up".into()),
        ..report(Outcome::Complete)
    };
    record_attempt(&mut d, c.epoch, "j1", &report, &pm("p"), 20).unwrap();
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert!(d.blocked_reason.unwrap().contains("maxWallMs"));
}

#[test]
fn a_pm_repeating_the_same_job_is_stopped() {
    let mut d = doc();
    let same = |id: &str| NewJob {
        context_hash: Some(fingerprint("fix the bug")),
        ..new_job(id, JobType::Implement)
    };
    insert(&mut d, "p0", JobType::Pm);
    for (i, id) in ["i1", "i2"].iter().enumerate() {
        insert_jobs(
            &mut d,
            &[same(id)],
            None,
            &Position::End,
            Caller::Job("p0"),
            Some(3),
            i as u64,
        )
        .unwrap();
        assert_ne!(d.status, AssignmentStatus::Blocked);
    }
    insert_jobs(
        &mut d,
        &[same("i3")],
        None,
        &Position::End,
        Caller::Job("p0"),
        Some(3),
        9,
    )
    .unwrap();
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert_eq!(
        d.blocked_reason.as_deref(),
        Some("loop: a implement job with the same context was inserted 3 times in a row")
    );
    // A different context, or a human, is no loop.
    let mut d = doc();
    for id in ["a", "b", "c"] {
        insert_jobs(
            &mut d,
            &[same(id)],
            None,
            &Position::End,
            Caller::Human,
            Some(3),
            1,
        )
        .unwrap();
    }
    assert_eq!(d.status, AssignmentStatus::Pending);
    assert_eq!(fingerprint("  x \n"), fingerprint("x"));
}

#[test]
fn cancel_and_retry() {
    // A running job with a live lease: the runner holding it is asked to stop it.
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Implement);
    claim_run(&mut d, &view(10), "h", LEASE).unwrap();
    cancel(&mut d, CancelTarget::Job("j1"), &view(11)).unwrap();
    assert!(d.jobs[0].cancel_requested);
    assert_eq!(d.jobs[0].status, JobStatus::Running);
    assert_eq!(d.status, AssignmentStatus::Blocked);
    assert_eq!(
        d.blocked_reason.as_deref(),
        Some("job j1 cancelled by a human")
    );

    // With a dead lease (its runner is gone) the job is marked cancelled at once.
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "dead",
            exclusive: true,
        },
        "h",
        LEASE,
    )
    .unwrap();
    cancel(&mut d, CancelTarget::Assignment, &view(11)).unwrap();
    assert_eq!(d.jobs[0].status, JobStatus::Failed);
    assert_eq!(d.jobs[0].failure_reason, Some(FailureReason::Cancelled));
    assert!(d.lease.is_none());
    assert!(matches!(
        cancel(&mut d, CancelTarget::Job("j1"), &view(12)),
        Err(ChainError::Invalid(_))
    ));

    // Retry puts it back in place and resumes the assignment.
    retry(&mut d, "j1", 20).unwrap();
    assert_eq!(d.jobs[0].status, JobStatus::Pending);
    assert_eq!(d.status, AssignmentStatus::Active);
    assert!(matches!(readiness(&d, &view(21)), Readiness::Ready(v) if v == ["j1"]));
    assert!(
        retry(&mut d, "j1", 21).is_err(),
        "only failed jobs are retried"
    );

    // A cancelled pending job.
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    cancel(&mut d, CancelTarget::Job("j1"), &view(5)).unwrap();
    assert_eq!(d.jobs[0].failure_reason, Some(FailureReason::Cancelled));
}

#[test]
fn a_dead_lease_on_a_blocked_assignment_is_settled() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    insert(&mut d, "j2", JobType::Plan);
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "old",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    d.jobs[0].cancel_requested = true;
    d.status = AssignmentStatus::Blocked;
    let live = LeaseView {
        now: 20,
        me: "new",
        exclusive: false,
    };
    assert_eq!(
        settle_dead_lease(&mut d, &live, &Recovered::new()),
        Err(Unchanged),
        "still live"
    );
    let later = LeaseView {
        now: 10 + LEASE,
        me: "new",
        exclusive: false,
    };
    settle_dead_lease(&mut d, &later, &Recovered::new()).unwrap();
    assert!(d.lease.is_none());
    assert_eq!(d.jobs[0].failure_reason, Some(FailureReason::Cancelled));
}

#[test]
fn a_completed_assignment_keeps_no_running_jobs_after_its_runner_died() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    // The PM runs, completes the assignment, and its runner dies before recording.
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "old",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    let complete = AssignmentUpdate {
        status: Some(AssignmentStatus::Complete),
        ..Default::default()
    };
    update_assignment(&mut d, &complete, Caller::Job("p1"), &pm("x"), 11).unwrap();
    let later = LeaseView {
        now: 10 + LEASE,
        me: "new",
        exclusive: false,
    };
    settle_dead_lease(&mut d, &later, &Recovered::new()).unwrap();
    assert!(
        d.jobs.iter().all(|j| j.status == JobStatus::Complete),
        "{:?}",
        d.jobs
    );
    assert!(d.jobs[1]
        .failure_detail
        .as_deref()
        .unwrap()
        .contains("no result was recorded"));
    assert!(d.lease.is_none());
}

#[test]
fn a_pm_that_decided_before_its_runner_died_does_not_run_again() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "old",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    insert_jobs(
        &mut d,
        &[new_job("j2", JobType::Implement)],
        None,
        &Position::End,
        Caller::Job("p1"),
        None,
        11,
    )
    .unwrap();
    // The old runner is dead; the next claim finishes the PM and runs its decision.
    let c = claim_run(
        &mut d,
        &LeaseView {
            now: 10 + LEASE,
            me: "new",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    assert_eq!(c.job_ids, vec!["j2".to_string()]);
    let p1 = d.job("p1").unwrap();
    assert_eq!((p1.status, p1.attempt), (JobStatus::Complete, 1));
    assert_eq!(d.pm_rounds, 1);
    // A PM that died before deciding runs again.
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    run_unit(&mut d, "p1", Outcome::Complete);
    claim_run(
        &mut d,
        &LeaseView {
            now: 10,
            me: "old",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    let c = claim_run(
        &mut d,
        &LeaseView {
            now: 10 + LEASE,
            me: "new",
            exclusive: false,
        },
        "h",
        LEASE,
    )
    .unwrap();
    assert_eq!(c.job_ids, vec!["p1".to_string()]);
    assert_eq!(d.job("p1").unwrap().attempt, 2);
}

/// `wf retry` of a job that is not the last: its new PM goes to the end of the chain, where it
/// can insert the next job after itself (it was put right after the retried job, before jobs
/// that had already run, where every insert was refused and the assignment ended blocked with
/// the false reason "PM made no decision").
#[test]
fn a_retried_job_that_is_not_last_gets_a_pm_that_can_decide() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    assert_eq!(
        run_unit(&mut d, "p1", Outcome::Failed(FailureReason::Exit)),
        Recorded::PmInserted("p1".into())
    );
    // The PM blocks the assignment on the failure.
    let claim = claim_run(&mut d, &view(5_000), "host", LEASE).unwrap();
    let block = AssignmentUpdate {
        status: Some(AssignmentStatus::Blocked),
        reason: Some("plan failed".into()),
        ..AssignmentUpdate::default()
    };
    update_assignment(&mut d, &block, Caller::Job("p1"), &pm("unused"), 5_100).unwrap();
    record_attempt(
        &mut d,
        claim.epoch,
        "p1",
        &report(Outcome::Complete),
        &pm("x"),
        5_200,
    )
    .unwrap();
    assert_eq!(d.status, AssignmentStatus::Blocked);

    retry(&mut d, "j1", 6_000).unwrap();
    assert_eq!(
        run_unit(&mut d, "p2", Outcome::Complete),
        Recorded::PmInserted("p2".into())
    );
    assert_eq!(ids(&d), ["j1", "p1", "p2"], "the new PM goes last");
    assert_eq!(d.jobs[2].reviews, ["j1"]);
    // The PM decides: its insert after itself is accepted.
    let claim = claim_run(&mut d, &view(7_000), "host", LEASE).unwrap();
    assert_eq!(claim.job_ids, ["p2"]);
    ins(
        &mut d,
        &[new_job("i1", JobType::Implement)],
        None,
        &Position::After("p2".into()),
        Caller::Job("p2"),
        7_100,
    )
    .unwrap();
    record_attempt(
        &mut d,
        claim.epoch,
        "p2",
        &report(Outcome::Complete),
        &pm("p3"),
        7_200,
    )
    .unwrap();
    assert_eq!(ids(&d), ["j1", "p1", "p2", "i1"]);
    assert_eq!(d.status, AssignmentStatus::Active);
    check_invariants(&d).unwrap();
}

/// With the embedded store, a unit whose lease this runner still holds but no longer runs
/// (self-fenced, or a record that gave up) is looked at again when the lease expires: the
/// scheduler sets a timer for it instead of waiting for an unrelated event.
#[test]
fn an_own_lease_left_behind_sets_a_wakeup_at_its_expiry() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    claim_run(&mut d, &view(10), "host", LEASE).unwrap();
    let expires = d.lease.as_ref().unwrap().expires_at;
    assert_eq!(next_wakeup([&d], &view(20)), Some(expires));
    assert!(matches!(
        readiness(&d, &view(expires)),
        Readiness::Ready(v) if v == ["j1"]
    ));
}

/// Texts agents append are bounded: artifacts and decisions fold their oldest lines past
/// MAX_MEMORY_TEXT, and only the newest MAX_NOTES notes are kept.
#[test]
fn appended_texts_and_notes_are_bounded() {
    let mut d = doc();
    let line = "x".repeat(100 * 1024);
    for i in 0..5 {
        let update = AssignmentUpdate {
            artifacts: Some(format!("{i}:{line}")),
            note: Some(format!("note {i}")),
            ..AssignmentUpdate::default()
        };
        update_assignment(&mut d, &update, Caller::Job("j"), &pm("p"), 10).unwrap();
    }
    assert!(
        d.artifacts.len() <= MAX_MEMORY_TEXT,
        "{}",
        d.artifacts.len()
    );
    assert!(d.artifacts.starts_with(FOLDED));
    assert!(
        d.artifacts.ends_with(&format!("4:{line}")),
        "the newest is kept"
    );
    for i in 5..(MAX_NOTES + 10) {
        let update = AssignmentUpdate {
            note: Some(format!("note {i}")),
            ..AssignmentUpdate::default()
        };
        update_assignment(&mut d, &update, Caller::Human, &pm("p"), 10).unwrap();
    }
    assert_eq!(d.notes.len(), MAX_NOTES);
    assert_eq!(
        d.notes.last().unwrap().text,
        format!("note {}", MAX_NOTES + 9)
    );
    // A human's text replaces, unfolded.
    let update = AssignmentUpdate {
        artifacts: Some("fresh".into()),
        ..AssignmentUpdate::default()
    };
    update_assignment(&mut d, &update, Caller::Human, &pm("p"), 10).unwrap();
    assert_eq!(d.artifacts, "fresh");
}

/// An agent's retried `wf update-assignment` (the same text again, after an ambiguous failure)
/// appends nothing twice.
#[test]
fn an_agents_repeated_append_is_not_doubled() {
    let mut d = doc();
    let update = AssignmentUpdate {
        artifacts: Some("built the parser".into()),
        note: Some("look at the lexer".into()),
        ..AssignmentUpdate::default()
    };
    for _ in 0..2 {
        update_assignment(&mut d, &update, Caller::Job("j"), &pm("p"), 10).unwrap();
    }
    assert_eq!(d.artifacts, "built the parser");
    assert_eq!(d.notes.len(), 1);
    let more = AssignmentUpdate {
        artifacts: Some("added tests".into()),
        ..AssignmentUpdate::default()
    };
    update_assignment(&mut d, &more, Caller::Job("j"), &pm("p"), 11).unwrap();
    assert_eq!(d.artifacts, "built the parser\nadded tests");
}

/// What an abandoned attempt spent (read from its transcript by the runner) is added once, by
/// the transition that ends the attempt — not by a claim that is refused, nor again later.
#[test]
fn an_abandoned_attempts_usage_is_recovered_once() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let old = LeaseView {
        now: 10,
        me: "old",
        exclusive: false,
    };
    claim_run(&mut d, &old, "h", LEASE).unwrap();
    let spent = Usage {
        input_tokens: 1000,
        output_tokens: 50,
        cost_usd: Some(0.25),
    };
    let recovered: Recovered = [(("j1".to_string(), 1), spent.clone())].into();
    // While the lease lives nothing is claimed, so nothing is added.
    let live = LeaseView {
        now: 20,
        me: "new",
        exclusive: false,
    };
    let mut copy = d.clone();
    assert!(claim(&mut copy, &live, "h", LEASE, &recovered).is_none());
    // The takeover adds the first attempt's usage, to the job and to the assignment.
    let later = LeaseView {
        now: 10 + LEASE,
        me: "new",
        exclusive: false,
    };
    let Some(Claimed::Run(_)) = claim(&mut d, &later, "h", LEASE, &recovered) else {
        panic!("no takeover");
    };
    assert_eq!((d.jobs[0].attempt, &d.jobs[0].usage), (2, &spent));
    assert_eq!(d.usage.cost_usd, Some(0.25));
    // Attempt 2 is abandoned too; settling it (the assignment was blocked meanwhile) adds only
    // what attempt 2 spent, whatever else the map holds.
    d.status = AssignmentStatus::Blocked;
    let mut both = recovered.clone();
    both.insert(("j1".to_string(), 2), spent.clone());
    let much_later = LeaseView {
        now: 10 + 3 * LEASE,
        me: "third",
        exclusive: false,
    };
    settle_dead_lease(&mut d, &much_later, &both).unwrap();
    assert_eq!(d.jobs[0].status, JobStatus::Pending);
    assert_eq!(d.usage.cost_usd, Some(0.5));
    assert_eq!(d.jobs[0].usage.input_tokens, 2000);
    // Nothing runs any more: nothing more is added.
    assert_eq!(
        settle_dead_lease(&mut d, &much_later, &both),
        Err(Unchanged)
    );
    assert_eq!(d.usage.cost_usd, Some(0.5));
}

/// A document whose first `finished` jobs are finished plans (attempt 1), followed by a
/// pending one.
fn long_history(finished: usize) -> Assignment {
    let mut d = doc();
    for i in 0..=finished {
        insert(&mut d, &format!("j{i:03}"), JobType::Plan);
    }
    for j in d.jobs.iter_mut().take(finished) {
        j.status = JobStatus::Complete;
        j.attempt = 1;
    }
    d
}

#[test]
fn the_oldest_finished_jobs_are_archived_in_whole_segments() {
    let mut d = long_history(ARCHIVE_SEGMENT + KEEP_FINISHED - 1);
    assert_eq!(next_segment(&d), None, "too few finished jobs");
    let mut d2 = long_history(ARCHIVE_SEGMENT + KEEP_FINISHED);
    let seg = next_segment(&d2).unwrap();
    assert_eq!(seg.jobs.len(), ARCHIVE_SEGMENT);
    assert!(seg.name.starts_with("0-"));
    // The encoded blob is the jobs, exactly.
    let back: Vec<crate::model::Job> = serde_json::from_slice(&seg.encode()).unwrap();
    assert_eq!(back, seg.jobs);
    archive_segment(&mut d2, &seg).unwrap();
    assert_eq!(d2.jobs.len(), KEEP_FINISHED + 1);
    assert_eq!(d2.jobs[0].id, format!("j{ARCHIVE_SEGMENT:03}"));
    assert_eq!(d2.archive.jobs, ARCHIVE_SEGMENT as u32);
    assert_eq!(d2.archive.started, ARCHIVE_SEGMENT as u32);
    assert_eq!(d2.required_schema_version(), 2);
    // Linking it again, or a segment the document no longer begins with, is refused.
    assert_eq!(archive_segment(&mut d2, &seg), Err(Unchanged));
    let stale = next_segment(&long_history(ARCHIVE_SEGMENT + KEEP_FINISHED)).unwrap();
    d.jobs[0].failure_detail = Some("changed".into());
    assert_eq!(archive_segment(&mut d, &stale), Err(Unchanged));
    // maxJobs still counts the archived jobs that started.
    d2.budget.max_jobs = Some(ARCHIVE_SEGMENT as u32 + KEEP_FINISHED as u32);
    let refused = claim(&mut d2, &view(5_000), "h", LEASE, &Recovered::new());
    let want = format!("{} jobs started", ARCHIVE_SEGMENT + KEEP_FINISHED);
    assert!(
        matches!(&refused, Some(Claimed::Blocked(r)) if r.contains(&want)),
        "{refused:?}"
    );
}

/// Review cycles are bounded (default 3): the fourth review job blocks the assignment for a
/// human instead of starting.
#[test]
fn a_fourth_review_blocks_the_assignment_for_a_human() {
    let mut d = doc();
    for i in 0..3 {
        insert(&mut d, &format!("r{i}"), JobType::Review);
        let r = d.jobs.last_mut().unwrap();
        r.status = JobStatus::Complete;
        r.attempt = 1;
    }
    insert(&mut d, "r3", JobType::Review);
    let refused = claim(&mut d, &view(5_000), "h", LEASE, &Recovered::new());
    assert!(
        matches!(&refused, Some(Claimed::Blocked(r)) if r.contains("3 review cycles, maxReviewCycles is 3")),
        "{refused:?}"
    );
    assert_eq!(d.status, AssignmentStatus::Blocked);
    // A larger budget lets it run.
    let mut d2 = d.clone();
    d2.status = AssignmentStatus::Active;
    d2.budget.max_review_cycles = Some(5);
    assert!(claim_run(&mut d2, &view(5_000), "h", LEASE).is_some());
}

#[test]
fn progress_is_written_only_by_the_lease_holder_of_that_attempt() {
    let mut d = doc();
    insert(&mut d, "j1", JobType::Plan);
    let c = claim_run(&mut d, &view(10), "h", LEASE).unwrap();
    let p = crate::model::JobProgress {
        attempt: 1,
        events: 3,
        tool_calls: 1,
        ..Default::default()
    };
    assert_eq!(
        note_progress(&mut d, c.epoch + 1, "j1", &p),
        Err(ChainError::Fenced(c.epoch + 1))
    );
    let stale = crate::model::JobProgress {
        attempt: 2,
        ..p.clone()
    };
    assert!(note_progress(&mut d, c.epoch, "j1", &stale).is_err());
    note_progress(&mut d, c.epoch, "j1", &p).unwrap();
    assert_eq!(d.jobs[0].progress.as_ref(), Some(&p));
    assert_eq!(d.required_schema_version(), 3);
    // Recorded, the job drops its counters and a late write is refused.
    record_attempt(
        &mut d,
        c.epoch,
        "j1",
        &report(Outcome::Complete),
        &pm("p"),
        20,
    )
    .unwrap();
    assert_eq!(d.jobs[0].progress, None);
    assert!(note_progress(&mut d, c.epoch, "j1", &p).is_err());
}
