//! The scheduler: one task that owns the document cache and the running units, woken by the
//! change feed (sled) or wake-up tokens (NATS), unit completions, signals, and timers set to
//! instants the documents name. It claims by compare-and-swap and starts unit tasks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::stop::{StopReason, UnitStops};
use super::unit::run_unit;
use super::Ctx;
use wf_core::chain::{self, LeaseView, Readiness};
use wf_core::clock::now_ms;
use wf_core::model::{Assignment, AssignmentStatus};
use wf_store::wakeup::{Token, Wakeups};
use wf_store::UpdateError;

/// A finished unit: its assignment and the last document version it wrote.
pub(super) type UnitDone = (String, Option<Assignment>);

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
pub(super) struct Scheduler {
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
    /// Whether this machine's clock agrees with the fleet's (the NATS server's) closely enough
    /// to judge leases; while it does not, the runner claims nothing.
    clock_ok: bool,
    /// The notices being delivered (assignment, notice id), and the channel their delivery
    /// tasks report on.
    delivering: HashSet<(String, String)>,
    delivered: (
        mpsc::UnboundedSender<Delivered>,
        mpsc::UnboundedReceiver<Delivered>,
    ),
}

/// A finished delivery: the assignment, the notice, the last document version written.
type Delivered = (String, String, Option<Assignment>);

impl Scheduler {
    pub(super) fn new(ctx: Arc<Ctx>, docs: Vec<Assignment>, queue: Option<Wakeups>) -> Self {
        Self {
            exclusive: ctx.store.exclusive(),
            ctx,
            cache: docs.into_iter().map(|d| (d.id.clone(), d)).collect(),
            running: HashMap::new(),
            done: mpsc::unbounded_channel(),
            phase: Phase::Running,
            retry_at: None,
            queue,
            clock_ok: true,
            delivering: HashSet::new(),
            delivered: mpsc::unbounded_channel(),
        }
    }

