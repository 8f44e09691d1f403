//! The simulated agent of `wf demo`: no model, no network, clearly labelled.
//!
//! It behaves like Claude Code at the process boundary: it reads its prompt on stdin and
//! prints Claude's `stream-json` events. It does small real work in its working directory
//! (a plan file, a shell script it runs) and, as PM, decides through the real `wf` CLI — the
//! same binary, run as a child process with the environment the runner gave it.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use wf_core::model::{Assignment, JobStatus, JobType};
use wf_runner::env::shell_quote;

use crate::{Failure, Result};

/// Pause between events, so that a human watching the demo can follow.
const PACE: Duration = Duration::from_millis(150);

struct Stream {
    session: String,
    tool: u32,
}

impl Stream {
    fn emit(&self, mut event: Value) {
        event["session_id"] = json!(self.session);
        let mut out = std::io::stdout().lock();
        // Why: the runner reads our stdout; if it is gone there is nobody to tell.
        let _ = writeln!(out, "{event}");
        let _ = out.flush();
        std::thread::sleep(PACE);
    }

    fn say(&self, text: &str) {
        self.emit(
            json!({"type": "assistant", "message": {"role": "assistant", "model": "simulated",
            "content": [{"type": "text", "text": text}]}}),
        );
    }

    fn tool(&mut self, name: &str, input: Value, output: &str, is_error: bool) {
        self.tool += 1;
        let id = format!("sim_tool_{}", self.tool);
        self.emit(
            json!({"type": "assistant", "message": {"role": "assistant", "model": "simulated",
            "content": [{"type": "tool_use", "id": id, "name": name, "input": input}]}}),
        );
        self.emit(json!({"type": "user", "message": {"role": "user",
            "content": [{"type": "tool_result", "tool_use_id": id, "content": output, "is_error": is_error}]}}));
    }

    fn write(&mut self, path: &str, content: &str) -> Result<()> {
        std::fs::write(path, content).map_err(|e| Failure {
            code: crate::exit::ERROR,
            message: format!("cannot write {path}: {e}"),
        })?;
        self.tool(
            "Write",
            json!({"file_path": path, "content": content}),
            &format!("File created successfully at: {path}"),
            false,
        );
        Ok(())
    }

    /// Runs the real `wf` (this binary) with `args`, shown as a Bash tool call.
    fn wf(&mut self, args: &[&str]) -> Result<String> {
        let exe = std::env::current_exe().map_err(|e| Failure {
            code: crate::exit::ERROR,
            message: format!("cannot find wf: {e}"),
        })?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the simulated agent runs wf as a real agent's shell tool would"
        )]
        let out = std::process::Command::new(exe).args(args).output();
        let out = out.map_err(|e| Failure {
            code: crate::exit::ERROR,
            message: format!("cannot run wf: {e}"),
        })?;
        let shown = format!(
            "wf {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.tool(
            "Bash",
            json!({"command": shown}),
            text.trim(),
            !out.status.success(),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Failure {
                code: crate::exit::ERROR,
                message: format!("`{shown}` failed: {}", text.trim()),
            })
        }
    }
}

/// The text between `<tag>` and `</tag>` in the prompt.
fn section<'a>(prompt: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    prompt
        .find(&open)
        .map(|i| &prompt[i + open.len()..])
        .and_then(|rest| rest.find(&close).map(|j| rest[..j].trim()))
        .unwrap_or("")
}

/// `wf simulate-agent`.
pub(crate) fn main() -> Result<()> {
    let mut prompt = String::new();
    // Why: a missing prompt only makes the simulated work blander.
    let _ = std::io::stdin().read_to_string(&mut prompt);
    let job_type: Option<JobType> = std::env::var("WF_JOB_TYPE")
        .ok()
        .and_then(|t| t.parse().ok());
    let mut s = Stream {
        session: format!("simulated-{}", wf_runner::random::new_id()),
        tool: 0,
    };
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    s.emit(
        json!({"type": "system", "subtype": "init", "cwd": cwd, "model": "simulated",
        "tools": ["Write", "Bash"], "simulated": true}),
    );
    let outcome = match job_type {
        Some(JobType::Plan) => plan(&mut s, &prompt),
        Some(JobType::Implement) => implement(&mut s),
        Some(JobType::Pm) => pm(&mut s),
        Some(t) => {
            s.say(&format!(
                "[simulated] Checking the {t} job: the script exists and runs."
            ));
            Ok(format!(
                "[simulated] {t}: Pass. hello.sh runs and prints its greeting."
            ))
        }
        None => Err(Failure {
            code: crate::exit::USAGE,
            message: "WF_JOB_TYPE is not set; the simulated agent runs under wf-runner".into(),
        }),
    };
    let (subtype, is_error, text) = match outcome {
        Ok(text) => ("success", false, text),
        Err(f) => ("error_during_execution", true, f.message),
    };
    s.emit(json!({"type": "result", "subtype": subtype, "is_error": is_error, "result": text,
        "num_turns": s.tool + 1, "total_cost_usd": 0.0,
        "usage": {"input_tokens": prompt.len() / 4, "output_tokens": 50},
        "modelUsage": {"simulated": {"inputTokens": prompt.len() / 4, "outputTokens": 50, "costUSD": 0.0}}}));
    if is_error {
        return Err(Failure {
            code: crate::exit::ERROR,
            message: "the simulated job failed".into(),
        });
    }
    Ok(())
}

