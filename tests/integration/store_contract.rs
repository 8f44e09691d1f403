//! The store contract (DESIGN §3), one suite for every backend.

use std::time::Duration;

use wf_core::chain::{self, Caller, NewJob, Position};
use wf_core::config::{NatsConfig, StoreConfig};
use wf_core::ids::Namespace;
use wf_core::model::{Assignment, JobType};
use wf_store::nats::NatsStore;
use wf_store::sled::SledStore;
use wf_store::{BlobKey, Store, StoreError, UpdateError};
use wf_tests::NatsServer;

fn doc(id: &str) -> Assignment {
    chain::new_assignment(id.to_string(), "contract", "north".into(), 10, true, 1)
}

fn job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        job_type: JobType::Plan,
        harness: "claude".into(),
        model: None,
        has_context: false,
        context_hash: None,
    }
}

/// Runs every contract check against an empty `store`; `reopen` closes it and opens the same
/// store again (for durability).
// Long: the store contract, property by property, run as one sequence on each backend.
pub(crate) async fn contract(store: Store, reopen: impl AsyncFnOnce(Store) -> Store) {
    // Create, get, list.
    let a = doc(&wf_runner::random::new_id());
    store.create(&a).await.unwrap();
    assert!(matches!(
        store.create(&a).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.get(&a.id).await.unwrap().unwrap(), a);
    assert!(store.get("nosuchid").await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap().len(), 1);

    // Every update is a CAS that bumps the version; a refusal writes nothing.
    let mut changes = store.subscribe().await;
    let (after, ()) = store
        .update(&a.id, |d| {
            d.artifacts = "x".into();
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
    assert_eq!(after.version, a.version + 1);
    let refused = store.update(&a.id, |_| Err::<(), _>("no")).await;
    assert!(matches!(refused, Err(UpdateError::Refused("no"))));
    assert_eq!(
        store.get(&a.id).await.unwrap().unwrap().version,
        after.version
    );
    let missing = store.update("nosuchid", |_| Ok::<_, ()>(())).await;
    assert!(matches!(
        missing,
        Err(UpdateError::Store(StoreError::NotFound(_)))
    ));

    // The change feed carries the written version (after, on NATS, the current snapshot).
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.doc.version == after.version {
                return change.doc;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(*seen, after);

    // Concurrent writers: no update is lost, each sees the others' work.
    let n = 20;
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = store.clone();
        let id = a.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update(&id, |d| {
                    chain::insert_jobs(
                        d,
                        &[job(&format!("j{i:02}"))],
                        None,
                        &Position::End,
                        Caller::Human,
                        None,
                        5,
                    )
                })
                .await
                .unwrap()
                .0
                .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), n, "two writers got the same version");
    let stored = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.jobs.len(), n);
    assert_eq!(stored.version, after.version + n as u64);

    // Blobs.
    let key = BlobKey::Context {
        assignment: a.id.clone(),
        job: "j00".into(),
    };
    assert_eq!(store.get_blob(&key).await.unwrap(), None);
    store.put_blob(&key, b"context text").await.unwrap();
    store.put_blob(&key, b"context text").await.unwrap();
    assert_eq!(
        store.get_blob(&key).await.unwrap().as_deref(),
        Some(&b"context text"[..])
    );
    let big = vec![b'r'; 300_000];
    let res = BlobKey::Result {
        assignment: a.id.clone(),
        job: "j00".into(),
        attempt: 1,
    };
    store.put_blob(&res, &big).await.unwrap();
    // Link the blobs with a CAS: from then on they are durable with the document.
    store
        .update(&a.id, |d| {
            d.jobs[0].has_context = true;
            Ok::<_, ()>(())
        })
        .await
        .unwrap();

    // The open index: a finished assignment leaves it, one opened again comes back; ids
    // name every document.
    let open_ids = |docs: Vec<Assignment>| {
        let mut ids: Vec<String> = docs.into_iter().map(|d| d.id).collect();
        ids.sort();
        ids
    };
    let b = doc(&wf_runner::random::new_id());
    store.create(&b).await.unwrap();
    let mut both = vec![a.id.clone(), b.id.clone()];
    both.sort();
    assert_eq!(open_ids(store.list_open().await.unwrap()), both);
    let set = |status: wf_core::model::AssignmentStatus| {
        move |d: &mut Assignment| {
            d.status = status;
            Ok::<_, ()>(())
        }
    };
    store
        .update(&b.id, set(wf_core::model::AssignmentStatus::Complete))
        .await
        .unwrap();
    assert_eq!(open_ids(store.list_open().await.unwrap()), [a.id.as_str()]);
    let mut all = store.ids().await.unwrap();
    all.sort();
    assert_eq!(all, both);
    assert_eq!(
        store.list().await.unwrap().len(),
        2,
        "list still has every one"
    );
    // Stored documents, as `wf assignments --json` lists them: the head read, the JSON the
    // very encoding of the decoded document; the open ones through the index.
    let decoded = store.list().await.unwrap();
    let stored = store.list_stored(false).await.unwrap();
    assert_eq!(stored.len(), 2);
    for s in &stored {
        let d = decoded.iter().find(|d| d.id == s.head.id).expect("listed");
        assert_eq!(s.json, serde_json::to_string(d).unwrap());
        assert_eq!((s.head.status, s.head.created_at), (d.status, d.created_at));
    }
    let open: Vec<String> = store
        .list_stored(true)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.head.id)
        .collect();
    assert_eq!(open, [a.id.as_str()]);
    store
        .update(&b.id, set(wf_core::model::AssignmentStatus::Active))
        .await
        .unwrap();
    assert_eq!(open_ids(store.list_open().await.unwrap()), both);
    store
        .update(&b.id, set(wf_core::model::AssignmentStatus::Complete))
        .await
        .unwrap();

    // State records: created once, then changed only by compare-and-swap; concurrent
    // increments are all kept.
    assert_eq!(store.state::<u64>("trigger.t1").await.unwrap(), None);
    let created = store
        .update_state::<u64, bool, ()>("trigger.t1", |v| Ok((0, v.is_none())))
        .await
        .unwrap();
    assert_eq!(created, (0, true));
    let writers = 6;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                s.update_state::<u64, (), ()>("trigger.t1", |v| Ok((v.unwrap_or(0) + 1, ())))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.state::<u64>("trigger.t1").await.unwrap(),
        Some(writers * 5)
    );
    let refused = store
        .update_state::<u64, (), &str>("trigger.t1", |_| Err("no"))
        .await;
    assert!(matches!(refused, Err(UpdateError::Refused("no"))));
    assert!(store
        .update_state::<u64, (), ()>("Bad Key", |_| Ok((1, ())))
        .await
        .is_err());

    // Durable: a reopened store has everything acknowledged (after a clean close here; for sled,
    // sled_acknowledged_writes_survive_an_abort checks it without one).
    let store = reopen(store).await;
    let again = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(again.jobs.len(), n);
    assert!(again.jobs[0].has_context);
    assert_eq!(
        store.get_blob(&res).await.unwrap().unwrap().len(),
        big.len()
    );
    assert_eq!(
        store.state::<u64>("trigger.t1").await.unwrap(),
        Some(writers * 5)
    );
    assert_eq!(open_ids(store.list_open().await.unwrap()), [a.id.as_str()]);
}

