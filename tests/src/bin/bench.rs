//! `wf-bench`: measures what BENCHMARKS.md reports, with the real binaries.
//!
//! Run it from a release build so that the figures mean something:
//! `cargo build --release -p wf-tests --bins && target/release/wf-bench`.
//! It prints a Markdown section on stdout.
//!
//! - `wf assignments --json` with 200 assignments stored, through a running runner and with the
//!   CLI opening the store itself.
//! - Dispatch latency: from the acknowledgement of `insert-job` (by the runner with sled, by
//!   NATS with NATS) to the agent process running, one job at a time on an idle runner.
//! - Throughput: assignments of one job (plus its PM) with an instant agent: sled with its one
//!   runner, NATS with one and with three runners.
//!
//! The NATS figures use the first server of `$WF_NATS_SERVERS`, else `nats-server` on PATH.

#![allow(
    clippy::disallowed_methods,
    reason = "the test harness starts the binaries under test and their helpers"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wf_core::model::AssignmentStatus;
use wf_runner::api;
use wf_runner::client::{Backend, Client};
use wf_runner::ops::{CreateRequest, InsertResult, JobSpec};
use wf_tests::{nats_server_version, Bins, NatsServer, TestEnv};

fn bins() -> Bins {
    let dir = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("dir")
        .to_path_buf();
    let bins = Bins {
        wf: dir.join("wf-dup"),
        runner: dir.join("wf-runner-dup"),
        fake_agent: dir.join("fake-agent"),
    };
    for p in [&bins.wf, &bins.runner, &bins.fake_agent] {
        assert!(
            p.exists(),
            "{} is missing: build with `cargo build --release -p wf-tests --bins`",
            p.display()
        );
    }
    bins
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

fn stats(mut xs: Vec<f64>) -> String {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let p = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "{:.1} | {:.1} | {:.1} | {:.1}",
        xs[0],
        p(0.5),
        p(0.99),
        xs[xs.len() - 1]
    )
}

