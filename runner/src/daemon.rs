//! The runner daemon: wake-up → claim → render → spawn → parse → record → PM.
//!
//! One scheduler task owns an in-memory copy of every assignment document, fed by the store's
//! change feed (no polling), and the set of units it runs. Whenever something changes it asks
//! [`chain::pick`] what to start, claims it by compare-and-swap and starts a unit task. Timers
//! exist only for instants the documents name (a paused job's `retryAfter`, a foreign lease's
//! expiry). A unit task runs the claimed job(s) in parallel, renews the lease every third of
//! its length (and stops its agents if it cannot: self-fencing), and records each outcome with
//! a CAS fenced by the lease epoch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::chain::{self, AttemptReport, ChainError, LeaseView, Outcome};
use crate::config::Config;
use crate::harness::process::{self, Flow, Limits, Line};
use crate::harness::{self, AgentEvent, Ended, Parsed, RunLog, Verdict};
use crate::model::{Assignment, FailureReason, Job};
use crate::ops::{self, now_ms};
use crate::prompt::{self, PriorResult, PromptInput, Templates};
use crate::store::{BlobKey, Store, UpdateError};
use crate::{ids, paths, reaper, server};

/// How a runner is started.
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The directory holding the `wf` binary, put first on the agents' `PATH`.
    pub wf_dir: Option<PathBuf>,
}

/// Why a unit is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The runner is shutting down: the job goes back to pending.
    Shutdown,
    /// The lease could not be renewed: someone else may own the job; record nothing.
    LeaseLost,
}

/// A cancellation token with the reason of the first cancel.
#[derive(Debug, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl StopSignal {
    /// Stops with `reason` (the first reason wins).
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why it was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

/// What every unit task shares.
struct Ctx {
    store: Store,
    config: Config,
    runner_id: String,
    host: String,
    templates: Templates,
    base_env: BTreeMap<String, String>,
    running_as_root: bool,
}

