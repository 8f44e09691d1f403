//! A scriptable stand-in for an agent CLI, at the process boundary.
//!
//! It reads its prompt on stdin like Claude Code, prints Claude's `stream-json` events, and
//! follows a script: replay a recorded transcript, hang, crash, ignore SIGTERM, spawn a
//! grandchild, print garbage, run `wf` commands as a PM would, record what it saw.
//!
//! The script is a JSON file named by `$FAKE_AGENT_SCRIPT` (or `--script PATH`):
//! `{"<job type or default>": [step, …] | {"byAttempt": [[step, …], …]}}`. The last
//! `byAttempt` entry applies to later attempts too. Steps are objects with one key; see
//! `step()` below.
//!
//! When started with `-p` (as wf starts Claude Code) it checks Claude's flags the way the real
//! CLI does: `--output-format stream-json` requires `--verbose`.

#![allow(
    clippy::disallowed_methods,
    reason = "the test harness starts the binaries under test and their helpers"
)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

struct Agent {
    prompt: String,
    session: String,
    started_us: u128,
}

impl Agent {
    fn emit(&self, mut event: Value) {
        if event.get("session_id").is_none() {
            event["session_id"] = json!(self.session);
        }
        println_flush(&event.to_string());
    }

    fn result(&self, text: &str, success: bool, cost: f64) {
        self.emit(json!({
            "type": "result", "subtype": "success", "is_error": !success, "result": text,
            "total_cost_usd": cost,
            "usage": {"input_tokens": 100, "output_tokens": 20},
            "modelUsage": {"fake-model": {"inputTokens": 100, "outputTokens": 20, "costUSD": cost}}
        }));
    }
}

fn println_flush(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        std::process::exit(141);
    }
}

/// Appends one line in a single write, so that lines of concurrent agents never interleave.
fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("record file");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("record write");
}

/// Runs `wf` from PATH (the runner puts its directory first), like an agent's shell tool.
fn wf(agent: &Agent, args: &[String]) -> (bool, String) {
    let out = std::process::Command::new("wf")
        .args(args)
        .output()
        .expect("running wf from PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent.emit(json!({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "toolu_fake", "name": "Bash", "input": {"command": format!("wf {}", args.join(" "))}}]}}));
    agent.emit(json!({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "toolu_fake", "content": text, "is_error": !out.status.success()}]}}));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list of strings")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

