//! The real agent CLIs (Claude Code, Codex, Gemini; pinned versions from npm) run by the real
//! `wf-runner` against the scripted model endpoint `tests/model_server/model_server.py`.
//!
//! For each CLI: a whole assignment where the worker writes a file with the agent's own shell
//! tool and the PM completes the assignment by running `wf update-assignment --status complete`
//! through it; an API 500 that fails the job with a clear reason; a 429 (Claude: 529) that
//! pauses the job, which then resumes by itself and succeeds.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, FailureReason, JobStatus, JobType};
use wf_tests::{agent_clis, ModelServer, TestEnv};

use crate::BINS;

const LONG: Duration = Duration::from_secs(120);

/// The markers our templates put in every worker and PM prompt.
const WORKER: &str = "You are the **implementation agent**";
const PM: &str = "You are the **PM**";

#[derive(Clone, Copy, Debug)]
enum Cli {
    Claude,
    Codex,
    Gemini,
}

impl Cli {
    fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
        }
    }
}

/// The harness config that points `cli` at the model server, with its own home directories
/// and its own API retries off (wf's retry policy is what is under test).
fn harness(cli: Cli, server: &ModelServer, dir: &Path) -> Value {
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    for d in [&home, &tmp, &dir.join("codexhome")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let command = agent_clis().join(cli.name()).display().to_string();
    let common = |mut env: Value| {
        env["HOME"] = json!(home.display().to_string());
        env["TMPDIR"] = json!(tmp.display().to_string());
        env
    };
    match cli {
        Cli::Claude => json!({
            "command": command,
            "permissionMode": "bypassPermissions",
            "env": common(json!({
                "ANTHROPIC_BASE_URL": server.url(),
                "ANTHROPIC_API_KEY": "sk-ant-test",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_ERROR_REPORTING": "1",
                "CLAUDE_CODE_MAX_RETRIES": "0"
            }))
        }),
        Cli::Codex => json!({
            "command": command,
            "sandbox": "bypass",
            "model": "gpt-5.5",
            "args": [
                "-c", "model_provider=fake",
                "-c", format!("model_providers.fake={{name=\"fake\",base_url=\"{}/v1\",env_key=\"FAKE_OPENAI_KEY\",wire_api=\"responses\",request_max_retries=0,stream_max_retries=0}}", server.url())
            ],
            "env": common(json!({
                "CODEX_HOME": dir.join("codexhome").display().to_string(),
                "FAKE_OPENAI_KEY": "sk-test"
            }))
        }),
        Cli::Gemini => {
            std::fs::create_dir_all(home.join(".gemini")).unwrap();
            std::fs::write(
                home.join(".gemini/settings.json"),
                json!({
                    "security": {"auth": {"selectedType": "gemini-api-key"}},
                    "general": {"maxAttempts": 1, "enableAutoUpdate": false, "enableAutoUpdateNotification": false},
                    "privacy": {"usageStatisticsEnabled": false}
                })
                .to_string(),
            )
            .unwrap();
            json!({
                "command": command,
                "approvalMode": "yolo",
                "model": "gemini-2.5-flash",
                "env": common(json!({
                    "GEMINI_CLI_HOME": home.display().to_string(),
                    "GOOGLE_GEMINI_BASE_URL": server.url(),
                    "GEMINI_API_KEY": "test-key"
                }))
            })
        }
    }
}

/// A project whose every job runs on `cli`, with a fast retry policy and prices for the CLIs
/// that report no cost.
fn project(cli: Cli, scenario: Value, max_pauses: u32) -> (TestEnv, ModelServer) {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    // The PM prompt names wf by its absolute path (agents' login shells reset PATH); the
    // scripted model runs the command the prompt gives it.
    let scenario: Value =
        serde_json::from_str(&scenario.to_string().replace("{WF}", &wf_path(&env))).unwrap();
    let server = ModelServer::start(&scenario, &env.dir().join("model"));
    let path = env.root.join(".wf/config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["harnesses"] = json!({cli.name(): harness(cli, &server, &env.dir().join("agent"))});
    config["harnessDefaults"] = json!({"default": cli.name(), "pm": cli.name()});
    config["retryBackoffMs"] = json!([300]);
    config["maxPauses"] = json!(max_pauses);
    config["idleTimeoutMs"] = json!(60000);
    config["prices"] = json!({
        "gpt-5.5": {"inputPerMTok": 1.25, "outputPerMTok": 10.0, "cachedInputPerMTok": 0.125},
        "gemini-2.5-flash": {"inputPerMTok": 0.3, "outputPerMTok": 2.5}
    });
    std::fs::write(&path, config.to_string()).unwrap();
    env.start_runner();
    (env, server)
}

/// The wf command the runner puts in prompts.
fn wf_path(env: &TestEnv) -> String {
    std::fs::canonicalize(&env.bin)
        .unwrap()
        .join("wf")
        .display()
        .to_string()
}

fn complete_by_pm(worker_steps: Value) -> Value {
    json!({"rules": [
        {"name": "pm", "match": PM, "steps": [
            {"shell": "{WF} update-assignment --status complete"},
            {"text": "Completed the assignment."}
        ]},
        {"name": "worker", "match": WORKER, "steps": worker_steps}
    ]})
}

fn full_assignment(cli: Cli) {
    let script = format!("printf 'hello from {}' > hello.txt", cli.name());
    let scenario = complete_by_pm(json!([{"shell": script}, {"text": "Done: wrote hello.txt"}]));
    let (env, server) = project(cli, scenario, 3);
    let aid = env
        .wf_ok(&["create", "Write hello.txt", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });

    let types: Vec<JobType> = doc.jobs.iter().map(|j| j.job_type).collect();
    assert_eq!(types, [JobType::Implement, JobType::Pm], "{doc:#?}");
    assert!(
        doc.jobs.iter().all(|j| j.status == JobStatus::Complete),
        "{doc:#?}"
    );
    let file =
        std::fs::read_to_string(env.root.join("hello.txt")).expect("the agent wrote hello.txt");
    assert_eq!(file, format!("hello from {}", cli.name()));

    let worker = env.wf_json(&["job", &doc.jobs[0].id]);
    assert_eq!(worker["result"], "Done: wrote hello.txt", "{worker}");
    assert!(worker["job"]["sessionId"].is_string(), "{worker}");
    assert!(worker["job"]["usage"]["inputTokens"].as_u64().unwrap() > 0);
    // Claude reports its cost; Codex and Gemini are priced from the config.
    assert!(
        worker["job"]["usage"]["costUsd"].as_f64().unwrap() > 0.0,
        "{worker}"
    );
    let pm = env.wf_json(&["job", &doc.jobs[1].id]);
    assert_eq!(pm["result"], "Completed the assignment.");
    let prompt = std::fs::read_to_string(
        env.root
            .join(".wf/transcripts")
            .join(&aid)
            .join(format!("{}-1.prompt.md", doc.jobs[1].id)),
    )
    .unwrap();
    assert!(
        prompt.contains(&format!(
            "{} update-assignment --status complete",
            wf_path(&env)
        )),
        "{prompt}"
    );

    // The CLI really talked to the endpoint: the worker's and the PM's loops.
    let rules: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r["rule"].as_str().map(str::to_string))
        .collect();
    assert!(
        rules.iter().any(|r| r == "worker") && rules.iter().any(|r| r == "pm"),
        "{rules:?}"
    );
}

fn api_500_fails_with_a_clear_reason(cli: Cli) {
    let scenario = json!({"rules": [
        {"name": "pm", "match": PM, "steps": [
            {"shell": "{WF} update-assignment --status blocked --reason 'the worker hit API errors'"},
            {"text": "Blocked."}
        ]},
        {"name": "worker", "match": WORKER, "failFirst": {"status": 500, "count": -1}, "steps": [{"text": "never"}]}
    ]});
    let (env, server) = project(cli, scenario, 1);
    let aid = env
        .wf_ok(&["create", "Hit a 500", "--start", "implement"])
        .trim()
        .to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked && d.lease.is_none()
    });
    let worker = &doc.jobs[0];
    assert_eq!(worker.status, JobStatus::Failed, "{doc:#?}");
    assert_eq!(worker.failure_reason, Some(FailureReason::Exit));
    let detail = worker.failure_detail.clone().unwrap();
    assert!(
        detail.starts_with("gave up after 1 pauses for transient errors"),
        "{detail}"
    );
    assert!(detail.contains("transient API error"), "{detail}");
    assert_eq!(worker.attempt, 2, "paused once, then failed");
    assert_eq!(
        doc.blocked_reason.as_deref(),
        Some("the worker hit API errors")
    );
    let failures = server
        .requests()
        .iter()
        .filter(|r| r["status"] == 500)
        .count();
    assert!(failures >= 2, "{failures}");
}

