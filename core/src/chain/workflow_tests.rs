//! State-transition tests of workflow tasks in the chain: dependencies, failure policies,
//! gates, approve and skip, retry policies, loop rounds, and what `wf retry` re-runs.

use std::collections::BTreeMap;

use super::*;
use crate::model::{Assignment, AssignmentStatus, FailureReason, JobStatus, JobType, Usage};
use crate::workflow::{self, Source};

const LEASE: u64 = 30_000;

fn view(now: u64) -> LeaseView<'static> {
    LeaseView {
        now,
        me: "r1",
        exclusive: true,
    }
}

fn pm(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        job_type: JobType::Pm,
        harness: "claude".into(),
        model: None,
        has_context: false,
        context_hash: None,
    }
}

fn report(outcome: Outcome) -> AttemptReport {
    let failed = matches!(outcome, Outcome::Failed(_));
    AttemptReport {
        outcome,
        detail: Some("exit code 1".into()).filter(|_| failed),
        session_id: None,
        usage: Usage::default(),
        has_result: true,
        exit_code: Some(0),
        commits: None,
        checks: Vec::new(),
    }
}

/// A new assignment holding the workflow in `text`, instantiated with `params`.
fn assignment(text: &str, params: &[(&str, &str)]) -> Assignment {
    let wf = workflow::parse(text, "t.toml", Source::Builtin).unwrap();
    let given: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let plan = workflow::instantiate(&wf, &given, Some("ship it")).unwrap();
    let mut doc = new_assignment("a1".into(), "ns", plan.north_star.clone(), 10, false, 1_000);
    let units: Vec<Vec<TaskJob>> = plan
        .units
        .iter()
        .map(|u| {
            u.iter()
                .map(|t| TaskJob {
                    job: NewJob {
                        id: format!("j-{}", t.spec.id),
                        job_type: t.job_type,
                        harness: t.harness.clone().unwrap_or_else(|| "claude".into()),
                        model: None,
                        has_context: true,
                        context_hash: None,
                    },
                    spec: t.spec.clone(),
                })
                .collect()
        })
        .collect();
    let groups: Vec<String> = (0..units.len()).map(|i| format!("g{i}")).collect();
    instantiate(&mut doc, plan.workflow, &units, &groups, 1_000).unwrap();
    check_invariants(&doc).unwrap();
    doc
}

/// What the next claim does: the job ids it runs, or the reason it blocked.
fn claim_now(doc: &mut Assignment) -> Result<Claim, String> {
    match claim(doc, &view(2_000), "h", LEASE, &Recovered::new()) {
        Some(Claimed::Run(c)) => Ok(c),
        Some(Claimed::Blocked(r)) => Err(r),
        None => Err("nothing to claim".into()),
    }
}

/// Claims the next unit and records `outcomes` for its jobs (by task id, default complete);
/// returns the claimed job ids.
fn run(doc: &mut Assignment, outcomes: &[(&str, Outcome)], pm_id: &str) -> Vec<String> {
    let c = claim_now(doc).unwrap_or_else(|r| panic!("not claimable: {r}"));
    for id in &c.job_ids {
        let task = doc.job(id).and_then(|j| j.task.clone()).map(|t| t.id);
        let outcome = outcomes
            .iter()
            .find(|(t, _)| Some(*t) == task.as_deref())
            .map_or(Outcome::Complete, |(_, o)| o.clone());
        record_attempt(doc, c.epoch, id, &report(outcome), &pm(pm_id), 3_000).unwrap();
    }
    check_invariants(doc).unwrap();
    c.job_ids
}

fn status_of(doc: &Assignment, task: &str) -> JobStatus {
    task_job(doc, task).unwrap().status
}

const DIAMOND: &str = r#"
workflow = "diamond"
version = 1
[params.fail]
default = "block"
[[tasks]]
id = "a"
type = "plan"
instructions = "a"
[[tasks]]
id = "b"
type = "implement"
depends_on = ["a"]
instructions = "b"
[[tasks]]
id = "c"
type = "uat"
depends_on = ["a"]
instructions = "c"
on_failure = "block"
[[tasks]]
id = "d"
type = "document"
depends_on = ["b", "c"]
instructions = "d"
"#;

#[test]
fn a_diamond_runs_b_and_c_together_and_d_after_both() {
    let mut doc = assignment(DIAMOND, &[]);
    assert_eq!(run(&mut doc, &[], "pm1"), ["j-a"]);
    // The PM reviews a and decides nothing: the plan goes on.
    assert_eq!(run(&mut doc, &[], "x"), ["pm1"]);
    assert_eq!(
        run(&mut doc, &[], "pm2"),
        ["j-b", "j-c"],
        "b and c in one unit"
    );
    assert_eq!(run(&mut doc, &[], "x"), ["pm2"]);
    assert_eq!(run(&mut doc, &[], "pm3"), ["j-d"]);
}

