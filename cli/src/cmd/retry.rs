//! `wf retry`: a failed or cancelled job back in the queue.

use super::*;
use crate::args::RetryArgs;

pub(crate) async fn run(backend: &mut Backend, args: RetryArgs) -> Result<()> {
    let RetryArgs { job, json } = args;
    let job = id_arg("the job id", &job)?;
    let doc: Assignment = call(backend, api::Retry { job }).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        outln!("{} {}", doc.id, doc.status);
    }
    Ok(())
}
