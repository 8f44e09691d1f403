//! `wf-bench`: measures what BENCHMARKS.md reports, with the real binaries.
//!
//! Run it from a release build so that the figures mean something:
//! `cargo build --release -p wf-tests --bins && target/release/wf-bench`.
//! It prints a Markdown section on stdout.
//!
//! - `wf assignments --json` with 200 assignments stored, through a running runner and with the
//!   CLI opening the store itself.
//! - Dispatch latency: from the runner's acknowledgement of `insert-job` to the agent process
//!   running (its first instruction), one job at a time on an idle runner.
//! - Throughput: assignments of one job (plus its PM) through one runner with an instant agent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wf_runner::api::Request;
use wf_runner::client::Client;
use wf_runner::model::AssignmentStatus;
use wf_runner::ops::{CreateRequest, InsertResult, JobSpec};
use wf_tests::{Bins, TestEnv};

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
            };
            c.call(Request::Create(req)).await.expect("create");
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

fn dispatch_bench(bins: &Bins, out: &mut String) {
    let mut env = TestEnv::new(bins, json!({}), json!({}));
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
    let samples = 100;
    let mut latencies = Vec::new();
    let mut c = rt
        .block_on(Client::connect(&env.socket()))
        .expect("connect");
    for i in 0..samples {
        let (doc, result, acked) = rt.block_on(async {
            let req = CreateRequest {
                north_star: format!("dispatch {i}"),
                priority: 10,
                independent: true,
                start: None,
            };
            let doc: wf_runner::model::Assignment =
                serde_json::from_value(c.call(Request::Create(req)).await.expect("create"))
                    .expect("doc");
            let insert = Request::InsertJobs {
                assignment: doc.id.clone(),
                jobs: vec![JobSpec {
                    job_type: wf_runner::model::JobType::Plan,
                    harness: None,
                    model: None,
                    context: None,
                }],
                after: None,
                caller: None,
            };
            let result: InsertResult =
                serde_json::from_value(c.call(insert).await.expect("insert"))
                    .expect("insert result");
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
    out.push_str(&format!(
        "### Dispatch latency: `insert-job` acknowledged → agent process running\n\n\
         {samples} samples on an idle runner (sled), in ms. The agent's clock reading is its first\n\
         instruction, so the figure includes fork/exec of the agent binary.\n\n\
         | backend | min | p50 | p99 | max |\n|---|---|---|---|---|\n| sled | {} |\n\n",
        stats(latencies)
    ));
}

fn throughput_bench(bins: &Bins, out: &mut String) {
    let n = 200;
    let mut env = TestEnv::new(
        bins,
        json!({
            "plan": [{"result": "ok"}],
            "pm": [{"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]
        }),
        json!({"maxConcurrent": 8}),
    );
    env.start_runner();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let started = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        let mut c = Client::connect(&env.socket()).await.expect("connect");
        let mut ids = Vec::new();
        for i in 0..n {
            let req = CreateRequest {
                north_star: format!("throughput {i}"),
                priority: 10,
                independent: true,
                start: Some(JobSpec {
                    job_type: wf_runner::model::JobType::Plan,
                    harness: None,
                    model: None,
                    context: None,
                }),
            };
            let doc: wf_runner::model::Assignment =
                serde_json::from_value(c.call(Request::Create(req)).await.expect("create"))
                    .expect("doc");
            ids.push(doc.id);
        }
        ids
    });
    for id in &ids {
        env.wait_for(id, Duration::from_secs(300), |d| {
            d.status == AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    let secs = started.elapsed().as_secs_f64();
    out.push_str(&format!(
        "### Throughput with an instant agent\n\n\
         {n} assignments, each one job plus its PM job (which runs `wf update-assignment --status\n\
         complete`), `maxConcurrent` 8, one runner.\n\n\
         | backend | runners | agent runs | wall time | agent runs/s |\n|---|---|---|---|---|\n\
         | sled | 1 | {} | {secs:.1} s | {:.1} |\n\n",
        2 * n,
        (2 * n) as f64 / secs
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
    if all || which.iter().any(|w| w == "dispatch") {
        dispatch_bench(&bins, &mut out);
    }
    if all || which.iter().any(|w| w == "throughput") {
        throughput_bench(&bins, &mut out);
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
