//! `wf skip-job`: a pending job will not run; what depends on it goes ahead.

use super::*;
use crate::args::SkipJobArgs;

pub(crate) async fn run(backend: &mut Backend, args: SkipJobArgs) -> Result<()> {
    let SkipJobArgs { job, reason, json } = args;
    let request = api::SkipJob {
        job: id_arg("the job id", &job)?,
        reason: text("--reason", &reason)?,
        caller: caller()?,
    };
    let doc: Assignment = call(backend, request).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        outln!("{} {}", doc.id, doc.status);
    }
    Ok(())
}
