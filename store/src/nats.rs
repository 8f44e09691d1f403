//! The distributed backend: NATS JetStream (async-nats 0.51), shared by every runner and CLI.
//!
//! Layout (research/store-design.md §4.2), one bucket and one stream for all namespaces:
//!
//! | object | name | notes |
//! |---|---|---|
//! | state bucket | KV `wf` (stream `KV_wf`) | created by hand so that 2.9.x servers work; no direct gets |
//! | assignment | `<ns>.asg.<aid>` | CAS on the KV revision only |
//! | context / result | `<ns>.ctx.<aid>.<jid>` / `<ns>.res.<aid>.<jid>.<attempt>` | written before the CAS that links them |
//! | wake-up tokens | stream `WF_Q`, subject `wfq.<ns>.<aid>` | WorkQueue; `Nats-Msg-Id` dedup |
//! | consumer | durable pull `run_<ns>`, filter `wfq.<ns>.>` | `ack_wait` = lease, `max_deliver` -1, no backoff |
//! | live events | stream `WF_EV`, subject `wfev.<ns>.<aid>.<jid>.<attempt>` (one event per message) | limits: [`EVENTS_MAX_BYTES`], [`EVENTS_MAX_AGE`], oldest discarded |
//! | raw transcript | same stream, `wfraw.<ns>.<aid>.<jid>.<attempt>` (batches of lines; an empty message ends it) | read by ordered consumers with one filter subject (2.9 servers) |
//!
//! A token only says "look at this assignment": ownership is the lease epoch in the document,
//! never an acknowledgement (NATS does not fence acks, nats-server#4786).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::{decode, encode, BlobKey, Cas, Change, Listing, StoreError};
use wf_core::config::NatsConfig;
use wf_core::ids::Namespace;
use wf_core::model::Assignment;

/// The state bucket.
pub const BUCKET: &str = "wf";
/// The token stream.
pub const QUEUE_STREAM: &str = "WF_Q";
/// The live event stream.
pub const EVENTS_STREAM: &str = "WF_EV";
/// The most the live event stream keeps, in bytes (the oldest messages go first).
pub const EVENTS_MAX_BYTES: i64 = 1 << 30;
/// How long the live event stream keeps a message.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long the server remembers a token's `Nats-Msg-Id`.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Capacity of the change channel.
const CHANGES_CAPACITY: usize = 4096;

/// A NATS JetStream store opened for one namespace.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    kv: kv::Store,
    ns: Namespace,
    version: (u32, u32, u32),
    /// Copies of the state bucket the cluster keeps.
    replicas: usize,
    /// The largest document to write (config), before the server's own limit.
    max_document: std::sync::atomic::AtomicUsize,
    /// The notifications writes record (`NotifySet` bits; config `notify`).
    notify: std::sync::atomic::AtomicU8,
    changes: broadcast::Sender<Change>,
    watcher: tokio::sync::OnceCell<()>,
    events: tokio::sync::OnceCell<stream::Stream>,
    /// The bucket's stream (subject listings, purges of index entries).
    bucket_stream: tokio::sync::OnceCell<stream::Stream>,
}

/// The acknowledgement of one published live message, to be awaited later (publishes are
/// pipelined).
pub struct LiveAck(jetstream::context::PublishAckFuture);

impl LiveAck {
    /// Waits until the server stored the message.
    pub async fn stored(self) -> Result<(), StoreError> {
        self.0
            .await
            .map(|_| ())
            .map_err(|e| backend("the live event stream refused a message", e))
    }
}

/// The messages of one live subject, oldest first, then live.
pub struct LiveMessages {
    messages: consumer::push::Ordered,
}

/// One message of a live subject.
pub struct LiveMessage {
    /// Its payload.
    pub payload: Vec<u8>,
    /// How many messages of the subject the server holds after this one.
    pub pending: u64,
}

