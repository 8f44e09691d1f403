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
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{paths, reaper, server};
use wf_core::chain::{self, LeaseView, Readiness};
use wf_core::clock::now_ms;
use wf_core::config::{Config, StoreConfig};
use wf_core::model::{Assignment, AssignmentStatus};
use wf_core::prompt::Templates;
use wf_store::wakeup::{Token, Wakeups};
use wf_store::{Store, UpdateError};

mod unit;

use unit::run_unit;

/// How a runner is started.
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The directory holding the `wf` binary, put first on the agents' `PATH`.
    pub wf_dir: Option<PathBuf>,
}

/// Why a job is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The runner is shutting down: the job goes back to pending.
    Shutdown,
    /// The lease could not be renewed: someone else may own the job; record nothing.
    LeaseLost,
    /// A human cancelled it (`wf cancel`).
    Cancelled,
    /// A budget of its assignment ran out (the reason names it).
    Budget(String),
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
        self.reason.get().cloned()
    }

    /// Whether it was stopped.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The stop signals of the jobs of one unit.
#[derive(Debug, Clone, Default)]
struct UnitStops(Arc<HashMap<String, Arc<StopSignal>>>);

impl UnitStops {
    fn new(job_ids: &[String]) -> Self {
        Self(Arc::new(
            job_ids
                .iter()
                .map(|id| (id.clone(), Arc::new(StopSignal::default())))
                .collect(),
        ))
    }

    fn all(&self, reason: &StopReason) {
        for signal in self.0.values() {
            signal.stop(reason.clone());
        }
    }

