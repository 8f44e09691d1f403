//! Dispatch latency (insert acknowledged → agent running), orchestration overhead per job,
//! and recovery after a runner is killed: each next to what the operating system alone costs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wf_core::model::AssignmentStatus;
use wf_runner::api;
use wf_runner::client::Backend;
use wf_runner::ops::{CreateRequest, InsertResult, JobSpec};
use wf_tests::{kill_pid, nats_server_version, Bins, NatsServer, TestEnv};

use crate::util::*;

fn records(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "agents did not start");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn backend(rt: &tokio::runtime::Runtime, env: &TestEnv) -> Backend {
    let config = wf_core::config::load(None, &env.root).expect("config");
    rt.block_on(Backend::open(&config)).expect("backend")
}

fn create(i: usize, start: bool) -> CreateRequest {
    CreateRequest {
        north_star: format!("dispatch {i}"),
        priority: 10,
        independent: true,
        start: start.then_some(JobSpec {
            job_type: wf_core::model::JobType::Plan,
            harness: None,
            model: None,
            context: None,
        }),
        budget: None,
        forge: None,
        plan: None,
        id: None,
    }
}

/// Spawning the fake agent alone: from before the spawn to its first instruction, in ms.
fn spawn_baseline(bins: &Bins, dir: &Path, samples: usize) -> Vec<f64> {
    let rec = dir.join("spawn-records");
    let script = dir.join("spawn-script.json");
    std::fs::write(
        &script,
        json!({"plan": [{"record": rec.display().to_string()}]}).to_string(),
    )
    .expect("script");
    (0..samples)
        .map(|i| {
            let before = now_us();
            let status = Command::new(&bins.fake_agent)
                .env("FAKE_AGENT_SCRIPT", &script)
                .env("WF_JOB_TYPE", "plan")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .status()
                .expect("fake agent");
            assert!(status.success());
            let r = records(&rec, i + 1);
            (r[i]["startUs"].as_u64().expect("startUs") as f64 - before as f64) / 1000.0
        })
        .collect()
}

