//! Workspaces with real git: a worktree and branch per assignment, the runner's commits after
//! every job (whatever its end), and verification steps run by the runner.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, FailureReason, JobStatus};
use wf_tests::{git, TestEnv};

use crate::{record_reliability as record, BINS};

const LONG: Duration = Duration::from_secs(120);

fn script(env: &TestEnv, script: Value) {
    std::fs::write(env.work.join("script.json"), script.to_string()).unwrap();
}

fn pm_completes() -> Value {
    json!([{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "done"}])
}

/// Two independent assignments whose agents write the same file at the same time end on two
/// branches with one commit each; the main checkout is untouched.
// Long: one scenario, asserted step by step against real git.
#[test]
fn parallel_assignments_work_on_their_own_branches() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({"maxConcurrent": 2}));
    env.git_init();
    let main_head = git(&env.root, &["rev-parse", "HEAD"]);
    let records = env.work_path("records");
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "shared.txt", "content": "from $WF_ASSIGNMENT_ID\n"}},
                          {"record": records}, {"sleepMs": 800}, {"result": "wrote shared.txt"}],
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let started = Instant::now();
    let ids = env.create_started("same file", 2, "implement");
    // Both agents are in their job at once.
    env.wait_records("records", 2, LONG);
    let docs: Vec<_> = ids
        .iter()
        .map(|id| {
            env.wait_for(id, LONG, |d| {
                d.status == AssignmentStatus::Complete && d.lease.is_none()
            })
        })
        .collect();
    let took = started.elapsed();
    assert_eq!(git(&env.root, &["rev-parse", "HEAD"]), main_head);
    assert_eq!(
        git(&env.root, &["status", "--porcelain"]),
        "",
        "the main checkout changed"
    );
    assert!(!env.root.join("shared.txt").exists());
    let mut branches = Vec::new();
    for doc in &docs {
        let ws = doc.workspace.clone().expect("a workspace is recorded");
        assert_eq!(ws.branch, format!("wf/{}", doc.id));
        assert_eq!(
            (ws.base_branch.as_str(), ws.base_commit.as_str()),
            ("main", main_head.as_str())
        );
        let log = git(
            &env.root,
            &["log", "--format=%s", &format!("{main_head}..{}", ws.branch)],
        );
        let implement = &doc.jobs[0];
        assert_eq!(
            log,
            format!("wf: implement job {} (complete)", implement.id),
            "{doc:#?}"
        );
        assert_eq!(
            git(&env.root, &["show", &format!("{}:shared.txt", ws.branch)]),
            format!("from {}", doc.id)
        );
        let body = git(&env.root, &["log", "-1", "--format=%B", &ws.branch]);
        assert!(
            body.contains(&format!("Wf-Assignment: {}", doc.id)),
            "{body}"
        );
        assert!(
            body.contains(&format!("Wf-Job: {}", implement.id)),
            "{body}"
        );
        let commits = implement.commits.clone().expect("the job's commits");
        assert_eq!(commits.start, main_head);
        assert_eq!(commits.end, git(&env.root, &["rev-parse", &ws.branch]));
        assert_eq!(
            git(
                &env.root,
                &["rev-parse", &format!("refs/wf/{}/{}", doc.id, implement.id)]
            ),
            commits.end
        );
        // The PM changed nothing, so it made no commit.
        let pm = &doc.jobs[1];
        let pm_commits = pm.commits.clone().expect("the PM's commits");
        assert_eq!(pm_commits.start, pm_commits.end);
        branches.push(ws.branch);
    }
    assert_ne!(branches[0], branches[1]);
    record(
        "parallel_assignments_work_on_their_own_branches",
        "2 independent assignments whose agents write the same file at the same time, in a git repository",
        "a worktree and branch per assignment under .wf/worktrees; the runner commits each job's work with Wf-Assignment/Wf-Job trailers and keeps refs/wf/<aid>/<job>",
        1,
        "nothing: 2 branches with 1 commit each, each with its own shared.txt; the main checkout's HEAD and status unchanged",
        took,
    );
}

