//! What the runner does for a workflow's tasks around the agent: a command gate polled until
//! it passes, the verdict read from a task's final message, and a task's own checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wf_core::chain::Outcome;
use wf_core::config::CheckConfig;
use wf_core::harness::{CommandSpec, Ended, Verdict};
use wf_core::model::{FailureReason, Job};
use wf_core::workflow::Gate;

use super::stop::StopSignal;
use crate::process::{self, Flow, Limits, Line};

/// Longest a task's check may run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest one try of a command gate may run.
const GATE_TRY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Most output of a command gate kept as its result.
const GATE_OUTPUT: usize = 8 * 1024;

/// A task that must give a verdict fails without `VERDICT: pass`: a fail, or none at all.
pub(super) fn apply_verdict(job: &Job, verdict: &mut Verdict) {
    let wanted = job.task.as_ref().is_some_and(|t| t.verdict);
    if !wanted || verdict.outcome != Outcome::Complete {
        return;
    }
    match wf_core::workflow::verdict(&verdict.text) {
        Some(true) => {}
        Some(false) => {
            verdict.outcome = Outcome::Failed(FailureReason::Verdict);
            verdict.detail = Some("the verdict is fail".into());
        }
        None => {
            verdict.outcome = Outcome::Failed(FailureReason::Verdict);
            verdict.detail = Some(
                "no `VERDICT: pass` or `VERDICT: fail` line in the final message; a missing verdict counts as fail".into(),
            );
        }
    }
}

/// Publishes a task's result on the forge when its workflow says to (`publish`): after a
/// success, and for a review also after a failed verdict (the review asks for changes). What
/// was done, or why it could not be, is added to the result for the PM.
pub(super) async fn publish(
    ctx: &super::Ctx,
    doc: &wf_core::model::Assignment,
    job: &Job,
    verdict: &mut Verdict,
) {
    let Some(how) = job.task.as_ref().and_then(|t| t.publish) else {
        return;
    };
    let passed = verdict.outcome == Outcome::Complete;
    let failed_review = how == wf_core::workflow::Publish::PrReview
        && verdict.outcome == Outcome::Failed(FailureReason::Verdict);
    if !passed && !failed_review {
        return;
    }
    let line = match crate::publish::publish(&ctx.config, doc, &job.id, how, &verdict.text, passed)
        .await
    {
        Ok(line) => {
            tracing::info!(assignment = %doc.id, job = %job.id, %line, "published");
            line
        }
        Err(e) => {
            tracing::warn!(assignment = %doc.id, job = %job.id, %e, "cannot publish the task's result");
            format!("wf could not publish this result ({how}): {e}")
        }
    };
    verdict.text = format!("{}\n\n---\n{line}", verdict.text.trim_end());
}

/// The checks of a task that names its own (`verify` in the workflow), all required.
pub(super) fn task_checks(job: &Job) -> Option<Vec<CheckConfig>> {
    let verify = &job.task.as_ref()?.verify;
    if verify.is_empty() {
        return None;
    }
    Some(
        verify
            .iter()
            .enumerate()
            .map(|(i, command)| CheckConfig {
                name: format!("task check {}", i + 1),
                command: command.clone(),
                timeout: CHECK_TIMEOUT,
                required: true,
            })
            .collect(),
    )
}

/// Runs a command gate: `sh -c RUN` in the assignment's workspace, again every `every` until
/// it exits 0 (the gate passes) or `timeout` has passed (it fails). Stopped with the unit.
pub(super) async fn run_gate(job: &Job, stop: &StopSignal, dir: &Path) -> Verdict {
    let Some(Gate::Command {
        run,
        every_ms,
        timeout_ms,
    }) = job.task.as_ref().and_then(|t| t.gate.clone())
    else {
        return gate_verdict(
            Outcome::Failed(FailureReason::SpawnError),
            "a human gate reached the runner; only `wf approve` passes it".into(),
            String::new(),
            None,
        );
    };
    let started = Instant::now();
    let deadline = started + Duration::from_millis(timeout_ms);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let (code, output) = try_once(
            &run,
            dir,
            left.min(GATE_TRY_TIMEOUT).max(Duration::from_secs(1)),
            stop,
        )
        .await;
        if stop.token().is_cancelled() {
            return gate_verdict(
                Outcome::Requeue,
                "the gate was stopped; it runs again".into(),
                output,
                code,
            );
        }
        if code == Some(0) {
            return gate_verdict(
                Outcome::Complete,
                format!("passed after {tries} tries"),
                output,
                code,
            );
        }
        let next = Instant::now() + Duration::from_millis(every_ms);
        if next >= deadline {
            let detail = format!(
                "`{run}` did not succeed within {} ({tries} tries; last exit {})",
                wf_core::clock::duration_text(timeout_ms),
                code.map_or("none".to_string(), |c| c.to_string())
            );
            return gate_verdict(
                Outcome::Failed(FailureReason::Timeout),
                detail,
                output,
                code,
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.token().cancelled() => {}
        }
    }
}

fn gate_verdict(outcome: Outcome, detail: String, text: String, exit_code: Option<i32>) -> Verdict {
    Verdict {
        outcome,
        detail: Some(detail),
        text,
        usage: Default::default(),
        exit_code,
    }
}

/// One try of a gate's command: its exit code and the end of its output.
async fn try_once(
    run: &str,
    dir: &Path,
    timeout: Duration,
    stop: &StopSignal,
) -> (Option<i32>, String) {
    let spec = CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), format!("exec 2>&1; {run}")],
        env: BTreeMap::new(),
        cwd: dir.to_path_buf(),
        stdin: None,
    };
    let limits = Limits::new(timeout, timeout, Duration::from_secs(2));
    let mut output = String::new();
    let exit = process::run(
        &spec,
        &BTreeMap::new(),
        &limits,
        stop.token(),
        |_| {},
        |line| {
            if let Line::Text(t) = line {
                output.push_str(t);
                output.push('\n');
                if output.len() > 2 * GATE_OUTPUT {
                    output.drain(..output.len() - GATE_OUTPUT);
                }
            }
            Flow::Continue
        },
    )
    .await;
    let code = match exit {
        Ok(e) => match e.ended {
            Ended::Exited { code, .. } => code,
            _ => None,
        },
        Err(e) => {
            output.push_str(&e.to_string());
            None
        }
    };
    if output.len() > GATE_OUTPUT {
        let mut cut = output.len() - GATE_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output.drain(..cut);
    }
    (code, output)
}
