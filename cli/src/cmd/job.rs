//! `wf job`: one job with its context and result.

use super::*;
use crate::args::JobArgs;

pub(crate) async fn run(backend: &mut Backend, args: JobArgs) -> Result<()> {
    let JobArgs { job, json } = args;
    let now = wf_core::clock::now_ms();
    let job = id_arg("the job id", &job)?;
    let detail: JobDetail = call(backend, api::GetJob { job }).await?;
    if json.json {
        print_json(&detail)?;
    } else {
        out!("{}", output::job(&detail, now));
    }
    Ok(())
}
