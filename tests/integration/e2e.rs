//! The whole loop with the real `wf-runner` and `wf` binaries and the fake agent.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, FailureReason, JobStatus, JobType};
use wf_tests::{alive, pids_in, wait_gone, TestEnv};

use crate::{fixture, record_reliability, BINS};

const LONG: Duration = Duration::from_secs(60);

/// A PM that inserts implement after a plan, completes after an implement, blocks on failure.
fn deciding_pm(env_work: &impl Fn(&str) -> String) -> Value {
    json!([
        {"record": env_work("records")},
        {"savePrompt": env_work("prompts")},
        {"init": true},
        {"decide": {
            "plan": ["insert-job", "--type", "implement", "--context", "build what the plan says"],
            "implement": ["update-assignment", "--status", "complete"],
            "failed": ["update-assignment", "--status", "blocked", "--reason", "the job failed"]
        }},
        {"result": "decided"}
    ])
}

fn types(doc: &wf_core::model::Assignment) -> Vec<JobType> {
    doc.jobs.iter().map(|j| j.job_type).collect()
}

fn prompt_of(env: &TestEnv, job: &str) -> String {
    std::fs::read_to_string(env.work.join("prompts").join(format!("{job}-1.prompt")))
        .expect("saved prompt")
}

#[test]
// Long: one scenario from the first job to the last, checked at every step.
fn the_full_loop_plan_pm_implement_pm_complete() {
    // The script names paths inside the env's work dir: build the env, then the script.
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let w = |name: &str| work.join(name).display().to_string();
    let script = json!({
        "plan": [{"record": w("records")}, {"savePrompt": w("prompts")}, {"replay": fixture("tool_write.jsonl")}],
        "implement": [{"record": w("records")}, {"replay": fixture("text.jsonl")}],
        "pm": deciding_pm(&w),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();

    let aid = env.create("Write hello.txt with a greeting");
    let plan_id = env
        .wf_ok(&[
            "insert-job",
            &aid,
            "--type",
            "plan",
            "--context",
            "plan the greeting",
        ])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });

    assert_eq!(
        types(&doc),
        [JobType::Plan, JobType::Pm, JobType::Implement, JobType::Pm]
    );
    assert!(
        doc.jobs
            .iter()
            .all(|j| j.status == JobStatus::Complete && j.attempt == 1),
        "{doc:#?}"
    );
    assert_eq!(doc.jobs[0].id, plan_id);
    assert_eq!(doc.jobs[1].reviews, vec![plan_id.clone()]);
    assert_eq!(
        doc.jobs[2].inserted_by.as_deref(),
        Some(doc.jobs[1].id.as_str())
    );
    assert_eq!(doc.jobs[3].reviews, vec![doc.jobs[2].id.clone()]);
    assert_eq!(doc.pm_rounds, 2);

    // Result, session, usage and cost of the replayed Claude run are recorded.
    let detail = env.wf_json(&["job", &plan_id]);
    assert_eq!(
        detail["result"],
        "Done: I wrote hello.txt containing 'hello from claude'."
    );
    assert_eq!(detail["context"], "plan the greeting");
    assert_eq!(
        detail["job"]["sessionId"],
        "0116a5ac-f16b-40e1-a1c7-aa1666a9a2cc"
    );
    assert_eq!(detail["job"]["usage"]["inputTokens"], 260);
    assert!((detail["job"]["usage"]["costUsd"].as_f64().unwrap() - 0.00255).abs() < 1e-9);

    // The raw transcript is kept on disk.
    let transcript = env
        .root
        .join(".wf/transcripts")
        .join(&aid)
        .join(format!("{plan_id}-1.jsonl"));
    let recorded = std::fs::read_to_string(&transcript).unwrap();
    assert_eq!(
        recorded,
        std::fs::read_to_string(fixture("tool_write.jsonl")).unwrap()
    );

    // The agents got the environment of DESIGN §4 and Claude's flags.
    let records = env.records("records");
    let plan = records.iter().find(|r| r["type"] == "plan").unwrap();
    assert_eq!(plan["assignment"], aid.as_str());
    assert_eq!(plan["job"], plan_id.as_str());
    assert_eq!(plan["namespace"], "test");
    assert_eq!(
        plan["config"],
        env.root.join(".wf/config.json").display().to_string()
    );
    assert_eq!(
        Path::new(plan["pathFirst"].as_str().unwrap()),
        std::fs::canonicalize(&env.bin).unwrap()
    );
    assert_eq!(Path::new(plan["cwd"].as_str().unwrap()), env.root);
    let args: Vec<&str> = plan["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        &args[..5],
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode"
        ]
    );
    assert_eq!(records.iter().filter(|r| r["type"] == "pm").count(), 2);

    // The PM was shown the plan's result and told how to decide.
    let pm_prompt = prompt_of(&env, &doc.jobs[1].id);
    assert!(pm_prompt.contains("Done: I wrote hello.txt"), "{pm_prompt}");
    assert!(pm_prompt.contains("wf insert-job --type"));
    assert!(pm_prompt.contains("Write hello.txt with a greeting"));
    let plan_prompt = prompt_of(&env, &plan_id);
    assert!(plan_prompt.contains("plan the greeting"));

    let queue = env.wf_json(&["queue"]);
    assert_eq!(queue["assignments"], json!([]));
}

