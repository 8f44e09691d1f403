//! The store contract (DESIGN §3), the same for every backend.
//!
//! One document per assignment; every change is a compare-and-swap on that document's
//! version, retried on conflict with the preconditions checked again ([`Store::update`]).
//! Large immutable texts (job contexts, results) are blobs written *before* the CAS that links
//! them. A mutation is durable when the call returns. Changes are announced on a broadcast
//! channel ([`Store::subscribe`]) so that a runner never polls.
//!
//! Each backend implements exactly one CAS primitive (`cas`); everything else is shared.
//!
//! After every write that leaves an assignment with work to claim, the store *announces* it:
//! the NATS backend publishes a wake-up token (strictly after the CAS); the embedded backend
//! needs nothing, its change feed wakes the one runner.

pub mod nats;
pub mod sled;
pub mod wakeup;

use tokio::sync::broadcast;

use wf_core::chain::{self, LeaseView, NotifySet, Readiness};
use wf_core::clock::now_ms;
use wf_core::model::{Assignment, SCHEMA_VERSION};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The assignment does not exist.
    #[error("no assignment {0}")]
    NotFound(String),
    /// An assignment with this id already exists.
    #[error("assignment {0} already exists")]
    AlreadyExists(String),
    /// The database is locked by another process.
    #[error("the store at {path} is in use by another process (is a wf-runner running?)")]
    Locked {
        /// Database path.
        path: String,
    },
    /// A stored value does not decode.
    #[error("stored document {key} is unreadable: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's complaint.
        message: String,
    },
    /// A newer wf wrote the document, in a shape this one does not know: it is left alone.
    #[error(
        "stored document {key} has schema version {version}, newer than this wf reads \
         ({SCHEMA_VERSION}): a newer wf wrote it; upgrade this wf (the document is left alone)"
    )]
    Newer {
        /// The key.
        key: String,
        /// Its schema version.
        version: u32,
    },
    /// The document would be larger than the store accepts.
    #[error(
        "assignment {key} would be {size} bytes, over the store's limit of {limit} bytes \
         (maxDocumentBytes; NATS messages are at most the server's max_payload)"
    )]
    TooLarge {
        /// The key.
        key: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Anything else from the backend.
    #[error("store error: {0}")]
    Backend(String),
}

/// Keys of blobs (immutable texts linked from documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobKey {
    /// A job's context.
    Context {
        /// Assignment.
        assignment: String,
        /// Job.
        job: String,
    },
    /// The result text of one attempt of a job.
    Result {
        /// Assignment.
        assignment: String,
        /// Job.
        job: String,
        /// Attempt number.
        attempt: u32,
    },
    /// A segment of archived jobs (`wf_core::chain::Segment`).
    Archive {
        /// Assignment.
        assignment: String,
        /// The segment's name, as the document lists it.
        segment: String,
    },
}

impl BlobKey {
    /// The key as a string with `sep` between its parts.
    pub fn render(&self, sep: char) -> String {
        match self {
            BlobKey::Context { assignment, job } => format!("ctx{sep}{assignment}{sep}{job}"),
            BlobKey::Result {
                assignment,
                job,
                attempt,
            } => {
                format!("res{sep}{assignment}{sep}{job}{sep}{attempt}")
            }
            BlobKey::Archive {
                assignment,
                segment,
            } => format!("arc{sep}{assignment}{sep}{segment}"),
        }
    }
}

/// A document changed (or was seen for the first time after a resync).
#[derive(Debug, Clone)]
pub struct Change {
    /// The document as written. Shared, so that the channel's slots stay small: a slot per
    /// change a slow subscriber may fall behind by is allocated up front.
    pub doc: std::sync::Arc<Assignment>,
}

/// The result of the CAS primitive.
#[derive(Debug)]
pub enum Cas {
    /// Written.
    Done,
    /// The stored version is not the expected one.
    Conflict,
}

/// An update closure refused to change the document.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The closure's error: nothing was written.
    #[error(transparent)]
    Refused(E),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store backend.
