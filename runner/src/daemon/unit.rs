//! One unit's execution: its jobs' agents run in parallel under one lease, which is renewed
//! (self-fencing when it cannot be), and each outcome is recorded with a CAS fenced by the
//! lease epoch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::scheduler::UnitDone;
use super::stop::{StopReason, StopSignal, UnitStops};
use super::{work, Ctx};
use crate::ops;
use crate::process::{self, Flow, Limits, Line};
use crate::{live, paths};
use wf_core::chain::{self, AttemptReport, Outcome};
use wf_core::clock::now_ms;
use wf_core::config::HarnessConfig;
use wf_core::harness::{self, CommandSpec, Ended, Parsed, RunLog, Verdict};
use wf_core::live::LiveKind;
use wf_core::model::{Assignment, FailureReason, Job, JobType};
use wf_core::prompt::{self, PriorResult, PromptInput};
use wf_store::wakeup::Token;
use wf_store::{BlobKey, StoreError, UpdateError};

// Long: the unit's life in order: renewal, budget timer, workspace, jobs, archive, end.
pub(super) async fn run_unit(
    ctx: Arc<Ctx>,
    doc: Assignment,
    claim: chain::Claim,
    stops: UnitStops,
    done: mpsc::UnboundedSender<UnitDone>,
    token: Option<Token>,
) {
    let renewing = CancellationToken::new();
    // Should this task panic, the renewal stops (the lease expires and the jobs run again
    // elsewhere or after a restart) and the scheduler gets its slot back.
    let mut guard = UnitGuard {
        renewing: renewing.clone(),
        done: Some((done.clone(), doc.id.clone())),
    };
    let renewer = tokio::spawn(renew_lease(
        ctx.clone(),
        doc.id.clone(),
        claim.epoch,
        doc.lease.as_ref().map_or(0, |l| l.expires_at),
        stops.clone(),
        renewing.clone(),
        token.clone(),
    ));
    // The wall-time budget stops the jobs while they run.
    let budget_timer = chain::wall_deadline(&doc).map(|deadline| {
        let (stops, max) = (stops.clone(), doc.budget.max_wall_ms.unwrap_or(0));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now_ms()))).await;
            let reason = format!("budget exceeded: maxWallMs is {max} ms and the time is up");
            stops.all(&StopReason::Budget(reason));
        })
    });
    let unit = match Box::pin(unit_work(&ctx, &doc, &claim)).await {
        Ok(unit) => unit,
        Err(reason) => {
            tracing::error!(assignment = %doc.id, %reason, "blocking: the workspace is not usable");
            let blocked = ctx
                .store
                .update(&doc.id, |d| {
                    chain::block_unit(d, claim.epoch, &reason, now_ms())
                })
                .await;
            if let Some(timer) = budget_timer {
                timer.abort();
            }
            let last = blocked.ok().map(|(d, ())| d);
            return end_unit(&doc.id, renewing, renewer, token, &mut guard, &done, last).await;
        }
    };
    Box::pin(work::unit_started(&ctx, &doc, &claim.job_ids)).await;
    let jobs = claim.job_ids.iter().map(|id| {
        let stop = stops.job(id).cloned().unwrap_or_default();
        let (ctx, doc, stops, unit) = (&ctx, &doc, &stops, &unit);
        async move {
            let written = run_job(ctx, doc, id, claim.epoch, &stop, unit).await;
            // A job of a parallel group that spent the last of the money stops its siblings.
            if let Some(reason) = written.as_ref().and_then(chain::cost_over_budget) {
                stops.all(&StopReason::Budget(reason));
            }
            written
        }
    });
    let written = futures_util::future::join_all(jobs).await;
    if let Some(timer) = budget_timer {
        timer.abort();
    }
    // Every outcome is recorded: no renewal may run behind it (end_unit waits for it to stop).
    renewing.cancel();
    let mut last = written.into_iter().flatten().max_by_key(|d| d.version);
    // The document stays small however long the assignment runs.
    match ops::archive_finished(&ctx.store, &doc.id).await {
        Ok(Some(after)) => {
            tracing::info!(assignment = %doc.id, archived = after.archive.jobs, "archived old finished jobs");
            last = Some(after);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(assignment = %doc.id, %e, "cannot archive old finished jobs; trying after the next unit")
        }
    }
    if let Some(after) = match &last {
        Some(d) => Box::pin(work::after_unit(&ctx, d)).await,
        None => None,
    } {
        last = Some(after);
    }
    end_unit(&doc.id, renewing, renewer, token, &mut guard, &done, last).await;
}