#[test]
fn sled_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let ns = Namespace::new("contract").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::Sled(SledStore::open(&path, &ns, Duration::ZERO).unwrap());
    rt.block_on(contract(store, async |old| {
        drop(old);
        Store::Sled(SledStore::open(&path, &ns, Duration::from_secs(10)).unwrap())
    }));
}

fn nats_config(url: &str) -> NatsConfig {
    let raw: wf_core::config::RawConfig =
        serde_json::from_value(serde_json::json!({"store": {"kind": "nats", "url": url}})).unwrap();
    match wf_core::config::resolve(raw, None, std::path::Path::new("/"))
        .unwrap()
        .store
    {
        StoreConfig::Nats(n) => n,
        other => panic!("{other:?}"),
    }
}

/// The contract on every nats-server under test (Debian's 2.9.10 and current upstream, in CI).
/// Reopening restarts the server: acknowledged writes must survive it.
#[test]
fn nats_backend() {
    for bin in wf_tests::nats_servers() {
        let mut server = NatsServer::start(&bin);
        let ns = Namespace::new("contract").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = nats_config(&server.url());
        let store = rt
            .block_on(NatsStore::connect(&config, &ns, "contract", false))
            .unwrap();
        let server = &mut server;
        rt.block_on(contract(Store::Nats(store), async |old| {
            drop(old);
            server.restart();
            Store::Nats(
                NatsStore::connect(&config, &ns, "contract", true)
                    .await
                    .unwrap(),
            )
        }));
    }
}