impl Ctx {
    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Finds the directory of the `wf` binary: next to the invoked runner, next to the runner's
/// executable, or on `PATH`.
pub fn find_wf_dir() -> Option<PathBuf> {
    let has_wf = |dir: &Path| dir.join("wf").is_file();
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    if let Some(dir) = argv0
        .filter(|p| p.components().count() > 1)
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if has_wf(&dir) {
            return std::fs::canonicalize(&dir).ok().or(Some(dir));
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if has_wf(&dir) {
            return Some(dir);
        }
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_wf(d))
}

/// Opens the store named by the configuration. A runner waits for a `wf` that briefly holds the
/// embedded database instead of failing.
pub async fn open_store(config: &Config, wait: Duration) -> anyhow::Result<Store> {
    match &config.store {
        crate::config::StoreConfig::Sled { path } => {
            let (path, ns) = (path.clone(), config.namespace.clone());
            let store = tokio::task::spawn_blocking(move || {
                crate::store::sled::SledStore::open(&path, &ns, wait)
            })
            .await
            .context("store opener panicked")??;
            Ok(Store::Sled(store))
        }
        crate::config::StoreConfig::Nats(_) => {
            anyhow::bail!("the NATS store is not supported by this build")
        }
    }
}

/// Runs the daemon until the shutdown sequence completes. The first message on `signals`
/// starts a graceful shutdown; the second stops running jobs at once.
pub async fn run(opts: Options, mut signals: mpsc::UnboundedReceiver<()>) -> anyhow::Result<()> {
    let config = opts.config;
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.state_dir.display()
        )
    })?;
    let store = open_store(&config, Duration::from_secs(120)).await?;
    let runner_id = ids::new_id();
    let host = hostname();

    // Agents of earlier runners of this store must be gone before their jobs run again.
    let id_file = paths::runner_id_path(&config.state_dir);
    let mut dead: HashSet<String> = std::fs::read_to_string(&id_file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    std::fs::write(&id_file, &runner_id)
        .with_context(|| format!("cannot write {}", id_file.display()))?;
    let changes = store.subscribe();
    let docs = store.list().await?;
    if store.exclusive() {
        dead.extend(
            docs.iter()
                .filter_map(|d| d.lease.as_ref())
                .map(|l| l.runner_id.clone()),
        );
    }
    let orphans = reaper::find_orphans(&dead);
    if !orphans.is_empty() {
        let groups = reaper::kill_orphans(&orphans);
        tracing::warn!(
            processes = orphans.len(),
            groups,
            "killed agents left by a dead runner"
        );
    }

    if config.file.is_none() {
        let path = config.agent_config_path();
        let text = serde_json::to_string_pretty(&config.to_raw()).expect("config serialises");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let templates = Templates::load(&config.templates_dir)?;

    let mut base_env = BTreeMap::new();
    base_env.insert("WF_NAMESPACE".into(), config.namespace.to_string());
    base_env.insert(
        "WF_CONFIG".into(),
        config.agent_config_path().display().to_string(),
    );
    base_env.insert("WF_RUNNER_ID".into(), runner_id.clone());
    match &opts.wf_dir {
        Some(dir) => {
            let mut path = vec![dir.clone()];
            path.extend(
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
            let joined = std::env::join_paths(path).context("PATH has an invalid entry")?;
            base_env.insert("PATH".into(), joined.to_string_lossy().into_owned());
        }
        None => {
            tracing::warn!("no `wf` binary found next to wf-runner or on PATH; PM jobs need it")
        }
    }
    #[expect(unsafe_code, reason = "geteuid(2) has no std wrapper")]
    let running_as_root = unsafe { libc::geteuid() } == 0;

    let ctx = Arc::new(Ctx {
        store: store.clone(),
        config: config.clone(),
        runner_id: runner_id.clone(),
        host,
        templates,
        base_env,
        running_as_root,
    });

    let server_stop = CancellationToken::new();
    let socket = paths::socket_path(&config.state_dir);
    if store.exclusive() {
        let listener = server::bind(&socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let state = Arc::new(server::ServerState {
            store: store.clone(),
            config: config.clone(),
            runner_id: runner_id.clone(),
        });
        tokio::spawn(server::serve(listener, state, server_stop.clone()));
    }
    tracing::info!(
        runner = %runner_id,
        namespace = %config.namespace,
        store = store.describe(),
        socket = %socket.display(),
        max_concurrent = config.max_concurrent,
        "wf-runner ready"
    );

    let result = schedule(ctx, docs, changes, &mut signals).await;
    server_stop.cancel();
    if store.exclusive() {
        let _ = std::fs::remove_file(&socket);
    }
    result
}

/// A unit this runner is running.
struct RunningUnit {
    stop: Arc<StopSignal>,
}

enum Phase {
    Running,
    Draining(tokio::time::Instant),
    Stopping,
}

async fn schedule(
    ctx: Arc<Ctx>,
    docs: Vec<Assignment>,
    mut changes: broadcast::Receiver<crate::store::Change>,
    signals: &mut mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<()> {
    let mut cache: HashMap<String, Assignment> =
        docs.into_iter().map(|d| (d.id.clone(), d)).collect();
    let mut running: HashMap<String, RunningUnit> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Option<Assignment>)>();
    let mut phase = Phase::Running;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let exclusive = ctx.store.exclusive();

    loop {
        if matches!(phase, Phase::Running)
            && retry_at.is_none_or(|t| t <= tokio::time::Instant::now())
        {
            retry_at = None;
            let slots = ctx.config.max_concurrent.saturating_sub(running.len());
            let now = now_ms();
            let view = LeaseView {
                now,
                me: &ctx.runner_id,
                exclusive,
            };
            let active: HashSet<String> = running.keys().cloned().collect();
            for aid in chain::pick(cache.values(), &active, slots, &view) {
                let claimed = ctx
                    .store
                    .update(&aid, |d| {
                        let view = LeaseView {
                            now: now_ms(),
                            me: &ctx.runner_id,
                            exclusive,
                        };
                        chain::claim(d, &view, &ctx.host, ctx.lease_ms()).ok_or(())
                    })
                    .await;
                match claimed {
                    Ok((doc, claim)) => {
                        tracing::info!(assignment = %aid, jobs = ?claim.job_ids, epoch = claim.epoch, "claimed");
                        let stop = Arc::new(StopSignal::default());
                        cache.insert(aid.clone(), doc.clone());
                        running.insert(aid.clone(), RunningUnit { stop: stop.clone() });
                        tokio::spawn(run_unit(ctx.clone(), doc, claim, stop, done_tx.clone()));
                    }
                    // Someone changed the document first; its change is on the way.
                    Err(UpdateError::Refused(())) => {}
                    Err(UpdateError::Store(e)) => {
                        tracing::error!(assignment = %aid, %e, "claim failed; retrying in 1s");
                        retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        break;
                    }
                }
            }
        }
        if !matches!(phase, Phase::Running) && running.is_empty() {
            return Ok(());
        }
        let view = LeaseView {
            now: now_ms(),
            me: &ctx.runner_id,
            exclusive,
        };
        let wake = match phase {
            Phase::Running => chain::next_wakeup(cache.values(), &view)
                .map(|at| {
                    let now = now_ms();
                    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now))
                })
                .into_iter()
                .chain(retry_at)
                .min(),
            Phase::Draining(deadline) => Some(deadline),
            Phase::Stopping => None,
        };
        tokio::select! {
            biased;
            signal = signals.recv() => {
                // A closed channel means nobody can ask for shutdown any more: keep running.
                if signal.is_none() {
                    std::future::pending::<()>().await;
                }
                match phase {
                    Phase::Running => {
                        let grace = ctx.config.shutdown_grace;
                        tracing::info!(running = running.len(), ?grace, "shutting down: no new jobs; running jobs may finish");
                        phase = Phase::Draining(tokio::time::Instant::now() + grace);
                    }
                    Phase::Draining(_) | Phase::Stopping => {
                        tracing::info!("second signal: stopping running jobs now");
                        for unit in running.values() {
                            unit.stop.stop(StopReason::Shutdown);
                        }
                        phase = Phase::Stopping;
                    }
                }
            }
            Some((aid, doc)) = done_rx.recv() => {
                running.remove(&aid);
                if let Some(doc) = doc {
                    upsert(&mut cache, doc);
                }
            }
            change = changes.recv() => match change {
                Ok(change) => upsert(&mut cache, change.doc),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "change feed lagged; reloading every assignment");
                    cache = ctx.store.list().await?.into_iter().map(|d| (d.id.clone(), d)).collect();
                }
                Err(broadcast::error::RecvError::Closed) => anyhow::bail!("the store's change feed closed"),
            },
            _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {
                if let Phase::Draining(deadline) = phase {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::info!(running = running.len(), "grace period over: returning running jobs to pending");
                        for unit in running.values() {
                            unit.stop.stop(StopReason::Shutdown);
                        }
                        phase = Phase::Stopping;
                    }
                }
            }
        }
    }
}

