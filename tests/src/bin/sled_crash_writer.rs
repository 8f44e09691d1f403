//! Writes to a sled store and dies without closing it, for the crash-durability test.
//!
//! `sled-crash-writer <dir> <updates>`: creates one assignment, then appends a job per update,
//! printing `acked <version>` as soon as each `Store::update` returns, writes and links one
//! blob (`acked blob`), and aborts — no destructor runs, nothing is flushed on the way out, and
//! sled's own background flush (every 500 ms) has no time to run. Whatever was printed must be
//! in the store when it is opened again.

use std::io::Write as _;
use std::time::Duration;

use wf_core::chain::{self, Caller, NewJob, Position};
use wf_core::ids::Namespace;
use wf_core::model::JobType;
use wf_store::sled::SledStore;
use wf_store::{BlobKey, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u32>().ok()))
    else {
        eprintln!("usage: sled-crash-writer <dir> <updates>");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ns = Namespace::new("crash").expect("namespace");
        let store = Store::Sled(
            SledStore::open(std::path::Path::new(dir), &ns, Duration::ZERO).expect("open"),
        );
        let doc =
            chain::new_assignment("crashcrash01".into(), "crash", "north".into(), 10, true, 1);
        store.create(&doc).await.expect("create");
        let mut out = std::io::stdout().lock();
        for i in 0..n {
            let (after, ()) = store
                .update(&doc.id, |d| {
                    let job = NewJob {
                        id: format!("j{i:04}"),
                        job_type: JobType::Plan,
                        harness: "claude".into(),
                        model: None,
                        has_context: false,
                        context_hash: None,
                    };
                    chain::insert_jobs(d, &[job], None, &Position::End, Caller::Human, None, 1000)
                        .map(|_| ())
                })
                .await
                .expect("update");
            writeln!(out, "acked {}", after.version).expect("stdout");
            out.flush().expect("stdout");
        }
        let key = BlobKey::Context {
            assignment: doc.id.clone(),
            job: "j0000".into(),
        };
        store.put_blob(&key, &[b'c'; 50_000]).await.expect("blob");
        store
            .update(&doc.id, |d| {
                d.jobs[0].has_context = true;
                Ok::<_, ()>(())
            })
            .await
            .expect("link");
        writeln!(out, "acked blob").expect("stdout");
        out.flush().expect("stdout");
        std::process::abort();
    });
}