impl LiveMessages {
    /// The next message; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Result<LiveMessage, StoreError>> {
        let msg = match self.messages.next().await? {
            Ok(m) => m,
            Err(e) => return Some(Err(backend("cannot read the live event stream", e))),
        };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        Some(Ok(LiveMessage {
            payload: msg.payload.to_vec(),
            pending,
        }))
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// Parses "2.10.8" (or "2.12.0-beta") into numbers.
fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// The oldest server on which a replicated (clustered) bucket is safe. Before 2.9.21 a
/// clustered stream checked `Nats-Expected-Last-Subject-Sequence` only before proposing a write,
/// so two concurrent writes at the same revision could both succeed (nats-server#4320); 2.11
/// made the check hold across leader changes too (nats-server#6194, #6485). Either would let two
/// runners claim the same job. A single-replica bucket is checked by one server and is safe on
/// every supported version.
const MIN_VERSION_REPLICATED: (u32, u32, u32) = (2, 11, 0);

/// Refuses a server and bucket on which compare-and-set is not reliable.
fn check_cas_safe(version_text: &str, replicas: usize) -> Result<(), StoreError> {
    let version = parse_version(version_text);
    if version < (2, 9, 0) {
        return Err(StoreError::Backend(format!(
            "nats-server {version_text} is too old: wf needs 2.9 or newer with JetStream"
        )));
    }
    if replicas > 1 && version < MIN_VERSION_REPLICATED {
        let (a, b, c) = MIN_VERSION_REPLICATED;
        return Err(StoreError::Backend(format!(
            "nats-server {version_text} cannot hold wf's state bucket with {replicas} replicas: \
             before {a}.{b}.{c} a JetStream cluster may accept two compare-and-set writes at the \
             same revision (nats-server#4320), which could run a job twice; upgrade the cluster \
             to {a}.{b}.{c} or newer, or use one replica"
        )));
    }
    Ok(())
}

/// The client options: name, timeouts, event logging, credentials, token and TLS.
async fn options(
    config: &NatsConfig,
    name: &str,
    wait_for_server: bool,
) -> Result<async_nats::ConnectOptions, StoreError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(%other, "NATS event"),
            }
        });
    if wait_for_server {
        opts = opts.retry_on_initial_connect();
    }
    if let Some(creds) = &config.credentials {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            backend(
                &format!("cannot read NATS credentials {}", creds.display()),
                e,
            )
        })?;
    }
    if let Some(token) = &config.token {
        opts = opts.token(token.clone());
    }
    if let Some(ca) = &config.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls_required {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// Makes sure the bucket and the token stream exist. A cluster that is still electing its
/// JetStream leader refuses stream requests for a moment; a runner (`wait`) waits that out,
/// the CLI reports it.
async fn ensure_streams(
    js: &jetstream::Context,
    replicas: usize,
    wait: bool,
) -> Result<kv::Store, StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ensured = async {
            let kv = ensure_bucket(js, replicas).await?;
            ensure_queue(js, replicas).await?;
            Ok::<_, StoreError>(kv)
        };
        match ensured.await {
            Ok(kv) => return Ok(kv),
            Err(e) if wait && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl NatsStore {
    /// Connects, checks the server version, and makes sure the bucket and the token stream
    /// exist (with `replicas` copies). `name` identifies the client in the server's logs.
    /// A runner passes `wait_for_server` to keep trying while the server is down.
    pub async fn connect(
        config: &NatsConfig,
        ns: &Namespace,
        name: &str,
        wait_for_server: bool,
    ) -> Result<Self, StoreError> {
        let url = std::env::var("WF_NATS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| config.url.clone());
        let opts = options(config, name, wait_for_server).await?;
        let addrs = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Backend(format!("invalid NATS URL {url:?}: {e}")))?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to NATS at {url}: {e}")))?;
        if wait_for_server {
            // With retry_on_initial_connect the client returns before it is connected; the
            // first flush completes once it is.
            client
                .flush()
                .await
                .map_err(|e| backend("cannot reach NATS", e))?;
        }
        let version_text = client.server_info().version;
        let version = parse_version(&version_text);
        check_cas_safe(&version_text, 1)?;
        let js = jetstream::new(client.clone());
        let kv = ensure_streams(&js, config.replicas.max(1), wait_for_server).await?;
        // The bucket may have been made by another client, with other settings than ours.
        let bucket_replicas = js
            .get_stream(format!("KV_{BUCKET}"))
            .await
            .map_err(|e| backend("cannot read the state bucket", e))?
            .cached_info()
            .config
            .num_replicas;
        check_cas_safe(&version_text, bucket_replicas)?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                kv,
                ns: ns.clone(),
                version,
                replicas: bucket_replicas,
                max_document: std::sync::atomic::AtomicUsize::new(
                    wf_core::config::DEFAULT_MAX_DOCUMENT_BYTES,
                ),
                notify: std::sync::atomic::AtomicU8::new(0),
                changes,
                watcher: tokio::sync::OnceCell::new(),
                events: tokio::sync::OnceCell::new(),
                bucket_stream: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// How far this machine's wall clock is from the NATS server's, in ms (positive: ahead),
    /// and the measurement's uncertainty (half the round trip). Measured by writing a probe
    /// key and reading back the time the server stored it.
    pub async fn clock_skew(&self, probe: &str) -> Result<(i64, u64), StoreError> {
        let key = self.key("clock", probe);
        let before = wf_core::clock::now_ms();
        self.inner
            .kv
            .put(&key, Vec::new().into())
            .await
            .map_err(|e| backend("cannot write the clock probe", e))?;
        let after = wf_core::clock::now_ms();
        let entry = self
            .inner
            .kv
            .entry(&key)
            .await
            .map_err(|e| backend("cannot read the clock probe", e))?
            .ok_or_else(|| StoreError::Backend("the clock probe vanished".into()))?;
        // Why: the probe has served; a leftover key is overwritten by the next probe.
        let _ = self.inner.kv.delete(&key).await;
        let server = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
        let mid = (before / 2 + after / 2) as i64;
        Ok((mid - server, after.saturating_sub(before) / 2))
    }

    /// How many copies of the state bucket the cluster keeps. With one, an acknowledged write
    /// is safe from a process crash but not from a power loss or kernel panic until
    /// nats-server fsyncs it (every `sync_interval`, 2 minutes by default).
    pub fn bucket_replicas(&self) -> usize {
        self.inner.replicas
    }

    /// The server's version, as it reported it.
    pub fn server_version(&self) -> String {
        let (a, b, c) = self.inner.version;
        format!("{a}.{b}.{c}")
    }

    /// The server URL in use.
    pub fn server_url(&self) -> String {
        let info = self.inner.client.server_info();
        format!("{}:{}", info.host, info.port)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}.{kind}.{rest}", self.inner.ns)
    }

    fn doc_key(&self, id: &str) -> String {
        self.key("asg", id)
    }

    fn blob_key(&self, key: &BlobKey) -> String {
        format!("{}.{}", self.inner.ns, key.render('.'))
    }

    /// The open index: an empty value at `<ns>.open.<id>` for every open document (and,
    /// harmlessly, for some that were open a moment ago). An entry is written before the write
    /// that opens a document and removed after the write that finishes it, so no open document
    /// is ever without one.
    fn open_key(&self, id: &str) -> String {
        self.key("open", id)
    }

    async fn bucket_stream(&self) -> Result<&stream::Stream, StoreError> {
        self.inner
            .bucket_stream
            .get_or_try_init(|| async {
                self.inner
                    .js
                    .get_stream(format!("KV_{BUCKET}"))
                    .await
                    .map_err(|e| backend("cannot read the state bucket", e))
            })
            .await
    }

    async fn index_open(&self, id: &str) -> Result<(), StoreError> {
        self.inner
            .kv
            .put(self.open_key(id), Vec::new().into())
            .await
            .map(drop)
            .map_err(|e| backend("cannot index an open assignment", e))
    }

    /// Removes `id` from the open index, leaving no marker behind; then, if the document was
    /// opened again meanwhile by another writer, puts it back.
    async fn unindex(&self, id: &str) -> Result<(), StoreError> {
        let subject = format!("$KV.{BUCKET}.{}", self.open_key(id));
        self.bucket_stream()
            .await?
            .purge()
            .filter(subject)
            .await
            .map_err(|e| backend("cannot unindex a finished assignment", e))?;
        if let Some((doc, _)) = self.get(id).await? {
            if doc.is_open() {
                self.index_open(id).await?;
            }
        }
        Ok(())
    }

    /// The ids under `<ns>.<kind>.*`, from the stream's subjects (no values read).
    async fn subject_ids(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let filter = format!("$KV.{BUCKET}.{}.{kind}.*", self.inner.ns);
        let mut subjects = self
            .bucket_stream()
            .await?
            .info_with_subjects(&filter)
            .await
            .map_err(|e| backend("cannot list the store's keys", e))?;
        let prefix = format!("$KV.{BUCKET}.{}.{kind}.", self.inner.ns);
        let mut out = Vec::new();
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(|e| backend("cannot list the store's keys", e))?;
            if let Some(id) = subject.strip_prefix(&prefix) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }

    /// Every document's id.
    pub(super) async fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.subject_ids("asg").await
    }

    /// The documents the open index names (built first, for a bucket written before it
    /// existed).
    pub(super) async fn list_open(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        for (key, value) in self.open_entries().await? {
            listing.push(&key, &value);
        }
        let stale: Vec<String> = listing
            .docs
            .iter()
            .filter(|d| !d.is_open())
            .map(|d| d.id.clone())
            .collect();
        for id in stale {
            // A finished document left in the index (its writer stopped before removing it).
            if let Err(e) = self.unindex(&id).await {
                tracing::debug!(%e, "cannot drop a stale index entry");
            }
        }
        Ok(listing)
    }

    /// The documents the open index names, as stored (the index is built first, for a bucket
    /// written before it existed).
    pub(super) async fn open_entries(&self) -> Result<Vec<(String, bytes::Bytes)>, StoreError> {
        const INDEXED: &str = "open-index";
        if self.get_state(INDEXED).await?.is_none() {
            let all = self.list().await?;
            for doc in all.docs.iter().filter(|d| d.is_open()) {
                self.index_open(&doc.id).await?;
            }
            for u in &all.unreadable {
                let id = u.key.rsplit('.').next().unwrap_or(&u.key);
                self.index_open(id).await?;
            }
            // Why: another process indexing at the same time wrote the same marker.
            let _ = self.put_state(INDEXED, None, b"{}".to_vec()).await?;
        }
        let ids = self.subject_ids("open").await?;
        let reads = ids.into_iter().map(|id| {
            let (kv, key) = (self.inner.kv.clone(), self.doc_key(&id));
            async move {
                let entry = kv
                    .entry(&key)
                    .await
                    .map_err(|e| backend("cannot read an assignment", e))?;
                Ok::<_, StoreError>(
                    entry
                        .filter(|e| e.operation == kv::Operation::Put)
                        .map(|e| (key, e.value)),
                )
            }
        });
        let mut entries = Vec::new();
        let mut results = futures_util::stream::iter(reads).buffer_unordered(32);
        while let Some(found) = results.next().await {
            entries.extend(found?);
        }
        Ok(entries)
    }

    pub(super) async fn create(&self, doc: &Assignment) -> Result<(), StoreError> {
        if doc.is_open() {
            self.index_open(&doc.id).await?;
        }
        let key = self.doc_key(&doc.id);
        let bytes = encode(doc);
        let mut retried = false;
        loop {
            match self.inner.kv.create(&key, bytes.clone().into()).await {
                Ok(_) => return Ok(()),
                // A retry after an ambiguous failure finds its own write: ids are random.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    return if retried {
                        Ok(())
                    } else {
                        Err(StoreError::AlreadyExists(doc.id.clone()))
                    };
                }
                Err(e) if !retried => {
                    tracing::warn!(%e, "assignment create failed; retrying once");
                    retried = true;
                }
                Err(e) => return Err(backend("cannot store the assignment", e)),
            }
        }
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<(Assignment, u64)>, StoreError> {
        let key = self.doc_key(id);
        match self
            .inner
            .kv
            .entry(&key)
            .await
            .map_err(|e| backend("cannot read an assignment", e))?
        {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((decode(&key, &entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The one CAS primitive: a KV update conditioned on the entry's revision.
    pub(super) fn max_document(&self) -> usize {
        // Room for the message's headers and subject within the server's max_payload.
        let server = (self.inner.client.server_info().max_payload).saturating_sub(8 * 1024);
        self.inner
            .max_document
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(server)
    }

    pub(super) fn notify(&self) -> &std::sync::atomic::AtomicU8 {
        &self.inner.notify
    }

    pub(super) fn set_max_document(&self, bytes: usize) {
        self.inner
            .max_document
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) async fn cas(
        &self,
        revision: u64,
        id: &str,
        bytes: Vec<u8>,
        open: bool,
        was_open: bool,
    ) -> Result<Cas, StoreError> {
        // Opening a finished document: its index entry goes first.
        if open && !was_open {
            self.index_open(id).await?;
        }
        match self
            .inner
            .kv
            .update(self.doc_key(id), bytes.into(), revision)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                return Ok(Cas::Conflict)
            }
            Err(e) => return Err(backend("cannot write an assignment", e)),
        }
        if open && !was_open {
            // Again, in case a writer that finished it removed the entry in between.
            self.index_open(id).await?;
        } else if !open && was_open {
            // Best effort: an entry left behind is harmless and dropped by the next listing.
            if let Err(e) = self.unindex(id).await {
                tracing::debug!(%e, "cannot unindex a finished assignment");
            }
        }
        Ok(Cas::Done)
    }

    pub(super) async fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        for (key, value) in self.entries().await? {
            listing.push(&key, &value);
        }
        Ok(listing)
    }

    /// Every document, as stored.
    pub(super) async fn entries(&self) -> Result<Vec<(String, bytes::Bytes)>, StoreError> {
        let filter = format!("$KV.{BUCKET}.{}.asg.*", self.inner.ns);
        let stream = self
            .inner
            .js
            .get_stream(format!("KV_{BUCKET}"))
            .await
            .map_err(|e| backend("cannot read the state bucket", e))?;
        let mut subjects = stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| backend("cannot list assignments", e))?;
        // A watch on a prefix with no keys never yields: find out first.
        if subjects.next().await.is_none() {
            return Ok(Vec::new());
        }
        let mut watch = self
            .inner
            .kv
            .watch_with_history(format!("{}.asg.*", self.inner.ns))
            .await
            .map_err(|e| backend("cannot list assignments", e))?;
        let mut entries = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .map_err(|_| backend("cannot list assignments", "timed out"))?;
            let Some(entry) = next else { break };
            let entry = entry.map_err(|e| backend("cannot list assignments", e))?;
            if entry.operation == kv::Operation::Put {
                entries.push((entry.key, entry.value));
            }
            if entry.delta == 0 {
                break;
            }
        }
        Ok(entries)
    }

    pub(super) async fn put_raw(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        // Whatever it holds, it is listed (and reported when it does not decode).
        self.index_open(id).await?;
        self.inner
            .kv
            .put(self.doc_key(id), bytes.to_vec().into())
            .await
            .map(|_| ())
            .map_err(|e| backend("cannot write an assignment", e))
    }

    pub(super) async fn get_state(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self
            .inner
            .kv
            .entry(self.key("state", key))
            .await
            .map_err(|e| backend("cannot read a state record", e))?
        {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((entry.value.to_vec(), entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The state records' CAS: a KV create, or an update conditioned on the revision read.
    pub(super) async fn put_state(
        &self,
        key: &str,
        expected: Option<u64>,
        bytes: Vec<u8>,
    ) -> Result<Cas, StoreError> {
        let key = self.key("state", key);
        match expected {
            None => match self.inner.kv.create(&key, bytes.into()).await {
                Ok(_) => Ok(Cas::Done),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Cas::Conflict),
                Err(e) => Err(backend("cannot write a state record", e)),
            },
            Some(revision) => match self.inner.kv.update(&key, bytes.into(), revision).await {
                Ok(_) => Ok(Cas::Done),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Cas::Conflict),
                Err(e) => Err(backend("cannot write a state record", e)),
            },
        }
    }

    pub(super) async fn put_blob(&self, key: &BlobKey, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner
            .kv
            .put(self.blob_key(key), bytes.to_vec().into())
            .await
            .map(|_| ())
            .map_err(|e| backend("cannot store a text", e))
    }

    pub(super) async fn get_blob(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner
            .kv
            .get(self.blob_key(key))
            .await
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| backend("cannot read a text", e))
    }

    /// Subscribes to document changes: once it returns, every later write is delivered (the
    /// first subscriber waits for the watch to be established).
    pub(super) async fn subscribe(&self) -> broadcast::Receiver<Change> {
        let receiver = self.inner.changes.subscribe();
        self.inner
            .watcher
            .get_or_init(|| async {
                let prefix = format!("{}.asg.*", self.inner.ns);
                let first = match self.inner.kv.watch(&prefix).await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(%e, "cannot watch assignments; retrying");
                        None
                    }
                };
                let store = self.clone();
                tokio::spawn(async move { store.watch_loop(first).await });
            })
            .await;
        receiver
    }

    /// Feeds the change channel from a KV watch of new writes (subscribers list what exists
    /// themselves, after subscribing); after an error it watches again and sends the open
    /// documents, which may have changed in the gap.
    async fn watch_loop(self, mut first: Option<kv::Watch>) {
        let prefix = format!("{}.asg.*", self.inner.ns);
        let mut pause = Duration::from_millis(100);
        let mut resync = first.is_none();
        loop {
            let watch = match first.take() {
                Some(w) => Ok(w),
                None => self.inner.kv.watch(&prefix).await,
            };
            match watch {
                Ok(mut watch) => {
                    pause = Duration::from_millis(100);
                    if std::mem::take(&mut resync) {
                        match self.list_open().await {
                            Ok(listing) => {
                                for doc in listing.docs {
                                    // Why: no receiver only means nobody is listening now.
                                    drop(self.inner.changes.send(Change {
                                        doc: std::sync::Arc::new(doc),
                                    }));
                                }
                            }
                            Err(e) => tracing::warn!(%e, "cannot resync the change feed"),
                        }
                    }
                    while let Some(entry) = watch.next().await {
                        match entry {
                            Ok(entry) if entry.operation == kv::Operation::Put => {
                                match decode(&entry.key, &entry.value) {
                                    // Why: no receiver only means nobody is listening now.
                                    Ok(doc) => drop(self.inner.changes.send(Change {
                                        doc: std::sync::Arc::new(doc),
                                    })),
                                    Err(e) => {
                                        tracing::error!(%e, "undecodable document in change feed")
                                    }
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(%e, "assignment watch failed; watching again");
                                resync = true;
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot watch assignments; retrying");
                    resync = true;
                }
            }
            if self.inner.changes.receiver_count() == 0 {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// The subject of one attempt's live events (`raw`: of its transcript lines).
    pub fn live_subject(&self, aid: &str, jid: &str, attempt: u32, raw: bool) -> String {
        let kind = if raw { "wfraw" } else { "wfev" };
        format!("{kind}.{}.{aid}.{jid}.{attempt}", self.inner.ns)
    }

    /// The live event stream, created on first use.
    async fn events_stream(&self) -> Result<&stream::Stream, StoreError> {
        self.inner
            .events
            .get_or_try_init(|| async {
                self.inner
                    .js
                    .get_or_create_stream(stream::Config {
                        name: EVENTS_STREAM.to_string(),
                        subjects: vec!["wfev.>".to_string(), "wfraw.>".to_string()],
                        max_bytes: EVENTS_MAX_BYTES,
                        max_age: EVENTS_MAX_AGE,
                        discard: stream::DiscardPolicy::Old,
                        num_replicas: self.inner.replicas,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| backend("cannot create the live event stream", e))
            })
            .await
    }

    /// Publishes one live message; its acknowledgement comes later.
    pub async fn publish_live(
        &self,
        subject: String,
        payload: Vec<u8>,
    ) -> Result<LiveAck, StoreError> {
        self.events_stream().await?;
        self.inner
            .js
            .publish(subject, payload.into())
            .await
            .map(LiveAck)
            .map_err(|e| backend("cannot publish a live event", e))
    }

    /// Whether a live subject holds any message.
    pub async fn live_subject_empty(&self, subject: &str) -> Result<bool, StoreError> {
        let stream = self.events_stream().await?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(true),
            Err(e) => Err(backend("cannot read the live event stream", e)),
        }
    }

    /// Every message of a live subject from the first, then each new one as it comes.
    pub async fn live_messages(&self, subject: &str) -> Result<LiveMessages, StoreError> {
        let stream = self.events_stream().await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.inner.client.new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| backend("cannot read the live event stream", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| backend("cannot read the live event stream", e))?;
        Ok(LiveMessages { messages })
    }

    /// Publishes a wake-up token for `aid`, deduplicated by `msg_id` within the server's window.
    pub async fn publish_token(&self, aid: &str, msg_id: &str) -> Result<(), StoreError> {
        let msg = jetstream::message::PublishMessage::build()
            .payload(aid.to_string().into())
            .message_id(msg_id);
        self.inner
            .js
            .send_publish(format!("wfq.{}.{aid}", self.inner.ns), msg)
            .await
            .map_err(|e| backend("cannot publish a wake-up token", e))?
            .await
            .map(|_| ())
            .map_err(|e| backend("cannot publish a wake-up token", e))
    }

    /// The namespace's durable pull consumer, created if needed with `ack_wait = lease`.
    pub async fn consumer(&self, lease: Duration) -> Result<consumer::PullConsumer, StoreError> {
        let name = format!("run_{}", self.inner.ns);
        let stream = self
            .inner
            .js
            .get_stream(QUEUE_STREAM)
            .await
            .map_err(|e| backend("cannot open the token stream", e))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("wfq.{}.>", self.inner.ns),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: lease,
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| backend("cannot create the namespace's consumer", e))?;
        let mut consumer = consumer;
        if let Ok(info) = consumer.info().await {
            if info.config.ack_wait != lease {
                tracing::warn!(
                    consumer = %name,
                    existing = ?info.config.ack_wait,
                    lease = ?lease,
                    "the consumer's ack_wait differs from this runner's leaseMs; all runners of a namespace should use the same leaseMs"
                );
            }
        }
        Ok(consumer)
    }
}

/// The KV stream, created by hand (as `create_key_value` would) so that servers before 2.10.8
/// work, and without direct gets so that reads in a cluster come from the leader.
async fn ensure_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, StoreError> {
    if let Ok(kv) = js.get_key_value(BUCKET).await {
        return Ok(kv);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{BUCKET}"),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 8,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| backend("cannot create the state bucket", e))?;
    js.get_key_value(BUCKET)
        .await
        .map_err(|e| backend("cannot open the state bucket", e))
}

async fn ensure_queue(js: &jetstream::Context, replicas: usize) -> Result<(), StoreError> {
    js.get_or_create_stream(stream::Config {
        name: QUEUE_STREAM.to_string(),
        subjects: vec!["wfq.>".to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| backend("cannot create the token stream", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.9.10"), (2, 9, 10));
        assert_eq!(parse_version("2.12.0-beta.1"), (2, 12, 0));
        assert_eq!(parse_version("v2.15.1"), (2, 15, 1));
        assert!(parse_version("2.9.10") < (2, 10, 8));
    }

    #[test]
    fn replicated_buckets_need_a_server_with_serialised_cas() {
        assert!(check_cas_safe("2.9.10", 1).is_ok());
        assert!(check_cas_safe("2.11.0", 3).is_ok());
        assert!(check_cas_safe("2.15.1", 3).is_ok());
        let err = check_cas_safe("2.9.10", 3).unwrap_err().to_string();
        assert!(err.contains("nats-server 2.9.10 cannot hold"), "{err}");
        assert!(
            err.contains("3 replicas") && err.contains("2.11.0"),
            "{err}"
        );
        assert!(check_cas_safe("2.10.29", 2).is_err());
        let err = check_cas_safe("2.8.4", 1).unwrap_err().to_string();
        assert!(err.contains("too old"), "{err}");
    }
}
