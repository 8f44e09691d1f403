//! The process layer against the fake agent binary: replay, hang, crash, SIGTERM-proof
//! agents with grandchildren, garbage, huge lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wf_core::chain::Outcome;
use wf_core::harness::{self, CommandSpec, Ended, Parsed, RunLog};
use wf_core::model::FailureReason;
use wf_runner::process::{self, Flow, Limits, Line};
use wf_tests::{alive, pids_in, wait_gone};

use crate::{fixture, BINS};

fn judge(log: &RunLog, ended: &Ended, stderr: &str) -> harness::Verdict {
    let retry = wf_core::config::RetryPolicy {
        backoff_ms: vec![60_000],
        max_pauses: 3,
    };
    let input = harness::JudgeInput {
        ended,
        stderr_tail: stderr,
        format: wf_core::config::StreamFormat::Claude,
        now: 0,
        pauses: 0,
        retry: &retry,
    };
    harness::judge(log, &input)
}

struct Run {
    exit: process::Exit,
    log: RunLog,
    lines: usize,
    invalid: Vec<String>,
    took: Duration,
}

fn run(script: Value, limits: Limits, cancel_after: Option<Duration>) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("script.json");
    std::fs::write(&script_path, json!({ "default": script }).to_string()).unwrap();
    let spec = CommandSpec {
        program: BINS.fake_agent.display().to_string(),
        args: vec!["--script".into(), script_path.display().to_string()],
        env: BTreeMap::new(),
        cwd: dir.path().to_path_buf(),
        stdin: Some(b"the prompt".to_vec()),
    };
    let mut env = BTreeMap::new();
    env.insert("WF_JOB_TYPE".to_string(), "implement".to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (exit, log, lines, invalid) = rt.block_on(async {
        let cancel = CancellationToken::new();
        if let Some(after) = cancel_after {
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                c.cancel();
            });
        }
        let mut log = RunLog::default();
        let mut lines = 0;
        let mut invalid = Vec::new();
        let exit = process::run(
            &spec,
            &env,
            &limits,
            &cancel,
            |_| {},
            |line| {
                lines += 1;
                let parsed = match line {
                    Line::Text(t) => harness::parse_line(wf_core::config::StreamFormat::Claude, t),
                    Line::Invalid(why) => {
                        invalid.push(why.clone());
                        Parsed::Malformed(why)
                    }
                };
                log.push(&parsed);
                Flow::Continue
            },
        )
        .await
        .expect("spawn");
        (exit, log, lines, invalid)
    });
    (
        Run {
            exit,
            log,
            lines,
            invalid,
            took: started.elapsed(),
        },
        dir,
    )
}

fn limits(timeout_ms: u64, idle_ms: u64) -> Limits {
    Limits::new(
        Duration::from_millis(timeout_ms),
        Duration::from_millis(idle_ms),
        Duration::from_millis(300),
    )
}

#[test]
fn replays_a_recorded_transcript() {
    let (r, _d) = run(
        json!([{"replay": fixture("tool_write.jsonl")}]),
        limits(20_000, 20_000),
        None,
    );
    assert_eq!(
        r.exit.ended,
        Ended::Exited {
            code: Some(0),
            signal: None
        }
    );
    let v = judge(&r.log, &r.exit.ended, &r.exit.stderr_tail);
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(
        v.text,
        "Done: I wrote hello.txt containing 'hello from claude'."
    );
    assert_eq!(r.lines, 6);
}

#[test]
fn a_crash_is_an_exit_failure_with_stderr() {
    let (r, _d) = run(
        json!([{"init": true}, {"exit": 3}]),
        limits(20_000, 20_000),
        None,
    );
    assert_eq!(
        r.exit.ended,
        Ended::Exited {
            code: Some(3),
            signal: None
        }
    );
    let v = judge(&r.log, &r.exit.ended, &r.exit.stderr_tail);
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v
        .detail
        .unwrap()
        .contains("exit code 3 without a result event"));
}

#[test]
fn a_hung_agent_is_stopped_by_the_idle_timeout() {
    let (r, _d) = run(
        json!([{"init": true}, {"hang": true}]),
        limits(30_000, 400),
        None,
    );
    assert_eq!(r.exit.ended, Ended::IdleTimedOut);
    assert!(r.took < Duration::from_secs(10), "{:?}", r.took);
    assert!(!alive(r.exit.pid));
}