/// Namespaces share one bucket but never see each other's assignments.
#[test]
fn nats_namespaces_are_isolated() {
    let server = NatsServer::start(&wf_tests::nats_server());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = nats_config(&server.url());
        let a = NatsStore::connect(&config, &Namespace::new("alpha").unwrap(), "t", false)
            .await
            .unwrap();
        let b = NatsStore::connect(&config, &Namespace::new("beta").unwrap(), "t", false)
            .await
            .unwrap();
        let (a, b) = (Store::Nats(a), Store::Nats(b));
        a.create(&doc("aaaaaaaaaaaa")).await.unwrap();
        assert_eq!(a.list().await.unwrap().len(), 1);
        assert!(b.list().await.unwrap().is_empty());
        assert!(b.get("aaaaaaaaaaaa").await.unwrap().is_none());
    });
}

/// Concurrent first opens of a fresh embedded store (`wf-runner &` and an immediate `wf
/// create` in a new repository): every opener gets the store, or waits its turn — none sees a
/// half-written store as corrupt (sled 0.34 writes its `conf` in two writes before it locks).
#[test]
fn concurrent_first_opens_of_a_fresh_store_never_see_it_corrupt() {
    let ns = Namespace::new("fresh").unwrap();
    let started = std::time::Instant::now();
    let rounds = 150;
    let mut opened = 0;
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        wf_store::sled::SledStore::open(&path, &ns, Duration::from_secs(20))
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert!(r.is_ok(), "round {round}: {r:?}");
            opened += 1;
        }
    }
    assert_eq!(opened, rounds * 3);
    crate::record_reliability(
        "concurrent_first_opens_of_a_fresh_store_never_see_it_corrupt",
        "sled: 3 concurrent first opens of a fresh store, 150 times (wf-runner & and wf create at once in a new repository)",
        "wf's open lock orders the openers around sled's two-write conf file; a later opener waits for sled's lock instead of calling the store corrupt",
        rounds,
        &format!("nothing: {opened} of {opened} opens succeeded"),
        started.elapsed(),
    );
}

/// Durable before acknowledged, on sled, for real: a process that aborts right after its last
/// acknowledged write (no destructor, no flush on the way out, sled's own 500 ms background
/// flush not yet due) loses none of what it acknowledged. The contract's reopen above closes
/// the store cleanly, which flushes; this one does not.
#[test]
fn sled_acknowledged_writes_survive_an_abort() {
    let started = std::time::Instant::now();
    let rounds = 5;
    let updates = 30;
    let mut kept = 0;
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sled-crash-writer"))
            .arg(&path)
            .arg(updates.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGABRT),
            "round {round}: the writer should abort: {out:?}"
        );
        let acked: Vec<u64> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("acked ")?.parse().ok())
            .collect();
        assert_eq!(acked.len(), updates, "round {round}: {stdout}");
        assert!(stdout.ends_with("acked blob\n"), "round {round}: {stdout}");
        let ns = Namespace::new("crash").unwrap();
        let store = SledStore::open(&path, &ns, Duration::from_secs(10)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Store::Sled(store);
        let doc = rt.block_on(store.get("crashcrash01")).unwrap().unwrap();
        assert!(
            doc.version > *acked.last().unwrap(),
            "round {round}: acknowledged version {} lost (the store has {})",
            acked.last().unwrap(),
            doc.version
        );
        assert_eq!(doc.jobs.len(), updates, "round {round}");
        assert!(doc.jobs[0].has_context, "round {round}");
        let blob = BlobKey::Context {
            assignment: doc.id.clone(),
            job: "j0000".into(),
        };
        assert_eq!(
            rt.block_on(store.get_blob(&blob)).unwrap().map(|b| b.len()),
            Some(50_000),
            "round {round}"
        );
        kept += acked.len() + 1;
    }
    crate::record_reliability(
        "sled_acknowledged_writes_survive_an_abort",
        "sled: a writer aborts (SIGABRT, no destructors) right after its last acknowledged update and blob, 5 times",
        "every CAS and blob put is flushed (group commit) before it returns",
        rounds,
        &format!("nothing: {kept} of {kept} acknowledged writes were there after reopening"),
        started.elapsed(),
    );
}