fn time_cli(env: &TestEnv, args: &[&str], runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = env.wf(args);
            assert!(out.status.success());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn list_bench(bins: &Bins, out: &mut String) {
    let mut env = TestEnv::new(bins, json!({}), json!({}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    env.start_runner();
    rt.block_on(async {
        let mut c = Client::connect(&env.socket()).await.expect("connect");
        for i in 0..200 {
            let req = CreateRequest {
                north_star: format!(
                    "Assignment number {i}: make the thing better in some specific way"
                ),
                priority: 10,
                independent: true,
                start: None,
                budget: None,
                forge: None,
                plan: None,
                id: None,
            };
            c.call(req).await.expect("create");
        }
    });
    let json = env.wf_ok(&["assignments", "--json"]);
    let bytes = json.len();
    let via_runner = time_cli(&env, &["assignments", "--json"], 50);
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(Duration::from_secs(30));
    let direct = time_cli(&env, &["assignments", "--json"], 50);
    out.push_str(&format!(
        "### `wf assignments --json` with 200 assignments ({} KiB of JSON)\n\n\
         Wall time of the whole `wf` process, 50 runs each, in ms.\n\n\
         | path | min | p50 | p99 | max |\n|---|---|---|---|---|\n\
         | through the running runner (control socket) | {} |\n\
         | no runner: `wf` opens the sled store itself | {} |\n\n",
        bytes / 1024,
        stats(via_runner),
        stats(direct)
    ));
}

fn wait_records(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "agents did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens the state of `env` the way `wf` does (the runner's socket for sled, NATS directly).
fn backend(rt: &tokio::runtime::Runtime, env: &TestEnv) -> Backend {
    let config =
        wf_core::config::load(Some(&env.root.join(".wf/config.json")), &env.root).expect("config");
    rt.block_on(Backend::open(&config)).expect("backend")
}

fn nats_env(
    bins: &Bins,
    server: &NatsServer,
    script: serde_json::Value,
    extra: serde_json::Value,
) -> TestEnv {
    let mut config = json!({"store": {"kind": "nats", "url": server.url()}});
    if let (serde_json::Value::Object(c), serde_json::Value::Object(e)) = (&mut config, extra) {
        c.extend(e);
    }
    TestEnv::new(bins, script, config)
}

fn dispatch_samples(mut env: TestEnv, samples: usize) -> Vec<f64> {
    let records = env.work.join("records");
    let script = json!({
        "plan": [{"record": records.display().to_string()}, {"result": "ok"}],
        "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).expect("script");
    env.start_runner();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut b = backend(&rt, &env);
    let mut latencies = Vec::new();
    for i in 0..samples {
        let (doc, result, acked) = rt.block_on(async {
            let req = CreateRequest {
                north_star: format!("dispatch {i}"),
                priority: 10,
                independent: true,
                start: None,
                budget: None,
                forge: None,
                plan: None,
                id: None,
            };
            let doc: wf_core::model::Assignment = b.call(req).await.expect("create");
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
        let recs = wait_records(&records, i + 1);
        let started = recs[i]["startUs"].as_u64().expect("startUs");
        assert_eq!(recs[i]["job"], result.jobs[0].id.as_str());
        latencies.push((started as f64 - acked as f64) / 1000.0);
        // Let the PM finish so that every sample starts from an idle runner.
        env.wait_for(&doc.id, Duration::from_secs(30), |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    latencies
}

fn dispatch_bench(bins: &Bins, nats: Option<&Path>, out: &mut String) {
    let samples = 100;
    let sled = dispatch_samples(TestEnv::new(bins, json!({}), json!({})), samples);
    let mut rows = format!("| sled (runner's socket) | {} |\n", stats(sled));
    if let Some(bin) = nats {
        let server = NatsServer::start(bin);
        let v = nats_server_version(bin);
        let lat = dispatch_samples(nats_env(bins, &server, json!({}), json!({})), samples);
        rows.push_str(&format!("| NATS {v}, loopback | {} |\n", stats(lat)));
    }
    out.push_str(&format!(
        "### Dispatch latency: `insert-job` acknowledged → agent process running\n\n\
         {samples} samples per backend, one at a time on an idle runner, in ms. The agent's clock\n\
         reading is its first instruction, so the figure includes fork/exec of the agent binary.\n\n\
         | backend | min | p50 | p99 | max |\n|---|---|---|---|---|\n{rows}\n"
    ));
}

/// Runs `n` one-job assignments through `runners` runners; returns agent runs per second.
fn throughput(mut env: TestEnv, runners: usize, n: usize) -> (f64, f64) {
    for r in 0..runners {
        env.start_runner_n(r);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut b = backend(&rt, &env);
    let started = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..n {
            let req = CreateRequest {
                north_star: format!("throughput {i}"),
                priority: 10,
                independent: true,
                start: Some(JobSpec {
                    job_type: wf_core::model::JobType::Plan,
                    harness: None,
                    model: None,
                    context: None,
                }),
                budget: None,
                forge: None,
                plan: None,
                id: None,
            };
            let doc: wf_core::model::Assignment = b.call(req).await.expect("create");
            ids.push(doc.id);
        }
        ids
    });
    eprintln!("created {n} in {:?}", started.elapsed());
    for id in &ids {
        env.wait_for(id, Duration::from_secs(600), |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("done in {secs:.1}s");
    (secs, (2 * n) as f64 / secs)
}

fn throughput_bench(bins: &Bins, nats: Option<&Path>, out: &mut String) {
    let n = 200;
    let script = json!({
        "plan": [{"result": "ok"}],
        "pm": [{"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]
    });
    let (secs, rate) = throughput(
        TestEnv::new(bins, script.clone(), json!({"maxConcurrent": 8})),
        1,
        n,
    );
    let mut rows = format!("| sled | 1 | {} | {secs:.1} s | {rate:.1} |\n", 2 * n);
    if let Some(bin) = nats {
        let server = NatsServer::start(bin);
        let v = nats_server_version(bin);
        for runners in [1, 3] {
            let env = nats_env(
                bins,
                &server,
                script.clone(),
                json!({"maxConcurrent": 8, "namespace": format!("tp{runners}")}),
            );
            let (secs, rate) = throughput(env, runners, n);
            rows.push_str(&format!(
                "| NATS {v} | {runners} | {} | {secs:.1} s | {rate:.1} |\n",
                2 * n
            ));
        }
    }
    out.push_str(&format!(
        "### Throughput with an instant agent\n\n\
         {n} assignments, each one job plus its PM job (which runs `wf update-assignment --status\n\
         complete`), `maxConcurrent` 8 per runner, all created up front.\n\n\
         | backend | runners | agent runs | wall time | agent runs/s |\n|---|---|---|---|---|\n{rows}\n"
    ));
}

fn main() {
    let bins = bins();
    let mut out = String::new();
    let which: Vec<String> = std::env::args().skip(1).collect();
    let all = which.is_empty();
    if all || which.iter().any(|w| w == "list") {
        list_bench(&bins, &mut out);
    }
    let nats = std::env::var_os("WF_NATS_SERVERS")
        .and_then(|v| std::env::split_paths(&v).next())
        .or_else(|| Some(wf_tests::nats_server()));
    if all || which.iter().any(|w| w == "dispatch") {
        dispatch_bench(&bins, nats.as_deref(), &mut out);
    }
    if all || which.iter().any(|w| w == "throughput") {
        throughput_bench(&bins, nats.as_deref(), &mut out);
    }
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("<!-- measured by wf-bench ({rustc}, {cpus} CPUs) -->\n\n{out}");
}