/// The end of a unit: no more renewals, the token has served (the outcome is recorded and
/// announced), the slot goes back to the scheduler with the document as last written.
async fn end_unit(
    aid: &str,
    renewing: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
    token: Option<Token>,
    guard: &mut UnitGuard,
    done: &mpsc::UnboundedSender<UnitDone>,
    last: Option<Assignment>,
) {
    renewing.cancel();
    // Why: the renewer only ends by this cancel or by fencing itself; both are fine here.
    let _ = renewer.await;
    if let Some(token) = token {
        token.done().await;
    }
    guard.done = None;
    // Why: the scheduler only stops listening when it exits, after every unit is done.
    let _ = done.send((aid.to_string(), last));
}

/// Ends a unit that did not end normally (its task panicked or was dropped): no renewal goes
/// on behind it, and its slot is freed. The agents die with the process layer's own guard.
struct UnitGuard {
    renewing: CancellationToken,
    done: Option<(mpsc::UnboundedSender<UnitDone>, String)>,
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        if let Some((done, aid)) = self.done.take() {
            tracing::error!(assignment = %aid, "a unit ended abnormally; its lease is left to expire");
            self.renewing.cancel();
            // Why: the scheduler only stops listening when it exits.
            let _ = done.send((aid, None));
        }
    }
}

