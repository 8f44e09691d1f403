//! Archiving: the oldest finished jobs leave the document for blobs, so that an assignment
//! that runs for hundreds of rounds stays far below what the store accepts.
//!
//! A segment is the first [`ARCHIVE_SEGMENT`] jobs of the document once they are all finished
//! and at least [`KEEP_FINISHED`] finished jobs follow them (the PM and the prompts look at the
//! recent ones; loop detection at the last few). The runner writes the segment as a blob named
//! after its position and a hash of its content, then links it with [`archive_segment`], which
//! checks that the document still begins with exactly those jobs: blob first, then the CAS
//! that links it, as for every blob.

use super::Unchanged;
use crate::model::{Assignment, Job, JobType};

/// Jobs per archive segment.
pub const ARCHIVE_SEGMENT: usize = 32;
/// Finished jobs that always stay in the document after the archived ones.
pub const KEEP_FINISHED: usize = 16;

/// A segment ready to be written: its name and its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The blob's name within the assignment: `<position>-<content hash>`.
    pub name: String,
    /// The jobs, oldest first.
    pub jobs: Vec<Job>,
}

impl Segment {
    /// The blob's bytes: the JSON array of the jobs.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.jobs).expect("jobs always encode")
    }
}

/// The next segment of `doc` to archive, if it has one.
pub fn next_segment(doc: &Assignment) -> Option<Segment> {
    // Jobs that unfinished tasks depend on (or answer) stay: their status and results are
    // read when those run.
    let (tasks, jobs) = super::still_needed(doc);
    let finished_run = doc
        .jobs
        .iter()
        .take_while(|j| j.status.is_finished())
        .take_while(|j| {
            !jobs.contains(&j.id) && !j.task.as_ref().is_some_and(|t| tasks.contains(&t.id))
        })
        .count();
    if finished_run < ARCHIVE_SEGMENT + KEEP_FINISHED {
        return None;
    }
    let jobs = doc.jobs[..ARCHIVE_SEGMENT].to_vec();
    let bytes = serde_json::to_vec(&jobs).expect("jobs always encode");
    let name = format!(
        "{}-{:016x}",
        doc.archive.segments.len(),
        super::fingerprint(&String::from_utf8_lossy(&bytes))
    );
    Some(Segment { name, jobs })
}

/// Links `segment` (already stored as a blob): its jobs leave the document. Refuses when the
/// document no longer begins with exactly those jobs, or the segment is already linked.
pub fn archive_segment(doc: &mut Assignment, segment: &Segment) -> Result<(), Unchanged> {
    let n = segment.jobs.len();
    let position: usize = segment
        .name
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(Unchanged)?;
    if position != doc.archive.segments.len()
        || doc.jobs.len() < n
        || doc.jobs[..n] != segment.jobs[..]
    {
        return Err(Unchanged);
    }
    let started = doc.jobs[..n]
        .iter()
        .filter(|j| j.job_type != JobType::Pm && j.attempt > 0)
        .count() as u32;
    let reviews = doc.jobs[..n]
        .iter()
        .filter(|j| j.job_type == JobType::Review && j.attempt > 0)
        .count() as u32;
    doc.jobs.drain(..n);
    doc.archive.reviews += reviews;
    doc.archive.segments.push(segment.name.clone());
    doc.archive.jobs += n as u32;
    doc.archive.started += started;
    Ok(())
}
