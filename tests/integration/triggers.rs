//! Triggers: cron slots fire exactly once with three runners' engines on one NATS server,
//! catch up after downtime by their policy and never fire twice after a restart — on an
//! injected clock, no real waiting; ready issues on a scripted GitHub, pull requests and a
//! beads tracker fire one assignment each; and a real runner runs its triggers.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use wf_core::config::Config;
use wf_core::model::{Assignment, AssignmentStatus};
use wf_core::trigger::{firing_id, TriggerState};
use wf_runner::triggers::{self, Engine};
use wf_store::Store;
use wf_tests::github::FakeGitHub;
use wf_tests::{nats_server, NatsServer, TestEnv};

use crate::{record_reliability, BINS};

const MIN: u64 = 60_000;
/// 2026-12-07 09:00:00 UTC, a Monday.
const T0: u64 = 1_796_634_000_000;

const ONE_TASK: &str = r#"
workflow = "standup"
version = 1
north_star = "Stand-up for {{ params.day }}"
[params.day]
required = true
[[tasks]]
id = "report"
type = "document"
instructions = "Summarise yesterday's work for {{ params.day }}."
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A project on `store_config` with the stand-up workflow and `triggers`.
fn project(store_config: serde_json::Value, triggers: &str) -> (TestEnv, Config) {
    let env = TestEnv::new(&BINS, json!({}), store_config);
    std::fs::create_dir_all(env.root.join(".wf/workflows")).unwrap();
    std::fs::write(env.root.join(".wf/workflows/standup.toml"), ONE_TASK).unwrap();
    std::fs::write(env.root.join(".wf/triggers.toml"), triggers).unwrap();
    let config = wf_core::config::load(None, &env.root).unwrap();
    (env, config)
}

async fn nats_store(config: &Config) -> Store {
    let wf_core::config::StoreConfig::Nats(nats) = &config.store else {
        panic!("a NATS config")
    };
    let store = Store::Nats(
        wf_store::nats::NatsStore::connect(nats, &config.namespace, "test-runner", true)
            .await
            .unwrap(),
    );
    store.configure(config);
    store
}

/// `n` engines, as `n` runners would have, each with its own connection.
async fn engines(config: &Config, n: usize) -> Vec<Engine> {
    let list = triggers::load(config).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Engine::new(nats_store(config).await, config.clone(), list.clone()).unwrap());
    }
    out
}