#[test]
fn d_never_runs_when_c_failed_under_block() {
    let mut doc = assignment(DIAMOND, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("c", Outcome::Failed(FailureReason::Exit))],
        "pm2",
    );
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(
        reason.contains("task `c` failed (exit: exit code 1)"),
        "{reason}"
    );
    assert!(doc.job("pm2").is_none(), "a block asks a human, not the PM");
    assert!(claim_now(&mut doc).is_err());
    // A human resumes without fixing anything: d still does not start.
    let resume = AssignmentUpdate {
        status: Some(AssignmentStatus::Active),
        ..Default::default()
    };
    update_assignment(&mut doc, &resume, Caller::Human, &pm("pm9"), 4_000).unwrap();
    let held = claim_now(&mut doc).unwrap_err();
    assert!(
        held.contains("task `d` (job j-d) waits for `c` (job j-c), which failed"),
        "{held}"
    );
    assert_eq!(status_of(&doc, "d"), JobStatus::Pending);
    // `wf retry` of c runs it, then d.
    retry(&mut doc, "j-c", 5_000).unwrap();
    assert_eq!(run(&mut doc, &[], "pm3"), ["j-c"]);
    run(&mut doc, &[], "x");
    assert_eq!(run(&mut doc, &[], "pm4"), ["j-d"]);
}

#[test]
fn a_failed_dependency_under_pm_goes_to_the_pm_and_holds_what_depends_on_it() {
    let text = DIAMOND.replace("on_failure = \"block\"", "");
    let mut doc = assignment(&text, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("c", Outcome::Failed(FailureReason::Exit))],
        "pm2",
    );
    assert_eq!(doc.status, AssignmentStatus::Active);
    assert!(doc.job("pm2").is_some(), "the PM decides");
    run(&mut doc, &[], "x");
    // It decided nothing: d must not run, so the claim blocks with the reason.
    let reason = claim_now(&mut doc).unwrap_err();
    assert!(reason.contains("waits for `c`"), "{reason}");
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    // Skipping c lets d run.
    let resume = AssignmentUpdate {
        status: Some(AssignmentStatus::Active),
        ..Default::default()
    };
    update_assignment(&mut doc, &resume, Caller::Human, &pm("pm9"), 4_000).unwrap();
    assert!(
        skip_job(&mut doc, "j-c", "not needed", true, 5_000).is_err(),
        "c is failed, not pending"
    );
}

#[test]
fn skip_lets_dependents_run_and_abort_skips_everything() {
    let skip = DIAMOND.replace("on_failure = \"block\"", "on_failure = \"skip\"");
    let mut doc = assignment(&skip, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("c", Outcome::Failed(FailureReason::Exit))],
        "pm2",
    );
    run(&mut doc, &[], "x");
    assert_eq!(
        run(&mut doc, &[], "pm3"),
        ["j-d"],
        "a skipped failure releases d"
    );

    let abort = DIAMOND.replace("on_failure = \"block\"", "on_failure = \"abort\"");
    let mut doc = assignment(&abort, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("c", Outcome::Failed(FailureReason::Exit))],
        "pm2",
    );
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    assert!(doc
        .blocked_reason
        .as_deref()
        .unwrap()
        .starts_with("workflow aborted: task `c` failed"));
    assert_eq!(status_of(&doc, "d"), JobStatus::Skipped);
}

const GATED: &str = r#"
workflow = "gated"
version = 1
[[tasks]]
id = "plan"
type = "plan"
instructions = "plan"
[[tasks]]
id = "approve"
depends_on = ["plan"]
gate = { kind = "human", prompt = "Is the plan good?" }
[[tasks]]
id = "build"
type = "implement"
depends_on = ["approve"]
instructions = "build"
"#;

#[test]
fn a_human_gate_blocks_and_only_approve_passes_it() {
    let mut doc = assignment(GATED, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    let reason = claim_now(&mut doc).unwrap_err();
    assert!(
        reason.starts_with(
            "waiting at gate `approve`: Is the plan good? — pass it with `wf approve a1"
        ),
        "{reason}"
    );
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    let resume = AssignmentUpdate {
        status: Some(AssignmentStatus::Active),
        ..Default::default()
    };
    let refused = update_assignment(&mut doc, &resume, Caller::Job("x"), &pm("pm9"), 4_000)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("waits at a human gate"), "{refused}");
    assert!(
        skip_job(&mut doc, "j-approve", "go on", true, 4_000).is_err(),
        "a PM cannot skip a gate"
    );
    let gate = approve(&mut doc, Some("yes, but keep it small"), true, 5_000).unwrap();
    assert_eq!(gate, "j-approve");
    assert_eq!(doc.status, AssignmentStatus::Active);
    assert_eq!(
        doc.notes.last().unwrap().text,
        "gate `approve` approved: yes, but keep it small"
    );
    assert!(
        approve(&mut doc, None, false, 5_000).is_err(),
        "nothing waits now"
    );
    // No PM after a gate: the next task runs, and sees the gate's note as a result.
    assert_eq!(run(&mut doc, &[], "pm2"), ["j-build"]);
    let build = doc.job("j-build").unwrap().clone();
    let prev: Vec<&str> = crate::prompt::previous_jobs(&doc, &build)
        .iter()
        .map(|j| j.id.as_str())
        .collect();
    assert_eq!(prev, ["j-approve"]);
}