// Long: one arm per script step; the arms are the fake agent's language.
fn step(agent: &Agent, step: &Value) {
    let (kind, arg) = step
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("a step is an object with one key");
    match kind.as_str() {
        // Print a recorded transcript, line by line.
        "replay" => {
            let text = std::fs::read_to_string(arg.as_str().expect("path")).expect("replay file");
            for line in text.lines() {
                println_flush(line);
            }
        }
        "init" => agent.emit(
            json!({"type": "system", "subtype": "init", "model": "fake-model", "cwd": env("PWD")}),
        ),
        "text" => agent.emit(
            json!({"type": "assistant", "message": {"content": [{"type": "text", "text": arg}]}}),
        ),
        // {"result": "text"} or {"result": {"text": …, "success": bool, "cost": f64, "apiErrorStatus": n}}
        "result" => match arg {
            Value::String(t) => agent.result(t, true, 0.01),
            Value::Object(o) => {
                let text = o.get("text").and_then(Value::as_str).unwrap_or("");
                let success = o.get("success").and_then(Value::as_bool).unwrap_or(true);
                let mut event = json!({
                    "type": "result", "subtype": "success", "is_error": !success, "result": text,
                    "total_cost_usd": o.get("cost").and_then(Value::as_f64).unwrap_or(0.01),
                    "usage": {"input_tokens": 100, "output_tokens": 20}
                });
                if let Some(s) = o.get("apiErrorStatus") {
                    event["api_error_status"] = s.clone();
                }
                agent.emit(event);
            }
            _ => panic!("bad result step"),
        },
        "raw" => println_flush(arg.as_str().expect("raw line")),
        "rawBytes" => {
            let bytes: Vec<u8> = arg
                .as_array()
                .expect("bytes")
                .iter()
                .map(|b| b.as_u64().expect("byte") as u8)
                .collect();
            let mut out = std::io::stdout().lock();
            // Why: a reader that went away is what some tests simulate; keep going.
            let _ = out
                .write_all(&bytes)
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush());
        }
        "bigLine" => {
            let n = arg.as_u64().expect("size") as usize;
            let mut out = std::io::stdout().lock();
            let chunk = vec![b'x'; 1 << 20];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                // Why: a reader that went away is what some tests simulate; keep going.
                let _ = out.write_all(&chunk[..k]);
                left -= k;
            }
            // Why: a reader that went away is what some tests simulate; keep going.
            let _ = out.write_all(b"\n").and_then(|_| out.flush());
        }
        // {"sleepMs": n} or {"sleepMs": [min, max]} (uniformly random).
        "sleepMs" => {
            let ms = match arg {
                Value::Array(r) => {
                    let (lo, hi) = (r[0].as_u64().expect("min"), r[1].as_u64().expect("max"));
                    let nanos = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0);
                    let seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
                    lo + seed.wrapping_mul(6364136223846793005) % (hi - lo + 1)
                }
                v => v.as_u64().expect("ms"),
            };
            std::thread::sleep(Duration::from_millis(ms));
        }
        // Wait (at most a minute) until a file exists: the test decides when the run goes on.
        "waitFile" => {
            let path = Path::new(arg.as_str().expect("path"));
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !path.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "exit" => std::process::exit(arg.as_i64().expect("code") as i32),
        "ignoreSigterm" => {
            // Why: the test wants an agent that survives TERM.
            #[expect(unsafe_code, reason = "signal(2) to ignore SIGTERM")]
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
        }
        // Start a grandchild (a shell that ignores TERM and sleeps) and write its pid to a file.
        "grandchild" => {
            let child = std::process::Command::new("sh")
                .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("grandchild");
            append(arg.as_str().expect("pid file"), &child.id().to_string());
            // Why: the grandchild is meant to outlive this agent; it is never waited for.
            std::mem::forget(child);
        }
        // Record what this run saw: ids, attempt, time, pid, the wf environment.
        "record" => {
            let path_first = env("PATH").split(':').next().unwrap_or("").to_string();
            let line = json!({
                "job": env("WF_JOB_ID"), "assignment": env("WF_ASSIGNMENT_ID"), "type": env("WF_JOB_TYPE"),
                "namespace": env("WF_NAMESPACE"), "config": env("WF_CONFIG"), "attempt": env("WF_ATTEMPT"),
                "runner": env("WF_RUNNER_ID"), "pathFirst": path_first, "pid": std::process::id(),
                "startUs": agent.started_us as u64, "atUs": now_us() as u64,
                "args": std::env::args().skip(1).collect::<Vec<_>>(),
                "cwd": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            });
            append(arg.as_str().expect("record file"), &line.to_string());
        }
        // Save the prompt to <dir>/<job id>-<attempt>.prompt.
        "savePrompt" => {
            let dir = Path::new(arg.as_str().expect("dir"));
            std::fs::create_dir_all(dir).expect("prompt dir");
            std::fs::write(
                dir.join(format!("{}-{}.prompt", env("WF_JOB_ID"), env("WF_ATTEMPT"))),
                &agent.prompt,
            )
            .expect("save prompt");
        }
        // Hold an flock on <dir>/<job id>.lock while running; the kernel drops it when the
        // process dies. Finding it held means two agents run the same job at once.
        "lock" => {
            use std::os::fd::AsRawFd;
            let dir = Path::new(arg.as_str().expect("dir"));
            std::fs::create_dir_all(dir).expect("lock dir");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{}.lock", env("WF_JOB_ID"))))
                .expect("lock file");
            #[expect(unsafe_code, reason = "flock(2) on a file we own")]
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                append(
                    &dir.join("violations").display().to_string(),
                    &env("WF_JOB_ID"),
                );
                std::process::exit(99);
            }
            std::mem::forget(file);
        }
        "wf" => {
            let (ok, _) = wf(agent, &strings(arg));
            if !ok {
                agent.result("wf command failed", false, 0.0);
                std::process::exit(1);
            }
        }
        // {"firstTime": {"marker": path, "first": [wf args], "later": [wf args]}}: the first
        // run (no marker file yet) runs `first` and leaves the marker; later runs run `later`.
        "firstTime" => {
            let marker = Path::new(arg["marker"].as_str().expect("marker"));
            let cmd = if marker.exists() {
                &arg["later"]
            } else {
                &arg["first"]
            };
            std::fs::write(marker, "").expect("marker");
            let (ok, _) = wf(agent, &strings(cmd));
            assert!(ok, "the command failed");
        }
        // As a PM: map the reviewed jobs' type (or "failed") to a wf command, and run it.
        "decide" => {
            let me = env("WF_JOB_ID");
            let (_, out) = wf(agent, &["job".into(), me, "--json".into()]);
            let detail: Value = serde_json::from_str(&out).expect("wf job --json");
            let reviews = detail["job"]["reviews"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut key = "none".to_string();
            for id in reviews {
                let (_, out) = wf(
                    agent,
                    &[
                        "job".into(),
                        id.as_str().expect("id").into(),
                        "--json".into(),
                    ],
                );
                let job: Value = serde_json::from_str(&out).expect("wf job --json");
                if job["job"]["status"] == "failed" {
                    key = "failed".into();
                    break;
                }
                key = job["job"]["jobType"].as_str().expect("type").into();
            }
            if let Some(cmd) = arg.get(&key) {
                let (ok, _) = wf(agent, &strings(cmd));
                assert!(ok, "decision command failed");
            }
        }
        // {"stream": {"bytesPerSec": n, "seconds": s}}: a busy agent's stream — assistant
        // text, tool calls and their results of about 4 KiB a line — at n bytes a second.
        "stream" => {
            let rate = arg["bytesPerSec"].as_u64().expect("bytesPerSec");
            let seconds = arg["seconds"].as_f64().expect("seconds");
            let filler: String =
                "The parser reads the date field, then checks the zone. ".repeat(70);
            // Serialised once: the agent's own cost stays small next to the runner's.
            let lines: Vec<String> = [
                json!({"type": "assistant", "message": {"content": [{"type": "text", "text": filler}]}}),
                json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "cargo test -p widgets", "description": filler}}]}}),
                json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": filler}]}}),
            ]
            .into_iter()
            .map(|mut event| {
                event["session_id"] = json!(agent.session);
                event.to_string()
            })
            .collect();
            let start = std::time::Instant::now();
            let (mut sent, mut i) = (0u64, 0usize);
            while start.elapsed().as_secs_f64() < seconds {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let text = &lines[i % lines.len()];
                    println_flush(text);
                    sent += text.len() as u64 + 1;
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // {"writeFile": {"path": p, "content": c}}: relative to the working directory;
        // `$WF_ASSIGNMENT_ID` and `$WF_JOB_ID` in either are replaced by their values.
        "writeFile" => {
            let expand = |s: &str| {
                s.replace("$WF_ASSIGNMENT_ID", &env("WF_ASSIGNMENT_ID"))
                    .replace("$WF_JOB_ID", &env("WF_JOB_ID"))
            };
            let path = expand(arg["path"].as_str().expect("path"));
            if let Some(dir) = Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).expect("mkdir for writeFile");
            }
            std::fs::write(&path, expand(arg["content"].as_str().unwrap_or("")))
                .expect("write file");
        }
        "closeStdout" => {
            #[expect(unsafe_code, reason = "close(2) on our own stdout")]
            unsafe {
                libc::close(1);
            }
        }
        other => panic!("unknown fake-agent step {other:?}"),
    }
}