#[derive(Clone)]
pub enum Store {
    /// Embedded sled database, owned by one process.
    Sled(sled::SledStore),
    /// NATS JetStream, shared by many runners and CLIs.
    Nats(nats::NatsStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Store {
    /// `sled` or `nats`.
    pub fn describe(&self) -> &'static str {
        match self {
            Store::Sled(_) => "sled",
            Store::Nats(_) => "nats",
        }
    }

    /// True when only one runner can use the store (a lease of another runner id is dead).
    pub fn exclusive(&self) -> bool {
        match self {
            Store::Sled(_) => true,
            Store::Nats(_) => false,
        }
    }

    /// Stores a new document; fails if the id exists.
    pub async fn create(&self, doc: &Assignment) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.create(doc).await?,
            Store::Nats(s) => s.create(doc).await?,
        }
        self.announce(doc, &doc.version.to_string()).await;
        Ok(())
    }

    /// The document.
    pub async fn get(&self, id: &str) -> Result<Option<Assignment>, StoreError> {
        Ok(self.get_rev(id).await?.map(|(doc, _)| doc))
    }

    /// The document and the backend's revision of it (what [`Store::update`] compares).
    async fn get_rev(&self, id: &str) -> Result<Option<(Assignment, u64)>, StoreError> {
        match self {
            Store::Sled(s) => Ok(s.get(id)?.map(|d| {
                let v = d.version;
                (d, v)
            })),
            Store::Nats(s) => s.get(id).await,
        }
    }

    /// Every readable document of the namespace. Documents that do not decode (corrupt, or
    /// written by a newer wf) are skipped with a warning in the log: one bad document never
    /// stops a namespace. [`Store::list_all`] tells which.
    pub async fn list(&self) -> Result<Vec<Assignment>, StoreError> {
        let listing = self.list_all().await?;
        for u in &listing.unreadable {
            tracing::warn!(key = %u.key, reason = %u.reason, "skipped an unreadable document");
        }
        Ok(listing.docs)
    }

    /// The open documents (`Assignment::is_open`): not complete, or with a lease or notices
    /// left. Read through an index, so their number, not the namespace's, sets the cost: what
    /// runners load, and every list that cannot include a complete assignment. Unreadable
    /// documents are skipped with a warning, as by [`Store::list`].
    pub async fn list_open(&self) -> Result<Vec<Assignment>, StoreError> {
        let listing = match self {
            Store::Sled(s) => s.list_open()?,
            Store::Nats(s) => s.list_open().await?,
        };
        for u in &listing.unreadable {
            tracing::warn!(key = %u.key, reason = %u.reason, "skipped an unreadable document");
        }
        Ok(listing
            .docs
            .into_iter()
            .filter(Assignment::is_open)
            .collect())
    }

    /// The documents as stored, with their heads, decoding only the heads: the open ones (read
    /// through the index, as by [`Store::list_open`]) or all. What `wf assignments --json`
    /// prints: building every document only to encode it again costs several times more. A
    /// document that is not JSON, lacks a head field or comes from a newer wf is skipped as by
    /// [`Store::list`].
    pub async fn list_stored(&self, open: bool) -> Result<Vec<Stored>, StoreError> {
        let mut docs = Vec::new();
        match (self, open) {
            (Store::Sled(s), true) => s.open_entries(|k, v| docs.extend(Stored::read(k, v)))?,
            (Store::Sled(s), false) => s.entries(|k, v| docs.extend(Stored::read(k, v)))?,
            (Store::Nats(s), open) => {
                let entries = if open {
                    s.open_entries().await?
                } else {
                    s.entries().await?
                };
                docs.extend(entries.iter().filter_map(|(k, v)| Stored::read(k, v)));
            }
        }
        Ok(docs)
    }

    /// Every document's id, without reading the documents (to resolve an id prefix).
    pub async fn ids(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sled(s) => s.ids(),
            Store::Nats(s) => s.ids().await,
        }
    }

    /// Every document of the namespace, readable or not.
    pub async fn list_all(&self) -> Result<Listing, StoreError> {
        match self {
            Store::Sled(s) => s.list(),
            Store::Nats(s) => s.list().await,
        }
    }

    /// Writes `bytes` as the document `id`, bypassing every check and the CAS. Only for
    /// fault-injection tests (a corrupt document, one from a newer wf); wf itself never calls
    /// it.
    #[doc(hidden)]
    pub async fn put_raw(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_raw(id, bytes).await,
            Store::Nats(s) => s.put_raw(id, bytes).await,
        }
    }

    /// The CAS primitive: replaces the document `id` with `bytes` if its stored revision is
    /// still `rev`, and keeps the open index true (`open`: the new document is open; `was_open`:
    /// the one it replaces was).
    async fn cas(
        &self,
        rev: u64,
        id: &str,
        bytes: Vec<u8>,
        open: bool,
        was_open: bool,
    ) -> Result<Cas, StoreError> {
        match self {
            Store::Sled(s) => s.cas(rev, id, bytes, open).await,
            Store::Nats(s) => s.cas(rev, id, bytes, open, was_open).await,
        }
    }

    /// On NATS, how far this machine's clock is from the server's (ms, positive: ahead) and
    /// the measurement's uncertainty; `None` for the embedded store, which one machine owns.
    pub async fn clock_skew(&self, probe: &str) -> Option<Result<(i64, u64), StoreError>> {
        match self {
            Store::Sled(_) => None,
            Store::Nats(s) => Some(s.clock_skew(probe).await),
        }
    }

    /// The largest encoded document this store accepts.
    pub fn max_document(&self) -> usize {
        match self {
            Store::Sled(s) => s.max_document(),
            Store::Nats(s) => s.max_document(),
        }
    }

    /// Sets the largest encoded document to accept (config `maxDocumentBytes`; on NATS never
    /// more than the server's `max_payload` allows).
    pub fn set_max_document(&self, bytes: usize) {
        match self {
            Store::Sled(s) => s.set_max_document(bytes),
            Store::Nats(s) => s.set_max_document(bytes),
        }
    }

    /// Applies what the configuration says about writes: the largest document
    /// (`maxDocumentBytes`) and the notifications writes record (`notify`).
    pub fn configure(&self, config: &wf_core::config::Config) {
        self.set_max_document(config.max_document_bytes);
        self.set_notify(wf_core::config::notify_set(&config.notify));
    }

    /// Which notifications writes record in the documents' outboxes (config `notify`: the
    /// events some hook wants; none by default).
    pub fn set_notify(&self, events: NotifySet) {
        self.notify_bits()
            .store(events.bits(), std::sync::atomic::Ordering::Relaxed);
    }

    fn notify_set(&self) -> NotifySet {
        NotifySet::from_bits(
            self.notify_bits()
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn notify_bits(&self) -> &std::sync::atomic::AtomicU8 {
        match self {
            Store::Sled(s) => s.notify(),
            Store::Nats(s) => s.notify(),
        }
    }

    /// Writes a blob. Blobs are immutable: writing the same key again must be harmless.
    pub async fn put_blob(&self, key: &BlobKey, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_blob(key, bytes),
            Store::Nats(s) => s.put_blob(key, bytes).await,
        }
    }

    /// Reads a blob.
    pub async fn get_blob(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Sled(s) => s.get_blob(key),
            Store::Nats(s) => s.get_blob(key).await,
        }
    }

    /// Document changes, as they are written from the moment this returns (what exists
    /// already, subscribers read themselves).
    pub async fn subscribe(&self) -> broadcast::Receiver<Change> {
        match self {
            Store::Sled(s) => s.subscribe(),
            Store::Nats(s) => s.subscribe().await,
        }
    }

    /// Wakes a runner for `doc` if it has work to claim now. On NATS this publishes a token
    /// whose message id is `<ns>.<aid>.<tag>`, so that writers announcing the same document
    /// version produce one token. A failed announcement is only logged: every runner's sweeper
    /// finds runnable assignments without a token.
    pub async fn announce(&self, doc: &Assignment, tag: &str) {
        let Store::Nats(s) = self else { return };
        let view = LeaseView {
            now: wf_core::clock::now_ms(),
            me: "",
            exclusive: false,
        };
        if !matches!(chain::readiness(doc, &view), Readiness::Ready(_)) {
            return;
        }
        let msg_id = wakeup::message_id(&doc.namespace, &doc.id, tag);
        if let Err(e) = s.publish_token(&doc.id, &msg_id).await {
            tracing::warn!(assignment = %doc.id, %e, "wake-up token not published; a sweeper will");
        }
    }

    /// Applies `f` to the document by compare-and-swap, retrying on conflicts. `f` runs
    /// against a fresh copy each time and may refuse (nothing is written). Returns the document
    /// as written and `f`'s value. `f` returning `Ok` without changing anything still writes
    /// (and bumps the version); callers refuse instead when there is nothing to do.
    pub async fn update<T, E>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Assignment) -> Result<T, E>,
    ) -> Result<(Assignment, T), UpdateError<E>> {
        loop {
            let (current, rev) = self
                .get_rev(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let mut doc = current.clone();
            let value = f(&mut doc).map_err(UpdateError::Refused)?;
            doc.version = current.version + 1;
            // The notice goes in with the change it reports (crash-safe, chain::notify).
            chain::note_transitions(&current, &mut doc, self.notify_set(), now_ms());
            // A document is written at the version its shape needs (ARCHITECTURE.md).
            doc.schema_version = doc.schema_version.max(doc.required_schema_version());
            let bytes = encode(&doc);
            let limit = self.max_document();
            if bytes.len() > limit {
                return Err(UpdateError::Store(StoreError::TooLarge {
                    key: id.to_string(),
                    size: bytes.len(),
                    limit,
                }));
            }
            match self
                .cas(rev, id, bytes, doc.is_open(), current.is_open())
                .await?
            {
                Cas::Done => {
                    self.announce(&doc, &doc.version.to_string()).await;
                    return Ok((doc, value));
                }
                Cas::Conflict => continue,
            }
        }
    }
}