/// A job that times out, and one whose runner is killed with -9, leave their work committed
/// and reachable: the runner commits after the timeout, and the next runner commits what the
/// dead one's agent left before the job runs again.
// Long: one scenario, asserted step by step against real git.
#[test]
fn a_job_killed_mid_work_leaves_its_work_committed() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({"timeoutMs": 1500}));
    env.git_init();
    let main_head = git(&env.root, &["rev-parse", "HEAD"]);
    let records = env.work_path("records");
    script(
        &env,
        json!({
            "implement": {"byAttempt": [
                [{"init": true}, {"writeFile": {"path": "work/$WF_JOB_ID.txt", "content": "half done\n"}},
                 {"record": records}, {"sleepMs": 600000}],
                [{"init": true}, {"writeFile": {"path": "work/$WF_JOB_ID-2.txt", "content": "done\n"}},
                 {"result": "finished"}]
            ]},
            "pm": [{"init": true}, {"result": "nothing to decide"}]
        }),
    );
    env.start_runner();
    let started = Instant::now();
    // Timeout: the agent is stopped after 1.5 s; its file is committed.
    let timed_out = env.create_started("time out", 1, "implement").remove(0);
    let doc = env.wait_for(&timed_out, LONG, |d| {
        d.jobs
            .first()
            .is_some_and(|j| j.status == JobStatus::Failed)
    });
    let job = &doc.jobs[0];
    assert_eq!(job.failure_reason, Some(FailureReason::Timeout), "{doc:#?}");
    let branch = doc.workspace.clone().unwrap().branch;
    assert_eq!(
        git(&env.root, &["log", "-1", "--format=%s", &branch]),
        format!("wf: implement job {} (failed: timeout)", job.id)
    );
    assert_eq!(
        git(
            &env.root,
            &["show", &format!("{branch}:work/{}.txt", job.id)]
        ),
        "half done"
    );
    let timeout_took = started.elapsed();

    // kill -9 of the runner mid-work: the restarted runner commits the leftovers first.
    env.wf_ok(&[
        "update-assignment",
        &timed_out,
        "--status",
        "blocked",
        "--reason",
        "done with it",
    ]);
    let killed = env.create_started("killed", 1, "implement").remove(0);
    env.wait_records("records", 2, LONG);
    env.signal_runner(libc::SIGKILL);
    env.start_runner();
    let doc = env.wait_for(&killed, LONG, |d| {
        d.jobs
            .first()
            .is_some_and(|j| j.status == JobStatus::Complete)
    });
    let job = &doc.jobs[0];
    let branch = doc.workspace.clone().unwrap().branch;
    let log = git(
        &env.root,
        &["log", "--format=%s", &format!("{main_head}..{branch}")],
    );
    assert_eq!(
        log,
        format!(
            "wf: implement job {} (complete)\nwf: work left by an interrupted attempt",
            job.id
        ),
        "{doc:#?}"
    );
    assert_eq!(
        git(
            &env.root,
            &["show", &format!("{branch}:work/{}.txt", job.id)]
        ),
        "half done"
    );
    assert_eq!(
        git(
            &env.root,
            &["show", &format!("{branch}:work/{}-2.txt", job.id)]
        ),
        "done"
    );
    assert_eq!(git(&env.root, &["status", "--porcelain"]), "");
    record(
        "a_job_killed_mid_work_leaves_its_work_committed",
        "an implement job that times out mid-work, and one whose runner is killed with -9 mid-work, in a git repository",
        "the runner commits after every attempt, whatever its end; a runner taking over commits what an interrupted attempt left before the job runs again",
        2,
        "nothing: both agents' half-done files are committed on their branches",
        timeout_took,
    );
}

