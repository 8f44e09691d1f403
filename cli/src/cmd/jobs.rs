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
    let jobs: Vec<Job> = match assignment {
        Some(a) => {
            let assignment = id_arg("--assignment", &a)?;
            let doc: Assignment = call(backend, api::GetAssignment { assignment }).await?;
            doc.jobs
                .into_iter()
                .filter(|j| status.is_none_or(|s| j.status == s))
                .collect()
        }
        None => call(backend, api::ListJobs { status }).await?,
    };
    if json.json {
        print_json(&jobs)?;
    } else {
        outln!("{}", output::jobs(&jobs, now));
    }
    Ok(())
}
