//! The embedded backend: sled 0.34.7, owned by one process.
//!
//! sled keeps writes in user space until a flush, so every mutation is flushed before it
//! returns (a `kill -9` loses un-flushed writes; see research/store-design.md §3.3). Flushes go
//! through one dedicated thread that serves every waiting request with one `Db::flush` (group
//! commit): concurrent `flush_async` calls can deadlock sled 0.34, whose IO thread pool fills up
//! with flushes that wait for a buffer write only that pool can do. The
//! database is file-locked by one process: the runner owns it while it runs, and the CLI opens
//! it only when no runner is running. Change notifications come from `watch_prefix`, drained by
//! a dedicated thread into a broadcast channel so that a slow subscriber never blocks writers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{decode, encode, BlobKey, Cas, Change, Listing, StoreError};
use wf_core::ids::Namespace;
use wf_core::model::Assignment;

/// The key in the open tree saying that it indexes every document (a store written before the
/// index existed is indexed once, at its first open).
const INDEXED: &[u8] = b"\x00indexed";

/// sled's page cache. Its default (1 GiB) keeps every page a runner ever read: with months of
/// finished assignments that is most of the database. The open documents a runner works on
/// fit many times over.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Capacity of the change channel; a subscriber that falls further behind must resync.
const CHANGES_CAPACITY: usize = 4096;

/// A sled database opened for one namespace.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

/// A request to the flush thread, answered once the flush that covers it is done.
type FlushRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

struct Inner {
    flushes: std::sync::Mutex<std::sync::mpsc::Sender<FlushRequest>>,
    docs: sled::Tree,
    /// The ids of the open documents (`Assignment::is_open`), kept in the same transaction as
    /// the documents, plus [`INDEXED`] once it covers every document.
    open: sled::Tree,
    blobs: sled::Tree,
    /// State records: an 8-byte big-endian version, then the JSON.
    states: sled::Tree,
    changes: broadcast::Sender<Change>,
    watcher: OnceLock<()>,
    path: PathBuf,
    max_document: std::sync::atomic::AtomicUsize,
    /// The notifications writes record (`NotifySet` bits; config `notify`).
    notify: std::sync::atomic::AtomicU8,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Builds the open index of a store written before it existed: every open document, and every
/// one that does not decode (so that it is still seen, and reported).
fn index_open(docs: &sled::Tree, open: &sled::Tree) -> Result<(), StoreError> {
    for item in docs.iter() {
        let (key, value) = item.map_err(backend)?;
        let is_open = decode(&String::from_utf8_lossy(&key), &value).map_or(true, |d| d.is_open());
        if is_open {
            open.insert(key, &[]).map_err(backend)?;
        }
    }
    open.insert(INDEXED, &[]).map_err(backend)?;
    open.flush().map_err(backend)?;
    Ok(())
}

/// Why a transaction over the documents and their index stopped.
enum TxStop {
    /// The document is not as expected.
    Conflict,
    /// It does not exist.
    Missing,
    /// The stored document does not decode.
    Bad(StoreError),
}

/// Longest wait for another process to finish opening the store.
const OPEN_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Holds `<path>/wf-open.lock` while sled opens the database (see [`SledStore::open`]).
fn open_lock(path: &Path, patience: Duration) -> Result<std::fs::File, StoreError> {
    let lock_path = path.join("wf-open.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", lock_path.display())))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Backend(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )))
            }
        }
    }
}

/// sled reports a held lock as an `Io` error that wraps `WouldBlock` in its message.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