/// Verification steps run by the runner after an implement job: the verdict is the exit code,
/// the counts come from the output, the results are on the job and in the PM's prompt, and a
/// required failure fails the job.
#[test]
fn verification_steps_give_counts_and_verdicts_to_the_pm() {
    let verify = json!([
        {"name": "Tests", "command": "printf 'running 4 tests\\ntest result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s\\n\\ntest result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.0s\\n'; test -f fixed.txt"},
        {"name": "Lint", "command": "echo 'warning: 2 problems'; exit 3", "required": false}
    ]);
    let mut env = TestEnv::new(&BINS, json!({}), json!({"verify": verify}));
    env.git_init();
    let prompts = env.work_path("prompts");
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "change.txt", "content": "x\n"}}, {"result": "all tests pass"}],
            "pm": [{"init": true}, {"savePrompt": prompts},
                   {"decide": {"failed": ["update-assignment", "--status", "blocked", "--reason", "the tests fail"]}},
                   {"result": "blocked it"}]
        }),
    );
    env.start_runner();
    let aid = env.create_started("verify me", 1, "implement").remove(0);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked && d.lease.is_none()
    });
    let job = &doc.jobs[0];
    assert_eq!(
        job.failure_reason,
        Some(FailureReason::Verification),
        "{doc:#?}"
    );
    let detail = job.failure_detail.clone().unwrap_or_default();
    assert!(
        detail.contains("❌ Tests: 8 passed, 1 failed, 2 skipped"),
        "{detail}"
    );
    assert_eq!(job.checks.len(), 2);
    let (tests, lint) = (&job.checks[0], &job.checks[1]);
    assert_eq!(
        (tests.passed, tests.exit_code, tests.required),
        (false, Some(1), true)
    );
    assert_eq!(
        (lint.passed, lint.exit_code, lint.required),
        (false, Some(3), false)
    );
    assert_eq!(lint.counts, None);
    assert_eq!(tests.commit, job.commits.as_ref().map(|c| c.end.clone()));
    // The PM saw the runner's verification, not only the agent's claim.
    let prompt = std::fs::read_dir(&prompts)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .expect("the PM's prompt");
    assert!(prompt.contains("### Verification (run by wf"), "{prompt}");
    assert!(
        prompt.contains("❌ Tests: 8 passed, 1 failed, 2 skipped"),
        "{prompt}"
    );
    assert!(prompt.contains("❌ Lint (optional): exit 3"), "{prompt}");
    assert!(prompt.contains("all tests pass"), "{prompt}");
    // wf job shows them.
    let shown = env.wf_ok(&["job", &job.id]);
    assert!(
        shown.contains("❌ Tests: 8 passed, 1 failed, 2 skipped"),
        "{shown}"
    );
}

