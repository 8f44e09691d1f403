//! Start-up: opening the store, taking over from this state directory's previous runner
//! (reaping its agents, expiring its leases), the effective config, and listening for work.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::{liveness, paths, reaper, server};
use wf_core::chain;
use wf_core::config::{Config, StoreConfig};
use wf_core::model::Assignment;
use wf_store::wakeup::Wakeups;
use wf_store::{Change, Store, UpdateError};

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
            let store = Store::Sled(store);
            store.configure(config);
            Ok(store)
        }
        StoreConfig::Nats(nats) => {
            let store =
                wf_store::nats::NatsStore::connect(nats, &config.namespace, "wf-runner", true)
                    .await?;
            let store = Store::Nats(store);
            store.configure(config);
            Ok(store)
        }
    }
}

/// Takes over from the earlier runners of this state directory that are dead: proves which
/// are alive (their `flock`), kills the agents the dead ones left, and expires their leases
/// (NATS; with the embedded store every lease found is dead, as only one runner can hold the
/// database). A live runner's agents and leases are never touched; with the embedded store a
/// live one is refused. Returns this runner's lock (to hold for its lifetime), the change feed
/// (subscribed before the listing) and the listing.
pub(super) async fn take_over(
    config: &Config,
    store: &Store,
    runner_id: &str,
) -> anyhow::Result<(
    liveness::RunnerLock,
    broadcast::Receiver<Change>,
    Vec<Assignment>,
)> {
    let state_dir = &config.state_dir;
    let lock = liveness::RunnerLock::acquire(state_dir, runner_id)
        .with_context(|| format!("cannot lock {}", state_dir.display()))?;
    let others = others_settled(state_dir, runner_id, store.exclusive()).await?;
    for live in others.iter().filter(|o| o.alive) {
        tracing::info!(
            runner = %live.id, pid = ?live.pid, dir = %state_dir.display(),
            "another live runner shares this state directory; its agents and leases are left alone"
        );
    }
    let mut dead: HashSet<String> = others
        .iter()
        .filter(|o| !o.alive)
        .map(|o| o.id.clone())
        .collect();
    let changes = store.subscribe().await;
    // Only the open documents: a runner never needs a finished one.
    let mut docs = store.list_open().await?;
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

    for o in others.iter().filter(|o| !o.alive) {
        if let Some(path) = &o.path {
            // Why: the dead runner's file has served; a leftover is found dead again.
            let _ = std::fs::remove_file(path);
        }
    }
    Ok((lock, changes, docs))
}

/// The other runners of `state_dir`. With the embedded store (`exclusive`), the store's lock
/// proved that no other runner uses this database, but one may still be exiting (it released
/// the database a moment before its process ended) or use another database on this directory:
/// wait a little for such a runner to end, then refuse.
async fn others_settled(
    state_dir: &Path,
    me: &str,
    exclusive: bool,
) -> anyhow::Result<Vec<liveness::OtherRunner>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let others = liveness::other_runners(state_dir, me);
        let live: Vec<_> = others.iter().filter(|o| o.alive).collect();
        if !exclusive || live.is_empty() {
            return Ok(others);
        }
        if tokio::time::Instant::now() >= deadline {
            let o = live[0];
            anyhow::bail!(
                "another wf-runner (id {}, pid {}) is running on state directory {}: with the \
                 embedded store one runner serves a state directory; stop it first, or give this \
                 one its own stateDir",
                o.id,
                o.pid.map_or("unknown".to_string(), |p| p.to_string()),
                state_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without a config file, writes the effective config agents get as `WF_CONFIG`.
pub(super) fn write_effective_config(config: &Config) -> anyhow::Result<()> {
    if config.file.is_none() {
        let path = config.agent_config_path();
        let text = serde_json::to_string_pretty(&config.to_raw()).expect("config serialises");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Starts listening for work: the control socket (embedded store) or the wake-up token queue
/// (NATS), which it returns.
pub(super) async fn listen(
    ctx: &Ctx,
    server_stop: CancellationToken,
) -> anyhow::Result<Option<Wakeups>> {
    let (store, config, runner_id) = (&ctx.store, &ctx.config, &ctx.runner_id);
    let socket = paths::socket_path(&config.state_dir);
    Ok(match store {
        Store::Sled(_) => {
            let listener = server::bind(&socket)
                .with_context(|| format!("cannot listen on {}", socket.display()))?;
            let state = Arc::new(server::ServerState {
                store: store.clone(),
                config: config.clone(),
                runner_id: runner_id.clone(),
                hub: ctx.hub.clone(),
                metrics: ctx.metrics.clone(),
            });
            tokio::spawn(server::serve(listener, state, server_stop));
            tracing::info!(
                runner = %runner_id, namespace = %config.namespace, store = "sled",
                path = %store_path(config), socket = %socket.display(),
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
    })
}

fn store_path(config: &Config) -> String {
    match &config.store {
        StoreConfig::Sled { path } => path.display().to_string(),
        StoreConfig::Nats(n) => n.url.clone(),
    }
}
