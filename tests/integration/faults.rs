//! Fault injection with the real binaries: stuck and stubborn agents, cancels, budgets,
//! runner crashes and shutdowns. Each test records what it did in a row of
//! docs/RELIABILITY.md (`cargo run -p wf-tests --bin wf-reliability` writes the file from the
//! rows of the last run).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, FailureReason, JobStatus, JobType};
use wf_tests::{alive, pids_in, wait_gone, TestEnv};

use crate::{fixture, record_reliability as record, BINS};

const LONG: Duration = Duration::from_secs(120);

fn script(env: &TestEnv, script: Value) {
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
}

fn pm_completes() -> Value {
    json!([{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "done"}])
}

fn done(d: &wf_core::model::Assignment) -> bool {
    d.lease.is_none()
        && matches!(
            d.status,
            AssignmentStatus::Complete | AssignmentStatus::Blocked
        )
}

#[test]
fn a_silent_agent_is_stopped_by_the_idle_timeout() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({"idleTimeoutMs": 500}));
    let w = env.work_path("grandchildren");
    script(
        &env,
        json!({
            "implement": [{"grandchild": w}, {"init": true}, {"hang": true}],
            "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "blocked", "--reason", "stuck"]}, {"result": "blocked"}]
        }),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Hang", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, done);
    let job = &doc.jobs[0];
    assert_eq!(
        job.failure_reason,
        Some(FailureReason::IdleTimeout),
        "{doc:#?}"
    );
    let took = Duration::from_millis(job.completed_at.unwrap() - job.started_at.unwrap());
    let grandchildren = pids_in(&env.work.join("grandchildren"));
    assert_eq!(grandchildren.len(), 1, "the grandchild never started");
    for pid in grandchildren {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "grandchild {pid} survived"
        );
    }
    assert_eq!(doc.jobs[1].job_type, JobType::Pm, "the PM saw the failure");
    record(
        "a_silent_agent_is_stopped_by_the_idle_timeout",
        "agent hangs, printing nothing (and leaves a grandchild)",
        "idleTimeoutMs 500: TERM, grace, KILL to the process group",
        1,
        "nothing: job failed (idle_timeout), PM ran, no process left",
        took,
    );
}

#[test]
fn an_agent_that_ignores_sigterm_and_forks_dies_with_its_children_on_timeout() {
    let mut env = TestEnv::new(
        &BINS,
        json!({}),
        json!({"timeoutMs": 1000, "killGraceMs": 300}),
    );
    let w = env.work_path("grandchildren");
    script(
        &env,
        json!({
            "implement": [{"ignoreSigterm": true}, {"grandchild": w}, {"grandchild": w}, {"init": true}, {"hang": true}],
            "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "blocked", "--reason", "timeout"]}, {"result": "x"}]
        }),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Stubborn", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, done);
    assert_eq!(doc.jobs[0].failure_reason, Some(FailureReason::Timeout));
    let pids = pids_in(&env.work.join("grandchildren"));
    assert_eq!(pids.len(), 2);
    for pid in &pids {
        assert!(
            wait_gone(*pid, Duration::from_secs(5)),
            "grandchild {pid} survived the timeout"
        );
    }
    let job = &doc.jobs[0];
    record(
        "an_agent_that_ignores_sigterm_and_forks_dies_with_its_children_on_timeout",
        "agent ignores SIGTERM and forks two grandchildren that ignore it too",
        "timeoutMs 1000, killGraceMs 300: TERM to the group, then KILL",
        1,
        "nothing: job failed (timeout), all 3 processes gone",
        Duration::from_millis(job.completed_at.unwrap() - job.started_at.unwrap()),
    );
}

#[test]
fn an_agent_that_closes_stdout_and_keeps_running_is_stopped() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({"idleTimeoutMs": 500}));
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"closeStdout": true}, {"hang": true}],
            "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "blocked", "--reason", "x"]}, {"result": "x"}]
        }),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Mute", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, done);
    assert_eq!(
        doc.jobs[0].failure_reason,
        Some(FailureReason::IdleTimeout),
        "{doc:#?}"
    );
    record(
        "an_agent_that_closes_stdout_and_keeps_running_is_stopped",
        "agent closes stdout and keeps running",
        "idle timeout (500 ms) stops the group",
        1,
        "nothing: job failed (idle_timeout)",
        Duration::from_millis(doc.jobs[0].completed_at.unwrap() - doc.jobs[0].started_at.unwrap()),
    );
}

