//! Filling a store the way months of use would: thousands of finished assignments of ten
//! jobs each, written straight through the store (as the runner would have), and a few
//! hundred blocked ones still open.

use futures_util::StreamExt as _;
use wf_core::chain::{self, Caller, NewJob, Position};
use wf_core::model::{Assignment, AssignmentStatus, JobStatus, JobType, Usage};
use wf_store::Store;

fn job(doc: &Assignment, n: usize, t: JobType) -> NewJob {
    NewJob {
        id: wf_core::ids::from_random(chain::fingerprint(&format!("{}/{n}", doc.id))),
        job_type: t,
        harness: "claude".into(),
        model: None,
        has_context: false,
        context_hash: None,
    }
}

/// An assignment of `jobs` jobs (work and PM in turn), every one finished, `status` set.
pub(crate) fn assignment(ns: &str, i: usize, jobs: usize, status: AssignmentStatus) -> Assignment {
    let now = 1_790_000_000_000 + i as u64 * 1000;
    let id = wf_core::ids::from_random(chain::fingerprint(&format!("bench/{ns}/{i}")));
    let mut doc = chain::new_assignment(
        id,
        ns,
        format!("Assignment {i}: make the widget parser accept dates in ISO 8601 and in RFC 2822, with tests"),
        10,
        true,
        now,
    );
    let types = [
        JobType::Plan,
        JobType::Implement,
        JobType::Review,
        JobType::Document,
    ];
    for n in 0..jobs {
        let t = if n % 2 == 1 {
            JobType::Pm
        } else {
            types[(n / 2) % types.len()]
        };
        let new = job(&doc, n, t);
        chain::insert_jobs(
            &mut doc,
            &[new],
            None,
            &Position::End,
            Caller::Human,
            None,
            now,
        )
        .expect("insert");
    }
    for j in &mut doc.jobs {
        j.status = JobStatus::Complete;
        j.attempt = 1;
        j.started_at = Some(now);
        j.completed_at = Some(now + 60_000);
        j.has_result = true;
        j.exit_code = Some(0);
        j.session_id = Some("9f1c2b7e-5d4a-4c3b-8a2e-1f0d9c8b7a6e".into());
        j.usage = Usage {
            input_tokens: 12_345,
            output_tokens: 2_345,
            cost_usd: Some(0.1234),
        };
    }
    doc.status = status;
    if status == AssignmentStatus::Blocked {
        doc.blocked_reason = Some("which database should the parser's cache use?".into());
    }
    doc.pm_rounds = (jobs / 2) as u32;
    doc.artifacts = "PLAN.md; branch wf/widget-dates".into();
    doc.decisions = "chrono over time, because the parser already depends on it".into();
    doc
}

/// Stores `finished` complete assignments of ten jobs and `blocked` blocked ones of eight;
/// returns the blocked ones' ids.
pub(crate) async fn fill(store: &Store, ns: &str, finished: usize, blocked: usize) -> Vec<String> {
    let docs = (0..finished)
        .map(|i| assignment(ns, i, 10, AssignmentStatus::Complete))
        .chain((0..blocked).map(|i| assignment(ns, finished + i, 8, AssignmentStatus::Blocked)));
    let mut open = Vec::new();
    let mut writes = futures_util::stream::iter(docs.map(|d| async move {
        store.create(&d).await.expect("create");
        (d.status == AssignmentStatus::Blocked).then_some(d.id)
    }))
    .buffer_unordered(64);
    while let Some(id) = writes.next().await {
        open.extend(id);
    }
    open
}