/// With a remote, every job's commit is pushed; `wf gc` removes the worktree of a finished
/// assignment whose branch is on the remote, and keeps one holding uncommitted or unpushed
/// work (its branch stays either way).
// Long: one scenario, asserted step by step against real git.
#[test]
fn gc_removes_only_worktrees_whose_work_is_safe_elsewhere() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.git_init_with_origin();
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "a.txt", "content": "$WF_ASSIGNMENT_ID\n"}}, {"result": "ok"}],
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let ids = env.create_started("gc", 3, "implement");
    let docs: Vec<_> = ids
        .iter()
        .map(|id| {
            env.wait_for(id, LONG, |d| {
                d.status == AssignmentStatus::Complete && d.lease.is_none()
            })
        })
        .collect();
    let ws: Vec<_> = docs.iter().map(|d| d.workspace.clone().unwrap()).collect();
    for w in &ws {
        let remote = git(&env.root, &["ls-remote", "--heads", "origin", &w.branch]);
        let head = git(&env.root, &["rev-parse", &w.branch]);
        assert!(
            remote.starts_with(&head),
            "{} not pushed: {remote}",
            w.branch
        );
    }
    // A human leaves work in two of them: uncommitted, and committed but not pushed.
    std::fs::write(std::path::Path::new(&ws[1].path).join("wip.txt"), "wip\n").unwrap();
    std::fs::write(std::path::Path::new(&ws[2].path).join("more.txt"), "more\n").unwrap();
    git(std::path::Path::new(&ws[2].path), &["add", "-A"]);
    git(
        std::path::Path::new(&ws[2].path),
        &["commit", "-q", "-m", "by hand"],
    );

    let listed = env.wf_json(&["workspaces"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let dry = env.wf_json(&["gc", "--dry-run"]);
    assert!(
        dry.as_array()
            .unwrap()
            .iter()
            .all(|e| e["removed"] == false),
        "{dry}"
    );
    assert!(std::path::Path::new(&ws[0].path).exists());
    let gc = env.wf_json(&["gc"]);
    let by_aid = |aid: &str| {
        gc.as_array()
            .unwrap()
            .iter()
            .find(|e| e["assignment"] == aid)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_aid(&ids[0])["removed"], true, "{gc}");
    assert_eq!(by_aid(&ids[1])["removed"], false);
    assert!(
        by_aid(&ids[1])["reason"]
            .as_str()
            .unwrap()
            .contains("1 uncommitted paths"),
        "{gc}"
    );
    assert_eq!(by_aid(&ids[2])["removed"], false);
    assert!(
        by_aid(&ids[2])["reason"]
            .as_str()
            .unwrap()
            .contains("1 commits neither pushed nor merged"),
        "{gc}"
    );
    assert!(!std::path::Path::new(&ws[0].path).exists());
    assert!(std::path::Path::new(&ws[1].path).join("wip.txt").exists());
    // The removed worktree's branch and refs stay.
    git(&env.root, &["rev-parse", "--verify", &ws[0].branch]);
}

/// Issue → pull request against a scripted GitHub REST endpoint and a local bare `origin`:
/// the issue becomes the north star and the branch name, the branch is pushed, exactly one PR
/// exists however often delivery is retried, its body starts with `Fixes #7` and carries the
/// runner's verification, the issue has one progress comment edited in place, and the token
/// appears nowhere but in the requests' headers.
// Long: the whole flow, asserted against the fake forge's record of every request.
#[test]
fn an_issue_becomes_exactly_one_pull_request_with_its_verification() {
    let gh = wf_tests::github::FakeGitHub::start("acme/widget");
    gh.add_issue(
        7,
        "Widgets crash on empty input",
        "Run `widget \"\"`: it panics.",
        &["bug"],
    );
    let mut env = TestEnv::new(
        &BINS,
        json!({}),
        json!({
            "forge": {"repo": "acme/widget", "apiUrl": gh.url(), "tokenEnv": "FAKE_GH_TOKEN"},
            "verify": [{"name": "Tests", "command": "echo 'Tests: 42 passed, 0 failed'"}]
        }),
    );
    env.git_init_with_origin();
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "src/fix.txt", "content": "no more panics\n"}},
                          {"result": "fixed the empty input case"}],
            "pm": [{"init": true}, {"decide": {"implement": ["update-assignment", "--status", "complete"]}},
                   {"result": "done"}]
        }),
    );
    env.set_runner_env(0, &[("FAKE_GH_TOKEN", "test-token")]);
    // GitHub has a bad moment: the first attempt to open the PR gets a 502, the first
    // comment a 429; the runner waits and tries again.
    gh.fail_next("POST", "/pulls", 502, 1);
    gh.fail_next("POST", "/comments", 429, 1);
    env.start_runner();
    let started = Instant::now();
    let out = env
        .wf_cmd(&["create", "--issue", "7", "--start", "implement"])
        .env("FAKE_GH_TOKEN", "test-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let doc = env.wait_for(&aid, LONG, |d| {
        d.forge.as_ref().is_some_and(|f| f.pull_request.is_some())
    });
    let took = started.elapsed();
    assert!(
        doc.north_star
            .starts_with("Resolve issue acme/widget#7: Widgets crash on empty input"),
        "{}",
        doc.north_star
    );
    let ws = doc.workspace.clone().unwrap();
    assert_eq!(ws.branch, "fix/issue-7");
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pr = &pulls[0];
    let body = pr["body"].as_str().unwrap();
    assert!(body.starts_with("Fixes #7\n"), "{body}");
    assert!(
        body.contains("## Changes")
            && body.contains(&format!("wf: implement job {} (complete)", doc.jobs[0].id)),
        "{body}"
    );
    assert!(
        body.contains("## Verification\n\n✅ Tests: 42 passed, 0 failed"),
        "{body}"
    );
    assert_eq!(
        (pr["head"]["ref"].as_str(), pr["base"]["ref"].as_str()),
        (Some("fix/issue-7"), Some("main"))
    );
    assert_eq!(pr["draft"], false);
    assert_eq!(pr["title"], "Widgets crash on empty input");
    let remote = git(
        &env.root,
        &["ls-remote", "--heads", "origin", "fix/issue-7"],
    );
    assert!(
        remote.starts_with(&git(&env.root, &["rev-parse", "fix/issue-7"])),
        "{remote}"
    );

    // Retried delivery, by hand, twice: the same PR, never a second.
    for _ in 0..2 {
        let shown = env.wf_ok(&["pr", &aid]);
        assert_eq!(shown.trim(), pr["html_url"].as_str().unwrap());
    }
    let requests = gh.requests();
    let count = |method: &str, tail: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.split('?').next().unwrap().ends_with(tail))
            .count()
    };
    // One 502, then the one that opened it; the retries by hand only looked it up.
    assert_eq!(count("POST", "/pulls"), 2, "{requests:?}");
    assert!(
        count("GET", "/pulls") >= 3,
        "each delivery looks the PR up first"
    );
    // One living comment, edited in place, that ends with the PR.
    assert_eq!(
        count("POST", "/comments"),
        2,
        "one 429, then the comment: {requests:?}"
    );
    let comments = gh.comments();
    assert_eq!(comments.len(), 1);
    let comment = comments.values().next().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        comment.contains(pr["html_url"].as_str().unwrap()),
        "{comment}"
    );
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer test-token")));
    // The token is in no log, transcript, prompt or document.
    assert!(!env.runner_log().contains("test-token"));
    let mut stack = vec![env.root.join(".wf")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains("test-token"),
                    "the token is in {}",
                    p.display()
                );
            }
        }
    }
    // A hard rollback closes the PR.
    env.wf_ok(&["rollback", &aid, "--hard", "--force"]);
    assert_eq!(gh.pulls()[0]["state"], "closed");
    record(
        "an_issue_becomes_exactly_one_pull_request_with_its_verification",
        "wf create --issue 7 against a scripted GitHub REST endpoint on 127.0.0.1 and a bare origin; the first PR create gets a 502 and the first comment a 429; delivery retried twice by hand",
        "the runner pushes the branch, looks the PR up before creating it, retries what the forge asks to retry, and records the PR; the progress comment is created once and edited in place",
        3,
        "nothing: 1 pull request (Fixes #7, the verification line), 1 progress comment, the token in no file",
        took,
    );
}