#[test]
fn sigterm_proof_agents_and_their_grandchildren_all_die_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = json!([
        {"ignoreSigterm": true},
        {"grandchild": pids.display().to_string()},
        {"grandchild": pids.display().to_string()},
        {"init": true},
        {"hang": true}
    ]);
    let (r, _d) = run(script, limits(1_000, 30_000), None);
    assert_eq!(r.exit.ended, Ended::TimedOut);
    let grandchildren = pids_in(&pids);
    assert_eq!(grandchildren.len(), 2);
    assert!(!alive(r.exit.pid), "the agent survived");
    for pid in grandchildren {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "grandchild {pid} survived the group kill"
        );
    }
}

#[test]
fn cancel_stops_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script =
        json!([{"grandchild": pids.display().to_string()}, {"init": true}, {"hang": true}]);
    let (r, _d) = run(
        script,
        limits(30_000, 30_000),
        Some(Duration::from_millis(300)),
    );
    assert_eq!(r.exit.ended, Ended::Cancelled);
    let grandchildren = pids_in(&pids);
    assert_eq!(grandchildren.len(), 1, "the grandchild never started");
    for pid in grandchildren {
        assert!(wait_gone(pid, Duration::from_secs(5)));
    }
}

#[test]
fn leftovers_of_a_finished_agent_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script =
        json!([{"grandchild": pids.display().to_string()}, {"replay": fixture("text.jsonl")}]);
    let (r, _d) = run(script, limits(30_000, 30_000), None);
    assert_eq!(
        r.exit.ended,
        Ended::Exited {
            code: Some(0),
            signal: None
        }
    );
    let grandchildren = pids_in(&pids);
    assert_eq!(
        grandchildren.len(),
        1,
        "the background process never started"
    );
    for pid in grandchildren {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "a background process outlived its agent"
        );
    }
}

#[test]
fn garbage_and_huge_lines_are_reported_not_fatal() {
    let script = json!([
        {"raw": "this is not json"},
        {"rawBytes": [255, 254, 0, 97]},
        {"bigLine": 50_000_000},
        {"replay": fixture("text.jsonl")}
    ]);
    let mut l = limits(60_000, 60_000);
    l.max_line = 1024 * 1024;
    let (r, _d) = run(script, l, None);
    assert_eq!(
        r.exit.ended,
        Ended::Exited {
            code: Some(0),
            signal: None
        }
    );
    assert_eq!(r.log.malformed, 3, "{:?}", r.invalid);
    assert!(r.invalid.iter().any(|w| w.contains("not UTF-8")));
    assert!(r
        .invalid
        .iter()
        .any(|w| w.contains("50000000 bytes exceeds")));
    let v = judge(&r.log, &r.exit.ended, &r.exit.stderr_tail);
    assert_eq!(v.outcome, Outcome::Complete);
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let spec = CommandSpec {
        program: "/nonexistent/claude".into(),
        args: vec![],
        env: BTreeMap::new(),
        cwd: std::env::temp_dir(),
        stdin: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(process::run(
            &spec,
            &BTreeMap::new(),
            &limits(1000, 1000),
            &CancellationToken::new(),
            |_| {},
            |_| Flow::Continue,
        ))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start \"/nonexistent/claude\""),
        "{err}"
    );
}

#[test]
fn an_agent_that_lingers_after_its_result_is_stopped_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("s.json");
    std::fs::write(
        &script_path,
        json!({"default": [{"init": true}, {"result": "done"}, {"hang": true}]}).to_string(),
    )
    .unwrap();
    let spec = CommandSpec {
        program: BINS.fake_agent.display().to_string(),
        args: vec!["--script".into(), script_path.display().to_string()],
        env: BTreeMap::new(),
        cwd: dir.path().to_path_buf(),
        stdin: None,
    };
    let mut l = limits(30_000, 30_000);
    l.settle = Duration::from_millis(300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut log = RunLog::default();
    let exit = rt
        .block_on(process::run(&spec, &BTreeMap::new(), &l, &CancellationToken::new(), |_| {}, |line| {
            let Line::Text(t) = line else { return Flow::Continue };
            let parsed = harness::parse_line(wf_core::config::StreamFormat::Claude, t);
            let terminal = matches!(&parsed, Parsed::Events(e) if e.iter().any(|e| matches!(e, harness::AgentEvent::Result(_))));
            log.push(&parsed);
            if terminal { Flow::Terminal } else { Flow::Continue }
        }))
        .unwrap();
    assert_eq!(exit.ended, Ended::Lingered);
    assert_eq!(judge(&log, &exit.ended, "").outcome, Outcome::Complete);
}
