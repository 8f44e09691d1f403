//! Wake-up tokens (NATS): how runners of a namespace learn that an assignment has work to
//! claim, without polling and without a leader.
//!
//! Every write that leaves work claimable publishes a token on `wfq.<ns>.<aid>` (message id
//! `<ns>.<aid>.<tag>`, so writers announcing the same document version make one token). A
//! runner pulls a token only while it has a free slot, re-checks the scheduling rule against
//! its own document cache, and claims by compare-and-swap. A token never proves ownership — the
//! lease epoch does — so a lost or duplicated token only delays or repeats a check. Every runner
//! also announces what it sees claimable and sweeps every `leaseMs`, so a lost token is
//! replaced.
//!
//! Subjects and message ids are built and parsed here and in [`crate::nats`] only: the runner
//! sees [`Wakeups`] and opaque [`Token`]s.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wf_core::model::Assignment;

use crate::nats::NatsStore;
use crate::StoreError;

/// The message id of a token for `aid` in namespace `ns`: tokens with the same id within the
/// server's duplicate window are one token.
pub(crate) fn message_id(ns: &str, aid: &str, tag: &str) -> String {
    format!("{ns}.{aid}.{tag}")
}

/// One wake-up token, held by this runner until it is done with it.
#[derive(Debug, Clone)]
pub struct Token {
    msg: jetstream::Message,
    assignment: String,
}

impl Token {
    fn new(msg: jetstream::Message) -> Self {
        // The subject is `wfq.<ns>.<aid>`; ids never contain dots.
        let assignment = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        Self { msg, assignment }
    }

    /// The assignment the token announces.
    pub fn assignment_id(&self) -> &str {
        &self.assignment
    }

    /// The token has served (its work was claimed and recorded, or there is nothing to do): it
    /// is removed from the queue. A failed acknowledgement only brings the token back after
    /// its `ack_wait`, to be checked and discarded then.
    pub async fn done(&self) {
        if let Err(e) = self.msg.double_ack().await {
            tracing::debug!(assignment = %self.assignment, %e, "token ack failed");
        }
    }

    /// Gives the token back, to be delivered again after `delay` (at once when `None`), to this
    /// runner or another. A failed give-back only delays the token until its `ack_wait`.
    pub async fn release(&self, delay: Option<Duration>) {
        if let Err(e) = self.msg.ack_with(AckKind::Nak(delay)).await {
            tracing::debug!(assignment = %self.assignment, %e, "token release failed");
        }
    }

    /// Keeps the token from being redelivered while its work runs (the lease, not this, is
    /// what owns the work). Waits at most `timeout`.
    pub async fn progress(&self, timeout: Duration) {
        let progress = self.msg.double_ack_with(AckKind::Progress);
        match tokio::time::timeout(timeout, progress).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%e, "progress ack failed"),
            Err(_) => tracing::debug!("progress ack timed out"),
        }
    }
}

/// A runner's side of the token queue: the tokens it pulled, what it announced, and when it
/// sweeps next. Pulls are made one at a time, only for free slots, so that no token waits in a
/// client buffer while its `ack_wait` runs.
pub struct Wakeups {
    store: NatsStore,
    requests: mpsc::UnboundedSender<()>,
    tokens: mpsc::UnboundedReceiver<Token>,
    puller: tokio::task::JoinHandle<()>,
    /// Pulls requested and not yet answered.
    requested: usize,
    /// What this runner announced per assignment: (document version, generation). The
    /// generation goes up when this runner discards a token, so that it can announce the same
    /// version again once the assignment becomes claimable.
    announced: HashMap<String, (u64, u32)>,
    generation: HashMap<String, u32>,
    next_sweep: Instant,
    sweep_every: Duration,
}

impl Wakeups {
    /// Opens the namespace's consumer (created if needed, with `ack_wait` = `lease`) and starts
    /// the pulling task.
    pub async fn start(store: &NatsStore, lease: Duration) -> Result<Self, StoreError> {
        let consumer = store.consumer(lease).await?;
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (token_tx, tokens) = mpsc::unbounded_channel();
        let puller = tokio::spawn(pull_tokens(consumer, request_rx, token_tx));
        Ok(Self {
            store: store.clone(),
            requests,
            tokens,
            puller,
            requested: 0,
            announced: HashMap::new(),
            generation: HashMap::new(),
            next_sweep: Instant::now(),
            sweep_every: lease.max(Duration::from_secs(1)),
        })
    }

    /// The next pulled token. Cancel-safe.
    pub async fn next(&mut self) -> Option<Token> {
        let token = self.tokens.recv().await?;
        self.requested = self.requested.saturating_sub(1);
        Some(token)
    }

    /// Asks for tokens until `free` pulls are outstanding (`free` = slots not running a unit).
    pub fn request(&mut self, free: usize) {
        for _ in self.requested..free {
            if self.requests.send(()).is_ok() {
                self.requested += 1;
            }
        }
    }

    /// Announces `doc`, which this runner sees claimable, unless it already announced this
    /// version since it last discarded a token of it.
    pub async fn announce(&mut self, doc: &Assignment) {
        let generation = self.generation.get(&doc.id).copied().unwrap_or(0);
        if self.announced.get(&doc.id) == Some(&(doc.version, generation)) {
            return;
        }
        self.announced
            .insert(doc.id.clone(), (doc.version, generation));
        let msg_id = message_id(
            &doc.namespace,
            &doc.id,
            &format!("{}.r{generation}", doc.version),
        );
        if let Err(e) = self.store.publish_token(&doc.id, &msg_id).await {
            tracing::warn!(assignment = %doc.id, %e, "cannot announce; the sweeper will");
        }
    }

    /// This runner discarded a token of `aid` (not claimable for it now): the next time it sees
    /// the assignment claimable it announces it again, even at the same version.
    pub fn discarded(&mut self, aid: &str) {
        *self.generation.entry(aid.to_string()).or_insert(0) += 1;
    }

    /// When the next sweep is due.
    pub fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Whether a sweep is due now.
    pub fn sweep_due(&self) -> bool {
        self.next_sweep <= Instant::now()
    }

    /// Announces every claimable assignment in `docs` (from a fresh listing) with a tag of this
    /// sweep period, so that a token lost earlier is replaced, once per period and namespace.
    pub async fn sweep(&mut self, docs: &[&Assignment]) {
        let period = wf_core::clock::now_ms() / self.sweep_every.as_millis().max(1) as u64;
        for doc in docs {
            let msg_id = message_id(
                &doc.namespace,
                &doc.id,
                &format!("{}.s{period}", doc.version),
            );
            if let Err(e) = self.store.publish_token(&doc.id, &msg_id).await {
                tracing::warn!(assignment = %doc.id, %e, "sweeper cannot announce");
            }
        }
        self.next_sweep = Instant::now() + self.sweep_every;
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.puller.abort();
    }
}

async fn pull_tokens(
    consumer: PullConsumer,
    mut requests: mpsc::UnboundedReceiver<()>,
    tokens: mpsc::UnboundedSender<Token>,
) {
    while requests.recv().await.is_some() {
        loop {
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(10))
                .messages()
                .await;
            match batch {
                Ok(mut batch) => match batch.next().await {
                    Some(Ok(msg)) => {
                        if let Err(unsent) = tokens.send(Token::new(msg)) {
                            // The runner is stopping; let another runner have the token.
                            unsent.0.release(None).await;
                            return;
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%e, "token pull failed; pulling again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(%e, "cannot pull wake-up tokens; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