/// Microseconds since the epoch, now.
fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn main() {
    let started_us = now_us();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-p") {
        let stream = args
            .windows(2)
            .any(|w| w[0] == "--output-format" && w[1] == "stream-json");
        if stream && !args.iter().any(|a| a == "--verbose") {
            eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
            std::process::exit(1);
        }
    }
    let script_path = args
        .windows(2)
        .find(|w| w[0] == "--script")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| env("FAKE_AGENT_SCRIPT"));
    let script: Value =
        serde_json::from_str(&std::fs::read_to_string(&script_path).unwrap_or_else(|e| {
            eprintln!("fake-agent: cannot read script {script_path:?}: {e}");
            std::process::exit(2);
        }))
        .expect("script is JSON");
    let mut prompt = String::new();
    // Why: a missing prompt is not an error for the fake agent.
    let _ = std::io::stdin().read_to_string(&mut prompt);
    let agent = Agent {
        prompt,
        session: format!("fake-{}", std::process::id()),
        started_us,
    };
    let job_type = env("WF_JOB_TYPE");
    let entry = script
        .get(&job_type)
        .or_else(|| script.get("default"))
        .cloned()
        .unwrap_or(json!([]));
    let steps = match entry {
        Value::Array(steps) => steps,
        Value::Object(o) => {
            let by = o
                .get("byAttempt")
                .and_then(Value::as_array)
                .expect("byAttempt list");
            let attempt: usize = env("WF_ATTEMPT").parse().unwrap_or(1);
            by[(attempt.max(1) - 1).min(by.len() - 1)]
                .as_array()
                .expect("steps")
                .clone()
        }
        _ => panic!("bad script entry"),
    };
    for s in &steps {
        step(&agent, s);
    }
}
