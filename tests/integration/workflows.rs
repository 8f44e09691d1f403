//! Workflows end to end with the real binaries and the fake agent: a diamond runs its middle
//! tasks in parallel and the last only after both; a failed task under `block` stops what
//! depends on it; a review loop ends at its maximum and a missing verdict fails; a human gate
//! blocks until `wf approve`, whose note reaches the next task; a runner killed mid-DAG
//! resumes without running finished tasks again; bad files and parameters are refused.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{Assignment, AssignmentStatus, FailureReason, Job, JobStatus};
use wf_tests::{kill_pid, TestEnv};

use crate::{record_reliability, BINS};

const LONG: Duration = Duration::from_secs(120);

const DIAMOND: &str = r#"
workflow = "diamond"
version = 1
[[tasks]]
id = "a"
type = "plan"
instructions = "plan it"
[[tasks]]
id = "b"
type = "implement"
depends_on = ["a"]
instructions = "build it"
[[tasks]]
id = "c"
type = "uat"
depends_on = ["a"]
instructions = "try it"
on_failure = "block"
[[tasks]]
id = "d"
type = "document"
depends_on = ["b", "c"]
instructions = "document it"
"#;

/// A project with `.wf/workflows/<name>.toml` holding `text` and the fake agent on `script`.
fn project(name: &str, text: &str, script: Value) -> TestEnv {
    let env = TestEnv::new(&BINS, script, json!({}));
    let dir = env.root.join(".wf/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    env
}

/// A PM that completes after reviewing `last_type` and otherwise decides nothing (the plan
/// goes on).
fn pm_completing_after(last_type: &str) -> Value {
    json!([
        {"init": true},
        {"decide": {last_type: ["update-assignment", "--status", "complete"]}},
        {"result": "reviewed"}
    ])
}

fn ok(text: &str) -> Value {
    json!([{"init": true}, {"result": text}])
}

fn task_jobs<'a>(doc: &'a Assignment, task: &str) -> Vec<&'a Job> {
    doc.jobs
        .iter()
        .filter(|j| j.task.as_ref().is_some_and(|t| t.id == task))
        .collect()
}

fn only<'a>(doc: &'a Assignment, task: &str) -> &'a Job {
    let jobs = task_jobs(doc, task);
    assert_eq!(jobs.len(), 1, "task {task}: {jobs:?}");
    jobs[0]
}