fn plan(s: &mut Stream, prompt: &str) -> Result<String> {
    let north_star = section(prompt, "north_star");
    s.say("[simulated] Reading the north star and writing a one-step plan.");
    let plan = format!(
        "# Plan (simulated)\n\n## Goal\n\n{north_star}\n\n## Work packages\n\n1. Write `hello.sh`, a POSIX shell script that prints a friendly greeting.\n   Done when `sh hello.sh` prints `Hello from wf!`.\n\n## Tests\n\nRun the script and compare its output.\n"
    );
    s.write("PLAN.md", &plan)?;
    Ok("[simulated] Plan written to PLAN.md. Work packages: 1. write hello.sh that prints `Hello from wf!`. No open questions.".into())
}

fn implement(s: &mut Stream) -> Result<String> {
    s.say("[simulated] Implementing PLAN.md work package 1.");
    let script =
        "#!/bin/sh\n# Written by the simulated agent of `wf demo`.\necho \"Hello from wf!\"\n";
    s.write("hello.sh", script)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Why: the script is run with `sh hello.sh`; the mode is only a courtesy.
        let _ = std::fs::set_permissions("hello.sh", std::fs::Permissions::from_mode(0o755));
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the simulated agent runs the script it wrote, as a real agent's shell tool would"
    )]
    let out = std::process::Command::new("sh").arg("hello.sh").output();
    let (text, ok) = match out {
        Ok(o) => (
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            o.status.success(),
        ),
        Err(e) => (e.to_string(), false),
    };
    s.tool("Bash", json!({"command": "sh hello.sh"}), &text, !ok);
    if !ok || text != "Hello from wf!" {
        return Err(Failure {
            code: crate::exit::ERROR,
            message: format!("[simulated] hello.sh printed {text:?}"),
        });
    }
    Ok("[simulated] Wrote hello.sh (POSIX sh over Python, because it runs anywhere). Verified: `sh hello.sh` prints `Hello from wf!`.".into())
}

fn pm(s: &mut Stream) -> Result<String> {
    let json = s.wf(&["assignment", "--json"])?;
    let doc: Assignment = serde_json::from_str(&json).map_err(|e| Failure {
        code: crate::exit::ERROR,
        message: format!("unreadable `wf assignment --json`: {e}"),
    })?;
    let me = std::env::var("WF_JOB_ID").unwrap_or_default();
    let reviewed: Vec<_> = doc
        .job(&me)
        .map(|pm| pm.reviews.iter().filter_map(|id| doc.job(id)).collect())
        .unwrap_or_default();
    if let Some(failed) = reviewed.iter().find(|j| j.status == JobStatus::Failed) {
        let reason = format!(
            "[simulated PM] the {} job {} failed ({}); a human should look",
            failed.job_type,
            failed.id,
            failed.failure_detail.as_deref().unwrap_or("no detail")
        );
        s.wf(&[
            "update-assignment",
            "--status",
            "blocked",
            "--reason",
            &reason,
        ])?;
        return Ok(format!("[simulated] Blocked: {reason}"));
    }
    match reviewed.first().map(|j| j.job_type) {
        None => {
            s.wf(&[
                "insert-job",
                "--type",
                "plan",
                "--context",
                "WHAT: plan the north star. WHY: no job ran yet. DONE WHEN: a plan file exists.",
            ])?;
            Ok("[simulated] No job ran yet: inserted a plan job.".into())
        }
        Some(JobType::Plan) => {
            s.say("[simulated] The plan is small and clear: implementing it in one job.");
            s.wf(&["update-assignment", "--artifacts", "PLAN.md: the plan"])?;
            s.wf(&["insert-job", "--type", "implement", "--context",
                "WHAT: implement PLAN.md work package 1 (hello.sh). WHY: the plan is approved. DONE WHEN: `sh hello.sh` prints `Hello from wf!`."])?;
            Ok("[simulated] Plan accepted; inserted the implement job.".into())
        }
        Some(_) => {
            s.say("[simulated] The implementation is verified and covers the north star.");
            s.wf(&[
                "update-assignment",
                "--artifacts",
                "hello.sh: the greeting script",
            ])?;
            s.wf(&[
                "update-assignment",
                "--decisions",
                "POSIX sh over Python, because the script must run anywhere",
            ])?;
            s.wf(&["update-assignment", "--status", "complete"])?;
            Ok("[simulated] North star achieved: completed the assignment.".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_quoting() {
        assert_eq!(
            section("x <north_star>\n hi \n</north_star> y", "north_star"),
            "hi"
        );
        assert_eq!(section("nothing", "north_star"), "");
        assert_eq!(shell_quote("plain-word"), "plain-word");
        assert_eq!(shell_quote("it's here"), "'it'\\''s here'");
    }
}
