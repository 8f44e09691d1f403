//! Property-based fuzzing of the two inputs strangers control: `wf`'s arguments and the
//! runner's control socket. Neither may panic, hang, or leave a corrupted store.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use wf_core::chain::check_invariants;
use wf_core::model::Assignment;
use wf_tests::TestEnv;

use crate::{record_reliability, BINS};

fn docs(env: &TestEnv) -> Vec<Assignment> {
    serde_json::from_value(env.wf_json(&["assignments"])).expect("the store still decodes")
}

fn assert_store_sound(env: &TestEnv) {
    for doc in docs(env) {
        check_invariants(&doc).unwrap_or_else(|e| panic!("corrupted assignment {}: {e}", doc.id));
    }
}

/// Arguments drawn from `wf`'s own vocabulary, real ids, and hostile text.
fn arg(ids: Vec<String>) -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "create",
        "insert-job",
        "update-assignment",
        "assignments",
        "assignment",
        "jobs",
        "job",
        "queue",
        "cancel",
        "retry",
        "--type",
        "--harness",
        "--model",
        "--context",
        "--jobs",
        "--jobs-file",
        "--after",
        "--status",
        "--reason",
        "--artifacts",
        "--decisions",
        "--note",
        "--priority",
        "--independent",
        "--start",
        "--max-cost",
        "--max-jobs",
        "--max-wall-time",
        "--json",
        "--assignment",
        "plan",
        "implement",
        "pm",
        "review",
        "active",
        "blocked",
        "complete",
        "pending",
        "-",
        "--",
        "claude",
        "codex",
        "nope",
        r#"[{"jobType":"review"}]"#,
        r#"[{"jobType":"pm"},{"jobType":"plan"}]"#,
        "[]",
        "{}",
        r#"[{"jobType":"review","context":"x","extra":1}]"#,
        "-1",
        "0",
        "1e309",
        "NaN",
        "99999999999999999999",
        "1h",
        "0s",
    ])
    .prop_map(str::to_string);
    let id = prop::sample::select(ids)
        .prop_flat_map(|id| (1..=id.len()).prop_map(move |n| id[..n].to_string()));
    prop_oneof![
        4 => words,
        2 => id,
        2 => "\\PC{0,40}",
        1 => "[a-z0-9!{}\\[\\]\"':,. ]{0,60}",
    ]
}

#[test]
fn wf_arguments() {
    let env = TestEnv::new(&BINS, json!({}), json!({}));
    let a = env.create("Fuzz target one");
    let plan = env.wf_json(&["insert-job", &a, "--type", "plan", "--context", "c"])["jobs"][0]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = env.create("Fuzz target two");
    let ids = vec![a.clone(), b, plan];
    let started = Instant::now();
    let cases = 200;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(arg(ids), 0..7);
    runner
        .run(&strategy, |args| {
            let out = env.wf_cmd(&[]).args(&args).output().expect("running wf");
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                !stderr.contains("panicked"),
                "wf {args:?} panicked: {stderr}"
            );
            let code = out.status.code();
            prop_assert!(
                matches!(code, Some(0..=4)),
                "wf {args:?} ended with {:?}: {stderr}",
                out.status
            );
            if code != Some(0) {
                prop_assert!(
                    stderr.starts_with("wf: error: ")
                        || stderr.starts_with("Usage:")
                        || stderr.contains("Usage:"),
                    "wf {args:?}: {stderr}"
                );
                if stderr.starts_with("wf: error: ") {
                    prop_assert_eq!(stderr.lines().count(), 1, "wf {:?}: {}", args, stderr);
                }
            }
            Ok(())
        })
        .unwrap();
    assert_store_sound(&env);
    assert!(
        docs(&env)
            .iter()
            .any(|d| d.id == a && d.north_star == "Fuzz target one"),
        "the north star is immutable"
    );
    record_reliability(
        "wf_arguments",
        "fuzz: 200 random `wf` command lines (real subcommands, flags, ids, hostile text)",
        "each must end with exit 0–4 and a one-line error; then every stored document is checked",
        cases as usize,
        "nothing: no panic, no corrupted document",
        started.elapsed(),
    );
}