#[test]
fn a_diamond_runs_b_and_c_in_parallel_and_d_only_after_both() {
    let mut env = project("diamond", DIAMOND, json!({}));
    let (w, records) = (env.work.clone(), env.work_path("records"));
    let f = |n: &str| w.join(n).display().to_string();
    // b and c each wait for the other to have started: only a parallel run gets through
    // quickly, and the records prove it.
    let script = json!({
        "plan": ok("planned"),
        "implement": [{"record": records}, {"writeFile": {"path": f("b.started"), "content": ""}},
                      {"waitFile": f("c.started")}, {"record": records}, {"init": true}, {"result": "built"}],
        "uat": [{"record": records}, {"writeFile": {"path": f("c.started"), "content": ""}},
                {"waitFile": f("b.started")}, {"record": records}, {"init": true}, {"result": "tried"}],
        "document": [{"record": records}, {"init": true}, {"result": "documented"}],
        "pm": pm_completing_after("document"),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let out = env.wf_ok(&["create", "--workflow", "diamond", "Ship the diamond"]);
    let aid = out.trim().to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Complete);
    for t in ["a", "b", "c", "d"] {
        let j = only(&doc, t);
        assert_eq!((j.status, j.attempt), (JobStatus::Complete, 1), "{t}");
    }
    let (b, c, d) = (only(&doc, "b"), only(&doc, "c"), only(&doc, "d"));
    assert!(
        b.group_id.is_some() && b.group_id == c.group_id,
        "b and c form one unit"
    );
    let recs = env.records("records");
    let at = |job: &str, n: usize| {
        recs.iter()
            .filter(|r| r["job"] == job)
            .nth(n)
            .and_then(|r| r["atUs"].as_u64())
            .unwrap_or_else(|| panic!("record {n} of {job}"))
    };
    assert!(
        at(&b.id, 0) < at(&c.id, 1) && at(&c.id, 0) < at(&b.id, 1),
        "b and c overlapped"
    );
    assert!(
        at(&d.id, 0) > at(&b.id, 1).max(at(&c.id, 1)),
        "d started after both ended"
    );
    assert!(d.started_at >= b.completed_at.max(c.completed_at));
    let w = doc.workflow.as_ref().expect("the workflow is recorded");
    assert_eq!(
        (w.name.as_str(), w.version, w.source.as_str()),
        ("diamond", 1, "project")
    );
}

#[test]
fn d_never_runs_when_c_failed_under_block() {
    let mut env = project("diamond", DIAMOND, json!({}));
    let script = json!({
        "plan": ok("planned"),
        "implement": ok("built"),
        "uat": [{"init": true}, {"text": "it breaks"}, {"exit": 3}],
        "document": ok("documented"),
        "pm": pm_completing_after("document"),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "--workflow", "diamond", "Ship the diamond"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(reason.contains("task `c` failed (exit"), "{reason}");
    assert_eq!(only(&doc, "c").status, JobStatus::Failed);
    let d = only(&doc, "d");
    assert_eq!((d.status, d.attempt), (JobStatus::Pending, 0));
    // A human resumes without fixing c: d still does not run; the claim blocks again.
    env.wf_ok(&["update-assignment", &aid, "--status", "active"]);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked
            && d.blocked_reason
                .as_deref()
                .is_some_and(|r| r.contains("waits for `c`"))
    });
    assert_eq!(only(&doc, "d").attempt, 0, "d never ran");
    assert!(!env.runner_log().contains("panicked"));
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
fn a_review_loop_ends_at_its_maximum_and_a_missing_verdict_is_a_failure() {
    let mut env = project("looped", LOOPED, json!({}));
    let prompts = env.work_path("prompts");
    let script = json!({
        "implement": [{"savePrompt": prompts}, {"init": true}, {"result": "built"}],
        // The review never says VERDICT: that is a fail, round after round.
        "review": ok("Looks plausible, but I did not check everything."),
        "document": ok("documented"),
        "pm": pm_completing_after("document"),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "--workflow", "looped", "Loop until reviewed"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let reviews = task_jobs(&doc, "review");
    assert_eq!(reviews.len(), 2, "max = 2 rounds");
    for r in &reviews {
        assert_eq!(r.status, JobStatus::Failed);
        assert_eq!(r.failure_reason, Some(FailureReason::Verdict));
        assert!(r
            .failure_detail
            .as_deref()
            .unwrap()
            .contains("a missing verdict counts as fail"));
    }
    assert_eq!(task_jobs(&doc, "implement").len(), 2);
    let document = only(&doc, "document");
    assert_eq!((document.status, document.attempt), (JobStatus::Pending, 0));
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(reason.contains("waits for `review`"), "{reason}");
    // Round 2's implement saw the failed review it answers.
    let second = task_jobs(&doc, "implement")[1];
    let prompt = std::fs::read_to_string(
        env.work
            .join("prompts")
            .join(format!("{}-1.prompt", second.id)),
    )
    .unwrap();
    assert!(
        prompt.contains("Looks plausible, but I did not check everything."),
        "{prompt}"
    );
    assert!(
        prompt.contains("build"),
        "the first round's context is reused"
    );
}

const GATED: &str = r#"
workflow = "gated"
version = 1
[params.db]
description = "the database"
default = "sqlite"
[[tasks]]
id = "plan"
type = "plan"
instructions = "plan for {{ params.db }}"
[[tasks]]
id = "approve-plan"
depends_on = ["plan"]
gate = { kind = "human", prompt = "Is the plan for {{ params.db }} right?" }
[[tasks]]
id = "build"
type = "implement"
depends_on = ["approve-plan"]
instructions = "build it"
"#;

#[test]
fn a_human_gate_blocks_and_wf_approve_passes_it_with_its_note() {
    let mut env = project("gated", GATED, json!({}));
    let prompts = env.work_path("prompts");
    let script = json!({
        "plan": ok("planned"),
        "implement": [{"savePrompt": prompts}, {"init": true}, {"result": "built"}],
        "pm": pm_completing_after("implement"),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env
        .wf_ok(&[
            "create",
            "--workflow",
            "gated",
            "--param",
            "db=postgres",
            "Store users",
        ])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(
        reason.starts_with("waiting at gate `approve-plan`: Is the plan for postgres right?"),
        "{reason}"
    );
    // Resuming does not pass a gate; an agent cannot approve.
    let resume = env.wf(&["update-assignment", &aid, "--status", "active"]);
    assert!(!resume.status.success());
    assert!(String::from_utf8_lossy(&resume.stderr).contains("wf approve"));
    let gate = only(&doc, "approve-plan").id.clone();
    let as_agent = env
        .wf_cmd(&["approve", &aid, "--note", "sure"])
        .env("WF_JOB_ID", &gate)
        .output()
        .unwrap();
    assert!(!as_agent.status.success());
    assert!(String::from_utf8_lossy(&as_agent.stderr).contains("only a human passes a gate"));
    env.wf_ok(&["approve", &aid, "--note", "Use postgres 16, no ORM"]);
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Complete);
    let build = only(&doc, "build");
    let prompt = std::fs::read_to_string(
        env.work
            .join("prompts")
            .join(format!("{}-1.prompt", build.id)),
    )
    .unwrap();
    assert!(prompt.contains("Use postgres 16, no ORM"), "{prompt}");
    // No PM ran for the gate itself.
    let pms = doc
        .jobs
        .iter()
        .filter(|j| j.job_type == wf_core::model::JobType::Pm)
        .count();
    assert_eq!(pms, 2, "one after plan, one after build");
}

const CHAIN: &str = r#"
workflow = "chain"
version = 1
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
type = "document"
depends_on = ["b"]
instructions = "c"
"#;

#[test]
fn a_runner_killed_mid_dag_resumes_without_rerunning_finished_tasks() {
    let mut env = project("chain", CHAIN, json!({}));
    let (records, gate) = (env.work_path("records"), env.work_path("go"));
    let script = json!({
        "plan": [{"record": records}, {"init": true}, {"result": "planned"}],
        "implement": [{"record": records}, {"waitFile": gate}, {"init": true}, {"result": "built"}],
        "document": [{"record": records}, {"init": true}, {"result": "documented"}],
        "pm": [{"record": records}, {"init": true},
               {"decide": {"document": ["update-assignment", "--status", "complete"]}}, {"result": "ok"}],
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "--workflow", "chain", "Run a chain"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        task_jobs(d, "b")
            .first()
            .is_some_and(|b| b.status == JobStatus::Running)
    });
    let b = only(&doc, "b").id.clone();
    env.wait_records("records", 3, LONG);
    let killed = Instant::now();
    kill_pid(env.runner_pid(), libc::SIGKILL);
    env.wait_runner(LONG);
    std::fs::write(&gate, "").unwrap();
    env.start_runner();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Complete);
    let recovery = killed.elapsed();
    assert_eq!(
        only(&doc, "a").attempt,
        1,
        "a finished before the kill and never ran again"
    );
    assert_eq!(
        only(&doc, "b").attempt,
        2,
        "b was interrupted and ran once more"
    );
    assert_eq!(only(&doc, "c").attempt, 1);
    let recs = env.records("records");
    let runs = |job: &str| recs.iter().filter(|r| r["job"] == job).count();
    assert_eq!(runs(&only(&doc, "a").id), 1);
    assert_eq!(runs(&b), 2);
    record_reliability(
        "a_runner_killed_mid_dag_resumes_without_rerunning_finished_tasks",
        "kill -9 of the runner while the second task of a three-task workflow runs",
        "the restarted runner takes the dead lease over and runs the interrupted task again; the finished task stays finished, the last runs once",
        1,
        "nothing: task a ran once, b twice (the interrupted attempt and its re-run), c once",
        recovery,
    );
}

#[test]
fn bad_workflow_files_and_parameters_are_refused_naming_the_problem() {
    let env = project("diamond", DIAMOND, json!({}));
    let bad = env.work.join("bad.toml");
    std::fs::write(
        &bad,
        DIAMOND.replace(
            "depends_on = [\"a\"]\ninstructions = \"build it\"",
            "depends_on = [\"d\"]\ninstructions = \"build it\"",
        ),
    )
    .unwrap();
    let out = env.wf(&["workflow", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle: b → d → b"), "{err}");
    let good = env.wf_ok(&[
        "workflow",
        "check",
        env.root
            .join(".wf/workflows/diamond.toml")
            .to_str()
            .unwrap(),
    ]);
    assert!(good.contains("is valid: 4 tasks"), "{good}");
    let unknown = env.wf(&[
        "create",
        "--workflow",
        "diamond",
        "--param",
        "colour=red",
        "x",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown parameter `colour`"));
    let missing = env.wf(&["create", "--workflow", "nope", "x"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such workflow"));
    // A dry run prints the plan and stores nothing.
    let plan = env.wf_ok(&["create", "--workflow", "diamond", "--dry-run", "Try"]);
    assert!(
        plan.contains("2 ∥") && plan.contains("--- task `d` (document) ---"),
        "{plan}"
    );
    assert_eq!(env.wf_json(&["assignments"]), json!([]));
    let list = env.wf_ok(&["workflow", "list"]);
    assert!(
        list.contains("diamond") && list.contains("project") && list.contains("release-notes"),
        "{list}"
    );
}

const POLLED: &str = r#"
workflow = "polled"
version = 1
[[tasks]]
id = "build"
type = "implement"
instructions = "build"
[[tasks]]
id = "ci"
depends_on = ["build"]
gate = { kind = "command", run = "test -f ci-green", every = "200ms", timeout = "60s" }
[[tasks]]
id = "ship"
type = "document"
depends_on = ["ci"]
instructions = "ship"
[[tasks]]
id = "never"
depends_on = ["ship"]
gate = { kind = "command", run = "exit 1", every = "100ms", timeout = "500ms" }
on_failure = "block"
"#;

#[test]
fn a_command_gate_waits_for_its_command_and_fails_at_its_timeout() {
    let mut env = project("polled", POLLED, json!({}));
    let script = json!({
        "implement": ok("built"),
        "document": ok("shipped"),
        "pm": [{"init": true}, {"result": "ok"}],
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "--workflow", "polled", "Ship when CI is green"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        task_jobs(d, "ci")
            .first()
            .is_some_and(|j| j.status == JobStatus::Running)
    });
    assert_eq!(only(&doc, "ship").attempt, 0, "ship waits for the gate");
    std::fs::write(env.root.join("ci-green"), "").unwrap();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let ci = only(&doc, "ci");
    assert_eq!((ci.status, ci.attempt), (JobStatus::Complete, 1));
    assert_eq!(only(&doc, "ship").status, JobStatus::Complete);
    let never = only(&doc, "never");
    assert_eq!(
        (never.status, never.failure_reason),
        (JobStatus::Failed, Some(FailureReason::Timeout))
    );
    assert!(
        never
            .failure_detail
            .as_deref()
            .unwrap()
            .contains("`exit 1` did not succeed"),
        "{never:?}"
    );
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(reason.contains("task `never` failed (timeout"), "{reason}");
    // No PM reviewed the passing gate: one after build, one after ship.
    let pms = doc
        .jobs
        .iter()
        .filter(|j| j.job_type == wf_core::model::JobType::Pm)
        .count();
    assert_eq!(pms, 2);
}
