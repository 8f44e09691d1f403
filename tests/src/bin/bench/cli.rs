//! The commands people type, at 200 assignments and at 10,000 (most complete): listing,
//! writing, filtered listing; the runner's start-up and idle memory at both sizes; on sled and
//! on NATS.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use wf_store::Store;
use wf_tests::{nats_server_version, Bins, NatsServer, TestEnv};

use crate::fill::fill;
use crate::util::*;

/// Runs, per command figure.
fn runs(quick: bool) -> usize {
    if quick {
        10
    } else {
        30
    }
}

/// What one store size measured.
struct Sized {
    start_ms: f64,
    idle_rss: f64,
    create_ms: f64,
    insert_ms: f64,
    update_ms: f64,
    filtered_ms: f64,
    doc_bytes: usize,
}

fn quiet(env: &mut TestEnv) {
    env.set_runner_env(0, &[("WF_LOG", "info")]);
}

/// Starts runner 0 `times` times (stopping it in between); the median time to ready, in ms.
fn start_up(env: &mut TestEnv, times: usize) -> f64 {
    let mut samples = Vec::new();
    for i in 0..times {
        if i > 0 {
            env.signal_runner(libc::SIGTERM);
            env.wait_runner(Duration::from_secs(60));
        }
        let log = env.log_path(0);
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        env.start_runner_sharing(0, None, false);
        let took = wait_log(&log, from, "wf-runner ready", Duration::from_secs(60));
        samples.push(took.as_secs_f64() * 1000.0);
    }
    median(&samples)
}

/// The commands that touch one assignment, and a filtered list, against a running runner.
fn measure(env: &mut TestEnv, blocked: &[String], quick: bool) -> Sized {
    let n = runs(quick);
    let start_ms = start_up(env, if quick { 3 } else { 5 });
    // Settled: the runner has loaded what it keeps.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_mib(env.runner_pid()).0;
    let create_ms = median(&time_wf(env, &["create", "Measure the create command"], n));
    let mut k = 0;
    let insert_ms = median(&time_ms(n, || {
        let aid = &blocked[k % blocked.len()];
        k += 1;
        let out = env.wf(&[
            "insert-job",
            aid,
            "--type",
            "plan",
            "--context",
            "plan the next step",
        ]);
        assert!(out.status.success());
    }));
    let update_ms = median(&time_ms(n, || {
        let aid = &blocked[k % blocked.len()];
        k += 1;
        let out = env.wf(&[
            "update-assignment",
            aid,
            "--decisions",
            "X over Y, because Z",
        ]);
        assert!(out.status.success());
    }));
    let filtered_ms = median(&time_wf(
        env,
        &["assignments", "--status", "blocked", "--json"],
        n,
    ));
    let doc_bytes = env.wf_ok(&["assignment", &blocked[0], "--json"]).len();
    Sized {
        start_ms,
        idle_rss,
        create_ms,
        insert_ms,
        update_ms,
        filtered_ms,
        doc_bytes,
    }
}

fn sled_env(bins: &Bins, finished: usize, blocked: usize) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::new(bins, json!({}), json!({"namespace": "bench"}));
    quiet(&mut env);
    let config = wf_core::config::load(None, &env.root).expect("config");
    let wf_core::config::StoreConfig::Sled { path } = &config.store else {
        unreachable!()
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let ids = rt.block_on(async {
        let store = Store::Sled(
            wf_store::sled::SledStore::open(path, &config.namespace, Duration::from_secs(5))
                .expect("open"),
        );
        fill(&store, "bench", finished, blocked).await
    });
    (env, ids)
}

fn nats_env(
    bins: &Bins,
    server: &NatsServer,
    ns: &str,
    finished: usize,
    blocked: usize,
) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::new(
        bins,
        json!({}),
        json!({"namespace": ns, "store": {"kind": "nats", "url": server.url()}}),
    );
    quiet(&mut env);
    let config = wf_core::config::load(None, &env.root).expect("config");
    let wf_core::config::StoreConfig::Nats(nats) = &config.store else {
        unreachable!()
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let ids = rt.block_on(async {
        let store = Store::Nats(
            wf_store::nats::NatsStore::connect(nats, &config.namespace, "bench", false)
                .await
                .expect("connect"),
        );
        fill(&store, ns, finished, blocked).await
    });
    (env, ids)
}