/// Renews the lease every third of its length (and, on NATS, confirms progress on the token);
/// stops the unit when the lease is lost, or when it was not renewed in time for the agents to
/// be stopped (TERM, grace, KILL) before it expires.
///
/// The deadline is on the monotonic clock, and watched all the time, during a renewal that
/// hangs as well as between renewals: another runner may claim the jobs the moment the lease
/// expires.
async fn renew_lease(
    ctx: Arc<Ctx>,
    aid: String,
    epoch: u64,
    expires_at: u64,
    stops: UnitStops,
    renewing: CancellationToken,
    token: Option<Token>,
) {
    let period = ctx.config.lease / 3;
    // Stopping takes up to killGraceMs; a tenth of the lease is kept for the rest.
    let stop_before = ctx.config.kill_grace + ctx.config.lease / 10;
    // The deadline is monotonic: from the claim's stored expiry once, then from the instant
    // taken *before* each renewal that succeeded (its expiry is at least that plus leaseMs), so
    // a wall-clock step on this machine cannot move it, and a slow answer only makes it earlier.
    let left = Duration::from_millis(expires_at.saturating_sub(now_ms()));
    let mut fence_at = tokio::time::Instant::now() + left.saturating_sub(stop_before);
    let mut wait = period;
    loop {
        tokio::select! {
            _ = renewing.cancelled() => return,
            _ = tokio::time::sleep_until(fence_at) => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let asked = tokio::time::Instant::now();
        let renewal = ctx
            .store
            .update(&aid, |d| chain::renew(d, epoch, now_ms(), ctx.lease_ms()));
        // Each attempt gets only the time left before the fence.
        match tokio::time::timeout_at(fence_at, renewal).await {
            Ok(Ok(_)) => {
                fence_at = asked + ctx.config.lease.saturating_sub(stop_before);
                wait = period;
                if let Some(token) = &token {
                    // Ownership is the lease above; the progress ack only keeps the token from
                    // being redelivered while we hold it.
                    token.progress(period / 2).await;
                }
            }
            Ok(Err(UpdateError::Refused(e))) => {
                tracing::warn!(assignment = %aid, %e, "lease lost; stopping the agents");
                stops.all(&StopReason::LeaseLost);
                return;
            }
            Ok(Err(UpdateError::Store(e))) => {
                tracing::warn!(assignment = %aid, %e, "lease renewal failed; trying again");
                wait = period / 4;
            }
            Err(_) => break,
        }
    }
    tracing::error!(assignment = %aid, "cannot renew the lease in time; stopping the agents");
    stops.all(&StopReason::LeaseLost);
}

async fn build_prompt(ctx: &Ctx, doc: &Assignment, job: &Job) -> anyhow::Result<String> {
    let context = if job.has_context {
        // A loop's later round uses its first round's stored context.
        let owner = job
            .task
            .as_ref()
            .and_then(|t| t.context_job.clone())
            .unwrap_or_else(|| job.id.clone());
        let key = BlobKey::Context {
            assignment: doc.id.clone(),
            job: owner,
        };
        let bytes = ctx
            .store
            .get_blob(&key)
            .await?
            .context("the job's context is missing from the store")?;
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        String::new()
    };
    let mut previous = Vec::new();
    for prior in prompt::previous_jobs(doc, job) {
        let text = if prior.has_result {
            let key = BlobKey::Result {
                assignment: doc.id.clone(),
                job: prior.id.clone(),
                attempt: prior.attempt,
            };
            ctx.store
                .get_blob(&key)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        previous.push(PriorResult { job: prior, text });
    }
    let input = PromptInput {
        doc,
        job,
        context: &context,
        previous,
        wf: &ctx.wf_command,
    };
    Ok(prompt::render(&ctx.templates, &input)?)
}

/// Runs one job's attempt and records its outcome. Returns the document as written, or `None`
/// when nothing was recorded (the lease was lost).
async fn run_job(
    ctx: &Ctx,
    doc: &Assignment,
    job_id: &str,
    epoch: u64,
    stop: &StopSignal,
    unit: &UnitWork,
) -> Option<Assignment> {
    let job = doc.job(job_id)?.clone();
    let place = unit.place_of(job_id);
    let start = place.head().await;
    let verdict = if job.job_type == JobType::Gate {
        Attempted::Done(super::task::run_gate(&job, stop, &place.dir).await, None)
    } else {
        Box::pin(attempt(ctx, doc, &job, stop, &place.dir)).await
    };
    let (mut verdict, session_id) = match verdict {
        Attempted::Done(v, session) => (v, session),
        Attempted::Abandoned => return None,
    };
    super::task::apply_verdict(&job, &mut verdict);
    let outcome = outcome_text(&verdict.outcome);
    let (end, commit_error) =
        match Box::pin(work::commit_job(ctx, place, doc, &job, &outcome)).await {
            Ok(end) => (end, None),
            Err(e) => (None, Some(e)),
        };
    let mut extras = Extras {
        commits: work::commits(start, end.clone()),
        checks: Vec::new(),
    };
    let own_checks = super::task::task_checks(&job);
    let verifies = own_checks.is_some() || ctx.config.verify_after.contains(&job.job_type);
    if verifies && verdict.outcome == Outcome::Complete && commit_error.is_none() {
        let checks = own_checks.unwrap_or_else(|| work::checks_for(ctx, &place.dir));
        let log_dir = paths::transcript_path(&ctx.config.state_dir, &doc.id, &job.id, job.attempt)
            .with_extension("checks");
        if let Err(e) = std::fs::create_dir_all(&log_dir) {
            tracing::warn!(%e, "cannot create the check log directory");
        }
        extras.checks =
            work::verify(&checks, &place.dir, end.as_deref(), &log_dir, stop.token()).await;
        if let Some(why) = work::failed_required(&extras.checks) {
            verdict.outcome = Outcome::Failed(FailureReason::Verification);
            verdict.detail = Some(why);
        }
    }
    super::task::publish(ctx, doc, &job, &mut verdict).await;
    // The last job of a group to get here merges the group's branches before it records:
    // the PM that its record inserts sees the merged branch and any conflict.
    let last_of_unit = unit
        .remaining
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
        == 1;
    if last_of_unit && !unit.subs.is_empty() {
        let conflicts = Box::pin(work::merge_group(ctx, &unit.main, doc, &unit.subs)).await;
        if !conflicts.is_empty() {
            tracing::warn!(assignment = %doc.id, ?conflicts, "the group's work does not merge cleanly");
            let note = wf_core::chain::AssignmentUpdate {
                note: Some(format!("wf: {}", conflicts.join(" "))),
                ..Default::default()
            };
            if let Err(e) =
                ops::update_assignment(&ctx.store, &ctx.config, &doc.id, &note, None).await
            {
                tracing::error!(assignment = %doc.id, %e, "cannot tell the PM about the merge conflict");
            }
        }
    }
    let written = record(ctx, &doc.id, &job, epoch, verdict, session_id, extras).await;
    if let Some(reason) = commit_error {
        tracing::error!(assignment = %doc.id, job = %job.id, %reason, "blocking");
        let blocked = ctx
            .store
            .update(&doc.id, |d| chain::block_unclaimable(d, &reason, now_ms()))
            .await;
        return blocked.ok().map(|(d, ())| d).or(written);
    }
    written
}

/// Where a unit's jobs run: the assignment's worktree, and in a group with several writers a
/// worktree of each writer's own, merged back by the last job to finish.
struct UnitWork {
    main: work::Place,
    subs: Vec<(String, work::Place)>,
    remaining: std::sync::atomic::AtomicUsize,
}

/// The unit's workspace, and the writers' own worktrees in a group.
async fn unit_work(ctx: &Ctx, doc: &Assignment, claim: &chain::Claim) -> Result<UnitWork, String> {
    let main = work::prepare(ctx, doc, claim.epoch).await?;
    let subs = work::group_places(ctx, doc, &main, &claim.job_ids).await?;
    Ok(UnitWork {
        main,
        subs,
        remaining: std::sync::atomic::AtomicUsize::new(claim.job_ids.len()),
    })
}

impl UnitWork {
    fn place_of(&self, job_id: &str) -> &work::Place {
        self.subs
            .iter()
            .find(|(id, _)| id == job_id)
            .map_or(&self.main, |(_, p)| p)
    }
}

/// What the runner adds to an attempt's report: its commits and its checks.
struct Extras {
    commits: Option<wf_core::model::JobCommits>,
    checks: Vec<wf_core::model::CheckResult>,
}

enum Attempted {
    Done(Verdict, Option<String>),
    Abandoned,
}

fn failed(reason: FailureReason, detail: String) -> Verdict {
    Verdict {
        outcome: Outcome::Failed(reason),
        detail: Some(detail),
        text: String::new(),
        usage: Default::default(),
        exit_code: None,
    }
}

async fn attempt(
    ctx: &Ctx,
    doc: &Assignment,
    job: &Job,
    stop: &StopSignal,
    dir: &Path,
) -> Attempted {
    let (prompt, harness_cfg, spec) = match prepare(ctx, doc, job, dir).await {
        Ok(prepared) => prepared,
        Err(verdict) => return Attempted::Done(verdict, None),
    };
    let transcript_path =
        paths::transcript_path(&ctx.config.state_dir, &doc.id, &job.id, job.attempt);
    let mut transcript = open_transcript(&transcript_path, &prompt);
    let (mut publisher, flusher) = open_live(ctx, doc, job, &transcript_path);
    let model = job.model.clone().or(harness_cfg.model.clone());
    let mut last_usage = wf_core::model::Usage::default();
    let limits = limits_of(ctx, job);
    let format = harness_cfg.format();
    let mut log = RunLog::default();
    let started = Instant::now();
    let exit = process::run(
        &spec,
        &job_env(ctx, doc, job),
        &limits,
        stop.token(),
        |pid| spawned(ctx, doc, job, pid),
        |line| {
            let parsed = match line {
                Line::Text(text) => {
                    keep_line(&mut publisher, transcript.as_mut(), text);
                    harness::parse_line(format, text)
                }
                Line::Invalid(why) => Parsed::Malformed(why),
            };
            log.push(&parsed);
            publish(
                &mut publisher,
                &parsed,
                &log,
                &mut last_usage,
                model.as_deref(),
                &ctx.config.prices,
            );
            if harness::is_terminal(&parsed) {
                Flow::Terminal
            } else {
                Flow::Continue
            }
        },
    )
    .await;
    drop(transcript);
    flusher.abort();
    let verdict = match exit {
        Err(e) => failed(FailureReason::SpawnError, e.to_string()),
        Ok(exit) => {
            keep_stderr_tail(&transcript_path, &exit);
            match judge(ctx, job, harness_cfg, &log, &exit, stop) {
                Some(verdict) => verdict,
                None => return abandon(publisher, &log).await,
            }
        }
    };
    finished(ctx, doc, job, harness_cfg, &verdict, started.elapsed());
    publisher
        .finish(LiveKind::Exit {
            outcome: outcome_text(&verdict.outcome),
            detail: verdict.detail.clone(),
            exit_code: verdict.exit_code,
            usage: verdict.usage.clone(),
        })
        .await;
    Attempted::Done(verdict, log.session_id)
}

/// Writes one line of the agent's stream, redacted, to the transcript and to raw followers.
fn keep_line(publisher: &mut live::Publisher, transcript: Option<&mut std::fs::File>, text: &str) {
    let clean = publisher.redactor().redact(text);
    if let Some(t) = transcript {
        // One write per line, unbuffered: a kill -9 of the runner loses none of it (the usage
        // of an abandoned attempt is read back from it).
        // Why: a full disk must not fail the job; the transcript is a copy.
        let _ = t.write_all(format!("{clean}\n").as_bytes());
    }
    publisher.raw_line(&clean);
}

/// An attempt ended with a verdict: logged and counted.
fn finished(
    ctx: &Ctx,
    doc: &Assignment,
    job: &Job,
    harness_cfg: &HarnessConfig,
    verdict: &Verdict,
    ran: Duration,
) {
    tracing::info!(
        assignment = %doc.id, job = %job.id, outcome = ?verdict.outcome, detail = verdict.detail.as_deref().unwrap_or(""),
        secs = ran.as_secs_f32(), "agent finished"
    );
    count_finished(ctx, job, harness_cfg, verdict, ran);
}

/// Keeps the end of what the agent wrote on stderr next to its transcript.
fn keep_stderr_tail(transcript: &Path, exit: &process::Exit) {
    if !exit.stderr_tail.is_empty() {
        let path = transcript.with_extension("stderr");
        if let Err(e) = std::fs::write(&path, &exit.stderr_tail) {
            tracing::warn!(path = %path.display(), %e, "cannot write the stderr tail");
        }
    }
}

/// Ends the events of an attempt whose outcome is not recorded (the lease was lost).
async fn abandon(publisher: live::Publisher, log: &RunLog) -> Attempted {
    publisher
        .finish(LiveKind::Exit {
            outcome: "abandoned".into(),
            detail: Some("the lease was lost; the job runs again".into()),
            exit_code: None,
            usage: log.usage_so_far().0,
        })
        .await;
    Attempted::Abandoned
}

/// The attempt's live events, registered before its agent starts, and the task that writes
/// its counters to the document.
fn open_live(
    ctx: &Ctx,
    doc: &Assignment,
    job: &Job,
    transcript: &Path,
) -> (live::Publisher, tokio::task::JoinHandle<()>) {
    let key = live::AttemptKey {
        assignment: doc.id.clone(),
        job: job.id.clone(),
        attempt: job.attempt,
    };
    let nats = match &ctx.store {
        wf_store::Store::Nats(n) => Some(n),
        wf_store::Store::Sled(_) => None,
    };
    let publisher = ctx.hub.open(key, transcript, ctx.redactor.clone(), nats);
    let flusher = tokio::spawn(flush_progress(
        ctx.store.clone(),
        doc.id.clone(),
        job.id.clone(),
        doc.lease.as_ref().map_or(0, |l| l.epoch),
        publisher.progress(),
    ));
    (publisher, flusher)
}

/// The limits of an attempt's agent. Everything the attempt starts carries the marker,
/// wherever it goes; all of it is stopped when the attempt ends.
fn limits_of(ctx: &Ctx, job: &Job) -> Limits {
    let marker = vec![
        ("WF_RUNNER_ID".to_string(), ctx.runner_id.clone()),
        ("WF_JOB_ID".to_string(), job.id.clone()),
        ("WF_ATTEMPT".to_string(), job.attempt.to_string()),
    ];
    Limits::new(
        ctx.config.timeout,
        ctx.config.idle_timeout,
        ctx.config.kill_grace,
    )
    .with_marker(marker)
}

/// An agent started: counted (claim to spawn) and logged.
fn spawned(ctx: &Ctx, doc: &Assignment, job: &Job, pid: u32) {
    let claimed = job.started_at.unwrap_or_else(now_ms);
    ctx.metrics
        .spawned(now_ms().saturating_sub(claimed) as f64 / 1000.0);
    tracing::info!(assignment = %doc.id, job = %job.id, job_type = %job.job_type, harness = %job.harness, attempt = job.attempt, pid, "agent started");
}

/// Counts a finished attempt in the runner's metrics.
fn count_finished(
    ctx: &Ctx,
    job: &Job,
    harness_cfg: &HarnessConfig,
    verdict: &Verdict,
    ran: Duration,
) {
    let (outcome, reason) = match &verdict.outcome {
        Outcome::Complete => ("complete", None),
        Outcome::Failed(r) => ("failed", Some(r.to_string())),
        Outcome::RetryAt(_) => ("paused", None),
        Outcome::Requeue => ("interrupted", None),
    };
    let job_type = job.job_type.to_string();
    let model = job
        .model
        .as_deref()
        .or(harness_cfg.model.as_deref())
        .unwrap_or("unknown");
    ctx.metrics.finished(&crate::metrics::Finished {
        job_type: &job_type,
        harness: &job.harness,
        model,
        outcome,
        reason,
        seconds: ran.as_secs_f64(),
        usage: &verdict.usage,
    });
}

/// How an outcome reads in events and commit messages.
fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Complete => "complete".to_string(),
        Outcome::Failed(reason) => format!("failed: {reason}"),
        Outcome::RetryAt(_) => "paused".to_string(),
        Outcome::Requeue => "interrupted".to_string(),
    }
}

