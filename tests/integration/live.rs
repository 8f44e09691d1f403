//! Live events: `wf logs -f` and `wf watch --json` follow a running job's numbered events in
//! order and end when it ends, on sled (through the runner's socket) and on NATS (from another
//! machine's directory, through JetStream); secrets never reach them.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::{AssignmentStatus, JobStatus};
use wf_tests::{NatsServer, TestEnv};

use crate::{fixture, BINS};

const LONG: Duration = Duration::from_secs(120);
/// A token the runner has in its environment; the agent prints it.
const SECRET: &str = "tok-live-7c1d9e0b3a5f4e2d";

/// A running `wf` whose stdout lines arrive on a channel.
struct Reader {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Reader {
    fn start(env: &TestEnv, dir: &Path, args: &[&str]) -> Reader {
        let mut child = env
            .wf_cmd(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wf");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Reader {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `want`; panics after `LONG`.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = want(&line);
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => {
                    let mut err = String::new();
                    if self.child.try_wait().ok().flatten().is_some() {
                        // Why: the message is for the failure report only.
                        let _ = std::io::Read::read_to_string(
                            self.child.stderr.as_mut().unwrap(),
                            &mut err,
                        );
                    }
                    panic!(
                        "no {what} within {LONG:?}; saw:\n{}\nstderr: {err}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for the process to end by itself; returns every line it printed.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + LONG;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "wf did not end with the job; saw:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(status.success(), "wf failed ({status}): {err}");
        self.seen.extend(self.lines.iter());
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Why: a reader left running by a failed test; it is ours, killed by its pid.
            let _ = self.child.kill();
            // Why: reaping only; the kill above is what matters.
            let _ = self.child.wait();
        }
    }
}

/// The plan job says something, waits for the test's go, then works and ends; the PM
/// completes the assignment.
fn script(work: &Path) -> Value {
    let go = work.join("go").display().to_string();
    json!({
        "plan": [
            {"init": true},
            {"text": format!("first words; the deploy token is {SECRET}")},
            {"waitFile": go},
            {"replay": fixture("tool_write.jsonl")}
        ],
        "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "done"}]
    })
}

/// The events of `lines` (`wf logs --json` frames, or `wf watch --json` lines of `job`).
fn events_of(lines: &[String], job: Option<&str>) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter_map(|v| match job {
            None => v.get("event").cloned(),
            Some(j) => (v["type"] == "event" && v["job"] == j).then(|| v["event"].clone()),
        })
        .collect()
}

/// Numbered from 0 without gaps, the agent's events in order, the exit last.
fn check_stream(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "{events:#?}"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
    };
    assert!(at("session") < at("text"), "{kinds:?}");
    assert!(
        at("text") < at("tool_use") && at("tool_use") < at("tool_result"),
        "{kinds:?}"
    );
    assert!(at("tool_result") < at("result"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"exit"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "exit").count(), 1);
    assert_eq!(events.last().unwrap()["outcome"], "complete");
    let tool = &events[at("tool_use")];
    assert_eq!(tool["name"], "Write", "{tool}");
    let text = serde_json::to_string(events).unwrap();
    assert!(!text.contains(SECRET), "a secret reached the events");
    assert!(text.contains("[redacted]"), "{text}");
}

/// The transcript of a job's first attempt, as its runner wrote it.
fn first_transcript(env: &TestEnv, aid: &str, jid: &str) -> String {
    let dir = env.root.join(".wf/transcripts").join(aid);
    std::fs::read_to_string(dir.join(format!("{jid}-1.jsonl"))).unwrap()
}

/// Follows one running job with `wf logs -f --json` and `wf watch --json` from `dir`;
/// returns the versions of the assignment the watch saw, and the number of events.
fn follow_a_running_job(env: &TestEnv, dir: &Path, aid: &str, jid: &str) -> (Vec<Value>, usize) {
    env.wait_for(aid, LONG, |d| {
        d.job(jid).is_some_and(|j| j.status == JobStatus::Running)
    });
    let mut logs = Reader::start(env, dir, &["logs", "-f", jid, "--json"]);
    let mut watch = Reader::start(env, dir, &["watch", aid, "--json"]);
    // Both see the first words while the agent still waits: they are live, not a replay at
    // the end.
    logs.until("first words in wf logs", |l| l.contains("first words"));
    watch.until("first words in wf watch", |l| l.contains("first words"));
    // The counters reach the document while the agent waits (within the 2 s period).
    env.wait_for(aid, LONG, |d| {
        d.job(jid)
            .and_then(|j| j.progress.as_ref())
            .is_some_and(|p| p.last_activity.starts_with("first words"))
    });
    std::fs::write(env.work.join("go"), "").unwrap();
    let logged = events_of(&logs.finish(), None);
    check_stream(&logged);
    let watched = watch.finish();
    check_stream(&events_of(&watched, Some(jid)));
    // The watch saw the assignment change and ended when it completed.
    let versions: Vec<Value> = watched
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "assignment")
        .map(|v| v["assignment"].clone())
        .collect();
    let statuses: Vec<&Value> = versions.iter().map(|v| &v["status"]).collect();
    assert_eq!(statuses.last(), Some(&&json!("complete")), "{statuses:?}");
    assert!(statuses.len() >= 3, "{statuses:?}");
    // While the job ran, the document carried its counters (redacted too).
    let running: Vec<&Value> = versions
        .iter()
        .flat_map(|v| v["jobs"].as_array().unwrap())
        .filter(|j| j["id"] == jid && j["status"] == "running" && j.get("progress").is_some())
        .collect();
    let progress = &running
        .last()
        .expect("no version with the running job's counters")["progress"];
    assert_eq!(progress["attempt"], 1, "{progress}");
    assert!(progress["events"].as_u64().unwrap() >= 2, "{progress}");
    assert!(
        progress["lastActivity"]
            .as_str()
            .unwrap()
            .starts_with("first words"),
        "{progress}"
    );
    assert!(!progress.to_string().contains(SECRET));
    // Finished, the job keeps its usage, not its counters.
    let last = versions.last().unwrap();
    let job = last["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == jid)
        .unwrap();
    assert!(
        job.get("progress").is_none() && job["usage"]["inputTokens"].as_u64() > Some(0),
        "{job}"
    );
    (versions, logged.len())
}

#[test]
fn logs_and_watch_follow_a_running_job_on_sled() {
    let mut env = TestEnv::new(&BINS, json!({}), json!({}));
    std::fs::write(env.work.join("script.json"), script(&env.work).to_string()).unwrap();
    env.set_runner_env(0, &[("DEPLOY_TOKEN", SECRET)]);
    env.start_runner();
    let aid = env.create("Say something live");
    let jid = env
        .wf_ok(&["insert-job", &aid, "--type", "plan", "--context", "plan"])
        .trim()
        .to_string();
    let (versions, events) = follow_a_running_job(&env, &env.root.clone(), &aid, &jid);
    let doc = env.wait_for(&aid, LONG, |d| {
        d.status == AssignmentStatus::Complete && d.lease.is_none()
    });
    // The counters reach the document at most every 2 s, not once per event: the whole
    // assignment (create, insert, claim, record, the PM's run) takes fewer writes than the
    // plan job had events.
    assert!(
        (doc.version as usize) < events && versions.len() < events,
        "one write per event? version {} after {events} events",
        doc.version
    );

    // After the end: the human view, the original lines, past and missing attempts.
    let human = env.wf_ok(&["logs", &jid]);
    for want in [
        "── session",
        "first words",
        "→ [Write]",
        "  ✓ ",
        "══ result: success",
        "══ complete",
    ] {
        assert!(human.contains(want), "no {want:?} in:\n{human}");
    }
    assert!(!human.contains(SECRET));
    let raw = env.wf_ok(&["logs", &jid, "--raw", "--attempt", "1"]);
    let transcript = first_transcript(&env, &aid, &jid);
    assert_eq!(raw, transcript);
    assert!(
        !transcript.contains(SECRET),
        "a secret reached the transcript"
    );
    let missing = env.wf(&["logs", &jid, "--attempt", "2"]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no attempt 2"));
    // With no runner, wf reads the files itself.
    env.signal_runner(libc::SIGTERM);
    env.wait_runner(LONG);
    let direct = env.wf_ok(&["logs", &jid, "--json"]);
    let lines: Vec<String> = direct.lines().map(str::to_string).collect();
    check_stream(&events_of(&lines, None));
}

#[test]
fn logs_and_watch_follow_a_job_of_another_machine_on_nats() {
    let server = NatsServer::start(&wf_tests::nats_server());
    let config = json!({"namespace": "live", "store": {"kind": "nats", "url": server.url()}});
    let mut env = TestEnv::new(&BINS, json!({}), config);
    std::fs::write(env.work.join("script.json"), script(&env.work).to_string()).unwrap();
    env.set_runner_env(0, &[("DEPLOY_TOKEN", SECRET)]);
    env.start_runner();
    // Machine B: its own directory and config, the same NATS; no runner, no files of A's.
    let machine_b = env.dir().join("machine-b");
    std::fs::create_dir_all(machine_b.join(".wf")).unwrap();
    std::fs::write(machine_b.join(".wf/config.json"), env.config().to_string()).unwrap();
    let aid = env.create("Say something live on NATS");
    let jid = env
        .wf_ok(&["insert-job", &aid, "--type", "plan", "--context", "plan"])
        .trim()
        .to_string();
    follow_a_running_job(&env, &machine_b, &aid, &jid);
    env.wait_for(&aid, LONG, |d| d.status == AssignmentStatus::Complete);
    // The finished attempt, read again from B: the same stream, and the original lines.
    let out = env
        .wf_cmd(&["logs", &jid, "--json"])
        .current_dir(&machine_b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    check_stream(&events_of(&lines, None));
    let raw = env
        .wf_cmd(&["logs", &jid, "--raw"])
        .current_dir(&machine_b)
        .output()
        .unwrap();
    let transcript = first_transcript(&env, &aid, &jid);
    assert_eq!(String::from_utf8(raw.stdout).unwrap(), transcript);
}