    fn job(&self, id: &str) -> Option<&Arc<StopSignal>> {
        self.0.get(id)
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
    /// How prompts tell agents to run wf.
    wf_command: String,
    running_as_root: bool,
}

impl Ctx {
    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
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
/// embedded database, or for a NATS server that is not up yet, instead of failing.
pub async fn open_store(config: &Config, wait: Duration) -> anyhow::Result<Store> {
    match &config.store {
        StoreConfig::Sled { path } => {
            let (path, ns) = (path.clone(), config.namespace.clone());
            let store = tokio::task::spawn_blocking(move || {
                wf_store::sled::SledStore::open(&path, &ns, wait)
            })
            .await
            .context("store opener panicked")??;
            Ok(Store::Sled(store))
        }
        StoreConfig::Nats(nats) => {
            let store =
                wf_store::nats::NatsStore::connect(nats, &config.namespace, "wf-runner", true)
                    .await?;
            Ok(Store::Nats(store))
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
    let runner_id = crate::random::new_id();
    let host = hostname();

    // Agents of earlier runners of this state directory must be gone before their jobs run
    // again, and their leases are dead.
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
    let mut docs = store.list().await?;
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
    if !store.exclusive() {
        for doc in docs.iter_mut().filter(|d| {
            d.lease
                .as_ref()
                .is_some_and(|l| dead.contains(&l.runner_id))
        }) {
            match store
                .update(&doc.id, |d| chain::expire_dead_lease(d, &dead))
                .await
            {
                Ok((written, ())) => {
                    tracing::info!(assignment = %doc.id, "expired the lease of this machine's previous runner");
                    *doc = written;
                }
                Err(UpdateError::Refused(chain::Unchanged)) => {}
                Err(UpdateError::Store(e)) => {
                    tracing::warn!(assignment = %doc.id, %e, "cannot expire a dead lease")
                }
            }
        }
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
    // An absolute path: agents' shells may be login shells that reset PATH (Codex runs
    // `bash -lc`).
    let wf_command = match &opts.wf_dir {
        Some(dir) => shell_quote(&dir.join("wf").display().to_string()),
        None => "wf".to_string(),
    };
    if let Some(dir) = &opts.wf_dir {
        base_env.insert("WF_BIN".into(), dir.join("wf").display().to_string());
    }
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
        wf_command,
        running_as_root,
    });

    let server_stop = CancellationToken::new();
    let socket = paths::socket_path(&config.state_dir);
    let queue = match &store {
        Store::Sled(_) => {
            let listener = server::bind(&socket)
                .with_context(|| format!("cannot listen on {}", socket.display()))?;
            let state = Arc::new(server::ServerState {
                store: store.clone(),
                config: config.clone(),
                runner_id: runner_id.clone(),
            });
            tokio::spawn(server::serve(listener, state, server_stop.clone()));
            tracing::info!(
                runner = %runner_id, namespace = %config.namespace, store = "sled",
                path = %store_path(&config), socket = %socket.display(),
                max_concurrent = config.max_concurrent, "wf-runner ready"
            );
            None
        }
        Store::Nats(nats) => {
            let wakeups = Wakeups::start(nats, config.lease).await?;
            tracing::info!(
                runner = %runner_id, namespace = %config.namespace, store = "nats",
                server = %nats.server_url(), server_version = %nats.server_version(),
                max_concurrent = config.max_concurrent, "wf-runner ready"
            );
            Some(wakeups)
        }
    };

    let mut scheduler = Scheduler {
        exclusive: store.exclusive(),
        ctx,
        cache: docs.into_iter().map(|d| (d.id.clone(), d)).collect(),
        running: HashMap::new(),
        done: mpsc::unbounded_channel(),
        phase: Phase::Running,
        retry_at: None,
        queue,
    };
    let result = scheduler.run(changes, &mut signals).await;
    drop(scheduler);
    server_stop.cancel();
    if store.exclusive() {
        // Why: a leftover socket file is replaced by the next runner anyway.
        let _ = std::fs::remove_file(&socket);
    }
    result
}

fn store_path(config: &Config) -> String {
    match &config.store {
        StoreConfig::Sled { path } => path.display().to_string(),
        StoreConfig::Nats(n) => n.url.clone(),
    }
}

/// A finished unit: its assignment and the last document version it wrote.
type UnitDone = (String, Option<Assignment>);

/// A unit this runner is running.
struct RunningUnit {
    stops: UnitStops,
}

enum Phase {
    Running,
    Draining(tokio::time::Instant),
    Stopping,
}

/// The scheduler: owns the document cache and the running units.
struct Scheduler {
    ctx: Arc<Ctx>,
    exclusive: bool,
    cache: HashMap<String, Assignment>,
    running: HashMap<String, RunningUnit>,
    done: (
        mpsc::UnboundedSender<UnitDone>,
        mpsc::UnboundedReceiver<UnitDone>,
    ),
    phase: Phase,
    retry_at: Option<tokio::time::Instant>,
    queue: Option<Wakeups>,
}

impl Scheduler {
    fn view(&self) -> LeaseView<'_> {
        LeaseView {
            now: now_ms(),
            me: &self.ctx.runner_id,
            exclusive: self.exclusive,
        }
    }

    /// The assignments that may start now, by the scheduling rule, ignoring free slots.
    fn eligible(&self) -> Vec<String> {
        let active: HashSet<String> = self.running.keys().cloned().collect();
        chain::pick(self.cache.values(), &active, usize::MAX, &self.view())
    }

    async fn run(
        &mut self,
        mut changes: broadcast::Receiver<wf_store::Change>,
        signals: &mut mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        loop {
            if matches!(self.phase, Phase::Running)
                && self
                    .retry_at
                    .is_none_or(|t| t <= tokio::time::Instant::now())
            {
                self.retry_at = None;
                self.settle_dead_leases().await;
                if self.queue.is_some() {
                    self.announce_and_pull().await;
                } else {
                    self.claim_picked().await;
                }
            }
            if !matches!(self.phase, Phase::Running) && self.running.is_empty() {
                return Ok(());
            }
            let wake = match self.phase {
                Phase::Running => chain::next_wakeup(self.cache.values(), &self.view())
                    .map(|at| {
                        tokio::time::Instant::now()
                            + Duration::from_millis(at.saturating_sub(now_ms()))
                    })
                    .into_iter()
                    .chain(self.retry_at)
                    .chain(self.next_settle())
                    .chain(self.queue.as_ref().map(Wakeups::next_sweep))
                    .min(),
                Phase::Draining(deadline) => Some(deadline),
                Phase::Stopping => None,
            };
            let token = async {
                match self.queue.as_mut() {
                    Some(q) => q.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                signal = signals.recv() => {
                    // A closed channel means nobody can ask for shutdown any more: keep running.
                    if signal.is_none() {
                        std::future::pending::<()>().await;
                    }
                    self.on_signal();
                }
                Some((aid, doc)) = self.done.1.recv() => {
                    self.running.remove(&aid);
                    if let Some(doc) = doc {
                        upsert(&mut self.cache, doc);
                    }
                }
                change = changes.recv() => match change {
                    Ok(change) => {
                        self.honour_cancels(&change.doc);
                        upsert(&mut self.cache, change.doc);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "change feed lagged; reloading every assignment");
                        self.reload().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => anyhow::bail!("the store's change feed closed"),
                },
                Some(msg) = token => self.on_token(msg).await,
                _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {
                    self.on_timer().await;
                }
            }
        }
    }

    /// Assignments that were blocked or completed while the runner of their last job died keep
    /// a dead lease; release it (cancelled jobs end as cancelled, others return to pending).
    fn dead_leases(&self) -> Vec<String> {
        let view = self.view();
        self.cache
            .values()
            .filter(|d| stopped(d))
            .filter(|d| !self.running.contains_key(&d.id))
            .filter(|d| d.lease.as_ref().is_some_and(|l| !view.is_live(l)))
            .map(|d| d.id.clone())
            .collect()
    }

    async fn settle_dead_leases(&mut self) {
        for aid in self.dead_leases() {
            let (ctx, exclusive) = (self.ctx.clone(), self.exclusive);
            let settled = ctx
                .store
                .update(&aid, |d| {
                    let view = LeaseView {
                        now: now_ms(),
                        me: &ctx.runner_id,
                        exclusive,
                    };
                    chain::settle_dead_lease(d, &view)
                })
                .await;
            match settled {
                Ok((doc, ())) => {
                    tracing::info!(assignment = %aid, "released the dead lease of a stopped assignment");
                    upsert(&mut self.cache, doc);
                }
                Err(UpdateError::Refused(_)) => {}
                Err(UpdateError::Store(e)) => {
                    tracing::warn!(assignment = %aid, %e, "cannot release a dead lease")
                }
            }
        }
    }

    /// When a lease on a stopped assignment, held by another runner, expires.
    fn next_settle(&self) -> Option<tokio::time::Instant> {
        let now = now_ms();
        self.cache
            .values()
            .filter(|d| stopped(d))
            .filter_map(|d| d.lease.as_ref())
            .filter(|l| l.expires_at > now && l.runner_id != self.ctx.runner_id)
            .map(|l| tokio::time::Instant::now() + Duration::from_millis(l.expires_at - now + 1))
            .min()
    }

    /// Stops the jobs of this runner that a human asked to cancel.
    fn honour_cancels(&self, doc: &Assignment) {
        let Some(unit) = self.running.get(&doc.id) else {
            return;
        };
        for job in doc.jobs.iter().filter(|j| j.cancel_requested) {
            if let Some(stop) = unit.stops.job(&job.id).filter(|s| !s.is_stopped()) {
                tracing::info!(assignment = %doc.id, job = %job.id, "cancel requested; stopping the agent");
                stop.stop(StopReason::Cancelled);
            }
        }
    }

    fn stop_all(&mut self) {
        for unit in self.running.values() {
            unit.stops.all(&StopReason::Shutdown);
        }
        self.phase = Phase::Stopping;
    }

    fn on_signal(&mut self) {
        match self.phase {
            Phase::Running => {
                let grace = self.ctx.config.shutdown_grace;
                tracing::info!(
                    running = self.running.len(),
                    ?grace,
                    "shutting down: no new jobs; running jobs may finish"
                );
                self.phase = Phase::Draining(tokio::time::Instant::now() + grace);
            }
            Phase::Draining(_) | Phase::Stopping => {
                tracing::info!("second signal: stopping running jobs now");
                self.stop_all();
            }
        }
    }

    async fn on_timer(&mut self) {
        if let Phase::Draining(deadline) = self.phase {
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    running = self.running.len(),
                    "grace period over: returning running jobs to pending"
                );
                self.stop_all();
            }
            return;
        }
        let sweep_due = self.queue.as_ref().is_some_and(Wakeups::sweep_due);
        if sweep_due {
            self.sweep().await;
        }
    }