/// The group-commit thread: waits for a request, takes every request queued by then, flushes
/// once, answers them all. It ends when the store is dropped.
fn spawn_flusher(db: sled::Db) -> Result<std::sync::mpsc::Sender<FlushRequest>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel::<FlushRequest>();
    std::thread::Builder::new()
        .name("wf-sled-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let result = db
                    .flush()
                    .map(|_| ())
                    .map_err(|e| format!("flush failed: {e}"));
                for w in waiting {
                    // Why: a waiter that gave up (its task was dropped) needs no answer.
                    let _ = w.send(result.clone());
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start the flush thread: {e}")))?;
    Ok(tx)
}

impl SledStore {
    /// Opens (or creates) the database at `path`. If another process holds it, retries until
    /// `wait` has passed, then fails with [`StoreError::Locked`].
    pub fn open(path: &Path, namespace: &Namespace, wait: Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create store directory {}: {e}",
                path.display()
            ))
        })?;
        let started = Instant::now();
        // sled 0.34 writes its `conf` file in two writes before it takes its own lock, so a
        // concurrent first open can read it half-written and call the store corrupt. wf's own
        // lock, held only while sled opens, orders the openers; the later one then finds sled's
        // lock taken, which is "wait", not "corrupt".
        let _opening = open_lock(path, wait.max(OPEN_LOCK_PATIENCE))?;
        let mut pause = Duration::from_millis(5);
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    if started.elapsed() >= wait {
                        return Err(StoreError::Locked {
                            path: path.display().to_string(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "cannot open store {}: {e}",
                        path.display()
                    )))
                }
            }
        };
        let docs = db.open_tree(format!("{namespace}/asg")).map_err(backend)?;
        let open = db.open_tree(format!("{namespace}/open")).map_err(backend)?;
        if !open.contains_key(INDEXED).map_err(backend)? {
            index_open(&docs, &open)?;
        }
        let blobs = db.open_tree(format!("{namespace}/blob")).map_err(backend)?;
        let states = db
            .open_tree(format!("{namespace}/state"))
            .map_err(backend)?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let flushes = std::sync::Mutex::new(spawn_flusher(db.clone())?);
        Ok(Self {
            inner: Arc::new(Inner {
                flushes,
                docs,
                open,
                blobs,
                states,
                changes,
                watcher: OnceLock::new(),
                path: path.to_path_buf(),
                max_document: std::sync::atomic::AtomicUsize::new(
                    wf_core::config::DEFAULT_MAX_DOCUMENT_BYTES,
                ),
                notify: std::sync::atomic::AtomicU8::new(0),
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Makes every write done so far durable.
    async fn flush(&self) -> Result<(), StoreError> {
        let gone = || StoreError::Backend("the store's flush thread is gone".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.inner.flushes.lock() {
            Ok(sender) => sender.send(tx).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(gone());
        }
        rx.await.map_err(|_| gone())?.map_err(StoreError::Backend)
    }

    pub(super) async fn create(&self, doc: &Assignment) -> Result<(), StoreError> {
        use sled::transaction::ConflictableTransactionError::Abort;
        use sled::Transactional as _;
        let bytes = encode(doc);
        let key = doc.id.as_bytes();
        let res = (&self.inner.docs, &self.inner.open).transaction(|(docs, open)| {
            if docs.get(key)?.is_some() {
                return Err(Abort(()));
            }
            docs.insert(key, bytes.as_slice())?;
            if doc.is_open() {
                open.insert(key, &[])?;
            }
            Ok(())
        });
        match res {
            Ok(()) => self.flush().await,
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(StoreError::AlreadyExists(doc.id.clone()))
            }
            Err(sled::transaction::TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    /// The open documents (by the index), decoded; those that do not decode are reported.
    pub(super) fn list_open(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        self.open_entries(|key, value| listing.push(key, value))?;
        Ok(listing)
    }

    /// Each open document (by the index), as stored.
    pub(super) fn open_entries(&self, mut each: impl FnMut(&str, &[u8])) -> Result<(), StoreError> {
        for item in self.inner.open.iter() {
            let (key, _) = item.map_err(backend)?;
            if key.as_ref() == INDEXED {
                continue;
            }
            if let Some(value) = self.inner.docs.get(&key).map_err(backend)? {
                each(&String::from_utf8_lossy(&key), &value);
            }
        }
        Ok(())
    }

    /// Each document, as stored.
    pub(super) fn entries(&self, mut each: impl FnMut(&str, &[u8])) -> Result<(), StoreError> {
        for item in self.inner.docs.iter() {
            let (key, value) = item.map_err(backend)?;
            each(&String::from_utf8_lossy(&key), &value);
        }
        Ok(())
    }

    /// Every document's id, without reading the documents.
    pub(super) fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.inner
            .docs
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(backend)
            })
            .collect()
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<Assignment>, StoreError> {
        match self.inner.docs.get(id.as_bytes()).map_err(backend)? {
            None => Ok(None),
            Some(bytes) => decode(id, &bytes).map(Some),
        }
    }

    pub(super) fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        self.entries(|key, value| listing.push(key, value))?;
        Ok(listing)
    }

    pub(super) async fn put_raw(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner
            .docs
            .insert(id.as_bytes(), bytes)
            .map_err(backend)?;
        // Whatever it holds, it is listed (and reported when it does not decode).
        self.inner
            .open
            .insert(id.as_bytes(), &[])
            .map_err(backend)?;
        self.flush().await
    }

    /// The one CAS primitive: sled's byte-wise compare-and-swap against the bytes whose version
    /// was checked.
    pub(super) fn max_document(&self) -> usize {
        self.inner
            .max_document
            .load(std::sync::atomic::Ordering::Relaxed)
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
        expected: u64,
        id: &str,
        bytes: Vec<u8>,
        open: bool,
    ) -> Result<Cas, StoreError> {
        use sled::transaction::ConflictableTransactionError::Abort;
        use sled::Transactional as _;
        let key = id.as_bytes();
        // One transaction over the document and the open index: they never disagree.
        let res = (&self.inner.docs, &self.inner.open).transaction(|(docs, index)| {
            let Some(current) = docs.get(key)? else {
                return Err(Abort(TxStop::Missing));
            };
            match decode(id, &current) {
                Ok(doc) if doc.version == expected => {}
                Ok(_) => return Err(Abort(TxStop::Conflict)),
                Err(e) => return Err(Abort(TxStop::Bad(e))),
            }
            docs.insert(key, bytes.as_slice())?;
            if open {
                index.insert(key, &[])?;
            } else {
                index.remove(key)?;
            }
            Ok(())
        });
        match res {
            Ok(()) => {
                self.flush().await?;
                Ok(Cas::Done)
            }
            Err(sled::transaction::TransactionError::Abort(TxStop::Conflict)) => Ok(Cas::Conflict),
            Err(sled::transaction::TransactionError::Abort(TxStop::Missing)) => {
                Err(StoreError::NotFound(id.to_string()))
            }
            Err(sled::transaction::TransactionError::Abort(TxStop::Bad(e))) => Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    pub(super) fn get_state(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let Some(raw) = self.inner.states.get(key.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        if raw.len() < 8 {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                message: "a state record shorter than its version".into(),
            });
        }
        let version = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        Ok(Some((raw[8..].to_vec(), version)))
    }

    /// The state records' CAS: sled's byte-wise compare-and-swap against the record whose
    /// version was read.
    pub(super) async fn put_state(
        &self,
        key: &str,
        expected: Option<u64>,
        bytes: Vec<u8>,
    ) -> Result<Cas, StoreError> {
        let current = self.inner.states.get(key.as_bytes()).map_err(backend)?;
        let version = current
            .as_ref()
            .filter(|c| c.len() >= 8)
            .map(|c| u64::from_be_bytes(c[..8].try_into().expect("8 bytes")));
        if version != expected {
            return Ok(Cas::Conflict);
        }
        let mut new = (expected.unwrap_or(0) + 1).to_be_bytes().to_vec();
        new.extend_from_slice(&bytes);
        let res = self
            .inner
            .states
            .compare_and_swap(key.as_bytes(), current, Some(new))
            .map_err(backend)?;
        if res.is_err() {
            return Ok(Cas::Conflict);
        }
        self.flush().await?;
        Ok(Cas::Done)
    }

    pub(super) fn put_blob(&self, key: &BlobKey, bytes: &[u8]) -> Result<(), StoreError> {
        // Durable with the flush of the CAS that links it, which always follows.
        self.inner
            .blobs
            .insert(key.render('/').as_bytes(), bytes)
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn get_blob(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .blobs
            .get(key.render('/').as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        let receiver = self.inner.changes.subscribe();
        self.inner.watcher.get_or_init(|| {
            let subscriber = self.inner.docs.watch_prefix(Vec::new());
            let changes = self.inner.changes.clone();
            std::thread::Builder::new()
                .name("wf-sled-watch".into())
                .spawn(move || {
                    for event in subscriber {
                        if let sled::Event::Insert { key, value } = event {
                            match decode(&String::from_utf8_lossy(&key), &value) {
                                // Why: no receiver only means nobody is listening right now.
                                Ok(doc) => drop(changes.send(Change {
                                    doc: std::sync::Arc::new(doc),
                                })),
                                Err(e) => {
                                    tracing::error!(%e, "undecodable document in change feed")
                                }
                            }
                        }
                    }
                })
                .expect("spawning the sled watcher thread");
        });
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wf_core::model::AssignmentStatus;

    fn doc(id: &str, status: AssignmentStatus) -> Assignment {
        let mut d = wf_core::chain::new_assignment(id.into(), "t", "north".into(), 10, true, 1);
        d.status = status;
        d
    }

    #[tokio::test]
    async fn a_store_written_before_the_open_index_is_indexed_at_its_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::new("t").unwrap();
        {
            let store = SledStore::open(dir.path(), &ns, Duration::ZERO).unwrap();
            store
                .create(&doc("aaaaaaaaaaaa", AssignmentStatus::Complete))
                .await
                .unwrap();
            store
                .create(&doc("bbbbbbbbbbbb", AssignmentStatus::Active))
                .await
                .unwrap();
            let open: Vec<String> = store
                .list_open()
                .unwrap()
                .docs
                .into_iter()
                .map(|d| d.id)
                .collect();
            assert_eq!(open, ["bbbbbbbbbbbb"]);
            // As an older wf left it: no index at all.
            store.inner.open.clear().unwrap();
            store.flush().await.unwrap();
            assert!(store.list_open().unwrap().docs.is_empty());
        }
        let store = SledStore::open(dir.path(), &ns, Duration::from_secs(10)).unwrap();
        let open: Vec<String> = store
            .list_open()
            .unwrap()
            .docs
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(open, ["bbbbbbbbbbbb"], "rebuilt from the documents");
        let mut ids = store.ids().unwrap();
        ids.sort();
        assert_eq!(ids, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
    }
}
