//! Notifications: the write that completes or blocks an assignment, or fails a job, records a
//! notice in the document; a runner delivers it to the configured hooks (a webhook receiver
//! the test owns on 127.0.0.1, a command) exactly once — signed, after a first 500, across a
//! runner killed in the middle of a request, and with three runners of a NATS fleet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::AssignmentStatus;
use wf_tests::webhook::{Answer, Hit, Receiver};
use wf_tests::{kill_pid, nats_server, NatsServer, TestEnv};

use crate::{fixture, record_reliability, BINS};

const LONG: Duration = Duration::from_secs(90);
const SECRET: &str = "whsec-test-3f9a1c";
const SECRET_ENV: &str = "WF_TEST_HOOK_SECRET";

/// A PM that completes after a successful implement and blocks after a failed job.
fn pm() -> Value {
    json!([
        {"init": true},
        {"decide": {
            "implement": ["update-assignment", "--status", "complete"],
            "failed": ["update-assignment", "--status", "blocked", "--reason", "the review failed"]
        }},
        {"result": "decided"}
    ])
}

fn script() -> Value {
    json!({
        "implement": [{"replay": fixture("text.jsonl")}],
        "review": [{"init": true}, {"text": "looking"}, {"exit": 3}],
        "pm": pm(),
    })
}

fn hook(url: &str, on: &[&str]) -> Value {
    json!({"name": "receiver", "on": on, "url": url, "secretEnv": SECRET_ENV})
}

/// The accepted deliveries by notice id, checking that each is signed, names its event in
/// the header and the body, and that no id was accepted twice.
fn by_id(hits: &[Hit]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for hit in hits.iter().filter(|h| (200..300).contains(&h.status)) {
        assert!(
            hit.signed_with("X-Wf-Signature-256", SECRET),
            "a bad signature on {hit:?}"
        );
        let body = hit.json();
        let id = body["id"].as_str().expect("an id").to_string();
        assert_eq!(hit.header("X-Wf-Delivery"), Some(id.as_str()));
        assert_eq!(hit.header("X-Wf-Event"), body["event"].as_str());
        assert!(
            out.insert(id.clone(), body).is_none(),
            "notice {id} was accepted twice"
        );
    }
    out
}

fn outbox_len(env: &TestEnv, aid: &str) -> usize {
    env.assignment(aid).outbox.len()
}

