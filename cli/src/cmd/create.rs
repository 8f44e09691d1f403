//! `wf create`: a new assignment from a north star.

use super::*;
use crate::args::CreateArgs;

pub(crate) async fn run(
    backend: &mut Backend,
    config: &wf_core::config::Config,
    args: CreateArgs,
) -> Result<()> {
    let CreateArgs {
        north_star,
        issue,
        priority,
        independent,
        start,
        max_cost,
        max_jobs,
        max_pm_rounds,
        max_wall_time,
        max_review_cycles,
        json,
    } = args;
    let (north_star, forge) = match (issue, north_star) {
        (Some(issue), _) => {
            let (star, link) = from_issue(config, &issue).await?;
            (star, Some(link))
        }
        (None, Some(star)) => (text("the north star", &star)?, None),
        (None, None) => return Err(Failure::usage("a north star or --issue is needed")),
    };
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
        max_review_cycles,
    };
    let budget = (budget != Budget::default()).then_some(budget);
    let req = CreateRequest {
        north_star,
        priority,
        independent,
        start,
        budget,
        forge,
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

/// The north star and forge link of an assignment made from issue `arg`, read from the forge.
async fn from_issue(
    config: &wf_core::config::Config,
    arg: &str,
) -> Result<(String, wf_core::model::ForgeLink)> {
    let repo = wf_runner::workspace::find_repo(&config.workdir).await;
    let default_repo = wf_runner::forge::repo_name(config, repo.as_ref()).await;
    let (name, number) =
        wf_core::forge::parse_issue_arg(arg, default_repo.as_deref()).map_err(Failure::usage)?;
    let client = wf_runner::forge::GitHub::new(&config.forge, &name).map_err(|e| Failure {
        code: crate::exit::ERROR,
        message: e.to_string(),
    })?;
    let (issue, body) = client.issue(number).await.map_err(|e| Failure {
        code: crate::exit::UNAVAILABLE,
        message: format!("cannot read issue {name}#{number}: {e}"),
    })?;
    let star = wf_core::forge::north_star_of_issue(&name, &issue, &body);
    let link = wf_core::model::ForgeLink {
        repo: name,
        issue: Some(issue),
        pull_request: None,
        progress_comment: None,
    };
    Ok((star, link))
}