/// Sends the live events of one parsed line, and the usage so far when it changed.
fn publish(
    publisher: &mut live::Publisher,
    parsed: &Parsed,
    log: &RunLog,
    last_usage: &mut wf_core::model::Usage,
    model: Option<&str>,
    prices: &BTreeMap<String, wf_core::config::Price>,
) {
    match parsed {
        Parsed::Ignored => {}
        Parsed::Malformed(why) => publisher.push(LiveKind::Malformed {
            message: publisher.redactor().redact(why).into_owned(),
        }),
        Parsed::Events(events) => {
            for event in events {
                if let Some(kind) = LiveKind::of_agent(event, publisher.redactor()) {
                    publisher.push(kind);
                }
            }
            let (mut usage, _) = log.usage_so_far();
            harness::priced(&mut usage, log, model, prices);
            if usage != *last_usage {
                publisher.push(LiveKind::Usage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cost_usd: usage.cost_usd,
                });
                *last_usage = usage;
            }
        }
    }
}

/// How often at most a running job's counters are written to its document.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Writes a running job's counters to its document when they changed, at most every
/// [`PROGRESS_EVERY`] (one CAS per period, not per event); fenced by the lease epoch. Ends
/// when the attempt drops its counters, or is aborted.
async fn flush_progress(
    store: wf_store::Store,
    aid: String,
    job: String,
    epoch: u64,
    mut progress: tokio::sync::watch::Receiver<wf_core::model::JobProgress>,
) {
    while progress.changed().await.is_ok() {
        let now = progress.borrow_and_update().clone();
        let written = store
            .update(&aid, |d| chain::note_progress(d, epoch, &job, &now))
            .await;
        if let Err(UpdateError::Refused(_)) = written {
            return;
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// The prompt, the harness and the command of an attempt, or the verdict of an attempt that
/// cannot start.
async fn prepare<'c>(
    ctx: &'c Ctx,
    doc: &Assignment,
    job: &Job,
    dir: &Path,
) -> Result<(String, &'c HarnessConfig, CommandSpec), Verdict> {
    let prompt = build_prompt(ctx, doc, job).await.map_err(|e| {
        failed(
            FailureReason::SpawnError,
            format!("cannot build the prompt: {e:#}"),
        )
    })?;
    let Some(harness_cfg) = ctx.config.harnesses.get(&job.harness) else {
        return Err(failed(
            FailureReason::SpawnError,
            format!(
                "harness {:?} is not configured on runner {}",
                job.harness, ctx.runner_id
            ),
        ));
    };
    let mut spec = harness::command(
        harness_cfg,
        job.model.as_deref(),
        &prompt,
        dir.to_path_buf(),
        ctx.running_as_root,
    )
    .map_err(|e| failed(FailureReason::SpawnError, e.to_string()))?;
    if let Some(max) = doc.budget.max_cost_usd {
        // The jobs of a parallel group share what is left.
        let unit = doc.lease.as_ref().map_or(1, |l| l.job_ids.len().max(1));
        let remaining = (max - doc.usage.cost_usd.unwrap_or(0.0)) / unit as f64;
        spec.args
            .extend(harness::budget_args(harness_cfg, remaining));
    }
    Ok((prompt, harness_cfg, spec))
}

/// The environment of one attempt: the runner's agent environment and the job's `WF_*`.
fn job_env(ctx: &Ctx, doc: &Assignment, job: &Job) -> BTreeMap<String, String> {
    let mut env = ctx.base_env.clone();
    env.insert("WF_ASSIGNMENT_ID".into(), doc.id.clone());
    env.insert("WF_JOB_ID".into(), job.id.clone());
    env.insert("WF_JOB_TYPE".into(), job.job_type.to_string());
    env.insert("WF_ATTEMPT".into(), job.attempt.to_string());
    if let Some(g) = &job.group_id {
        env.insert("WF_GROUP_ID".into(), g.clone());
    }
    env
}

/// The verdict of an attempt that ran, priced; `None` when its outcome must not be recorded
/// (the lease was lost).
fn judge(
    ctx: &Ctx,
    job: &Job,
    harness_cfg: &HarnessConfig,
    log: &RunLog,
    exit: &process::Exit,
    stop: &StopSignal,
) -> Option<Verdict> {
    let input = harness::JudgeInput {
        ended: &exit.ended,
        stderr_tail: &exit.stderr_tail,
        format: harness_cfg.format(),
        now: now_ms(),
        pauses: job.pauses,
        retry: &ctx.config.retry,
    };
    let mut verdict = harness::judge(log, &input);
    let model = job.model.as_deref().or(harness_cfg.model.as_deref());
    harness::priced(&mut verdict.usage, log, model, &ctx.config.prices);
    if exit.ended == Ended::Cancelled {
        // Stopped by the runner: why decides the outcome.
        match stop.reason() {
            Some(StopReason::LeaseLost) => {
                tracing::warn!(job = %job.id, "agent stopped: lease lost; not recording an outcome");
                return None;
            }
            Some(StopReason::Cancelled) => {
                verdict.outcome = Outcome::Failed(FailureReason::Cancelled);
                verdict.detail = Some("cancelled by a human".into());
            }
            Some(StopReason::Budget(reason)) => {
                verdict.outcome = Outcome::Failed(FailureReason::Budget);
                verdict.detail = Some(reason);
            }
            Some(StopReason::Shutdown) | None => {
                verdict.outcome = Outcome::Requeue;
                verdict.detail = Some("the runner shut down; the job will run again".into());
            }
        }
    }
    Some(verdict)
}

fn open_transcript(path: &Path, prompt: &str) -> Option<std::fs::File> {
    let dir = path.parent()?;
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(%e, dir = %dir.display(), "cannot create the transcript directory");
        return None;
    }
    // Why: the prompt copy is for humans debugging a job; failing to write it changes nothing.
    let _ = std::fs::write(path.with_extension("prompt.md"), prompt);
    match std::fs::File::create(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(%e, path = %path.display(), "cannot create the transcript");
            None
        }
    }
}