#[test]
fn a_failed_job_goes_to_the_pm_with_its_reason() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let w = |name: &str| work.join(name).display().to_string();
    let script = json!({
        "implement": [{"init": true}, {"text": "starting"}, {"exit": 3}],
        "pm": deciding_pm(&w),
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env.create("Break something");
    env.wf_ok(&["insert-job", &aid, "--type", "implement"]);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked && d.lease.is_none()
    });
    assert_eq!(types(&doc), [JobType::Implement, JobType::Pm]);
    let failed = &doc.jobs[0];
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.failure_reason, Some(FailureReason::Exit));
    assert_eq!(failed.exit_code, Some(3));
    assert!(failed
        .failure_detail
        .as_deref()
        .unwrap()
        .contains("exit code 3 without a result event"));
    assert_eq!(doc.blocked_reason.as_deref(), Some("the job failed"));
    let prompt = prompt_of(&env, &doc.jobs[1].id);
    assert!(
        prompt.contains("FAILED (exit): ended with exit code 3"),
        "{prompt}"
    );
    assert!(prompt.contains("A job you are reviewing **failed**"));
    // The partial output reaches the PM too.
    assert!(prompt.contains("starting"));
}

#[test]
fn a_silent_pm_is_reminded_once_then_the_assignment_blocks() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let w = |name: &str| work.join(name).display().to_string();
    let script = json!({
        "plan": [{"replay": fixture("text.jsonl")}],
        "pm": [{"savePrompt": w("prompts")}, {"init": true}, {"result": "I think we should implement next."}],
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let aid = env.create("Plan only");
    env.wf_ok(&["insert-job", &aid, "--type", "plan"]);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked && d.lease.is_none()
    });
    assert_eq!(types(&doc), [JobType::Plan, JobType::Pm, JobType::Pm]);
    assert_eq!(doc.blocked_reason.as_deref(), Some("PM made no decision"));
    assert!(!doc.jobs[1].pm_reminder);
    assert!(doc.jobs[2].pm_reminder);
    assert!(!prompt_of(&env, &doc.jobs[1].id).contains("ended without a decision"));
    assert!(prompt_of(&env, &doc.jobs[2].id).contains("ended without a decision"));

    // A human resumes it with a note: a PM runs again and sees the note.
    std::fs::write(
        env.work.join("script.json"),
        json!({"pm": [{"savePrompt": w("prompts")}, {"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]}).to_string(),
    )
    .unwrap();
    env.wf_ok(&[
        "update-assignment",
        &aid,
        "--status",
        "active",
        "--note",
        "just finish it",
    ]);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    assert_eq!(doc.jobs.len(), 4);
    assert!(prompt_of(&env, &doc.jobs[3].id).contains("just finish it"));
}

#[test]
fn twenty_concurrent_inserts_are_all_kept_in_commit_order() {
    let mut env = TestEnv::new(
        &BINS,
        json!({"plan": [{"init": true}, {"hang": true}]}),
        json!({"leaseMs": 600, "killGraceMs": 200}),
    );
    env.start_runner();
    let aid = env.create("Contention");
    env.wf_ok(&["insert-job", &aid, "--type", "plan"]);
    // The plan job runs (and its lease is renewed every 200 ms) while 20 processes insert.
    env.wait_for(&aid, LONG, |d| {
        d.jobs
            .first()
            .is_some_and(|j| j.status == JobStatus::Running)
    });
    let children: Vec<_> = (0..20)
        .map(|i| {
            env.wf_cmd(&[
                "insert-job",
                &aid,
                "--type",
                "review",
                "--context",
                &format!("n{i}"),
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut acked: Vec<(u64, String)> = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        acked.push((
            v["version"].as_u64().unwrap(),
            v["jobs"][0]["id"].as_str().unwrap().to_string(),
        ));
    }
    acked.sort();
    let doc = env.assignment(&aid);
    let chain: Vec<String> = doc.jobs.iter().skip(1).map(|j| j.id.clone()).collect();
    let expected: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        chain, expected,
        "every insert present, in the order of its commit"
    );
    assert_eq!(doc.jobs[0].status, JobStatus::Running);
}

#[test]
// Long: one fault scenario: the kill, the writes around it, the restart and the recount.
fn kill_9_of_the_runner_loses_nothing_and_reruns_the_interrupted_job() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let w = |name: &str| work.join(name).display().to_string();
    let script = json!({
        "plan": {"byAttempt": [
            [{"record": w("records")}, {"grandchild": w("grandchildren")}, {"init": true}, {"hang": true}],
            [{"record": w("records")}, {"replay": fixture("text.jsonl")}]
        ]},
        "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "done"}],
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();

    let a = env.create("Survive a crash");
    let b = env.create("Collect writes");
    env.wf_ok(&[
        "update-assignment",
        &b,
        "--status",
        "blocked",
        "--reason",
        "only a write target",
    ]);
    env.wf_ok(&["insert-job", &a, "--type", "plan"]);
    let deadline = Instant::now() + LONG;
    while env.records("records").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent never started:\n{}",
            env.runner_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_pid = env.records("records")[0]["pid"].as_u64().unwrap() as u32;

    // Writers keep inserting jobs into B while the runner is killed; every acknowledged insert
    // must survive.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let cmd_env = (env.bin.join("wf"), env.root.clone(), b.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let out = std::process::Command::new(&cmd_env.0)
                    .args([
                        "insert-job",
                        &cmd_env.2,
                        "--type",
                        "review",
                        "--context",
                        &format!("w{i}"),
                        "--json",
                    ])
                    .current_dir(&cmd_env.1)
                    .env_remove("WF_ASSIGNMENT_ID")
                    .env_remove("WF_JOB_ID")
                    .output()
                    .unwrap();
                if out.status.success() {
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .push(v["jobs"][0]["id"].as_str().unwrap().to_string());
                }
            }
        })
    };
    while acked.lock().unwrap().len() < 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The guardian would kill the grandchild the moment the runner dies (tested in
    // faults::kill_9_of_the_runner_takes_its_agents_escaped_children_with_it); here it dies
    // first, as it might under the OOM killer, so that the second line of defence, the
    // restart's reaper, is what is tested.
    let guardian = wf_tests::guardian_pid(env.runner_pid()).expect("the runner's guardian");
    wf_tests::kill_pid(guardian, libc::SIGKILL);
    assert!(wait_gone(guardian, Duration::from_secs(5)));
    env.signal_runner(libc::SIGKILL);
    let before_restart = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < before_restart + 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // The agent died with its runner; with the guardian gone, the grandchild it left is still
    // there until a runner of this store starts again and reaps it.
    assert!(
        wait_gone(agent_pid, Duration::from_secs(10)),
        "the agent outlived its runner"
    );
    let grandchildren = pids_in(&env.work.join("grandchildren"));
    assert_eq!(grandchildren.len(), 1);
    assert!(grandchildren.iter().all(|p| alive(*p)));

    let restarted = Instant::now();
    env.start_runner();
    for pid in &grandchildren {
        assert!(
            wait_gone(*pid, Duration::from_secs(10)),
            "orphan {pid} of the dead runner survived the restart"
        );
    }
    let doc = env.wait_for(&a, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    assert_eq!(doc.jobs[0].attempt, 2, "the interrupted job ran again");
    let attempts: Vec<String> = env
        .records("records")
        .iter()
        .map(|r| r["attempt"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["1", "2"]);

    let stored: HashMap<String, ()> = env
        .assignment(&b)
        .jobs
        .into_iter()
        .map(|j| (j.id, ()))
        .collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 10);
    for id in acked.iter() {
        assert!(stored.contains_key(id), "acknowledged insert {id} was lost");
    }
    record_reliability(
        "kill_9_of_the_runner_loses_nothing_and_reruns_the_interrupted_job",
        &format!("kill -9 of the runner (sled) during a job and during {} concurrent `wf insert-job` writes", acked.len()),
        "the agent dies with the runner (PDEATHSIG); wf falls back to the store; the restart reaps the orphaned grandchild and reruns the job",
        1,
        &format!("nothing: {n} of {n} acknowledged inserts present; the job ran again (attempt 2) and completed", n = acked.len()),
        restarted.elapsed(),
    );
}

#[test]
fn a_runner_waits_for_a_cli_that_holds_the_store() {
    let mut env = TestEnv::new(
        &BINS,
        json!({"plan": [{"replay": fixture("text.jsonl")}], "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]}),
        json!({}),
    );
    let aid = env.create("Wait for the lock");
    // With no runner, wf opens the store itself; this one holds it while it waits for stdin.
    let mut holder = env
        .wf_cmd(&["insert-job", &aid, "--type", "plan", "--context-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the holder open the store before the runner starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.root.join(".wf/db/db").exists() || lock_free(&env) {
        assert!(Instant::now() < deadline, "the CLI never opened the store");
        std::thread::sleep(Duration::from_millis(10));
    }
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        use std::io::Write;
        holder
            .stdin
            .take()
            .unwrap()
            .write_all(b"context from stdin")
            .unwrap();
        let out = holder.wait_with_output().unwrap();
        assert!(out.status.success());
    });
    env.start_runner();
    releaser.join().unwrap();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    let detail = env.wf_json(&["job", &doc.jobs[0].id]);
    assert_eq!(detail["context"], "context from stdin");
}

/// Whether sled's lock file is free (nobody holds the database).
fn lock_free(env: &TestEnv) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.root.join(".wf/db/db"))
    else {
        return true;
    };
    #[expect(unsafe_code, reason = "probing a lock with flock(2)")]
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        #[expect(unsafe_code, reason = "releasing the probe")]
        unsafe {
            libc::flock(f.as_raw_fd(), libc::LOCK_UN);
        }
    }
    rc == 0
}