impl Store {
    /// A state record beside the assignments (a trigger's: its last slot, its counters), as
    /// JSON, with the version its compare-and-swap compares.
    async fn get_state(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self {
            Store::Sled(s) => s.get_state(key),
            Store::Nats(s) => s.get_state(key).await,
        }
    }

    /// Writes state record `key` if its version is still `expected` (`None`: it must not
    /// exist yet). Durable before it returns, like every write.
    async fn put_state(
        &self,
        key: &str,
        expected: Option<u64>,
        bytes: Vec<u8>,
    ) -> Result<Cas, StoreError> {
        match self {
            Store::Sled(s) => s.put_state(key, expected, bytes).await,
            Store::Nats(s) => s.put_state(key, expected, bytes).await,
        }
    }

    /// State record `key`, decoded (`None` when it does not exist).
    pub async fn state<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get_state(key).await? {
            None => Ok(None),
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key: key.to_string(),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Changes state record `key` by compare-and-swap, as [`Store::update`] does documents:
    /// `f` gets the current value (`None`: none yet) and returns the new one, or refuses.
    /// Key: `[a-z0-9_-]` and `.`, at most 200 bytes.
    pub async fn update_state<S, T, E>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<S>) -> Result<(S, T), E>,
    ) -> Result<(S, T), UpdateError<E>>
    where
        S: serde::Serialize + serde::de::DeserializeOwned,
    {
        let ok = !key.is_empty()
            && key.len() <= 200
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !ok {
            return Err(UpdateError::Store(StoreError::Backend(format!(
                "state key {key:?}: use a-z, 0-9, -, _ and ."
            ))));
        }
        loop {
            let current = self.get_state(key).await?;
            let (value, expected) = match current {
                None => (None, None),
                Some((bytes, version)) => {
                    let value =
                        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                            key: key.to_string(),
                            message: e.to_string(),
                        })?;
                    (Some(value), Some(version))
                }
            };
            let (new, out) = f(value).map_err(UpdateError::Refused)?;
            let bytes = serde_json::to_vec(&new).expect("state records encode");
            match self.put_state(key, expected, bytes).await? {
                Cas::Done => return Ok((new, out)),
                Cas::Conflict => continue,
            }
        }
    }
}