/// `wf rollback --last 1` takes the branch back to before the last job that changed it (the
/// old head stays reachable, the decision reaches the next PM) and refuses a dirty worktree
/// without --force; `--hard` refuses to delete unpushed work without --force, then deletes
/// the worktree and the branch while `refs/wf/…` keep every job's commit.
// Long: rollback's three forms and their refusals, in sequence on one assignment.
#[test]
fn rollback_last_and_hard_do_what_they_say_and_keep_unpushed_work_without_force() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.git_init();
    script(
        &env,
        json!({
            "plan": [{"init": true}, {"writeFile": {"path": "PLAN.md", "content": "plan\n"}}, {"result": "planned"}],
            "implement": [{"init": true}, {"writeFile": {"path": "CODE.md", "content": "code\n"}}, {"result": "done"}],
            "pm": [{"init": true}, {"decide": {
                "plan": ["insert-job", "--type", "implement"],
                "implement": ["update-assignment", "--status", "complete"]}}, {"result": "decided"}]
        }),
    );
    env.start_runner();
    let aid = env.create_started("roll me back", 1, "plan").remove(0);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    let ws = doc.workspace.clone().unwrap();
    let wt = std::path::Path::new(&ws.path);
    let plan_end = doc.jobs[0].commits.clone().unwrap().end;
    let implement = doc
        .jobs
        .iter()
        .find(|j| j.job_type == wf_core::model::JobType::Implement)
        .unwrap();
    let old_head = implement.commits.clone().unwrap().end;
    assert_eq!(git(wt, &["rev-parse", "HEAD"]), old_head);

    // A dirty worktree is not reset without --force.
    std::fs::write(wt.join("scratch.txt"), "mine\n").unwrap();
    let out = env.wf(&["rollback", &aid, "--last", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 uncommitted paths"));
    assert_eq!(git(wt, &["rev-parse", "HEAD"]), old_head);
    std::fs::remove_file(wt.join("scratch.txt")).unwrap();

    let report = env.wf_json(&["rollback", &aid, "--last", "1"]);
    assert_eq!(report["resetTo"], plan_end.as_str(), "{report}");
    assert_eq!(git(wt, &["rev-parse", "HEAD"]), plan_end);
    assert!(!wt.join("CODE.md").exists());
    let saved = report["savedRef"].as_str().unwrap();
    assert_eq!(
        git(&env.root, &["rev-parse", saved]),
        old_head,
        "the undone commit is kept"
    );
    let doc = env.assignment(&aid);
    assert!(
        doc.decisions
            .contains(&format!("implement {} undone", implement.id)),
        "{}",
        doc.decisions
    );
    assert_eq!(doc.status, AssignmentStatus::Complete);

    // --hard refuses to delete commits that exist nowhere else, then does it with --force.
    let out = env.wf(&["rollback", &aid, "--hard"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither pushed nor merged"));
    assert!(wt.exists());
    env.wf_ok(&["rollback", &aid, "--hard", "--force"]);
    assert!(!wt.exists());
    let branches = git(&env.root, &["branch", "--list", &ws.branch]);
    assert_eq!(branches, "", "the branch is deleted");
    let job_ref = format!("refs/wf/{aid}/{}", implement.id);
    assert_eq!(
        git(&env.root, &["rev-parse", &job_ref]),
        old_head,
        "the job's ref keeps its commit"
    );
    assert!(env.assignment(&aid).workspace.is_none());
    assert_eq!(git(&env.root, &["status", "--porcelain"]), "");
}

/// Two writers of a parallel group work in worktrees of their own and are merged back in
/// group order after the group; when their work conflicts, the PM is told which files.
// Long: a clean group and a conflicting group, asserted against git.
#[test]
fn a_parallel_group_of_writers_is_merged_back_and_a_conflict_goes_to_the_pm() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.git_init();
    let prompts = env.work_path("prompts");
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "$WF_JOB_ID.txt", "content": "$WF_JOB_ID\n"}},
                          {"sleepMs": 300}, {"result": "wrote my file"}],
            "document": [{"init": true}, {"writeFile": {"path": "shared.md", "content": "by $WF_JOB_ID\n"}},
                         {"result": "wrote shared.md"}],
            "pm": [{"init": true}, {"savePrompt": prompts}, {"decide": {
                "implement": ["update-assignment", "--status", "complete"],
                "document": ["update-assignment", "--status", "complete"]}}, {"result": "decided"}]
        }),
    );
    env.start_runner();
    let clean = env.create("two writers");
    env.wf_ok(&[
        "insert-job",
        &clean,
        "--jobs",
        r#"[{"type": "implement"}, {"type": "implement"}]"#,
    ]);
    let conflicting = env.create("two writers of one file");
    env.wf_ok(&[
        "insert-job",
        &conflicting,
        "--jobs",
        r#"[{"type": "document"}, {"type": "document"}]"#,
    ]);
    let done = |d: &wf_core::model::Assignment| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    };
    let doc = env.wait_for(&clean, LONG, done);
    let ws = doc.workspace.clone().unwrap();
    let wt = std::path::Path::new(&ws.path);
    let (a, b) = (&doc.jobs[0], &doc.jobs[1]);
    assert_eq!(a.group_id, b.group_id);
    // Each writer committed on its own sub-branch, from the same start.
    let (ca, cb) = (a.commits.clone().unwrap(), b.commits.clone().unwrap());
    assert_eq!(ca.start, cb.start);
    assert_ne!(ca.end, cb.end);
    // Both are merged into the assignment's branch, in group order.
    assert_eq!(git(wt, &["show", &format!("HEAD:{}.txt", a.id)]), a.id);
    assert_eq!(git(wt, &["show", &format!("HEAD:{}.txt", b.id)]), b.id);
    let merges = git(
        wt,
        &[
            "log",
            "--merges",
            "--reverse",
            "--format=%s",
            &format!("{}..HEAD", ws.base_commit),
        ],
    );
    assert_eq!(
        merges,
        format!(
            "wf: merge implement job {}\nwf: merge implement job {}",
            a.id, b.id
        )
    );
    // The merged sub-worktrees are gone; the main checkout never changed.
    assert!(!std::path::Path::new(&format!("{}.{}", ws.path, a.id)).exists());
    assert_eq!(git(&env.root, &["status", "--porcelain"]), "");

    let doc = env.wait_for(&conflicting, LONG, done);
    let ws = doc.workspace.clone().unwrap();
    let (a, b) = (&doc.jobs[0], &doc.jobs[1]);
    let note = doc
        .notes
        .iter()
        .map(|n| n.text.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        note.contains(&format!(
            "Merging document job {} into {} conflicts in shared.md",
            b.id, ws.branch
        )),
        "{note}"
    );
    // The first merged; the second's work waits on its branch.
    let wt = std::path::Path::new(&ws.path);
    assert_eq!(git(wt, &["show", "HEAD:shared.md"]), format!("by {}", a.id));
    let sub = format!("{}.{}", ws.branch, b.id);
    assert_eq!(
        git(&env.root, &["show", &format!("{sub}:shared.md")]),
        format!("by {}", b.id)
    );
    assert_eq!(
        git(wt, &["status", "--porcelain"]),
        "",
        "the aborted merge left the worktree clean"
    );
    // The PM was told.
    let prompt = std::fs::read_dir(&prompts)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|p| p.contains("two writers of one file"))
        .expect("the PM's prompt");
    assert!(prompt.contains("conflicts in shared.md"), "{prompt}");
}

