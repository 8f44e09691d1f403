//! `wf insert-job`: one job, or a parallel group, into an assignment.

use super::*;
use crate::args::InsertJobArgs;

pub(crate) async fn run(backend: &mut Backend, args: InsertJobArgs) -> Result<()> {
    let InsertJobArgs {
        assignment,
        job_type,
        harness,
        model,
        context,
        context_file,
        jobs,
        jobs_file,
        after,
        json,
    } = args;
    let assignment = assignment_arg(assignment.as_ref())?;
    let specs: Vec<JobSpec> = match (job_type, jobs, jobs_file) {
        (Some(t), None, None) => {
            let context = match (context, context_file) {
                (Some(c), None) => Some(text("--context", &c)?),
                (None, Some(f)) => Some(read_input("--context-file", &f)?),
                _ => None,
            };
            vec![JobSpec {
                job_type: t.parse().map_err(Failure::usage)?,
                harness,
                model,
                context,
            }]
        }
        (None, Some(j), None) => parse_jobs("--jobs", &text("--jobs", &j)?)?,
        (None, None, Some(f)) => parse_jobs("--jobs-file", &read_input("--jobs-file", &f)?)?,
        _ => return Err(Failure::usage("give one of --type, --jobs or --jobs-file")),
    };
    let after = after.map(|a| id_arg("--after", &a)).transpose()?;
    let request = api::InsertJobs {
        assignment,
        jobs: specs,
        after,
        caller: caller()?,
    };
    let result: InsertResult = call(backend, request).await?;
    if let Some(w) = &result.warning {
        eprintln!("wf: warning: {w}");
    }
    if json.json {
        print_json(&result)?;
    } else {
        for j in &result.jobs {
            outln!("{}", j.id);
        }
        let what = result
            .jobs
            .iter()
            .map(|j| format!("{} on {}", j.job_type, j.harness))
            .collect::<Vec<_>>()
            .join(", ");
        let group = if result.jobs.len() > 1 {
            " as one parallel group"
        } else {
            ""
        };
        eprintln!("inserted {what}{group} into {}", result.assignment_id);
    }
    Ok(())
}