#[test]
// Long: one scenario — three kinds of notice, a 500, a command hook, a restart — checked in turn.
fn completed_blocked_and_failed_notifications_arrive_once_signed_even_after_a_500() {
    let receiver = Receiver::start(&[Answer::Status(500)]);
    let mut env = TestEnv::new(&BINS, script(), json!({}));
    let log = env.work.join("notices.jsonl");
    env.merge_config(&json!({"notify": [
        hook(&receiver.url("/hooks/wf"), &["complete", "blocked", "job_failed"]),
        {"name": "log", "on": ["complete", "blocked"], "command": format!("cat >> {}", log.display())},
    ]}));
    env.set_runner_env(0, &[(SECRET_ENV, SECRET)]);
    env.start_runner();

    let done = env.create("Ship the greeting");
    env.wf_ok(&["insert-job", &done, "--type", "implement"]);
    let stuck = env.create("Review the greeting");
    env.wf_ok(&["insert-job", &stuck, "--type", "review"]);
    env.wait_for(&done, LONG, |d| d.status == AssignmentStatus::Complete);
    env.wait_for(&stuck, LONG, |d| d.status == AssignmentStatus::Blocked);

    // complete, blocked and the failed review: three notices, the first answered 500 once.
    let hits = receiver.wait_accepted(3, LONG);
    let got = by_id(&hits);
    let events: Vec<(&str, &str)> = got
        .values()
        .map(|b| {
            (
                b["assignment"]["id"].as_str().unwrap(),
                b["event"].as_str().unwrap(),
            )
        })
        .collect();
    for want in [
        (done.as_str(), "assignment.completed"),
        (stuck.as_str(), "assignment.blocked"),
        (stuck.as_str(), "job.failed"),
    ] {
        assert!(events.contains(&want), "{want:?} missing from {events:?}");
    }
    let all = receiver.hits();
    assert_eq!(all[0].status, 500);
    let retried = all[1..]
        .iter()
        .find(|h| h.header("X-Wf-Delivery") == all[0].header("X-Wf-Delivery"))
        .expect("the notice answered 500 was sent again");
    assert_eq!(retried.status, 200);
    assert_eq!(retried.body, all[0].body, "the same notice, byte for byte");
    assert_eq!(all.len(), 4, "three notices, one of them twice");
    assert!(all.iter().all(|h| h.path == "/hooks/wf"));
    let blocked = got
        .values()
        .find(|b| b["event"] == "assignment.blocked")
        .unwrap();
    assert_eq!(blocked["assignment"]["reason"], "the review failed");
    assert!(blocked["text"]
        .as_str()
        .unwrap()
        .contains("blocked and needs a human: the review failed"));
    let failed = got.values().find(|b| b["event"] == "job.failed").unwrap();
    assert_eq!(failed["job"]["jobType"], "review");
    assert_eq!(failed["job"]["failureReason"], "exit");

    // The command hook got complete and blocked on stdin, once each.
    let deadline = Instant::now() + LONG;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    events.sort();
    assert_eq!(events, ["assignment.blocked", "assignment.completed"]);

    // Delivered notices leave the outbox; a restart sends nothing again.
    let deadline = Instant::now() + LONG;
    while outbox_len(&env, &done) + outbox_len(&env, &stuck) > 0 {
        assert!(Instant::now() < deadline, "the outboxes did not empty");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(LONG);
    env.start_runner();
    // One more completion: once its notice arrives, the restarted runner has been through
    // every outbox it could have sent again.
    let later = env.create("Ship another greeting");
    env.wf_ok(&["insert-job", &later, "--type", "implement"]);
    receiver.wait_accepted(4, LONG);
    let hits = receiver.hits();
    assert_eq!(hits.len(), 5, "only the new notice was sent");
    assert_eq!(hits[4].json()["assignment"]["id"], later.as_str());
    by_id(&hits);
}

#[test]
fn a_notice_survives_a_runner_killed_in_the_middle_of_its_request() {
    // The first request is held unanswered: the runner is killed while it waits.
    let receiver = Receiver::start(&[Answer::Hold(Duration::from_secs(30))]);
    let mut env = TestEnv::new(&BINS, script(), json!({}));
    env.merge_config(&json!({"notify": [hook(&receiver.url("/"), &["blocked"])]}));
    env.set_runner_env(0, &[(SECRET_ENV, SECRET)]);

    // No runner: wf writes the store itself, and the notice goes in with the block.
    let aid = env.create("Wait for a human");
    env.wf_ok(&[
        "update-assignment",
        &aid,
        "--status",
        "blocked",
        "--reason",
        "which colour?",
    ]);
    let doc = env.assignment(&aid);
    assert_eq!(doc.outbox.len(), 1, "the block's write recorded its notice");
    let id = doc.outbox[0].id.clone();

    env.start_runner();
    receiver.wait_hits(LONG, |h| !h.is_empty());
    let killed = Instant::now();
    kill_pid(env.runner_pid(), libc::SIGKILL);
    env.wait_runner(LONG);
    env.start_runner();
    let hits = receiver.wait_accepted(1, LONG);
    let recovery = killed.elapsed();
    let got = by_id(&hits);
    assert_eq!(got.keys().collect::<Vec<_>>(), [&id]);
    let all = receiver.hits();
    assert_eq!(all.len(), 2, "one held request, one delivery: {all:?}");
    assert_eq!(all[0].header("X-Wf-Delivery"), Some(id.as_str()));
    let deadline = Instant::now() + LONG;
    while outbox_len(&env, &aid) > 0 {
        assert!(Instant::now() < deadline, "the outbox did not empty");
        std::thread::sleep(Duration::from_millis(50));
    }
    record_reliability(
        "a_notice_survives_a_runner_killed_in_the_middle_of_its_request",
        "kill -9 of the runner while its webhook request for a `blocked` notification waits for an answer",
        "the notice was recorded by the write that blocked the assignment (here wf's own, no runner running); the restarted runner finds it claimed by a dead runner and sends it again with the same id",
        1,
        "nothing: the notification was accepted once; the receiver saw the same id twice (the first unanswered) and can drop a duplicate by it",
        recovery,
    );
}

#[test]
fn three_runners_of_a_nats_fleet_send_each_notification_once() {
    let server = NatsServer::start(&nats_server());
    let receiver = Receiver::start(&[Answer::Status(503), Answer::Status(500)]);
    let config = json!({
        "namespace": "notify",
        "store": {"kind": "nats", "url": server.url()},
        "notify": [hook(&receiver.url("/"), &["complete", "blocked"])],
    });
    let mut env = TestEnv::new(&BINS, script(), config);
    for n in 0..3 {
        env.set_runner_env(n, &[(SECRET_ENV, SECRET)]);
        env.start_runner_n(n);
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        let aid = env.create(&format!("fleet notice {i}"));
        let job = if i % 2 == 0 { "implement" } else { "review" };
        env.wf_ok(&["insert-job", &aid, "--type", job]);
        ids.push(aid);
    }
    for aid in &ids {
        env.wait_for(aid, LONG, |d| {
            matches!(
                d.status,
                AssignmentStatus::Complete | AssignmentStatus::Blocked
            ) && d.outbox.is_empty()
        });
    }
    let hits = receiver.wait_accepted(6, LONG);
    let got = by_id(&hits);
    let mut per_assignment: HashMap<&str, usize> = HashMap::new();
    for body in got.values() {
        *per_assignment
            .entry(body["assignment"]["id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_assignment.len(), 6, "{per_assignment:?}");
    assert!(per_assignment.values().all(|n| *n == 1));
    // Two transient failures, six deliveries, no duplicate request.
    assert_eq!(receiver.hits().len(), 8);
}