/// Insert acknowledged → agent started, one job at a time on an idle runner, in ms.
fn dispatch_samples(mut env: TestEnv, samples: usize) -> Vec<f64> {
    let rec = env.work.join("records");
    let script = json!({
        "plan": [{"record": rec.display().to_string()}, {"result": "ok"}],
        "pm": [{"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).expect("script");
    env.set_runner_env(0, &[("WF_LOG", "info")]);
    env.start_runner();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut b = backend(&rt, &env);
    let mut out = Vec::new();
    for i in 0..samples {
        let (doc, result, acked) = rt.block_on(async {
            let doc: wf_core::model::Assignment = b.call(create(i, false)).await.expect("create");
            let insert = api::InsertJobs {
                assignment: doc.id.clone(),
                jobs: vec![JobSpec {
                    job_type: wf_core::model::JobType::Plan,
                    harness: None,
                    model: None,
                    context: None,
                }],
                after: None,
                caller: None,
            };
            let result: InsertResult = b.call(insert).await.expect("insert");
            (doc, result, now_us())
        });
        let r = records(&rec, i + 1);
        assert_eq!(r[i]["job"], result.jobs[0].id.as_str());
        out.push((r[i]["startUs"].as_u64().expect("startUs") as f64 - acked as f64) / 1000.0);
        env.wait_for(&doc.id, Duration::from_secs(60), |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    out
}

/// Dispatch latency on sled and NATS, next to spawning the agent alone.
pub(crate) fn dispatch(bins: &Bins, nats: &Path, quick: bool, figures: &mut Vec<Figure>) {
    let samples = if quick { 30 } else { 100 };
    let tmp = tempfile::tempdir().expect("tmp");
    let spawn = spawn_baseline(bins, tmp.path(), samples);
    let (s50, s99) = (median(&spawn), quantile(&spawn, 0.99));
    eprintln!("dispatch: sled");
    let sled = dispatch_samples(TestEnv::new(bins, json!({}), json!({})), samples);
    let server = NatsServer::start(nats);
    eprintln!("dispatch: NATS");
    let env = TestEnv::new(
        bins,
        json!({}),
        json!({"store": {"kind": "nats", "url": server.url()}}),
    );
    let on_nats = dispatch_samples(env, samples);
    let version = nats_server_version(nats);
    for (backend, xs, above) in [
        ("sled", &sled, 2.0),
        (&*format!("NATS {version}"), &on_nats, 5.0),
    ] {
        let (p50, p99) = (median(xs), quantile(xs, 0.99));
        figures.push(Figure {
            name: format!("dispatch: insert acknowledged → agent running ({backend}), p50 / p99"),
            command: "wf-bench dispatch".into(),
            value: format!("{p50:.2} / {p99:.2} ms"),
            baseline: format!("fork/exec of the agent alone: {s50:.2} / {s99:.2} ms"),
            relation: format!("+{:.2} ms at p50", p50 - s50),
            goal: format!("p50 ≤ baseline + {above} ms"),
            met: p50 - s50 <= above,
        });
    }
}

/// One assignment of one instant job and its PM (which runs `wf update-assignment`), run one
/// after another; the median wall time per assignment, next to two raw spawns of the agent and
/// one `wf` call.
pub(crate) fn overhead(bins: &Bins, quick: bool, figures: &mut Vec<Figure>) {
    let n = if quick { 20 } else { 60 };
    let script = json!({
        "plan": [{"result": "ok"}],
        "pm": [{"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]
    });
    let mut env = TestEnv::new(bins, script, json!({"maxConcurrent": 1}));
    env.set_runner_env(0, &[("WF_LOG", "info")]);
    env.start_runner();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut b = backend(&rt, &env);
    let per_job = time_ms(n, || {
        let doc: wf_core::model::Assignment = rt.block_on(b.call(create(0, true))).expect("create");
        env.wait_for(&doc.id, Duration::from_secs(60), |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    });
    // The same work without wf around it: the agent twice, and one `wf` call.
    let script = env.work.join("script.json").display().to_string();
    let aid = env.create("baseline");
    let raw = time_ms(n, || {
        for t in ["plan", "plan"] {
            let out = Command::new(&bins.fake_agent)
                .env("FAKE_AGENT_SCRIPT", &script)
                .env("WF_JOB_TYPE", t)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("agent");
            assert!(out.status.success());
        }
        let out = env.wf(&["update-assignment", &aid, "--decisions", "x"]);
        assert!(out.status.success());
    });
    figures.push(Figure::ratio(
        "orchestration per job (a job and its PM, instant agent, sled)",
        "wf-bench overhead",
        median(&per_job),
        "2 raw spawns of the agent + 1 `wf` call",
        median(&raw),
        1.5,
        "ms",
    ));
}

/// Two runners on NATS; the one holding a job is killed with SIGKILL; the time until the job
/// runs again on the other, next to `leaseMs`.
pub(crate) fn recovery(bins: &Bins, nats: &Path, quick: bool, figures: &mut Vec<Figure>) {
    let server = NatsServer::start(nats);
    let lease = 3000u64;
    let mut env = TestEnv::new(
        bins,
        json!({}),
        json!({"store": {"kind": "nats", "url": server.url()}, "leaseMs": lease, "killGraceMs": 500}),
    );
    let rec = env.work.join("records");
    let script = json!({
        "plan": [{"record": rec.display().to_string()}, {"hang": true}],
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).expect("script");
    for r in 0..2 {
        env.set_runner_env(r, &[("WF_LOG", "info")]);
        env.start_runner_n(r);
    }
    let rounds = if quick { 2 } else { 5 };
    let mut samples = Vec::new();
    let mut seen = 0;
    for i in 0..rounds {
        let aid = env.create(&format!("recover {i}"));
        env.wf_ok(&["insert-job", &aid, "--type", "plan"]);
        let first = records(&rec, seen + 1);
        seen += 1;
        let runner = first[seen - 1]["runner"]
            .as_str()
            .expect("runner")
            .to_string();
        let victim = (0..2)
            .find(|&n| env.runner_running(n) && runner_id_of(&env, n) == runner)
            .expect("the holding runner");
        let killed = now_us();
        kill_pid(env.runner_pid_n(victim), libc::SIGKILL);
        let again = records(&rec, seen + 1);
        seen += 1;
        samples.push(
            (again[seen - 1]["startUs"].as_u64().expect("start") as f64 - killed as f64) / 1000.0,
        );
        env.wait_runner_n(victim, Duration::from_secs(30));
        env.start_runner_n(victim);
        env.wf_ok(&["cancel", &aid]);
    }
    let value = median(&samples);
    figures.push(Figure {
        name: "recovery: kill -9 of the runner holding a job → running on another (NATS)".into(),
        command: "wf-bench recovery".into(),
        value: format!("{value:.0} ms"),
        baseline: format!("leaseMs: {lease} ms"),
        relation: format!("+{:.0} ms", value - lease as f64),
        goal: "≤ leaseMs + 1000 ms".into(),
        met: value <= lease as f64 + 1000.0,
    });
}

/// The id runner `n` logged when it started.
fn runner_id_of(env: &TestEnv, n: usize) -> String {
    let log = std::fs::read_to_string(env.log_path(n)).unwrap_or_default();
    log.lines()
        .rev()
        .filter(|l| l.contains("wf-runner ready"))
        .find_map(|l| {
            let i = l.find(" runner=")?;
            Some(
                l[i + " runner=".len()..]
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .unwrap_or_default()
}
