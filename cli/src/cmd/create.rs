//! `wf create`: a new assignment from a north star.

use super::*;
use crate::args::CreateArgs;

pub(crate) async fn run(backend: &mut Backend, args: CreateArgs) -> Result<()> {
    let CreateArgs {
        north_star,
        priority,
        independent,
        start,
        max_cost,
        max_jobs,
        max_pm_rounds,
        max_wall_time,
        json,
    } = args;
    let north_star = text("the north star", &north_star)?;
    let start = parse_enum::<JobType>(start.as_deref())?.map(|job_type| JobSpec {
        job_type,
        harness: None,
        model: None,
        context: None,
    });
    let max_wall_ms = max_wall_time.as_deref().map(parse_duration).transpose()?;
    let budget = Budget {
        max_cost_usd: max_cost,
        max_jobs,
        max_pm_rounds,
        max_wall_ms,
    };
    let budget = (budget != Budget::default()).then_some(budget);
    let req = CreateRequest {
        north_star,
        priority,
        independent,
        start,
        budget,
    };
    let doc: Assignment = call(backend, req).await?;
    if json.json {
        print_json(&doc)?;
    } else {
        outln!("{}", doc.id);
        if doc.jobs.is_empty() {
            eprintln!("next: wf insert-job {} --type plan", doc.id);
        }
    }
    Ok(())
}