/// Decodes a stored document: one of a schema this wf reads, or the reason it cannot
/// ([`StoreError::Newer`] when a newer wf wrote it, [`StoreError::Corrupt`] otherwise).
pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Assignment, StoreError> {
    decode_as(key, bytes, |d: &Assignment| d.schema_version)
}

/// [`decode`] into `T`, whose schema version `version` tells.
fn decode_as<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, StoreError> {
    let newer = |version: u32| StoreError::Newer {
        key: key.to_string(),
        version,
    };
    match serde_json::from_slice::<T>(bytes) {
        Ok(doc) if version(&doc) > SCHEMA_VERSION => Err(newer(version(&doc))),
        Ok(doc) => Ok(doc),
        Err(e) => {
            // Only on failure, so the common path parses once: was it written by a newer wf?
            #[derive(serde::Deserialize)]
            struct Probe {
                #[serde(rename = "schemaVersion")]
                schema_version: Option<u32>,
            }
            match serde_json::from_slice::<Probe>(bytes) {
                Ok(Probe {
                    schema_version: Some(v),
                }) if v > SCHEMA_VERSION => Err(newer(v)),
                _ => Err(StoreError::Corrupt {
                    key: key.to_string(),
                    message: e.to_string(),
                }),
            }
        }
    }
}