#[test]
fn cancel_stops_the_group_and_retry_runs_the_job_again() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let w = env.work_path("grandchildren");
    let rec = env.work_path("records");
    script(
        &env,
        json!({
            "implement": {"byAttempt": [
                [{"record": rec}, {"grandchild": w}, {"init": true}, {"hang": true}],
                [{"record": rec}, {"replay": fixture("text.jsonl")}]
            ]},
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Cancel me", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.jobs[0].status == JobStatus::Running);
    let job = doc.jobs[0].id.clone();
    let deadline = Instant::now() + LONG;
    while env.records("records").is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent = env.records("records")[0]["pid"].as_u64().unwrap() as u32;
    // The grandchild must be running before the cancel, or its check below proves nothing.
    while pids_in(&env.work.join("grandchildren")).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }

    let asked = Instant::now();
    let out = env.wf_ok(&["cancel", &job[..6]]);
    assert!(out.contains("cancelled by a human"), "{out}");
    let doc = env.wait_for(&aid, LONG, |d| {
        d.jobs[0].status == JobStatus::Failed && d.lease.is_none()
    });
    let stopped = asked.elapsed();
    assert_eq!(doc.jobs[0].failure_reason, Some(FailureReason::Cancelled));
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    assert_eq!(doc.jobs.len(), 1, "no PM after a human cancel");
    assert!(wait_gone(agent, Duration::from_secs(5)));
    let grandchildren = pids_in(&env.work.join("grandchildren"));
    assert_eq!(grandchildren.len(), 1);
    for pid in grandchildren {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "grandchild {pid} survived the cancel"
        );
    }

    env.wf_ok(&["retry", &job]);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    assert_eq!(doc.jobs[0].status, JobStatus::Complete);
    assert_eq!(doc.jobs[0].attempt, 2);
    // Cancelling a whole assignment with nothing running is refused clearly.
    let out = env.wf(&["cancel", &aid]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is complete"));
    record(
        "cancel_stops_the_group_and_retry_runs_the_job_again",
        "`wf cancel JOB` on a running agent with a grandchild, then `wf retry JOB`",
        "the runner stops the process group; the job is failed (cancelled), the assignment blocked; retry re-queues it in place",
        1,
        "nothing: the retried job completed, no process left",
        stopped,
    );
}

#[test]
// Long: the three budgets in turn, each with its own assignment.
fn budgets_stop_a_running_job_and_block_the_assignment() {
    // Wall time: the agent hangs; the budget stops it.
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    script(
        &env,
        json!({"implement": [{"init": true}, {"hang": true}], "pm": pm_completes()}),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&[
            "create",
            "Too slow",
            "--start",
            "implement",
            "--max-wall-time",
            "1s",
        ])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, done);
    assert_eq!(
        doc.jobs[0].failure_reason,
        Some(FailureReason::Budget),
        "{doc:#?}"
    );
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    let reason = doc.blocked_reason.clone().unwrap();
    assert!(reason.contains("maxWallMs is 1000 ms"), "{reason}");
    let took =
        Duration::from_millis(doc.jobs[0].completed_at.unwrap() - doc.jobs[0].started_at.unwrap());

    // Cost: the job reports $0.50 against a $0.30 budget: blocked, no PM.
    let env2 = TestEnv::new(&BINS, json!({}), json!({}));
    let records = env2.work.join("records").display().to_string();
    script(
        &env2,
        json!({"implement": [{"record": records}, {"init": true},
                             {"result": {"text": "spent", "cost": 0.5}}],
               "pm": pm_completes()}),
    );
    let mut env2 = env2;
    env2.start_runner();
    let aid = env2
        .wf_ok(&[
            "create",
            "Too dear",
            "--start",
            "implement",
            "--max-cost",
            "0.3",
        ])
        .trim()
        .to_string();
    let doc = env2.wait_for(&aid, LONG, done);
    assert_eq!(doc.status, AssignmentStatus::Blocked);
    assert_eq!(
        doc.blocked_reason.as_deref(),
        Some("budget exceeded: spent $0.50, maxCostUsd is $0.30")
    );
    assert_eq!(doc.jobs.len(), 1);
    // The runner told Claude the budget too: the agent's own argv carries it.
    let args = &env2.records("records")[0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--max-budget-usd", "0.3000"]),
        "{args:?}"
    );

    // Jobs: the second non-PM job is not started.
    let mut env3 = TestEnv::new(
        &BINS,
        json!({"plan": [{"replay": fixture("text.jsonl")}], "pm": [
        {"init": true}, {"wf": ["insert-job", "--type", "implement"]}, {"result": "next"}]}),
        json!({}),
    );
    env3.start_runner();
    let aid = env3
        .wf_ok(&["create", "Too many", "--start", "plan", "--max-jobs", "1"])
        .trim()
        .to_string();
    let doc = env3.wait_for(&aid, LONG, done);
    assert_eq!(
        doc.blocked_reason.as_deref(),
        Some("budget exceeded: 1 jobs started, maxJobs is 1")
    );
    assert_eq!(doc.jobs[2].attempt, 0, "the implement job never started");
    record(
        "budgets_stop_a_running_job_and_block_the_assignment",
        "budget exceeded: wall time while a job runs; cost after a job; job count before one starts",
        "the running job is stopped (failed: budget) and the assignment blocked with a reason naming the budget and the figure",
        3,
        "nothing: no job started past a budget",
        took,
    );
}