/// `wf assignments --json` with 200 stored, through the runner and opening the store, next to
/// `cat` of a file holding the same output.
fn list_figures(env: &mut TestEnv, quick: bool, figures: &mut Vec<Figure>) {
    let n = runs(quick);
    let out = env.wf_ok(&["assignments", "--json"]);
    let file = env.work.join("assignments.json");
    std::fs::write(&file, &out).expect("baseline file");
    let path = file.display().to_string();
    let cat = median(&time_cmd("cat", &[&path], n));
    let via_runner = median(&time_wf(env, &["assignments", "--json"], n));
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(Duration::from_secs(60));
    let direct = median(&time_wf(env, &["assignments", "--json"], n));
    let kib = out.len() / 1024;
    for (how, value) in [
        ("through the runner", via_runner),
        ("opening the store", direct),
    ] {
        figures.push(Figure::ratio(
            &format!("`wf assignments --json`, 200 stored ({kib} KiB), {how} (sled)"),
            "wf-bench cli",
            value,
            "`cat` of the same output",
            cat,
            3.0,
            "ms",
        ));
    }
}

fn write_figures(
    small: &Sized,
    large: &Sized,
    baseline: f64,
    backend: &str,
    figures: &mut Vec<Figure>,
) {
    for (what, s, l) in [
        ("`wf create`", small.create_ms, large.create_ms),
        ("`wf insert-job`", small.insert_ms, large.insert_ms),
        ("`wf update-assignment`", small.update_ms, large.update_ms),
    ] {
        if backend == "sled" {
            figures.push(Figure::ratio(
                &format!("{what} through the runner, 200 stored (sled)"),
                "wf-bench cli",
                s,
                &format!("`/bin/true` + fsync of {} bytes", small.doc_bytes),
                baseline,
                3.0,
                "ms",
            ));
        }
        figures.push(Figure::ratio(
            &format!("{what}, 10,000 stored ({backend})"),
            "wf-bench cli",
            l,
            "the same with 200 stored",
            s,
            1.5,
            "ms",
        ));
    }
    figures.push(Figure::ratio(
        &format!(
            "`wf assignments --status blocked --json` (200 blocked), 10,000 stored ({backend})"
        ),
        "wf-bench cli",
        large.filtered_ms,
        "the same with 200 stored",
        small.filtered_ms,
        1.5,
        "ms",
    ));
    let mut start = Figure::ratio(
        &format!("runner start-up, 10,000 stored ({backend})"),
        "wf-bench cli",
        large.start_ms,
        "start-up with 200 stored",
        small.start_ms,
        2.0,
        "ms",
    );
    start.goal = "≤ 2× and ≤ 1000 ms".into();
    start.met = start.met && large.start_ms <= 1000.0;
    figures.push(start);
    figures.push(Figure {
        name: format!("runner memory, idle, 10,000 stored ({backend})"),
        command: "wf-bench cli".into(),
        value: format!("{:.1} MiB", large.idle_rss),
        baseline: format!("200 stored: {:.1} MiB", small.idle_rss),
        relation: format!("{:.2}×", large.idle_rss / small.idle_rss),
        goal: "≤ 30 MiB".into(),
        met: large.idle_rss <= 30.0,
    });
}

/// Every figure of this module, on sled and on NATS (`nats`: the server binary).
pub(crate) fn run(bins: &Bins, nats: &Path, quick: bool, figures: &mut Vec<Figure>) -> String {
    let (finished, open) = (9_800, 200);
    eprintln!("cli: sled, 200 stored");
    let (mut env, blocked) = sled_env(bins, 0, open);
    let small = measure(&mut env, &blocked, quick);
    list_figures(&mut env, quick, figures);
    let baseline = median(&spawn_and_fsync(&env.work, small.doc_bytes, runs(quick)));
    drop(env);
    eprintln!("cli: sled, filling 10,000");
    let (mut env, blocked) = sled_env(bins, finished, open);
    eprintln!("cli: sled, 10,000 stored");
    let large = measure(&mut env, &blocked, quick);
    drop(env);
    write_figures(&small, &large, baseline, "sled", figures);

    let server = NatsServer::start(nats);
    eprintln!("cli: NATS, 200 stored");
    let (mut env, blocked) = nats_env(bins, &server, "small", 0, open);
    let small = measure(&mut env, &blocked, quick);
    drop(env);
    eprintln!("cli: NATS, filling 10,000");
    let (mut env, blocked) = nats_env(bins, &server, "large", finished, open);
    eprintln!("cli: NATS, 10,000 stored");
    let large = measure(&mut env, &blocked, quick);
    drop(env);
    let version = nats_server_version(nats);
    write_figures(
        &small,
        &large,
        baseline,
        &format!("NATS {version}"),
        figures,
    );
    format!(
        "The 10,000-assignment stores hold {finished} complete assignments of 10 finished jobs each and {open} blocked ones of 8, about 99,600 jobs, written straight through the store before the runner starts."
    )
}