/// The fields a listing filters and orders by, read from a stored document without building
/// the rest of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// Its schema version (1 when absent).
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// The assignment id.
    pub id: String,
    /// Where it stands.
    pub status: wf_core::model::AssignmentStatus,
    /// When it was created.
    pub created_at: wf_core::model::Millis,
}

/// A document as stored (compact JSON), with its [`Head`].
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its head.
    pub head: Head,
    /// The document's JSON, as stored.
    pub json: String,
}

impl Stored {
    /// Reads the head of `bytes`; skipped (the reason in the log) when it is not the JSON of
    /// an assignment this wf reads.
    fn read(key: &str, bytes: &[u8]) -> Option<Stored> {
        let read =
            decode_as(key, bytes, |h: &Head| h.schema_version.unwrap_or(1)).and_then(|head| {
                match std::str::from_utf8(bytes) {
                    Ok(json) => Ok(Stored {
                        head,
                        json: json.to_string(),
                    }),
                    Err(e) => Err(StoreError::Corrupt {
                        key: key.to_string(),
                        message: e.to_string(),
                    }),
                }
            });
        match read {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::warn!(%key, reason = %e, "skipped an unreadable document");
                None
            }
        }
    }
}

/// A stored document that [`Store::list_all`] skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    /// Its key in the store.
    pub key: String,
    /// Its schema version, when a newer wf wrote it.
    pub newer_schema: Option<u32>,
    /// Why it was skipped.
    pub reason: String,
}

/// Every document of a namespace that decodes, and the ones that do not.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The documents.
    pub docs: Vec<Assignment>,
    /// The documents that were skipped, with the reason.
    pub unreadable: Vec<Unreadable>,
}

impl Listing {
    /// Adds one decoded (or undecodable) document. A key-level failure is skipped, never
    /// fatal to the listing.
    pub(crate) fn push(&mut self, key: &str, bytes: &[u8]) {
        match decode(key, bytes) {
            Ok(doc) => self.docs.push(doc),
            Err(e) => self.unreadable.push(Unreadable {
                key: key.to_string(),
                newer_schema: match &e {
                    StoreError::Newer { version, .. } => Some(*version),
                    _ => None,
                },
                reason: e.to_string(),
            }),
        }
    }
}

/// Encodes a document.
pub(crate) fn encode(doc: &Assignment) -> Vec<u8> {
    serde_json::to_vec(doc).expect("documents always serialise")
}