    /// The next instant the loop must wake for: one a document names, a retry, a settle, a
    /// notice, a sweep; or the end of the grace period.
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        match self.phase {
            Phase::Running => chain::next_wakeup(self.cache.values(), &self.view())
                .map(|at| {
                    tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
                })
                .into_iter()
                .chain(self.retry_at)
                .chain(self.next_settle())
                .chain(self.next_notice())
                .chain(self.queue.as_ref().map(Wakeups::next_sweep))
                .min(),
            Phase::Draining(deadline) => Some(deadline),
            Phase::Stopping => None,
        }
    }

    /// Starts delivering the notices that are due and not being delivered already.
    fn start_deliveries(&mut self) {
        let Some(notifier) = self.ctx.notifier.clone() else {
            return;
        };
        for doc in self.cache.values() {
            for id in notifier.due(doc) {
                let key = (doc.id.clone(), id);
                if !self.delivering.insert(key.clone()) {
                    continue;
                }
                let (notifier, done) = (notifier.clone(), self.delivered.0.clone());
                tokio::spawn(async move {
                    let doc = notifier.deliver(&key.0, &key.1).await;
                    // Why: the scheduler is gone only when the runner is stopping.
                    let _ = done.send((key.0, key.1, doc));
                });
            }
        }
    }

    /// When a notice this runner waits for (a retry time, another runner's claim) is due.
    fn next_notice(&self) -> Option<tokio::time::Instant> {
        let notifier = self.ctx.notifier.as_ref()?;
        let now = now_ms();
        self.cache
            .values()
            .filter_map(|d| notifier.next_due(d))
            .min()
            .map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now) + 1)
            })
    }

    /// Measures the clock against the NATS server's and decides whether claiming is safe:
    /// leases are judged on wall clocks, so a machine off by more than a quarter of the lease
    /// would take live leases for dead ones (or write leases others take for dead).
    async fn check_clock(&mut self) {
        let Some(measured) = self.ctx.store.clock_skew(&self.ctx.runner_id).await else {
            return;
        };
        let bound = self.ctx.lease_ms() as i64 / 4;
        match measured {
            Ok((skew, uncertainty)) => {
                let ok = skew.abs() - uncertainty as i64 <= bound;
                if !ok {
                    tracing::error!(
                        skew_ms = skew, bound_ms = bound,
                        "this machine's clock is off from the NATS server's by more than a quarter of leaseMs; claiming nothing until it is fixed"
                    );
                } else if !self.clock_ok {
                    tracing::info!(
                        skew_ms = skew,
                        "the clock agrees with the NATS server's again"
                    );
                }
                self.clock_ok = ok;
            }
            Err(e) => tracing::warn!(%e, "cannot measure the clock against the NATS server"),
        }
    }

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

    pub(super) async fn run(
        &mut self,
        mut changes: broadcast::Receiver<wf_store::Change>,
        signals: &mut mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        self.check_clock().await;
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
                self.start_deliveries();
            }
            if !matches!(self.phase, Phase::Running) && self.running.is_empty() {
                return Ok(());
            }
            let wake = self.next_wake();
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
                Some((aid, id, doc)) = self.delivered.1.recv() => {
                    self.delivering.remove(&(aid, id));
                    if let Some(doc) = doc {
                        upsert(&mut self.cache, doc);
                    }
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
                        upsert(&mut self.cache, std::sync::Arc::unwrap_or_clone(change.doc));
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
            let recovered = self.recovered_usage(&aid).await;
            let settled = ctx
                .store
                .update(&aid, |d| {
                    let view = LeaseView {
                        now: now_ms(),
                        me: &ctx.runner_id,
                        exclusive,
                    };
                    chain::settle_dead_lease(d, &view, &recovered)
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
        match self.ctx.store.list_open().await {
            Ok(docs) => {
                for doc in docs {
                    // A cancel may have been among the changes the lagging feed dropped.
                    self.honour_cancels(&doc);
                    upsert(&mut self.cache, doc);
                }
            }
            Err(e) => {
                tracing::error!(%e, "cannot reload assignments; retrying in 1s");
                self.retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// The assignment `aid` has no room for its next claim and outcome (`detail` says why):
    /// archives old finished jobs if that makes room (the write announces it again), else
    /// blocks it with the reason — which always fits, as claims stop [`CLAIM_RESERVE`] bytes
    /// short of the limit. Returns whether the assignment was dealt with.
    async fn make_room_or_block(
        &mut self,
        aid: &str,
        token: Option<Token>,
        detail: &str,
    ) -> Result<bool, wf_store::StoreError> {
        let ctx = self.ctx.clone();
        match crate::ops::archive_finished(&ctx.store, aid).await {
            Ok(Some(doc)) => {
                tracing::info!(assignment = %aid, archived = doc.archive.jobs, "archived old finished jobs to make room");
                upsert(&mut self.cache, doc);
                if let Some(token) = token {
                    // The archive's write announced the assignment again.
                    token.done().await;
                }
                return Ok(true);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(assignment = %aid, %e, "cannot archive old finished jobs"),
        }
        let reason = chain::full_document_reason(detail);
        tracing::error!(assignment = %aid, %reason, "blocking instead of claiming");
        let mut blocked = ctx
            .store
            .update(aid, |d| chain::block_unclaimable(d, &reason, now_ms()))
            .await;
        if let Err(UpdateError::Store(wf_store::StoreError::TooLarge { .. })) = blocked {
            // Filled past the reserve by a human's write: a shorter reason.
            blocked = ctx
                .store
                .update(aid, |d| {
                    chain::block_unclaimable(d, chain::FULL_DOCUMENT_SHORT_REASON, now_ms())
                })
                .await;
        }
        if let Some(token) = token {
            token.done().await;
        }
        match blocked {
            Ok((doc, ())) => {
                upsert(&mut self.cache, doc);
                Ok(true)
            }
            Err(UpdateError::Refused(_)) => Ok(false),
            Err(UpdateError::Store(e @ wf_store::StoreError::TooLarge { .. })) => {
                // Retrying every second would change nothing.
                tracing::error!(assignment = %aid, %e, "the assignment's document is too full even to block it; leaving it until a human makes room");
                Ok(false)
            }
            Err(UpdateError::Store(e)) => Err(e),
        }
    }

    /// What the abandoned attempts of `aid` (as last seen) spent, from their transcripts here.
    async fn recovered_usage(&self, aid: &str) -> chain::Recovered {
        let Some(doc) = self.cache.get(aid) else {
            return chain::Recovered::new();
        };
        let view = LeaseView {
            now: now_ms(),
            me: &self.ctx.runner_id,
            exclusive: self.exclusive,
        };
        super::recover::recovered_usage(&self.ctx, doc, &view).await
    }

    /// Claims `aid` and starts its unit, holding `token` (NATS) until the unit is recorded.
    /// Returns false when the assignment was not claimable.
    async fn claim(
        &mut self,
        aid: &str,
        token: Option<Token>,
    ) -> Result<bool, wf_store::StoreError> {
        let (ctx, exclusive) = (self.ctx.clone(), self.exclusive);
        if self
            .cache
            .get(aid)
            .is_some_and(|d| !super::work::runs_here(&ctx, d))
        {
            // Its worktree is on another machine and there is no remote to fetch it from.
            tracing::debug!(assignment = %aid, "not claiming: its worktree is elsewhere");
            if let Some(token) = token {
                token.release(Some(ctx.config.lease)).await;
            }
            return Ok(false);
        }
        if let Some(detail) = self.cache.get(aid).and_then(|d| near_full(d, &ctx.store)) {
            return self.make_room_or_block(aid, token, &detail).await;
        }
        let recovered = self.recovered_usage(aid).await;
        let claimed = ctx
            .store
            .update(aid, |d| {
                let view = LeaseView {
                    now: now_ms(),
                    me: &ctx.runner_id,
                    exclusive,
                };
                chain::claim(d, &view, &ctx.host, ctx.lease_ms(), &recovered).ok_or(())
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
            Ok((doc, chain::Claimed::Blocked(reason))) => {
                tracing::warn!(assignment = %aid, %reason, "blocked instead of starting a job");
                upsert(&mut self.cache, doc);
                if let Some(token) = token {
                    token.done().await;
                }
                Ok(true)
            }
            Err(UpdateError::Refused(())) => Ok(false),
            Err(UpdateError::Store(e @ wf_store::StoreError::TooLarge { .. })) => {
                self.make_room_or_block(aid, token, &e.to_string()).await
            }
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
        // A runner whose clock is off pulls no work (others see the announcements).
        q.request(if self.clock_ok { free } else { 0 });
    }

    /// NATS, every `leaseMs`: announce every claimable assignment, from a fresh listing.
    async fn sweep(&mut self) {
        self.check_clock().await;
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
        if !matches!(self.phase, Phase::Running) || !self.clock_ok {
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
/// Room kept free by claims: a claim (+~150 bytes), the outcome and its PM job (+~1 KB) and,
/// when those do not fit, the block with its reason (+~400) must all fit after it.
const CLAIM_RESERVE: usize = 2048;

/// Why `doc` has no room for another claim, if it has none.
fn near_full(doc: &Assignment, store: &wf_store::Store) -> Option<String> {
    let (size, max) = (
        serde_json::to_vec(doc).map_or(0, |b| b.len()),
        store.max_document(),
    );
    (size + CLAIM_RESERVE > max).then(|| {
        format!(
            "assignment {} is {size} bytes, less than {CLAIM_RESERVE} bytes short of the store's limit of {max} bytes (maxDocumentBytes)",
            doc.id
        )
    })
}

/// Keeps the newest version of each open document; a finished one leaves the cache (nothing
/// more happens to it without a human, whose write brings it back).
fn upsert(cache: &mut HashMap<String, Assignment>, doc: Assignment) {
    match cache.get(&doc.id) {
        Some(old) if old.version >= doc.version => {}
        _ if !doc.is_open() => {
            cache.remove(&doc.id);
        }
        _ => {
            cache.insert(doc.id.clone(), doc);
        }
    }
}
