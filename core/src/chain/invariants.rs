//! The invariants every stored document keeps; tests and fuzzers check them.

use std::collections::HashSet;

use crate::model::{Assignment, JobStatus, JobType};

/// Checks the structural invariants of a document; used by tests and fuzzers to detect a
/// corrupted store. Returns the first violation.
pub fn check_invariants(doc: &Assignment) -> Result<(), String> {
    let mut seen = HashSet::new();
    for job in &doc.jobs {
        if !seen.insert(job.id.as_str()) {
            return Err(format!("job {} appears twice", job.id));
        }
        if job.assignment_id != doc.id {
            return Err(format!(
                "job {} names assignment {}",
                job.id, job.assignment_id
            ));
        }
        if job.job_type == JobType::Pm && job.group_id.is_some() {
            return Err(format!("pm job {} is in a group", job.id));
        }
    }
    let mut groups_done = HashSet::new();
    let mut current: Option<&str> = None;
    for job in &doc.jobs {
        let g = job.group_id.as_deref();
        if g != current {
            if let Some(prev) = current {
                groups_done.insert(prev);
            }
            if let Some(g) = g {
                if groups_done.contains(g) {
                    return Err(format!("group {g} is split"));
                }
            }
            current = g;
        }
    }
    if let Some(lease) = &doc.lease {
        if lease.epoch > doc.epoch {
            return Err(format!(
                "lease epoch {} is ahead of the document's {}",
                lease.epoch, doc.epoch
            ));
        }
        for id in &lease.job_ids {
            match doc.job(id) {
                Some(j) if j.status == JobStatus::Running => {}
                Some(j) => return Err(format!("leased job {id} is {}", j.status)),
                None => return Err(format!("leased job {id} does not exist")),
            }
        }
    }
    Ok(())
}