/// Keeps the newest version of each document.
fn upsert(cache: &mut HashMap<String, Assignment>, doc: Assignment) {
    match cache.get(&doc.id) {
        Some(old) if old.version >= doc.version => {}
        _ => {
            cache.insert(doc.id.clone(), doc);
        }
    }
}

async fn run_unit(
    ctx: Arc<Ctx>,
    doc: Assignment,
    claim: chain::Claim,
    stop: Arc<StopSignal>,
    done: mpsc::UnboundedSender<(String, Option<Assignment>)>,
) {
    let renewing = CancellationToken::new();
    let renewer = tokio::spawn(renew_lease(
        ctx.clone(),
        doc.id.clone(),
        claim.epoch,
        stop.clone(),
        renewing.clone(),
    ));
    let jobs = claim
        .job_ids
        .iter()
        .map(|id| run_job(&ctx, &doc, id, claim.epoch, &stop));
    let written = futures_util::future::join_all(jobs).await;
    renewing.cancel();
    // Why: the renewer only ends by this cancel or by fencing itself; both are fine here.
    let _ = renewer.await;
    let last = written.into_iter().flatten().max_by_key(|d| d.version);
    // Why: the scheduler only stops listening when it exits, after every unit is done.
    let _ = done.send((doc.id.clone(), last));
}