#[test]
// Long: one fault scenario: two signals, the drain, the restart and the recount.
fn sigterm_returns_running_jobs_to_pending_and_they_resume_after_restart() {
    let mut env = TestEnv::new(
        &BINS,
        json!({}),
        json!({"shutdownGraceMs": 500, "maxConcurrent": 3}),
    );
    let rec = env.work_path("records");
    script(
        &env,
        json!({
            "implement": {"byAttempt": [
                [{"record": rec}, {"init": true}, {"hang": true}],
                [{"record": rec}, {"replay": fixture("text.jsonl")}]
            ]},
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let ids: Vec<String> = env.create_started("Shutdown", 3, "implement");
    env.wait_records("records", 3, LONG);
    let agents: Vec<u32> = env
        .records("records")
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    let signalled = Instant::now();
    env.signal_runner(libc::SIGTERM);
    let status = env.wait_runner(Duration::from_secs(30));
    let stopped = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped >= Duration::from_millis(500),
        "the grace period was honoured: {stopped:?}"
    );
    for pid in agents {
        assert!(!alive(pid), "agent {pid} outlived the runner");
    }
    for id in &ids {
        let doc = env.assignment(id);
        assert_eq!(
            doc.jobs[0].status,
            JobStatus::Pending,
            "back to pending, not failed: {doc:#?}"
        );
        assert!(doc.lease.is_none());
    }
    let restarted = Instant::now();
    env.start_runner();
    for id in &ids {
        let doc = env.wait_for(id, LONG, |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
        assert_eq!(doc.jobs[0].attempt, 2);
    }
    let resumed = restarted.elapsed();

    // A second signal does not wait for the grace period.
    let mut env = TestEnv::new(
        &BINS,
        json!({"implement": [{"init": true}, {"hang": true}]}),
        json!({"shutdownGraceMs": 60000}),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Twice", "--start", "implement"])
        .trim()
        .to_string();
    env.wait_for(&aid, LONG, |d| d.jobs[0].status == JobStatus::Running);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    env.signal_runner(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(Duration::from_secs(20));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(env.assignment(&aid).jobs[0].status, JobStatus::Pending);
    record(
        "sigterm_returns_running_jobs_to_pending_and_they_resume_after_restart",
        "SIGTERM to the runner with 3 jobs running (and a second SIGTERM during the grace period)",
        "stop claiming; after shutdownGraceMs the agents are stopped and their jobs returned to pending; a restart runs them",
        2,
        "nothing: 3 of 3 jobs pending after the stop, complete after the restart",
        resumed,
    );
}

#[test]
fn runner_kill_9_in_a_loop_runs_every_job_exactly_once() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({"maxConcurrent": 4}));
    let locks = env.work_path("locks");
    let rec = env.work_path("records");
    script(
        &env,
        json!({
            "plan": [{"lock": locks}, {"record": rec}, {"init": true}, {"sleepMs": [300, 1200]}, {"result": "planned"}],
            "pm": [{"lock": locks}, {"record": rec}, {"init": true}, {"sleepMs": [100, 400]},
                   {"wf": ["update-assignment", "--status", "complete"]}, {"result": "complete"}]
        }),
    );
    env.start_runner();
    let ids: Vec<String> = env.create_started("crash", 16, "plan");
    let kills = 5;
    let mut recoveries = Vec::new();
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(700));
        env.signal_runner(libc::SIGKILL);
        let t = Instant::now();
        env.start_runner();
        recoveries.push(t.elapsed());
    }
    for id in &ids {
        env.wait_for(id, LONG, |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    let violations = std::fs::read_to_string(env.work.join("locks/violations")).unwrap_or_default();
    assert!(
        violations.is_empty(),
        "two agents ran one job at once: {violations}"
    );
    let mut runs: HashMap<String, usize> = HashMap::new();
    for r in env.records("records") {
        *runs
            .entry(r["job"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for id in &ids {
        let doc = env.assignment(id);
        let types: Vec<JobType> = doc.jobs.iter().map(|j| j.job_type).collect();
        assert_eq!(types, [JobType::Plan, JobType::Pm], "{doc:#?}");
        assert!(doc.jobs.iter().all(|j| j.status == JobStatus::Complete));
    }
    let reruns = runs.values().filter(|n| **n > 1).count();
    // Runs beyond the first come only from the kills: each interrupts at most maxConcurrent
    // (4) running jobs, so 5 kills allow at most 20.
    let extra: usize = runs.values().map(|n| n - 1).sum();
    assert!(extra <= 5 * 4, "{extra} extra runs after 5 kills: {runs:?}");
    let worst = recoveries.iter().max().copied().unwrap_or_default();
    record(
        "runner_kill_9_in_a_loop_runs_every_job_exactly_once",
        "kill -9 of the runner, 5 times, while 16 assignments (32 jobs) run",
        "restart: orphans reaped, dead leases taken over at once (embedded store), interrupted jobs run again",
        kills,
        &format!("nothing: 32 of 32 jobs complete once in the final state, {reruns} re-run after a kill, no double run"),
        worst,
    );
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A runner out of file descriptors (EMFILE on accept, with connections waiting) backs off
/// instead of spinning on a listener that stays readable, and serves again once descriptors
/// are free.
#[test]
fn a_runner_out_of_file_descriptors_backs_off_instead_of_spinning() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.start_runner();
    let pid = env.runner_pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for a few more descriptors only (the soft limit; the hard one stays, so that it
    // can be raised again without privileges).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: String = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("Max open files")
        .to_string();
    let limit = open + 4;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
    let socket = wf_runner::paths::socket_path(&env.root.join(".wf"));
    let clients: Vec<_> = (0..16)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    // Let the runner hit EMFILE, then measure its CPU over one second.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let share = used as f64 / ticks_per_s / started.elapsed().as_secs_f64();
    let log = env.runner_log();
    assert!(
        log.contains("control socket accept failed"),
        "the runner never hit the limit:\n{log}"
    );
    assert!(
        share < 0.3,
        "the runner used {:.0}% of a core while out of descriptors",
        share * 100.0
    );
    drop(clients);
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("prlimit");
    assert!(status.success());
    let recovered = Instant::now();
    let id = env.create("served again");
    assert_eq!(env.assignment(&id).id, id);
    assert!(wf_tests::alive(pid), "{}", env.runner_log());
    record(
        "a_runner_out_of_file_descriptors_backs_off_instead_of_spinning",
        "the runner runs out of file descriptors (RLIMIT_NOFILE) with 16 clients waiting on the control socket",
        "accept fails with EMFILE: the runner backs off (10 ms doubling to 1 s) instead of spinning; once descriptors are free it serves again",
        1,
        &format!("nothing: {:.0}% of a core used while out of descriptors; the next request was served", share * 100.0),
        recovered.elapsed(),
    );
}

/// One corrupt document and one from a newer wf never stop the namespace (embedded store).
#[test]
fn unreadable_documents_are_skipped_and_reported() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let started = Instant::now();
    wf_tests::unreadable_documents_are_skipped(&mut env);
    record(
        "unreadable_documents_are_skipped_and_reported",
        "sled: a corrupt document and one with a newer schemaVersion (99) in the store",
        "both are skipped by the runner and by listings, named by `wf doctor` and in the runner log; reading one names the cause",
        2,
        "nothing: 3 of 3 other assignments complete; the two documents were never claimed",
        started.elapsed(),
    );
}

/// A harness whose agent does what the real CLIs' shell tools do: it starts a process in a
/// session of its own (`setsid`, like Claude Code's Bash tool and Codex's exec) and a `node`
/// child spawned `detached` (like Gemini CLI's shell), writes their pids and its own to
/// `work/<job>.{setsid,node,leader}`, then runs `then` (a shell command).
fn escaping_harness(work: &std::path::Path, then: &str) -> Value {
    let script = format!(
        r#"echo $$ > "$W/$WF_JOB_ID.leader"
setsid sh -c 'echo $$ > "$W/$WF_JOB_ID.setsid.tmp" && mv "$W/$WF_JOB_ID.setsid.tmp" "$W/$WF_JOB_ID.setsid"; exec sleep 4242' &
node -e "const c = require('child_process').spawn('sleep', ['4243'], {{detached: true, stdio: 'ignore'}}); require('fs').writeFileSync(process.env.W + '/' + process.env.WF_JOB_ID + '.node', String(c.pid)); c.unref()"
while [ ! -s "$W/$WF_JOB_ID.setsid" ]; do sleep 0.05; done
echo started
{then}"#
    );
    json!({
        "command": "bash",
        "args": ["-c", script],
        "format": "text",
        "env": {"W": work.display().to_string()}
    })
}

/// The pids an escaping agent of `job` wrote, waiting up to 30 s for them.
fn escaped_pids(work: &std::path::Path, job: &str) -> (u32, u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = |ext: &str| {
            std::fs::read_to_string(work.join(format!("{job}.{ext}")))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        };
        if let (Some(l), Some(s), Some(n)) = (read("leader"), read("setsid"), read("node")) {
            return (l, s, n);
        }
        assert!(
            Instant::now() < deadline,
            "the agent of {job} never wrote its pids"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The group of `pid` and its session, from /proc.
fn group_and_session(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

/// Tool processes in sessions and groups of their own die with their attempt: when the agent
/// exits by itself, and when it is stopped (timeout, cancel).
#[test]
fn tool_processes_that_leave_the_group_die_with_their_attempt() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let extra = json!({
        "timeoutMs": 4000,
        "harnesses": {
            "escape-exit": escaping_harness(&work, "exit 0"),
            "escape-hang": escaping_harness(&work, "sleep 600")
        }
    });
    env.merge_config(&extra);
    script(&env, json!({"pm": pm_completes()}));
    env.start_runner();
    let mut cases = Vec::new();
    for (harness, expected) in [
        ("escape-exit", JobStatus::Complete),
        ("escape-hang", JobStatus::Failed),
        ("escape-hang", JobStatus::Failed),
    ] {
        let aid = env.create(harness);
        let out = env.wf_ok(&[
            "insert-job",
            &aid,
            "--type",
            "implement",
            "--harness",
            harness,
        ]);
        cases.push((aid, out.trim().to_string(), expected));
    }
    // The third is cancelled once its tools run; the second runs into timeoutMs.
    let (leader, setsid, node) = escaped_pids(&work, &cases[2].1);
    env.wf_ok(&["cancel", &cases[2].1]);
    let mut stopped = 0;
    let started = Instant::now();
    for (i, (aid, job, expected)) in cases.iter().enumerate() {
        let (l, s, n) = if i == 2 {
            (leader, setsid, node)
        } else {
            escaped_pids(&work, job)
        };
        let doc = env.wait_for(aid, LONG, |d| d.jobs[0].status.is_finished());
        assert_eq!(doc.jobs[0].status, *expected, "{doc:#?}");
        // They really left: a session (setsid) and a group (detached) other than the leader's.
        if let (Some((lg, ls)), Some((_, ss)), Some((ng, _))) = (
            group_and_session(l),
            group_and_session(s),
            group_and_session(n),
        ) {
            assert_ne!(ss, ls, "the setsid child shares the leader's session");
            assert_ne!(ng, lg, "the detached child shares the leader's group");
        }
        for pid in [l, s, n] {
            assert!(
                wait_gone(pid, Duration::from_secs(3)),
                "process {pid} of job {job} outlived its attempt\n{}",
                env.runner_log()
            );
            stopped += 1;
        }
    }
    assert_eq!(stopped, 9);
    record(
        "tool_processes_that_leave_the_group_die_with_their_attempt",
        "an agent starts a `setsid` child (as Claude Code's and Codex's shell tools do) and a `node` child spawned `detached` (as Gemini CLI's does), then exits, hangs into timeoutMs, or is cancelled",
        "when the attempt ends, every process carrying its WF_RUNNER_ID, WF_JOB_ID and WF_ATTEMPT is stopped (TERM with the group, then KILL), whatever its session or group",
        3,
        "nothing: 9 of 9 processes gone (leader, setsid child, detached node child, for each attempt)",
        started.elapsed(),
    );
}

/// After `kill -9` of the runner, nothing any of its attempts started survives: the guardian
/// the runner started sees its pipe close and kills every process carrying the runner's id.
#[test]
fn kill_9_of_the_runner_takes_its_agents_escaped_children_with_it() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let extra = json!({"harnesses": {"escape-hang": escaping_harness(&work, "sleep 600")}});
    env.merge_config(&extra);
    env.start_runner();
    let mut pids = Vec::new();
    for i in 0..2 {
        let name = format!("escape {i}");
        let aid = env
            .wf_ok(&["create", &name, "--independent"])
            .trim()
            .to_string();
        let job = env.wf_ok(&[
            "insert-job",
            &aid,
            "--type",
            "implement",
            "--harness",
            "escape-hang",
            "--json",
        ]);
        let job: Value = serde_json::from_str(&job).unwrap();
        let job = job["jobs"][0]["id"].as_str().unwrap().to_string();
        let (l, s, n) = escaped_pids(&work, &job);
        pids.extend([l, s, n]);
    }
    assert!(pids.iter().all(|&p| wf_tests::alive(p)), "not all started");
    let killed = Instant::now();
    env.signal_runner(libc::SIGKILL);
    for &pid in &pids {
        assert!(
            wait_gone(pid, Duration::from_secs(2)),
            "process {pid} survived the runner's kill -9 by 2 s\n{}",
            env.runner_log()
        );
    }
    let took = killed.elapsed();
    record(
        "kill_9_of_the_runner_takes_its_agents_escaped_children_with_it",
        "kill -9 of the runner while 2 agents run, each with a `setsid` child and a detached `node` child",
        "the runner's guardian (its own process group, reading a pipe the runner holds) sees the pipe close and kills every process carrying the runner's WF_RUNNER_ID; PDEATHSIG takes the leaders",
        1,
        &format!("nothing: {} of {} processes gone", pids.len(), pids.len()),
        took,
    );
}

/// With the embedded store one runner serves a state directory: a second runner on the same
/// directory (with another database, so the store's own lock does not stop it) is refused with
/// an error naming the live runner, and the first one's work is untouched.
#[test]
fn a_second_runner_on_an_embedded_state_directory_is_refused() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    script(
        &env,
        json!({
            "plan": [{"record": work.join("records").display().to_string()}, {"init": true},
                     {"sleepMs": 2000}, {"result": "planned"}],
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "beside a refused runner", "--start", "plan"])
        .trim()
        .to_string();
    env.wait_records("records", 1, LONG);
    let agent: u32 = env.records("records")[0]["pid"].as_u64().unwrap() as u32;
    let mut config = env.config();
    config["store"] = json!({"kind": "sled", "path": ".wf/other-db"});
    let other = env.root.join(".wf/other.json");
    std::fs::write(&other, config.to_string()).unwrap();
    let started = Instant::now();
    env.start_runner_sharing(1, Some(&other), false);
    let status = env.wait_runner_n(1, Duration::from_secs(60));
    let refused = started.elapsed();
    assert!(!status.success());
    let log = env.runner_log();
    assert!(
        log.contains("another wf-runner (id")
            && log.contains("one runner serves a state directory"),
        "{log}"
    );
    assert!(wf_tests::alive(agent) || env.assignment(&aid).jobs[0].status.is_finished());
    let doc = env.wait_for(&aid, LONG, done);
    assert_eq!(doc.status, AssignmentStatus::Complete, "{doc:#?}");
    assert_eq!(doc.jobs[0].attempt, 1, "{doc:#?}");
    assert_eq!(doc.jobs[0].status, JobStatus::Complete, "{doc:#?}");
    record(
        "a_second_runner_on_an_embedded_state_directory_is_refused",
        "sled: a second wf-runner on the same state directory (another database, so the store's lock does not stop it) while the first runs a job",
        "the second finds the first's lock held and exits with an error naming it; the first runner, its agent and its lease are untouched",
        1,
        "nothing: the running job completed once (attempt 1)",
        refused,
    );
}

/// A cost budget holds across a parallel group: each Claude job gets its share of what is
/// left (not all of it), a job that spends the last of it stops its siblings, and a job whose
/// cost cannot be measured (no cost reported, no price for its model) is flagged when inserted.
#[test]
// Long: three budget rules in turn, on one runner: shares, stopped siblings, the warning.
fn a_cost_budget_holds_across_a_parallel_group() {
    let env = TestEnv::new(&BINS, json!({}), json!({}));
    let work = env.work.clone();
    let records = work.join("records").display().to_string();
    script(
        &env,
        json!({
            "review": [{"record": records}, {"init": true},
                       {"result": {"text": "reviewed", "cost": 0.9}}],
            "pm": pm_completes()
        }),
    );
    let slow_script = work.join("slow.json");
    std::fs::write(
        &slow_script,
        json!({"review": [{"record": records}, {"init": true}, {"sleepMs": 60000},
                          {"result": "late"}]})
        .to_string(),
    )
    .unwrap();
    let fake = env.bin.join("fake-agent").display().to_string();
    env.merge_config(
        &json!({"harnesses": {"slow": {"command": fake, "format": "claude",
        "env": {"FAKE_AGENT_SCRIPT": slow_script.display().to_string()}}}}),
    );
    let mut env = env;
    env.start_runner();

    // Three Claude reviews share $1.00: a third each.
    let aid = env
        .wf_ok(&["create", "Shared budget", "--max-cost", "1"])
        .trim()
        .to_string();
    env.wf_ok(&[
        "insert-job",
        &aid,
        "--jobs",
        r#"[{"jobType":"review"},{"jobType":"review"},{"jobType":"review"}]"#,
    ]);
    env.wait_for(&aid, LONG, done);
    let shares: Vec<String> = env
        .records("records")
        .iter()
        .map(|r| {
            let args: Vec<&str> = r["args"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let at = args
                .iter()
                .position(|a| *a == "--max-budget-usd")
                .expect("budget flag");
            args[at + 1].to_string()
        })
        .collect();
    assert_eq!(shares, ["0.3333", "0.3333", "0.3333"]);

    // One job spends the last of $0.50; its slow sibling is stopped at once.
    let aid = env
        .wf_ok(&["create", "Stop the siblings", "--max-cost", "0.5"])
        .trim()
        .to_string();
    let out = env.wf(&[
        "insert-job",
        &aid,
        "--jobs",
        r#"[{"jobType":"review"},{"jobType":"review","harness":"slow"}]"#,
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("maxCostUsd cannot be checked for slow (no model set)"),
        "{stderr}"
    );
    let started = Instant::now();
    let doc = env.wait_for(&aid, LONG, done);
    let stopped = started.elapsed();
    assert_eq!(doc.status, AssignmentStatus::Blocked, "{doc:#?}");
    let slow = doc.jobs.iter().find(|j| j.harness == "slow").unwrap();
    assert_eq!(slow.failure_reason, Some(FailureReason::Budget), "{doc:#?}");
    assert!(
        stopped < Duration::from_secs(30),
        "the sibling ran on: {stopped:?}"
    );
    record(
        "a_cost_budget_holds_across_a_parallel_group",
        "a parallel group under a cost budget: 3 Claude jobs sharing $1; a job that spends the last of $0.50 while its sibling (a harness that reports no cost) runs on",
        "each Claude job gets --max-budget-usd of its share (0.3333); the crossing job's record stops its siblings (failed: budget) and blocks the assignment; inserting a job whose cost cannot be measured warns",
        2,
        "nothing: no job ran past the budget",
        stopped,
    );
}

/// An assignment whose document has no room left for the outcome of its job is blocked with
/// a clear reason once the job ran — never claimed and paid for again and again — and a `wf`
/// write that would pass the limit is refused with the sizes. One that has no room for a claim
/// is blocked before anything runs.
// Long: two scenarios of one limit (full during the run, full before the claim), in sequence.
#[test]
fn a_full_document_blocks_the_assignment_instead_of_rerunning_the_job() {
    let limit = 20_000;
    let mut env = TestEnv::new(&BINS, json!({}), json!({"maxDocumentBytes": limit}));
    let records = env.work.join("records").display().to_string();
    script(
        &env,
        json!({"plan": [{"record": records}, {"init": true}, {"sleepMs": 1500},
                        {"result": "planned"}],
               "pm": pm_completes()}),
    );
    let size = |env: &TestEnv, aid: &str| {
        serde_json::to_string(&env.wf_json(&["assignment", aid]))
            .unwrap()
            .len()
    };
    let started = Instant::now();
    env.start_runner();
    let aid = env.create("Fill me up");
    env.wf_ok(&["insert-job", &aid, "--type", "plan"]);
    env.wait_records("records", 1, LONG);
    // While the job runs, a human's write leaves room for nothing but a small change: not for
    // the outcome and its PM job (~700 bytes). The running job's counters, dropped when its
    // outcome is recorded, do not count as room.
    let doc = env.wait_for(&aid, LONG, |d| d.jobs[0].progress.is_some());
    let counters = serde_json::to_string(&doc.jobs[0].progress).unwrap().len() + 12;
    let fill = limit - 400 + counters - size(&env, &aid);
    env.wf_ok(&["update-assignment", &aid, "--artifacts", &"x".repeat(fill)]);
    let before = size(&env, &aid) - counters;
    assert!((limit - 450..limit - 350).contains(&before), "{before}");

    // A human's note that would pass the limit is refused, with the sizes.
    let out = env.wf(&["update-assignment", &aid, "--note", &"n".repeat(1000)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("over the store's limit of {limit} bytes")),
        "{stderr}"
    );

    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let took = started.elapsed();
    let reason = doc.blocked_reason.clone().unwrap_or_default();
    assert!(reason.contains("document is full"), "{reason}");
    assert_eq!(doc.jobs.len(), 1, "no PM job fits: {doc:#?}");
    assert_eq!(doc.jobs[0].status, JobStatus::Complete, "{doc:#?}");
    assert_eq!(doc.jobs[0].attempt, 1);
    assert!(doc.lease.is_none());
    // Nothing runs again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.records("records").len(), 1, "the job ran again");
    assert_eq!(env.assignment(&aid).jobs[0].attempt, 1);
    let queue = env.wf_ok(&["queue"]);
    assert!(queue.contains("document is full"), "{queue}");
    let out = env.wf(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["store"]["warnings"].to_string();
    assert!(
        warnings.contains(&format!("assignment {aid} uses")),
        "{report}"
    );

    // Full before its job is claimed: blocked at once, nothing runs.
    let second = env.create("Full from the start");
    env.wf_ok(&[
        "update-assignment",
        &second,
        "--status",
        "blocked",
        "--reason",
        "hold",
    ]);
    env.wf_ok(&["insert-job", &second, "--type", "plan"]);
    let fill = limit - 1000 - size(&env, &second);
    env.wf_ok(&[
        "update-assignment",
        &second,
        "--artifacts",
        &"y".repeat(fill),
    ]);
    env.wf_ok(&["update-assignment", &second, "--status", "active"]);
    let doc = env.wait_for(&second, LONG, |d| d.status == AssignmentStatus::Blocked);
    let reason = doc.blocked_reason.clone().unwrap_or_default();
    assert!(reason.contains("document is full"), "{reason}");
    assert_eq!(
        (doc.jobs[0].attempt, doc.jobs[0].status),
        (0, JobStatus::Pending)
    );
    assert_eq!(
        env.records("records").len(),
        1,
        "the full assignment's job ran"
    );
    record(
        "a_full_document_blocks_the_assignment_instead_of_rerunning_the_job",
        "an assignment's document filled to 400 bytes short of maxDocumentBytes (20000) while its job runs (the outcome and the PM job do not fit); another filled before its job is claimed",
        "the store refuses the write with a typed TooLarge error; the runner records what fits (status, usage) and blocks the assignment with the reason; claims stop 2 KiB short of the limit, so a full assignment is blocked before it runs; a wf write past the limit is refused with the sizes",
        2,
        "nothing: the first job ran once, its outcome is recorded, nothing re-runs; the second never started",
        took,
    );
}

/// An attempt lost with its runner (kill -9 in the middle of a Claude run) still counts what
/// it spent: the restarted runner reads the turns' usage from the attempt's transcript and adds
/// it, priced, when it takes the job over — once, on top of what the second attempt reports.
#[test]
fn usage_of_an_attempt_lost_with_its_runner_is_recovered_from_its_transcript() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.merge_config(&json!({"prices": {"fake-model": {"inputPerMTok": 3.0, "outputPerMTok": 15.0, "cachedInputPerMTok": 0.3}}}));
    let rec = env.work_path("records");
    let turn = |id: &str, out: u64| {
        json!({"raw": json!({"type": "assistant", "session_id": "s", "message": {"id": id,
            "content": [{"type": "text", "text": "working"}],
            "usage": {"input_tokens": 2000, "cache_read_input_tokens": 100000, "output_tokens": out}}}).to_string()})
    };
    script(
        &env,
        json!({
            "plan": {"byAttempt": [
                [{"init": true}, turn("m1", 500), turn("m1", 800), turn("m2", 1200), {"record": rec}, {"sleepMs": 600000}],
                [{"init": true}, {"result": {"text": "planned", "cost": 0.01}}]
            ]},
            "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "done"}]
        }),
    );
    env.start_runner();
    let ids = env.create_started("lost", 1, "plan");
    env.wait_records("records", 1, LONG);
    // The runner has written the turns to the transcript (it reads the agent's stream on its
    // own time): then the kill.
    let doc = env.assignment(&ids[0]);
    let transcript = env
        .root
        .join(".wf/transcripts")
        .join(&ids[0])
        .join(format!("{}-1.jsonl", doc.jobs[0].id));
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(&transcript).is_ok_and(|t| t.contains("\"m2\"")) {
        assert!(
            Instant::now() < deadline,
            "the turns never reached {}",
            transcript.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Instant::now();
    env.signal_runner(libc::SIGKILL);
    env.start_runner();
    let doc = env.wait_for(&ids[0], LONG, |d| d.status == AssignmentStatus::Complete);
    let took = killed.elapsed();
    let plan = &doc.jobs[0];
    assert_eq!(plan.attempt, 2, "{doc:#?}");
    // Attempt 1: two turns (m1 counted once, at its latest usage): 204 000 input tokens of which
    // 200 000 cached, 2 000 output. Attempt 2's result: 100 in, 20 out, $0.01.
    assert_eq!(
        (plan.usage.input_tokens, plan.usage.output_tokens),
        (204_000 + 100, 2_000 + 20),
        "{doc:#?}"
    );
    let lost = (4_000.0 * 3.0 + 200_000.0 * 0.3 + 2_000.0 * 15.0) / 1e6;
    let cost = plan.usage.cost_usd.unwrap();
    assert!(
        (cost - (lost + 0.01)).abs() < 1e-9,
        "job cost {cost}, want {}",
        lost + 0.01
    );
    let pm_cost: f64 = doc.jobs[1..].iter().filter_map(|j| j.usage.cost_usd).sum();
    let total = doc.usage.cost_usd.unwrap();
    assert!(
        (total - (cost + pm_cost)).abs() < 1e-9,
        "assignment {total}"
    );
    assert!(env
        .runner_log()
        .contains("recovered the usage of an abandoned attempt"));
    record(
        "usage_of_an_attempt_lost_with_its_runner_is_recovered_from_its_transcript",
        "kill -9 of the runner while a Claude-format agent is mid-run (3 assistant events, 2 turns, no result yet)",
        "transcripts are written a line at a time; the restarted runner reads the dead attempt's turns back, prices them and adds them in the claim that supersedes the attempt",
        1,
        &format!("nothing: ${lost:.4} of the lost attempt counted once (job ${cost:.4}, assignment ${total:.4})"),
        took,
    );
}

/// An assignment that runs for many rounds stays small: its oldest finished jobs move to
/// archive blobs, so 60 rounds fit under a 32 KiB maxDocumentBytes that 25 rounds of job
/// records alone would fill. Every job stays listed (`wf jobs`, `wf job`), and maxJobs still
/// counts the archived ones.
#[test]
fn a_long_assignment_archives_its_old_jobs_and_stays_small() {
    let limit = 32 * 1024;
    let mut env = TestEnv::new(&BINS, json!({}), json!({"maxDocumentBytes": limit}));
    script(
        &env,
        json!({"plan": [{"init": true}, {"result": "planned"}],
               "pm": [{"init": true}, {"decide": {"plan": ["insert-job", "--type", "plan"]}},
                      {"result": "another round"}]}),
    );
    let started = Instant::now();
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Go round", "--max-jobs", "60", "--start", "plan"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Blocked);
    let took = started.elapsed();
    let reason = doc.blocked_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("60 jobs started, maxJobs is 60"),
        "{reason}\n{}",
        env.runner_log()
    );
    // 60 plans and their 60 PMs, and the 61st plan the budget stopped: 121 jobs, 96 of them
    // in three archive segments of 32 (each cut when 48 jobs were finished).
    assert_eq!(doc.archive.segments.len(), 3, "{:?}", doc.archive);
    assert_eq!((doc.archive.jobs, doc.archive.started), (96, 48));
    assert_eq!(doc.jobs.len(), 25);
    let size = serde_json::to_vec(&doc).unwrap().len();
    assert!(size < limit / 2, "the document is {size} bytes");
    assert_eq!(
        doc.schema_version, 3,
        "written at the version its shape needs (an archive needs 2, a running job's counters 3; with no notice in its outbox, not 4)"
    );
    let all = env.wf_json(&["jobs", "--assignment", &aid]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 121);
    let types: Vec<&str> = all.iter().map(|j| j["jobType"].as_str().unwrap()).collect();
    assert!(
        types.chunks(2).take(60).all(|c| c == ["plan", "pm"]),
        "{types:?}"
    );
    let first = all[0]["id"].as_str().unwrap();
    let detail = env.wf_json(&["job", first]);
    assert_eq!(detail["job"]["status"], "complete", "{detail}");
    assert_eq!(detail["result"], "planned", "{detail}");
    let shown = env.wf_ok(&["assignment", &aid]);
    assert!(
        shown.contains("96 earlier finished jobs are archived"),
        "{shown}"
    );
    record(
        "a_long_assignment_archives_its_old_jobs_and_stays_small",
        "one assignment driven through 60 plan/PM rounds (121 jobs) under maxDocumentBytes 32768, which ~25 rounds of job records would fill",
        "after each unit the runner moves the oldest 32 finished jobs (keeping 16) to an archive blob, then links it by CAS",
        1,
        &format!("nothing: 121 of 121 jobs listed, the document stays at {size} bytes, maxJobs counts archived jobs"),
        took,
    );
}