/// Every engine ticks at `now`, at once.
async fn tick_all(engines: &[Engine], now: u64) -> Vec<String> {
    let ticks = engines.iter().map(|e| e.tick(now));
    futures_util::future::join_all(ticks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn state(store: &Store, id: &str) -> TriggerState {
    store
        .state::<TriggerState>(&wf_core::trigger::state_key(id))
        .await
        .unwrap()
        .unwrap()
}

async fn ids(store: &Store) -> BTreeSet<String> {
    store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect()
}

fn slot_id(config: &Config, trigger: &str, slot: u64) -> String {
    firing_id(config.namespace.as_str(), trigger, &slot.to_string())
}

#[test]
// Long: one timeline of an injected clock, checked slot by slot.
fn cron_fires_once_per_slot_across_three_runners_catches_up_and_survives_restarts() {
    let server = NatsServer::start(&nats_server());
    let (_env, config) = project(
        json!({"namespace": "cron", "store": {"kind": "nats", "url": server.url()}}),
        r#"
[[triggers]]
id = "standup"
cron = "* * * * *"
workflow = "standup"
params = { day = "{{ slot.date }}" }
overlap = "allow"

[[triggers]]
id = "catch-all"
cron = "* * * * *"
workflow = "standup"
params = { day = "{{ slot.iso }}" }
catch_up = "all"
overlap = "allow"

[[triggers]]
id = "one-at-a-time"
cron = "* * * * *"
workflow = "standup"
params = { day = "{{ slot.date }}" }
"#,
    );
    let rt = runtime();
    rt.block_on(async {
        let fleet = engines(&config, 3).await;
        let store = nats_store(&config).await;
        // First seen at T0 + 5s: the triggers start there; nothing before fires.
        assert!(tick_all(&fleet, T0 + 5_000).await.is_empty());
        // Five slots, each ticked by all three runners at once: one assignment each.
        for k in 1..=5u64 {
            let created = tick_all(&fleet, T0 + k * MIN + 300).await;
            let standup: Vec<&String> = created
                .iter()
                .filter(|id| **id == slot_id(&config, "standup", T0 + k * MIN))
                .collect();
            assert_eq!(standup.len(), 1, "slot {k}: {created:?}");
        }
        let s = state(&store, "standup").await;
        assert_eq!((s.fired, s.missed, s.skipped), (5, 0, 0));
        assert_eq!(s.last_slot, Some(T0 + 5 * MIN));
        let doc: Assignment = store
            .get(&slot_id(&config, "standup", T0 + MIN))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.north_star, "Stand-up for 2026-12-07");
        let w = doc.workflow.as_ref().unwrap();
        assert_eq!(w.trigger.as_ref().unwrap().id, "standup");
        // `one-at-a-time` skips while its previous assignment is not complete.
        let skips = state(&store, "one-at-a-time").await;
        assert_eq!((skips.fired, skips.skipped), (1, 4), "{skips:?}");

        // Every runner is down for slots 6, 7, 8; at slot 9 they are back.
        let after_downtime = T0 + 9 * MIN + 2_000;
        let created = tick_all(&fleet, after_downtime).await;
        let s = state(&store, "standup").await;
        assert_eq!((s.fired, s.missed), (6, 3), "latest: only slot 9 fires");
        assert!(created.contains(&slot_id(&config, "standup", T0 + 9 * MIN)));
        let all = state(&store, "catch-all").await;
        assert_eq!((all.fired, all.missed), (9, 0), "all: slots 6 to 9 fire");
        for k in 6..=9 {
            assert!(store
                .get(&slot_id(&config, "catch-all", T0 + k * MIN))
                .await
                .unwrap()
                .is_some());
        }

        // Restarted runners (fresh engines, fresh connections) at the same instant fire
        // nothing again, and neither does a runner whose clock is a little behind.
        let before = ids(&store).await;
        let restarted = engines(&config, 3).await;
        assert!(tick_all(&restarted, after_downtime).await.is_empty());
        assert!(tick_all(&restarted, after_downtime - 30_000)
            .await
            .is_empty());
        assert_eq!(ids(&store).await, before);
        let total = before.len();
        // 6 standup + 9 catch-all + 1 one-at-a-time.
        assert_eq!(total, 16);
    });
    record_reliability(
        "cron_fires_once_per_slot_across_three_runners_catches_up_and_survives_restarts",
        "three runners' trigger engines on one NATS server evaluate every cron slot at the same instant; then all are down for three slots; then all restart",
        "a firing's assignment id follows from the trigger and the slot, so create-if-absent lets one exist; the trigger's last slot advances by CAS; after downtime `latest` fires the newest slot and counts the rest missed, `all` fires each",
        5,
        "nothing: one assignment per slot (16 in all), none fired twice after the restart or by a runner whose clock is behind",
        Duration::ZERO,
    );
}

#[test]
fn ready_issues_each_become_one_assignment() {
    let gh = FakeGitHub::start("acme/widgets");
    gh.add_issue(1, "Parse dates", "Dates in ISO 8601", &["wf:ready"]);
    gh.add_issue(2, "Format dates", "After parsing", &["wf:ready"]);
    gh.add_issue(3, "Pick a date library", "", &[]);
    gh.add_issue(4, "Unrelated", "", &["bug"]);
    gh.block(2, 3);
    let server = NatsServer::start(&nats_server());
    let (_env, config) = project(
        json!({"namespace": "ready", "store": {"kind": "nats", "url": server.url()},
               "forge": {"repo": "acme/widgets", "apiUrl": gh.url(), "tokenEnv": "WF_TEST_TRIGGER_TOKEN"}}),
        r#"
[[triggers]]
id = "ready"
workflow = "issue"
issue_ready = { label = "wf:ready", claim_label = "wf:in-progress" }
params = { issue = "{{ issue.number }}" }
interval = "60s"
"#,
    );
    std::env::set_var("WF_TEST_TRIGGER_TOKEN", "test-token");
    let rt = runtime();
    rt.block_on(async {
        let fleet = engines(&config, 2).await;
        let store = nats_store(&config).await;
        let created = tick_all(&fleet, T0).await;
        let one = firing_id("ready", "ready", "issue/acme/widgets#1");
        assert_eq!(
            created,
            std::slice::from_ref(&one),
            "only #1: #2 is blocked, #3 and #4 not labelled"
        );
        let doc = store.get(&one).await.unwrap().unwrap();
        let issue = doc.forge.as_ref().unwrap().issue.as_ref().unwrap();
        assert_eq!((issue.number, issue.title.as_str()), (1, "Parse dates"));
        assert!(doc.north_star.contains("Parse dates"), "{}", doc.north_star);
        assert_eq!(doc.workflow.as_ref().unwrap().name, "issue");
        assert_eq!(doc.workflow.as_ref().unwrap().params["issue"], "1");
        let labels: Vec<String> = gh.issue(1).unwrap()["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            labels,
            ["wf:in-progress"],
            "claimed: the ready label swapped"
        );
        // Within the interval nobody polls again; after it, #2 is still blocked.
        assert!(tick_all(&fleet, T0 + 30_000).await.is_empty());
        assert!(tick_all(&fleet, T0 + 61_000).await.is_empty());
        // Its blocker closes: #2 fires, once, whichever runner polls.
        gh.close(3);
        let created = tick_all(&fleet, T0 + 122_000).await;
        assert_eq!(
            created,
            [firing_id("ready", "ready", "issue/acme/widgets#2")]
        );
        assert!(tick_all(&fleet, T0 + 183_000).await.is_empty());
        assert_eq!(ids(&store).await.len(), 2);
        assert_eq!(state(&store, "ready").await.fired, 2);
        // Re-labelling #1 ready does not make a second assignment for it.
        gh.add_issue(1, "Parse dates", "Dates in ISO 8601", &["wf:ready"]);
        assert!(tick_all(&fleet, T0 + 244_000).await.is_empty());
    });
}

#[test]
// Long: two trigger kinds on one scripted forge and one tracker file, checked in turn.
fn pull_requests_fire_once_per_head_commit_and_beads_issues_once_each() {
    let gh = FakeGitHub::start("acme/widgets");
    gh.add_pull(7, "Add dates", "feature/dates", "aaa111", "main", false);
    gh.add_pull(8, "WIP", "wip", "bbb222", "main", true);
    gh.add_pull(9, "Release", "release", "ccc333", "stable", false);
    let (env, config) = project(
        json!({"namespace": "prs", "forge": {"repo": "acme/widgets", "apiUrl": gh.url(), "tokenEnv": "WF_TEST_TRIGGER_TOKEN"}}),
        r#"
[[triggers]]
id = "review"
workflow = "review-pr"
pull_request = { base = "main" }
params = { pr = "{{ pr.number }}" }

[[triggers]]
id = "beads"
workflow = "standup"
issue_ready = { source = "beads", command = "cat beads.json" }
params = { day = "{{ issue.title }}" }
"#,
    );
    std::env::set_var("WF_TEST_TRIGGER_TOKEN", "test-token");
    std::fs::write(
        env.root.join("beads.json"),
        json!({"schema_version": 1, "data": [
            {"id": "bd-1", "title": "Monday", "status": "open", "priority": 1, "issue_type": "task", "created_at": "2026-12-01"},
            {"id": "bd-2", "title": "Tuesday", "status": "open", "priority": 2, "issue_type": "task", "created_at": "2026-12-01"}
        ]})
        .to_string(),
    )
    .unwrap();
    let rt = runtime();
    rt.block_on(async {
        // The embedded store: one runner.
        let wf_core::config::StoreConfig::Sled { path } = &config.store else {
            panic!("sled")
        };
        let store = Store::Sled(
            wf_store::sled::SledStore::open(path, &config.namespace, Duration::from_secs(5))
                .unwrap(),
        );
        let engine = Engine::new(
            store.clone(),
            config.clone(),
            triggers::load(&config).unwrap(),
        )
        .unwrap();
        let created: BTreeSet<String> = engine.tick(T0).await.into_iter().collect();
        let pr7 = firing_id("prs", "review", "pr/acme/widgets#7@aaa111");
        let expected: BTreeSet<String> = [
            pr7.clone(),
            firing_id("prs", "beads", "beads/bd-1"),
            firing_id("prs", "beads", "beads/bd-2"),
        ]
        .into();
        assert_eq!(created, expected, "no draft, no other base");
        let doc = store.get(&pr7).await.unwrap().unwrap();
        assert_eq!(
            doc.forge
                .as_ref()
                .unwrap()
                .pull_request
                .as_ref()
                .unwrap()
                .number,
            7
        );
        assert_eq!(doc.workflow.as_ref().unwrap().params["pr"], "7");
        let monday = store
            .get(&firing_id("prs", "beads", "beads/bd-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            monday.north_star, "Beads issue bd-1: Monday",
            "the event says more than the workflow"
        );
        assert_eq!(monday.workflow.as_ref().unwrap().params["day"], "Monday");
        assert!(engine.tick(T0 + 61_000).await.is_empty(), "nothing new");
        // A push to #7 is an update: one more review.
        gh.push_pull(7, "ddd444");
        let again = engine.tick(T0 + 122_000).await;
        assert_eq!(
            again,
            [firing_id("prs", "review", "pr/acme/widgets#7@ddd444")]
        );
    });
}

#[test]
fn a_runner_runs_its_triggers_and_wf_triggers_shows_them() {
    let (mut env, _) = project(
        json!({}),
        r#"
[[triggers]]
id = "every-second"
cron = "* * * * * *"
workflow = "standup"
params = { day = "{{ slot.iso }}" }
overlap = "allow"
catch_up = "none"
"#,
    );
    std::fs::write(
        env.work.join("script.json"),
        json!({"document": [{"init": true}, {"result": "done"}],
               "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}]})
            .to_string(),
    )
    .unwrap();
    env.start_runner();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let list = env.wf_json(&["assignments"]);
        let n = list.as_array().map_or(0, Vec::len);
        if n >= 2 {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner fired fewer than 2 slots:\n{}",
            env.runner_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let first = listed[0]["id"].as_str().unwrap().to_string();
    env.wait_for(&first, Duration::from_secs(60), |d| {
        d.status == AssignmentStatus::Complete
    });
    let shown = env.wf_ok(&["triggers"]);
    assert!(
        shown.contains("every-second") && shown.contains("standup") && shown.contains("fired"),
        "{shown}"
    );
    let json = env.wf_json(&["triggers"]);
    assert!(json[0]["state"]["fired"].as_u64().unwrap() >= 2, "{json}");
    // A broken triggers file stops the runner with the reason.
    std::fs::write(
        env.root.join(".wf/triggers.toml"),
        "[[triggers]]\nid = \"x\"\nworkflow = \"standup\"\ncron = \"61 * * * *\"\n",
    )
    .unwrap();
    let out = env.wf(&["triggers"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trigger `x`: cron \"61 * * * *\""), "{err}");
}
