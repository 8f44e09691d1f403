//! `wf jobs`: jobs of every assignment, or of one.

use super::*;
use crate::args::JobsArgs;

pub(crate) async fn run(backend: &mut Backend, args: JobsArgs) -> Result<()> {
    let JobsArgs {
        status,
        assignment,
        json,
    } = args;
    let now = wf_core::clock::now_ms();
    let status = parse_enum::<JobStatus>(status.as_deref())?;
    let assignment = assignment.map(|a| id_arg("--assignment", &a)).transpose()?;
    let jobs: Vec<Job> = call(backend, api::ListJobs { status, assignment }).await?;
    if json.json {
        print_json(&jobs)?;
    } else {
        outln!("{}", output::jobs(&jobs, now));
    }
    Ok(())
}