/// When the runner cannot commit what a job left (here: git's index is locked), the work
/// stays in the worktree and the assignment is blocked with the path and git's error, instead
/// of the work being lost or the chain going on without it (once a human resumes it, the next
/// runner commits the leftovers first).
#[test]
fn a_failed_commit_blocks_the_assignment_and_keeps_the_worktree() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    env.git_init();
    let lock = format!(
        "{}/.git/worktrees/$WF_ASSIGNMENT_ID/index.lock",
        env.root.display()
    );
    script(
        &env,
        json!({
            "implement": [{"init": true}, {"writeFile": {"path": "work.txt", "content": "precious\n"}},
                          {"writeFile": {"path": lock, "content": ""}}, {"result": "done"}],
            "pm": pm_completes()
        }),
    );
    env.start_runner();
    let aid = env.create_started("locked index", 1, "implement").remove(0);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Blocked && d.lease.is_none()
    });
    let ws = doc.workspace.clone().unwrap();
    let reason = doc.blocked_reason.clone().unwrap_or_default();
    assert!(reason.contains(&ws.path), "{reason}");
    assert!(reason.contains("index.lock"), "{reason}");
    assert!(reason.contains("the worktree is kept"), "{reason}");
    // The chain waits: the PM is queued behind the block, and has not run.
    assert!(
        doc.jobs[1..].iter().all(|j| j.attempt == 0),
        "the chain went on: {doc:#?}"
    );
    let kept = std::fs::read_to_string(std::path::Path::new(&ws.path).join("work.txt")).unwrap();
    assert_eq!(kept, "precious\n");
}