/// Stores the result text, then the outcome (fenced by `epoch`). Store errors are retried; a
/// write that keeps failing is given up, and the lease will expire so the job runs again.
/// Largest result text stored, in bytes: a NATS message is at most 1 MiB, and the PM needs the
/// gist, not megabytes (the transcript keeps everything).
const MAX_RESULT: usize = 512 * 1024;

/// The document has no room for the outcome (`too_large`): records what fits and blocks the
/// assignment with the reason, so that the job is not claimed and paid for again and again.
async fn record_full(
    ctx: &Ctx,
    aid: &str,
    job: &Job,
    epoch: u64,
    report: &AttemptReport,
    too_large: &StoreError,
) -> Option<Assignment> {
    let reason = chain::full_document_reason(&too_large.to_string());
    tracing::error!(assignment = %aid, job = %job.id, %reason, "blocking the assignment");
    let full = ctx.store.update(aid, |d| {
        chain::record_when_full(d, epoch, &job.id, report, &reason, now_ms())
    });
    match full.await {
        Ok((doc, ())) => return Some(doc),
        Err(UpdateError::Refused(_)) => return None,
        Err(e) => tracing::error!(assignment = %aid, %e, "cannot record even a short outcome"),
    }
    let blocked = ctx
        .store
        .update(aid, |d| chain::block_unit(d, epoch, &reason, now_ms()));
    match blocked.await {
        Ok((doc, ())) => Some(doc),
        Err(e) => {
            tracing::error!(assignment = %aid, %e, "cannot block the full assignment");
            None
        }
    }
}