const LOOPED: &str = r#"
workflow = "looped"
version = 1
[[tasks]]
id = "implement"
type = "implement"
instructions = "build"
[[tasks]]
id = "review"
type = "review"
depends_on = ["implement"]
instructions = "review"
verdict = true
loop = { from = "implement", max = 2 }
[[tasks]]
id = "document"
type = "document"
depends_on = ["review"]
instructions = "document"
"#;

#[test]
fn a_failed_verdict_runs_the_loop_again_up_to_its_maximum() {
    let mut doc = assignment(LOOPED, &[]);
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("review", Outcome::Failed(FailureReason::Verdict))],
        "pm2",
    );
    // The PM first, then round 2: implement answering the failed review, then review.
    let order: Vec<String> = doc
        .jobs
        .iter()
        .map(|j| match &j.task {
            Some(t) => format!("{}{}", t.id, t.round),
            None => j.id.clone(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "implement1",
            "pm1",
            "review1",
            "pm2",
            "implement2",
            "review2",
            "document1"
        ]
    );
    let second = task_job(&doc, "implement").unwrap().clone();
    assert_eq!(
        second.task.as_ref().unwrap().feedback.as_deref(),
        Some("j-review")
    );
    assert_eq!(
        second.task.as_ref().unwrap().context_job.as_deref(),
        Some("j-implement")
    );
    run(&mut doc, &[], "x");
    run(&mut doc, &[], "pm3");
    run(&mut doc, &[], "x");
    // Round 2 fails too: the maximum is reached, so the PM decides (on_failure = pm) and the
    // document task waits for a review that passed.
    run(
        &mut doc,
        &[("review", Outcome::Failed(FailureReason::Verdict))],
        "pm4",
    );
    assert_eq!(
        doc.jobs
            .iter()
            .filter(|j| j.job_type == JobType::Review)
            .count(),
        2
    );
    assert!(doc.job("pm4").is_some());
    run(&mut doc, &[], "x");
    let reason = claim_now(&mut doc).unwrap_err();
    assert!(
        reason.contains("task `document`") && reason.contains("waits for `review`"),
        "{reason}"
    );
}

#[test]
fn a_retry_policy_runs_a_task_again_and_then_fails_it() {
    let text = LOOPED.replace(
        "instructions = \"build\"",
        "instructions = \"build\"\nretry = { attempts = 2, on = [\"exit\"], backoff = \"1s\" }",
    );
    let mut doc = assignment(&text, &[]);
    run(
        &mut doc,
        &[("implement", Outcome::Failed(FailureReason::Exit))],
        "pm1",
    );
    let job = task_job(&doc, "implement").unwrap();
    assert_eq!(job.status, JobStatus::WaitingRetry);
    assert_eq!(job.retry_after, Some(3_000 + 1_000));
    assert!(doc.job("pm1").is_none(), "no PM while the task is retried");
    let c = match claim(&mut doc, &view(4_000), "h", LEASE, &Recovered::new()) {
        Some(Claimed::Run(c)) => c,
        other => panic!("{other:?}"),
    };
    record_attempt(
        &mut doc,
        c.epoch,
        "j-implement",
        &report(Outcome::Failed(FailureReason::Exit)),
        &pm("pm1"),
        5_000,
    )
    .unwrap();
    assert_eq!(status_of(&doc, "implement"), JobStatus::Failed);
    assert!(doc.job("pm1").is_some());
}

#[test]
fn completing_skips_the_rest_and_retry_reruns_what_depends_on_the_task() {
    let mut doc = assignment(
        &DIAMOND.replace("on_failure = \"block\"", "on_failure = \"skip\""),
        &[],
    );
    run(&mut doc, &[], "pm1");
    run(&mut doc, &[], "x");
    run(
        &mut doc,
        &[("c", Outcome::Failed(FailureReason::Exit))],
        "pm2",
    );
    run(&mut doc, &[], "x");
    run(&mut doc, &[], "pm3");
    assert_eq!(status_of(&doc, "d"), JobStatus::Complete);
    // c is retried: d ran without it, so it runs again after it.
    retry(&mut doc, "j-c", 6_000).unwrap();
    assert_eq!(status_of(&doc, "d"), JobStatus::Pending);
    assert_eq!(
        status_of(&doc, "b"),
        JobStatus::Complete,
        "b does not depend on c"
    );

    let mut doc = assignment(DIAMOND, &[]);
    run(&mut doc, &[], "pm1");
    let done = AssignmentUpdate {
        status: Some(AssignmentStatus::Complete),
        ..Default::default()
    };
    update_assignment(&mut doc, &done, Caller::Job("pm1"), &pm("x"), 4_000).unwrap();
    for t in ["b", "c", "d"] {
        assert_eq!(status_of(&doc, t), JobStatus::Skipped, "{t}");
    }
    assert!(
        doc.decisions
            .contains("planned tasks left unrun: `b`, `c`, `d`"),
        "{}",
        doc.decisions
    );
    assert_eq!(doc.required_schema_version(), 5);
}
