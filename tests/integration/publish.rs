//! The runner on the forge for workflows and triggers, against a scripted GitHub: a ready
//! issue is triaged (labels and a comment published once) and closed when its assignment
//! completes; a plan becomes issues with their dependencies, and the issue-ready trigger then
//! takes the first one only; a pull request's review is posted, asking for changes when the
//! verdict is fail.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::AssignmentStatus;
use wf_tests::github::FakeGitHub;
use wf_tests::TestEnv;

use crate::BINS;

const LONG: Duration = Duration::from_secs(90);

fn forge(gh: &FakeGitHub) -> Value {
    json!({"repo": "acme/widgets", "apiUrl": gh.url(), "tokenEnv": "WF_TEST_PUBLISH_TOKEN"})
}

fn project(gh: &FakeGitHub, script: Value, files: &[(&str, &str)]) -> TestEnv {
    let mut env = TestEnv::new(&BINS, script, json!({"forge": forge(gh)}));
    for (path, text) in files {
        let p = env.root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    env.set_runner_env(0, &[("WF_TEST_PUBLISH_TOKEN", "test-token")]);
    env
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {LONG:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn labels(issue: &Value) -> Vec<String> {
    issue["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect()
}

const TRIAGE: &str = r#"
workflow = "triage-lite"
version = 1
forge_issue = "issue"
pull_request = false
[params.issue]
required = true
[[tasks]]
id = "classify"
type = "plan"
publish = "issue-labels"
instructions = "Classify issue {{ params.issue }}."
[[tasks]]
id = "comment"
type = "document"
depends_on = ["classify"]
publish = "issue-comment"
instructions = "Write the triage comment."
"#;

#[test]
fn a_ready_issue_is_triaged_published_once_and_closed_when_complete() {
    let gh = FakeGitHub::start("acme/widgets");
    gh.add_issue(
        5,
        "Crash on empty input",
        "Run it with no input.",
        &["wf:ready"],
    );
    let triggers = r#"
[[triggers]]
id = "triage"
workflow = "triage-lite"
issue_ready = { label = "wf:ready" }
params = { issue = "{{ issue.number }}" }
interval = "5s"
on_complete = { close_issue = true, remove_label = "wf:ready", comment = "Triaged by wf ({{ assignment.id }})." }
"#;
    let script = json!({
        "plan": [{"init": true}, {"result": "A crash: a bug.\nLABELS: bug, p2"}],
        "document": [{"init": true}, {"result": "Reproduced on main with `widgets < /dev/null`."}],
        "pm": [{"init": true}, {"decide": {"document": ["update-assignment", "--status", "complete"]}}, {"result": "ok"}],
    });
    let mut env = project(
        &gh,
        script,
        &[
            (".wf/workflows/triage-lite.toml", TRIAGE),
            (".wf/triggers.toml", triggers),
        ],
    );
    env.start_runner();
    until("issue #5 closed", || {
        gh.issue(5).unwrap()["state"] == "closed"
    });
    let issue = gh.issue(5).unwrap();
    let mut got = labels(&issue);
    got.sort();
    assert_eq!(
        got,
        ["bug", "p2"],
        "labels published, the ready label removed"
    );
    let comments = gh.comments();
    let bodies: Vec<&str> = comments
        .values()
        .filter_map(|c| c["body"].as_str())
        .collect();
    let find = |text: &str| bodies.iter().filter(|b| b.contains(text)).count();
    assert_eq!(find("Reproduced on main"), 1, "{bodies:?}");
    assert_eq!(find("Triaged by wf ("), 1, "{bodies:?}");
    let list = env.wf_json(&["assignments"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "complete");
    assert!(gh.pulls().is_empty(), "triage opens no pull request");
    // The outbox is empty: the completion was acted on once.
    let aid = list[0]["id"].as_str().unwrap().to_string();
    until("the outbox empties", || {
        env.assignment(&aid).outbox.is_empty()
    });
}

#[test]
fn a_plan_becomes_issues_and_the_ready_trigger_takes_the_first_only() {
    let gh = FakeGitHub::start("acme/widgets");
    let plan = r#"Two packages.
```json
[{"key": "parser", "title": "Parse the config", "body": "Read .widgets.toml", "blockedBy": []},
 {"key": "cli", "title": "Add the CLI", "body": "widgets run", "blockedBy": ["parser"]}]
```"#;
    let triggers = r#"
[[triggers]]
id = "ready"
workflow = "standup"
issue_ready = { label = "wf:ready", claim_label = "wf:in-progress" }
interval = "5s"
"#;
    let standup = "workflow = \"standup\"\nversion = 1\n[[tasks]]\nid = \"work\"\ntype = \"implement\"\ninstructions = \"Work on it.\"\n";
    let script = json!({
        "plan": [{"init": true}, {"result": plan}],
        "implement": [{"init": true}, {"hang": true}],
        "pm": [{"init": true}, {"result": "ok"}],
    });
    let mut env = project(
        &gh,
        script,
        &[
            (".wf/triggers.toml", triggers),
            (".wf/workflows/standup.toml", standup),
        ],
    );
    env.start_runner();
    let aid = env
        .wf_ok(&[
            "create",
            "--workflow",
            "plan-issues",
            "Build the widgets CLI",
        ])
        .trim()
        .to_string();
    env.wait_for(&aid, LONG, |d| {
        d.jobs
            .iter()
            .any(|j| j.job_type == wf_core::model::JobType::Pm)
    });
    let issues = gh.issues();
    assert_eq!(issues.len(), 2, "{issues:?}");
    let (parser, cli) = (&issues[&1], &issues[&2]);
    assert_eq!(parser["title"], "Parse the config");
    assert!(parser["body"]
        .as_str()
        .unwrap()
        .contains(&format!("wf:plan:{aid}:parser")));
    assert_eq!(gh.blockers(2), [1], "cli waits for parser");
    // The trigger fires for the unblocked issue only, and claims it.
    until("the parser issue is taken", || {
        labels(&gh.issue(1).unwrap()) == ["wf:in-progress"]
    });
    let list = env.wf_json(&["assignments"]);
    let fired: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"] != aid.as_str())
        .collect();
    assert_eq!(fired.len(), 1, "{list:#}");
    assert!(fired[0]["northStar"]
        .as_str()
        .unwrap()
        .contains("Parse the config"));
    assert_eq!(labels(cli), ["wf:ready"], "the blocked issue waits");
    // The plan's job result tells the PM what was opened.
    let plan_job = env.assignment(&aid).jobs[0].id.clone();
    let job = env.wf_json(&["job", &plan_job]);
    assert!(
        job["result"]
            .as_str()
            .unwrap()
            .contains("wf opened 2 issues labelled `wf:ready`: #1 (parser), #2 (cli)"),
        "{job}"
    );
}

#[test]
fn a_pull_request_review_is_posted_asking_for_changes_when_the_verdict_is_fail() {
    let gh = FakeGitHub::start("acme/widgets");
    gh.add_pull(12, "Faster widgets", "fast", "abc123", "main", false);
    let triggers = r#"
[[triggers]]
id = "review"
workflow = "review-pr"
pull_request = {}
params = { pr = "{{ pr.number }}" }
interval = "5s"
"#;
    let script = json!({
        "review": [{"init": true}, {"result": "src/lib.rs:10 has no test.\nVERDICT: fail"}],
        "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}],
    });
    let mut env = project(&gh, script, &[(".wf/triggers.toml", triggers)]);
    env.start_runner();
    until("the review is posted", || !gh.reviews().is_empty());
    let reviews = gh.reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["pull"], 12);
    assert_eq!(reviews[0]["event"], "REQUEST_CHANGES");
    assert!(reviews[0]["body"]
        .as_str()
        .unwrap()
        .contains("src/lib.rs:10 has no test."));
    let list = env.wf_json(&["assignments"]);
    let aid = list[0]["id"].as_str().unwrap().to_string();
    env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Complete);
    assert_eq!(gh.reviews().len(), 1, "posted once");
    assert!(gh.pulls().len() == 1, "no pull request opened for a review");
}