fn cap_result(text: &mut String, transcript: &Path) {
    if text.len() <= MAX_RESULT {
        return;
    }
    let mut cut = MAX_RESULT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "\n[… truncated at {} KiB; the whole output is in {}]",
        MAX_RESULT / 1024,
        transcript.display()
    ));
}

async fn record(
    ctx: &Ctx,
    aid: &str,
    job: &Job,
    epoch: u64,
    verdict: Verdict,
    session_id: Option<String>,
    extras: Extras,
) -> Option<Assignment> {
    let mut verdict = verdict;
    cap_result(
        &mut verdict.text,
        &paths::transcript_path(&ctx.config.state_dir, aid, &job.id, job.attempt),
    );
    let has_result = !verdict.text.is_empty();
    let report = AttemptReport {
        outcome: verdict.outcome,
        detail: verdict.detail,
        session_id,
        usage: verdict.usage,
        has_result,
        exit_code: verdict.exit_code,
        commits: extras.commits,
        checks: extras.checks,
    };
    let pm = ops::pm_job(&ctx.config);
    let mut pause = Duration::from_millis(100);
    for _ in 0..10 {
        if has_result {
            let key = BlobKey::Result {
                assignment: aid.to_string(),
                job: job.id.clone(),
                attempt: job.attempt,
            };
            if let Err(e) = ctx.store.put_blob(&key, verdict.text.as_bytes()).await {
                tracing::error!(job = %job.id, %e, "cannot store the result; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                continue;
            }
        }
        match ctx
            .store
            .update(aid, |d| {
                chain::record_attempt(d, epoch, &job.id, &report, &pm, now_ms())
            })
            .await
        {
            Ok((doc, recorded)) => {
                tracing::info!(assignment = %aid, job = %job.id, ?recorded, "recorded");
                return Some(doc);
            }
            Err(UpdateError::Refused(_)) => {
                tracing::warn!(assignment = %aid, job = %job.id, "outcome not recorded: the lease moved on");
                return None;
            }
            Err(UpdateError::Store(e @ StoreError::TooLarge { .. })) => {
                return record_full(ctx, aid, job, epoch, &report, &e).await;
            }
            Err(UpdateError::Store(e)) => {
                tracing::error!(job = %job.id, %e, "cannot record the outcome; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit task that panics mid-way stops renewing its lease and gives its slot back; one
    /// that ends normally (the guard disarmed) reports nothing twice.
    #[tokio::test]
    async fn a_panicking_unit_stops_renewing_and_frees_its_slot() {
        let (done, mut slots) = mpsc::unbounded_channel();
        let renewing = CancellationToken::new();
        let guard = UnitGuard {
            renewing: renewing.clone(),
            done: Some((done.clone(), "a1".into())),
        };
        let task = tokio::spawn(async move {
            let _guard = guard;
            tokio::task::yield_now().await;
            panic!("a bug in a unit task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(
            renewing.is_cancelled(),
            "the renewal goes on behind a panicked unit"
        );
        let (aid, last) = slots
            .try_recv()
            .expect("the slot of a panicked unit is not freed");
        assert_eq!((aid.as_str(), last), ("a1", None));

        let mut normal = UnitGuard {
            renewing: CancellationToken::new(),
            done: Some((done, "a2".into())),
        };
        normal.done = None;
        drop(normal);
        assert!(slots.try_recv().is_err());
    }
}
