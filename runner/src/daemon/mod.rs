//! The runner daemon: wake-up → claim → render → spawn → parse → record → PM.
//!
//! One scheduler task owns an in-memory copy of every assignment document, fed by the store's
//! change feed (no polling), and the set of units it runs. Whenever something changes it asks
//! [`chain::pick`](wf_core::chain::pick) what to start, claims it by compare-and-swap and
//! starts a unit task. Timers exist only for instants the documents name (a paused job's
//! `retryAfter`, a foreign lease's expiry). A unit task runs the claimed job(s) in parallel,
//! renews the lease every third of its length (and stops its agents if it cannot:
//! self-fencing), and records each outcome with a CAS fenced by the lease epoch.
//!
//! `startup` opens the store and takes over from a previous runner, `scheduler` is the loop,
//! `unit` runs one claimed unit, `stop` holds the stop signals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{env, paths};
use wf_core::config::Config;
use wf_core::prompt::Templates;
use wf_store::Store;

mod recover;
mod scheduler;
mod startup;
mod stop;
mod task;
mod unit;
mod work;

pub use self::startup::open_store;
pub use self::stop::{StopReason, StopSignal};

/// How a runner is started.
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The directory holding the `wf` binary, put first on the agents' `PATH`.
    pub wf_dir: Option<PathBuf>,
    /// Where to serve the dashboard, if anywhere.
    pub http: Option<std::net::SocketAddr>,
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
    /// The git repository of `workdir`, if it is in one.
    repo: Option<crate::workspace::Repo>,
    /// Where units run: a worktree per assignment, or `workdir`.
    workspace_mode: wf_core::config::WorkspaceMode,
    /// The remote branches are pushed to and fetched from, if the repository has it.
    remote: Option<String>,
    /// The running attempts' live events.
    hub: Arc<crate::live::Hub>,
    /// What must never reach an event or a transcript.
    redactor: Arc<wf_core::live::Redactor>,
    /// What this runner counted.
    metrics: Arc<crate::metrics::Metrics>,
    /// Delivers notifications, when some hook is configured.
    notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Ctx {
    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

/// Serves the dashboard on `addr` until `stop`.
async fn serve_dashboard(
    ctx: &Arc<Ctx>,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let token = std::env::var(crate::http::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let listener = crate::http::bind(addr, token.as_deref()).await?;
    let state = Arc::new(crate::server::ServerState {
        store: ctx.store.clone(),
        config: ctx.config.clone(),
        runner_id: ctx.runner_id.clone(),
        hub: ctx.hub.clone(),
        metrics: ctx.metrics.clone(),
    });
    tracing::info!(url = %format!("http://{}/", listener.local_addr()?), "dashboard");
    tokio::spawn(crate::http::serve(listener, state, token, stop));
    Ok(())
}

/// The notifier, when some hook is configured or some trigger may act on completion.
fn notifier(
    config: &Config,
    store: &Store,
    runner_id: &str,
    triggers: &[wf_core::trigger::Trigger],
) -> anyhow::Result<Option<Arc<crate::notify::Notifier>>> {
    if config.notify.is_empty() && triggers.is_empty() {
        return Ok(None);
    }
    let actions = (!triggers.is_empty()).then(|| crate::notify::TriggerActions {
        config: config.clone(),
        actions: triggers
            .iter()
            .filter_map(|t| t.on_complete.clone().map(|a| (t.id.clone(), a)))
            .collect(),
    });
    let notifier = crate::notify::Notifier::new(
        config.notify.clone(),
        actions,
        store.clone(),
        runner_id.to_string(),
        config.root.clone(),
    )
    .context("cannot set up notifications")?;
    Ok(Some(Arc::new(notifier)))
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
    // Before any agent: whatever this runner's agents start dies with the runner.
    let _guardian = crate::guard::Guardian::start(&runner_id)
        .context("cannot start the runner's guardian process")?;
    let (_lock, changes, docs) = startup::take_over(&config, &store, &runner_id).await?;
    startup::write_effective_config(&config)?;
    let templates = Templates::load(&config.templates_dir)?;
    let agent_env = env::agent_env(&config, &runner_id, opts.wf_dir.as_deref())?;
    let repo = crate::workspace::find_repo(&config.workdir).await;
    let workspace_mode = crate::workspace::effective_mode(&config.workspace, repo.as_ref());
    if workspace_mode == wf_core::config::WorkspaceMode::Worktree && repo.is_none() {
        anyhow::bail!(
            "workspace.mode is worktree, but {} is not in a git repository",
            config.workdir.display()
        );
    }
    let remote = match &repo {
        Some(r) => crate::workspace::remote(&config.workspace, r).await,
        None => None,
    };
    tracing::info!(mode = ?workspace_mode, repo = ?repo.as_ref().map(|r| &r.top), ?remote, "workspaces");
    let redactor = Arc::new(crate::live::redactor(&agent_env.base));
    let triggers = crate::triggers::load(&config).map_err(anyhow::Error::msg)?;
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        config: config.clone(),
        runner_id: runner_id.clone(),
        host: env::hostname(),
        templates,
        base_env: agent_env.base,
        wf_command: agent_env.wf_command,
        running_as_root: env::running_as_root(),
        repo,
        workspace_mode,
        remote,
        hub: Arc::new(crate::live::Hub::default()),
        redactor,
        metrics: Arc::default(),
        notifier: notifier(&config, &store, &runner_id, &triggers)?,
    });
    let server_stop = CancellationToken::new();
    if let Some(addr) = opts.http {
        serve_dashboard(&ctx, addr, server_stop.clone()).await?;
    }
    if !triggers.is_empty() {
        tracing::info!(count = triggers.len(), "triggers");
        let engine = crate::triggers::Engine::new(store.clone(), config.clone(), triggers)
            .map_err(anyhow::Error::msg)?;
        tokio::spawn(crate::triggers::run(engine, server_stop.clone()));
    }
    let queue = startup::listen(&ctx, server_stop.clone()).await?;
    let mut scheduler = scheduler::Scheduler::new(ctx, docs, queue);
    let result = scheduler.run(changes, &mut signals).await;
    drop(scheduler);
    server_stop.cancel();
    if store.exclusive() {
        // Why: a leftover socket file is replaced by the next runner anyway.
        let _ = std::fs::remove_file(paths::socket_path(&config.state_dir));
    }
    result
}