fn rate_limit_pauses_then_succeeds(cli: Cli, status: u16) {
    let scenario = complete_by_pm(json!([{"text": "Done after waiting."}]));
    let mut scenario = scenario;
    scenario["rules"][1]["failFirst"] = json!({"status": status, "count": 1});
    let (env, _server) = project(cli, scenario, 3);
    let aid = env
        .wf_ok(&["create", "Be rate limited", "--start", "implement"])
        .trim()
        .to_string();
    let paused = env.wait_for(&aid, LONG, |d| d.jobs[0].status == JobStatus::WaitingRetry);
    let detail = paused.jobs[0].failure_detail.clone().unwrap_or_default();
    assert!(
        detail.contains("transient API error") || detail.contains("rate limited"),
        "{detail}"
    );
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    let worker = &doc.jobs[0];
    assert_eq!(worker.status, JobStatus::Complete);
    assert_eq!((worker.attempt, worker.pauses), (2, 1));
    assert_eq!(
        env.wf_json(&["job", &worker.id])["result"],
        "Done after waiting."
    );
}

#[test]
fn claude_code_end_to_end() {
    full_assignment(Cli::Claude);
    api_500_fails_with_a_clear_reason(Cli::Claude);
    rate_limit_pauses_then_succeeds(Cli::Claude, 529);
    rate_limit_pauses_then_succeeds(Cli::Claude, 429);
}