/// A frame a hostile or broken client might send.
fn frame(ids: Vec<String>) -> impl Strategy<Value = (bool, Message)> {
    let op = prop::sample::select(vec![
        "hello",
        "create",
        "insertJobs",
        "updateAssignment",
        "listAssignments",
        "getAssignment",
        "listJobs",
        "getJob",
        "cancel",
        "retry",
        "watch",
        "dropTables",
        "",
    ]);
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::from),
        prop::sample::select(ids).prop_map(Value::from),
        Just(json!([{"jobType": "plan"}])),
        Just(json!({"jobType": "review", "context": "x"})),
        Just(json!("active")),
        Just(json!("blocked")),
    ];
    let field = prop::sample::select(vec![
        "assignment",
        "jobs",
        "after",
        "caller",
        "status",
        "reason",
        "northStar",
        "priority",
        "independent",
        "job",
        "target",
        "protocol",
        "client",
        "start",
        "budget",
    ]);
    let envelope = (
        op,
        prop::collection::vec((field, value), 0..5),
        any::<u64>(),
    )
        .prop_map(|(op, fields, id)| {
            let mut request = serde_json::Map::new();
            request.insert("op".into(), json!(op));
            for (k, v) in fields {
                request.insert(k.to_string(), v);
            }
            Message::text(json!({"id": id % 1000, "request": request}).to_string())
        });
    let greet = any::<bool>();
    (
        greet,
        prop_oneof![
            4 => envelope,
            2 => "\\PC{0,200}".prop_map(Message::text),
            1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Message::binary),
            1 => Just(Message::text("{\"id\": 1, \"request\": ".repeat(200))),
        ],
    )
}

async fn exchange(socket: &std::path::Path, greet: bool, msg: Message) -> Result<(), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async("ws://wf-runner/", stream)
        .await
        .map_err(|e| e.to_string())?;
    if greet {
        let hello = json!({"id": 0, "request": {"op": "hello", "protocol": 1, "client": "fuzz"}});
        ws.send(Message::text(hello.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        ws.next()
            .await
            .ok_or("no welcome")?
            .map_err(|e| e.to_string())?;
    }
    let watching = matches!(&msg, Message::Text(t) if t.contains("\"watch\""));
    ws.send(msg).await.map_err(|e| e.to_string())?;
    // Every frame is answered (or, for a wrong hello, the connection closes); a watch streams.
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(_) => Ok(()),
        Err(_) if watching => Ok(()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

#[test]
fn the_control_socket() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    let a = env.create("Socket target");
    let before = env.assignment(&a);
    env.start_runner();
    let socket = env.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let cases = 150;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&frame(vec![a.clone(), "zzzz".into()]), |(greet, msg)| {
            let shown = format!("{msg:?}").chars().take(200).collect::<String>();
            let r = rt.block_on(exchange(&socket, greet, msg));
            prop_assert!(r.is_ok(), "{shown}: {r:?}");
            Ok(())
        })
        .unwrap();
    // The runner is alive and serves normal requests; the store is sound.
    assert!(env.runner_running(0));
    assert_store_sound(&env);
    let after = env.assignment(&a);
    assert_eq!(after.north_star, before.north_star);
    // A 10 MB north star through the socket is refused, not stored.
    let huge = "x".repeat(10 * 1024 * 1024);
    let req = json!({"id": 5, "request": {"op": "create", "northStar": huge, "priority": 10, "independent": false}});
    let answer = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async("ws://wf-runner/", stream)
            .await
            .unwrap();
        ws.send(Message::text(
            json!({"id": 0, "request": {"op": "hello", "protocol": 1, "client": "t"}}).to_string(),
        ))
        .await
        .unwrap();
        ws.next().await.unwrap().unwrap();
        ws.send(Message::text(req.to_string())).await.unwrap();
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .to_string()
    });
    assert!(
        answer.contains("the limit is 64 KiB"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert_eq!(docs(&env).len(), 1);
    record_reliability(
        "the_control_socket",
        "fuzz: 150 hostile frames on the control socket (garbage text, binary, bad JSON, random requests, with and without hello), plus a 10 MB north star",
        "each frame gets an error answer or a closed connection; the runner keeps serving",
        cases as usize + 1,
        "nothing: runner alive, store sound, the 10 MB north star refused",
        started.elapsed(),
    );
}