    async fn reload(&mut self) {
        match self.ctx.store.list().await {
            Ok(docs) => {
                for doc in docs {
                    upsert(&mut self.cache, doc);
                }
            }
            Err(e) => {
                tracing::error!(%e, "cannot reload assignments; retrying in 1s");
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Claims `aid` and starts its unit, holding `token` (NATS) until the unit is recorded.
    /// Returns false when the assignment was not claimable.
    async fn claim(
        &mut self,
        aid: &str,
        token: Option<Token>,
    ) -> Result<bool, wf_store::StoreError> {
        let (ctx, exclusive) = (self.ctx.clone(), self.exclusive);
        let claimed = ctx
            .store
            .update(aid, |d| {
                let view = LeaseView {
                    now: now_ms(),
                    me: &ctx.runner_id,
                    exclusive,
                };
                chain::claim(d, &view, &ctx.host, ctx.lease_ms()).ok_or(())
            })
            .await;
        match claimed {
            Ok((doc, chain::Claimed::Run(claim))) => {
                tracing::info!(assignment = %aid, jobs = ?claim.job_ids, epoch = claim.epoch, "claimed");
                let stops = UnitStops::new(&claim.job_ids);
                self.cache.insert(aid.to_string(), doc.clone());
                self.running.insert(
                    aid.to_string(),
                    RunningUnit {
                        stops: stops.clone(),
                    },
                );
                tokio::spawn(run_unit(ctx, doc, claim, stops, self.done.0.clone(), token));
                Ok(true)
            }
            Ok((doc, chain::Claimed::OverBudget(reason))) => {
                tracing::warn!(assignment = %aid, %reason, "blocked instead of starting a job");
                upsert(&mut self.cache, doc);
                if let Some(token) = token {
                    token.done().await;
                }
                Ok(true)
            }
            Err(UpdateError::Refused(())) => Ok(false),
            Err(UpdateError::Store(e)) => Err(e),
        }
    }

    /// Embedded store: claim what the rule picks, up to the free slots.
    async fn claim_picked(&mut self) {
        let slots = self
            .ctx
            .config
            .max_concurrent
            .saturating_sub(self.running.len());
        let active: HashSet<String> = self.running.keys().cloned().collect();
        let picked = chain::pick(self.cache.values(), &active, slots, &self.view());
        for aid in picked {
            // Refused: someone changed the document first; its change is on the way.
            if let Err(e) = self.claim(&aid, None).await {
                tracing::error!(assignment = %aid, %e, "claim failed; retrying in 1s");
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                return;
            }
        }
    }

    /// NATS: announce what this runner sees claimable, and ask for tokens for the free slots.
    async fn announce_and_pull(&mut self) {
        let eligible = self.eligible();
        let free = self
            .ctx
            .config
            .max_concurrent
            .saturating_sub(self.running.len());
        let Some(q) = self.queue.as_mut() else { return };
        let docs: Vec<&Assignment> = eligible.iter().filter_map(|a| self.cache.get(a)).collect();
        for doc in docs {
            q.announce(doc).await;
        }
        q.request(free);
    }

    /// NATS, every `leaseMs`: announce every claimable assignment, from a fresh listing.
    async fn sweep(&mut self) {
        self.reload().await;
        let eligible = self.eligible();
        let Some(q) = self.queue.as_mut() else { return };
        let docs: Vec<&Assignment> = eligible.iter().filter_map(|a| self.cache.get(a)).collect();
        q.sweep(&docs).await;
    }

    /// NATS: a token arrived. Claim its assignment if the rule allows, else discard it (or, if
    /// another runner's lease is about to expire, ask for it again at the expiry).
    async fn on_token(&mut self, token: Token) {
        let aid = token.assignment_id().to_string();
        if !matches!(self.phase, Phase::Running) {
            token.release(None).await;
            return;
        }
        if self.running.contains_key(&aid) {
            token.done().await;
            return;
        }
        match self.ctx.store.get(&aid).await {
            Ok(Some(doc)) => upsert(&mut self.cache, doc),
            Ok(None) => {
                token.done().await;
                return;
            }
            Err(e) => {
                tracing::warn!(assignment = %aid, %e, "cannot read an announced assignment");
                token.release(Some(Duration::from_secs(1))).await;
                return;
            }
        }
        if self.eligible().contains(&aid) {
            match self.claim(&aid, Some(token.clone())).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(assignment = %aid, %e, "claim failed; the token comes back in 1s");
                    token.release(Some(Duration::from_secs(1))).await;
                    return;
                }
            }
        }
        let view = self.view();
        if let Some(doc) = self.cache.get(&aid) {
            if let (Readiness::WaitUntil(at), Some(lease)) =
                (chain::readiness(doc, &view), &doc.lease)
            {
                if lease.expires_at == at && at > view.now {
                    token
                        .release(Some(Duration::from_millis(at - view.now + 50)))
                        .await;
                    return;
                }
            }
        }
        if let Some(q) = self.queue.as_mut() {
            q.discarded(&aid);
        }
        token.done().await;
    }
}

/// Blocked or complete: nothing of it runs until a human resumes it.
fn stopped(doc: &Assignment) -> bool {
    !matches!(
        doc.status,
        AssignmentStatus::Active | AssignmentStatus::Pending
    )
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