#[test]
fn codex_end_to_end() {
    full_assignment(Cli::Codex);
    api_500_fails_with_a_clear_reason(Cli::Codex);
    rate_limit_pauses_then_succeeds(Cli::Codex, 429);
}

#[test]
fn gemini_end_to_end() {
    full_assignment(Cli::Gemini);
    api_500_fails_with_a_clear_reason(Cli::Gemini);
    rate_limit_pauses_then_succeeds(Cli::Gemini, 429);
}

#[test]
fn doctor_finds_the_installed_clis() {
    let server = ModelServer::start(
        &json!([]),
        &std::env::temp_dir().join(format!("wf-doctor-{}", std::process::id())),
    );
    let tmp = tempfile::tempdir().unwrap();
    let harnesses: serde_json::Map<String, Value> = [Cli::Claude, Cli::Codex, Cli::Gemini]
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                harness(*c, &server, &tmp.path().join(c.name())),
            )
        })
        .collect();
    let env = TestEnv::new(&BINS, json!({}), json!({"harnesses": harnesses}));
    let report = env.wf_json(&["doctor"]);
    assert_eq!(report["ok"], true, "{report}");
    let versions: Vec<String> = report["harnesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        versions.iter().any(|v| v.contains("2.1.197")),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|v| v.contains("0.169.0")),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|v| v.contains("0.61.0")),
        "{versions:?}"
    );
    assert_eq!(report["store"]["reachable"], true);

    // A harness the config uses but that is not installed is a problem.
    let broken = TestEnv::new(
        &BINS,
        json!({}),
        json!({"harnesses": {"claude": {"command": "/nonexistent/claude"}}}),
    );
    let out = broken.wf(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT FOUND"));
}
