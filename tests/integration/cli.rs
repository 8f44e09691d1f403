//! The `wf` command line: output shapes, id prefixes, defaults, and bad input.

use std::os::unix::ffi::OsStrExt;

use serde_json::{json, Value};
use wf_tests::TestEnv;

use crate::BINS;

fn env() -> TestEnv {
    TestEnv::new(&BINS, json!({}), json!({}))
}

/// Runs a command that must fail: one `wf: error:` line on stderr, the given exit code, and
/// the store unchanged.
fn refused(env: &TestEnv, args: &[&std::ffi::OsStr], code: i32, needle: &str) {
    let before = env.wf_ok(&["assignments", "--json"]);
    let mut cmd = env.wf_cmd(&[]);
    cmd.args(args);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(stderr.starts_with("wf: error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    assert_eq!(
        env.wf_ok(&["assignments", "--json"]),
        before,
        "{args:?} changed the store"
    );
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

fn refuse(env: &TestEnv, args: &[&str], code: i32, needle: &str) {
    let owned = os(args);
    let refs: Vec<&std::ffi::OsStr> = owned.iter().map(|a| a.as_os_str()).collect();
    refused(env, &refs, code, needle);
}

#[test]
fn json_output_uses_camel_case_and_prefixes_work() {
    let env = env();
    let aid = env.create("Make a thing");
    let doc = env.wf_json(&["assignment", &aid[..4]]);
    assert_eq!(doc["id"], aid.as_str());
    assert_eq!(doc["northStar"], "Make a thing");
    assert_eq!(doc["status"], "pending");
    assert_eq!(doc["blockedReason"], Value::Null);
    assert_eq!(doc["priority"], 10);

    let inserted = env.wf_json(&["insert-job", &aid[..5], "--type", "plan", "--context", "c"]);
    let job_id = inserted["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(inserted["jobs"][0]["jobType"], "plan");
    assert_eq!(inserted["jobs"][0]["harness"], "claude");

    let list = env.wf_json(&["assignments"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let jobs = env.wf_json(&["jobs", "--status", "pending"]);
    assert_eq!(jobs[0]["id"], job_id.as_str());
    let job = env.wf_json(&["job", &job_id[..6]]);
    assert_eq!(job["context"], "c");
    assert_eq!(job["job"]["assignmentId"], aid.as_str());

    // A group: two jobs, one groupId.
    let group = env.wf_json(&[
        "insert-job",
        &aid,
        "--jobs",
        r#"[{"jobType":"review"},{"type":"uat","context":"flows"}]"#,
    ]);
    assert_eq!(group["jobs"].as_array().unwrap().len(), 2);
    assert!(group["groupId"].is_string());
    assert_eq!(group["jobs"][0]["groupId"], group["groupId"]);

    // Human tables.
    let table = env.wf_ok(&["assignments"]);
    assert!(
        table.contains("NORTH STAR") && table.contains(&aid),
        "{table}"
    );
    let shown = env.wf_ok(&["assignment", &aid]);
    assert!(
        shown.contains("plan") && shown.contains("review") && shown.contains("parallel group"),
        "{shown}"
    );
    let queue = env.wf_json(&["queue"]);
    assert_eq!(queue["assignments"][0]["next"][0]["jobId"], job_id.as_str());
}

#[test]
fn the_assignment_defaults_to_the_environment() {
    let env = env();
    let aid = env.create("Env default");
    let out = env
        .wf_cmd(&["insert-job", "--type", "plan"])
        .env("WF_ASSIGNMENT_ID", &aid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .wf_cmd(&["update-assignment", "--artifacts", "a.txt"])
        .env("WF_ASSIGNMENT_ID", &aid)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(env.wf_json(&["assignment", &aid])["artifacts"], "a.txt");
}

#[test]
// Long: a table of bad command lines, each with its expected refusal.
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let env = env();
    let aid = env.create("Target");
    refuse(
        &env,
        &["assignment", "zzzz"],
        4,
        "no assignment matches \"zzzz\"",
    );
    refuse(&env, &["assignment", "ab!"], 2, "malformed id");
    refuse(&env, &["job", "0123456789abc"], 2, "at most 12 characters");
    refuse(
        &env,
        &["insert-job", "--type", "plan"],
        2,
        "no assignment given",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--type", "deploy"],
        2,
        "unknown job type \"deploy\"",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--type", "plan", "--harness", "nope"],
        1,
        "unknown harness \"nope\"",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--jobs", "not json"],
        2,
        "--jobs is not valid JSON",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--jobs", "{}"],
        2,
        "must be a JSON array",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--jobs", "[]"],
        1,
        "no jobs given",
    );
    refuse(
        &env,
        &[
            "insert-job",
            &aid,
            "--jobs",
            r#"[{"jobType":"review","foo":1}]"#,
        ],
        2,
        "unknown field `foo`",
    );
    refuse(
        &env,
        &[
            "insert-job",
            &aid,
            "--jobs",
            r#"[{"jobType":"pm"},{"jobType":"review"}]"#,
        ],
        1,
        "pm job cannot be part of a group",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--jobs-file", "/nonexistent/jobs.json"],
        2,
        "cannot read --jobs-file",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--type", "plan", "--after", "zzzz"],
        4,
        "no job matches",
    );
    refuse(
        &env,
        &["insert-job", &aid, "--type", "plan", "--jobs", "[]"],
        2,
        "cannot be used with",
    );
    refuse(
        &env,
        &["update-assignment", &aid, "--status", "blocked"],
        1,
        "--reason is required",
    );
    refuse(
        &env,
        &["update-assignment", &aid, "--status", "paused"],
        2,
        "unknown assignment status",
    );
    refuse(&env, &["update-assignment", &aid], 1, "nothing to update");
    refuse(&env, &["create", ""], 1, "the north star is empty");
    refuse(
        &env,
        &["create", "x", "--start", "nap"],
        2,
        "unknown job type",
    );
    refuse(
        &env,
        &["create", &"x".repeat(100_000)],
        1,
        "the limit is 64 KiB",
    );
    refuse(&env, &["jobs", "--status", "done"], 2, "unknown job status");
    refuse(&env, &["frobnicate"], 2, "unrecognized subcommand");
    let non_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    refused(
        &env,
        &["create".as_ref(), non_utf8],
        2,
        "the north star is not valid UTF-8",
    );
    refused(
        &env,
        &[
            "insert-job".as_ref(),
            aid.as_ref(),
            "--type".as_ref(),
            "plan".as_ref(),
            "--context".as_ref(),
            non_utf8,
        ],
        2,
        "--context is not valid UTF-8",
    );
}

#[test]
fn a_bad_config_names_the_key() {
    let env = env();
    let path = env.root.join(".wf/config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["harnesses"]["claude"]["comand"] = json!("x");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = env.wf(&["assignments"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("harnesses.claude") && stderr.contains("`comand`"),
        "{stderr}"
    );
}

#[test]
fn reads_and_writes_go_through_the_runner_when_it_runs() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let aid = env.create("Before the runner");
    env.start_runner();
    // The runner holds the database now; wf must reach it over the socket.
    let doc = env.wf_json(&["assignment", &aid]);
    assert_eq!(doc["id"], aid.as_str());
    let second = env.create("Through the runner");
    assert_eq!(env.wf_json(&["assignments"]).as_array().unwrap().len(), 2);
    assert_eq!(
        env.wf_json(&["assignment", &second])["northStar"],
        "Through the runner"
    );
}

#[test]
fn the_demo_runs_the_whole_loop_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&BINS.wf)
        .arg("demo")
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .env_remove("WF_CONFIG")
        .env_remove("WF_ASSIGNMENT_ID")
        .env_remove("WF_JOB_ID")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SIMULATED"), "{stdout}");
    for needle in [
        "plan",
        "implement",
        "PM shadow job",
        "inserted by PM job",
        "is complete",
        "Hello from wf!",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{stdout}");
    }
    // The demo cleaned up after itself.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn harness_defaults_fan_out_into_a_parallel_group() {
    let env = TestEnv::new(
        &BINS,
        json!({}),
        json!({
            "harnesses": {"alt": {"command": "alt-agent", "format": "codex", "model": "m-default"}},
            "harnessDefaults": {"review": ["claude", {"harness": "alt", "model": "m2"}], "plan": {"harness": "alt"}}
        }),
    );
    let aid = env.create("Fan out");
    let review = env.wf_json(&["insert-job", &aid, "--type", "review", "--context", "look"]);
    let jobs = review["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{review}");
    assert_eq!(
        (jobs[0]["harness"].as_str(), jobs[1]["harness"].as_str()),
        (Some("claude"), Some("alt"))
    );
    assert_eq!(jobs[1]["model"], "m2");
    assert!(review["groupId"].is_string());
    assert_eq!(jobs[0]["groupId"], jobs[1]["groupId"]);
    // An explicit harness is one job; a single default is one job.
    let one = env.wf_json(&[
        "insert-job",
        &aid,
        "--type",
        "review",
        "--harness",
        "claude",
    ]);
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);
    let plan = env.wf_json(&["insert-job", &aid, "--type", "plan"]);
    assert_eq!(plan["jobs"][0]["harness"], "alt");
}

/// `wf assignments --json | head -c 100`: the reader closes the pipe early, which is a normal
/// end — exit 0, nothing on stderr, no panic (Rust's `println!` panics on EPIPE).
#[test]
fn a_reader_closing_the_pipe_ends_wf_quietly() {
    use std::io::Read;
    let env = env();
    // More JSON than a pipe buffer (64 KiB) holds, so that wf is still writing when it closes.
    let north_star = "x".repeat(50_000);
    for _ in 0..3 {
        env.create(&north_star);
    }
    for args in [
        &["assignments", "--json"][..],
        &["jobs", "--json"],
        &["queue"],
    ] {
        let mut child = env
            .wf_cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut head = [0u8; 100];
        stdout.read_exact(&mut head).ok();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "wf {args:?}: {} {stderr}", out.status);
        assert!(stderr.is_empty(), "wf {args:?}: {stderr}");
    }
}