/// Renews the lease every third of its length; stops the unit when the lease is lost or cannot
/// be renewed before it would expire.
async fn renew_lease(
    ctx: Arc<Ctx>,
    aid: String,
    epoch: u64,
    stop: Arc<StopSignal>,
    renewing: CancellationToken,
) {
    let period = ctx.config.lease / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = renewing.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match ctx
            .store
            .update(&aid, |d| chain::renew(d, epoch, now_ms(), ctx.lease_ms()))
            .await
        {
            Ok(_) => last_ok = Instant::now(),
            Err(UpdateError::Refused(e)) => {
                tracing::warn!(assignment = %aid, %e, "lease lost; stopping the agents");
                stop.stop(StopReason::LeaseLost);
                return;
            }
            Err(UpdateError::Store(e)) => {
                tracing::warn!(assignment = %aid, %e, "lease renewal failed");
                if last_ok.elapsed() + period >= ctx.config.lease {
                    tracing::error!(assignment = %aid, "cannot renew the lease in time; stopping the agents");
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
            }
        }
    }
}

async fn build_prompt(ctx: &Ctx, doc: &Assignment, job: &Job) -> anyhow::Result<String> {
    let context = if job.has_context {
        let key = BlobKey::Context {
            assignment: doc.id.clone(),
            job: job.id.clone(),
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
) -> Option<Assignment> {
    let job = doc.job(job_id)?.clone();
    let verdict = attempt(ctx, doc, &job, stop).await;
    let (verdict, session_id) = match verdict {
        Attempted::Done(v, session) => (v, session),
        Attempted::Abandoned => return None,
    };
    record(ctx, &doc.id, &job, epoch, verdict, session_id).await
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

async fn attempt(ctx: &Ctx, doc: &Assignment, job: &Job, stop: &StopSignal) -> Attempted {
    let prompt = match build_prompt(ctx, doc, job).await {
        Ok(p) => p,
        Err(e) => {
            return Attempted::Done(
                failed(
                    FailureReason::SpawnError,
                    format!("cannot build the prompt: {e:#}"),
                ),
                None,
            )
        }
    };
    let Some(harness_cfg) = ctx.config.harnesses.get(&job.harness) else {
        return Attempted::Done(
            failed(
                FailureReason::SpawnError,
                format!(
                    "harness {:?} is not configured on runner {}",
                    job.harness, ctx.runner_id
                ),
            ),
            None,
        );
    };
    let spec = harness::command(
        harness_cfg,
        job.model.as_deref(),
        &prompt,
        ctx.config.workdir.clone(),
        ctx.running_as_root,
    );
    let mut env = ctx.base_env.clone();
    env.insert("WF_ASSIGNMENT_ID".into(), doc.id.clone());
    env.insert("WF_JOB_ID".into(), job.id.clone());
    env.insert("WF_JOB_TYPE".into(), job.job_type.to_string());
    env.insert("WF_ATTEMPT".into(), job.attempt.to_string());
    if let Some(g) = &job.group_id {
        env.insert("WF_GROUP_ID".into(), g.clone());
    }

    let transcript_path =
        paths::transcript_path(&ctx.config.state_dir, &doc.id, &job.id, job.attempt);
    let mut transcript = open_transcript(&transcript_path, &prompt);
    let limits = Limits::new(
        ctx.config.timeout,
        ctx.config.idle_timeout,
        ctx.config.kill_grace,
    );
    let format = harness_cfg.format;
    let mut log = RunLog::default();
    let started = Instant::now();
    let exit = process::run(
        &spec,
        &env,
        &limits,
        &stop.token,
        |pid| tracing::info!(assignment = %doc.id, job = %job.id, job_type = %job.job_type, harness = %job.harness, attempt = job.attempt, pid, "agent started"),
        |line| {
            let parsed = match line {
                Line::Text(text) => {
                    if let Some(t) = transcript.as_mut() {
                        // Why: a full disk must not fail the job; the transcript is a copy.
                        let _ = writeln!(t, "{text}");
                    }
                    harness::parse_line(format, text)
                }
                Line::Invalid(why) => Parsed::Malformed(why),
            };
            log.push(&parsed);
            match &parsed {
                Parsed::Events(events) if events.iter().any(|e| matches!(e, AgentEvent::Result(_))) => Flow::Terminal,
                _ => Flow::Continue,
            }
        },
    )
    .await;
    if let Some(mut t) = transcript {
        let _ = t.flush();
    }
    let verdict = match exit {
        Err(e) => failed(FailureReason::SpawnError, e.to_string()),
        Ok(exit) => {
            if !exit.stderr_tail.is_empty() {
                let _ = std::fs::write(transcript_path.with_extension("stderr"), &exit.stderr_tail);
            }
            let mut verdict =
                harness::judge(&log, &exit.ended, &exit.stderr_tail, now_ms(), job.attempt);
            if exit.ended == Ended::Cancelled {
                match stop.reason() {
                    Some(StopReason::LeaseLost) => {
                        tracing::warn!(job = %job.id, "agent stopped: lease lost; not recording an outcome");
                        return Attempted::Abandoned;
                    }
                    Some(StopReason::Shutdown) | None => {
                        verdict.outcome = Outcome::Requeue;
                        verdict.detail =
                            Some("the runner shut down; the job will run again".into());
                    }
                }
            }
            verdict
        }
    };
    tracing::info!(
        assignment = %doc.id, job = %job.id, outcome = ?verdict.outcome, detail = verdict.detail.as_deref().unwrap_or(""),
        secs = started.elapsed().as_secs_f32(), "agent finished"
    );
    Attempted::Done(verdict, log.session_id)
}

fn open_transcript(path: &Path, prompt: &str) -> Option<std::io::BufWriter<std::fs::File>> {
    let dir = path.parent()?;
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(%e, dir = %dir.display(), "cannot create the transcript directory");
        return None;
    }
    // Why: the prompt copy is for humans debugging a job; failing to write it changes nothing.
    let _ = std::fs::write(path.with_extension("prompt.md"), prompt);
    match std::fs::File::create(path) {
        Ok(f) => Some(std::io::BufWriter::new(f)),
        Err(e) => {
            tracing::warn!(%e, path = %path.display(), "cannot create the transcript");
            None
        }
    }
}

/// Stores the result text, then the outcome (fenced by `epoch`). Store errors are retried; a
/// write that keeps failing is given up, and the lease will expire so the job runs again.
async fn record(
    ctx: &Ctx,
    aid: &str,
    job: &Job,
    epoch: u64,
    verdict: Verdict,
    session_id: Option<String>,
) -> Option<Assignment> {
    let has_result = !verdict.text.is_empty();
    let report = AttemptReport {
        outcome: verdict.outcome,
        detail: verdict.detail,
        session_id,
        usage: verdict.usage,
        has_result,
        exit_code: verdict.exit_code,
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
            Err(UpdateError::Refused(ChainError::Fenced(_))) | Err(UpdateError::Refused(_)) => {
                tracing::warn!(assignment = %aid, job = %job.id, "outcome not recorded: the lease moved on");
                return None;
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
