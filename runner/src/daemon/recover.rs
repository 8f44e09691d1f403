//! What attempts abandoned by a dead runner spent, read back from their transcripts.
//!
//! An attempt whose runner died (kill -9, power loss, a record that kept failing) recorded no
//! usage, yet its agent was paid for until it died. The transcript on this machine says what
//! it spent: the result's usage if the result came, else the sum of the turns so far (Claude
//! reports every turn; Codex and Gemini only at the end). The claim or settle that ends such
//! an attempt adds it once (`chain::Recovered`). Transcripts are written a line at a time, so
//! a kill -9 loses none of what the agent printed.

use wf_core::chain::{LeaseView, Recovered};
use wf_core::harness::{self, RunLog};
use wf_core::model::{Assignment, JobStatus, Usage};

use super::Ctx;
use crate::paths;

/// The usage of the attempts of `doc` under its dead lease whose transcripts are here.
pub(super) async fn recovered_usage(
    ctx: &Ctx,
    doc: &Assignment,
    view: &LeaseView<'_>,
) -> Recovered {
    let mut out = Recovered::new();
    let Some(lease) = doc.lease.as_ref().filter(|l| !view.is_live(l)) else {
        return out;
    };
    let abandoned = doc
        .jobs
        .iter()
        .filter(|j| lease.job_ids.contains(&j.id) && j.status == JobStatus::Running);
    for job in abandoned {
        let Some(harness_cfg) = ctx.config.harnesses.get(&job.harness) else {
            continue;
        };
        let path = paths::transcript_path(&ctx.config.state_dir, &doc.id, &job.id, job.attempt);
        let Ok(bytes) = tokio::fs::read(&path).await else {
            continue;
        };
        let log = RunLog::of_transcript(harness_cfg.format(), &String::from_utf8_lossy(&bytes));
        let (mut usage, _) = log.usage_so_far();
        let model = job.model.as_deref().or(harness_cfg.model.as_deref());
        harness::priced(&mut usage, &log, model, &ctx.config.prices);
        if usage == Usage::default() {
            continue;
        }
        tracing::info!(
            assignment = %doc.id, job = %job.id, attempt = job.attempt,
            input_tokens = usage.input_tokens, output_tokens = usage.output_tokens,
            cost_usd = usage.cost_usd.unwrap_or(0.0), priced = usage.cost_usd.is_some(),
            "recovered the usage of an abandoned attempt from its transcript"
        );
        out.insert((job.id.clone(), job.attempt), usage);
    }
    out
}