/// A PM that runs the same `wf insert-job` again (its first call's acknowledgement was lost, so
/// it saw an error) does not get two jobs: the ids follow from the calling job, its attempt and
/// the request. A different request is a different job.
#[test]
fn an_agents_retried_insert_is_not_doubled() {
    let env = env();
    let aid = env.create("Retry me");
    let pm = env
        .wf_ok(&["insert-job", &aid, "--type", "pm"])
        .trim()
        .to_string();
    let as_pm = |args: &[&str]| {
        let mut cmd = env.wf_cmd(args);
        cmd.env("WF_JOB_ID", &pm).env("WF_ASSIGNMENT_ID", &aid);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = as_pm(&["insert-job", "--type", "implement", "--context", "do it"]);
    let again = as_pm(&["insert-job", "--type", "implement", "--context", "do it"]);
    assert_eq!(first, again, "the retry found its own insert");
    let implements = |env: &TestEnv| {
        env.assignment(&aid)
            .jobs
            .iter()
            .filter(|j| j.job_type == wf_core::model::JobType::Implement)
            .count()
    };
    assert_eq!(implements(&env), 1);
    as_pm(&[
        "insert-job",
        "--type",
        "implement",
        "--context",
        "then this",
    ]);
    assert_eq!(implements(&env), 2);
}
