//! `wf create`: a new assignment from a north star.

use super::*;
use crate::args::CreateArgs;

pub(crate) async fn run(
    backend: &mut Backend,
    config: &wf_core::config::Config,
    args: CreateArgs,
) -> Result<()> {
    let json = args.json.json;
    let req = request(config, args, false).await?;
    let doc: Assignment = call(backend, req).await?;
    if json {
        print_json(&doc)?;
    } else {
        outln!("{}", doc.id);
        if doc.jobs.is_empty() {
            eprintln!("next: wf insert-job {} --type plan", doc.id);
        }
    }
    Ok(())
}

/// `wf create --workflow … --dry-run`: the plan, printed; nothing stored, no store opened.
pub(crate) async fn dry_run(config: &wf_core::config::Config, args: CreateArgs) -> Result<()> {
    let json = args.json.json;
    let req = request(config, args, true).await?;
    let mut plan = req.plan.expect("--dry-run requires --workflow");
    // Show the harness each task will run on.
    for task in plan.units.iter_mut().flatten() {
        if task.harness.is_none() && task.job_type != JobType::Gate {
            let choice = &config.harness_for(task.job_type)[0];
            task.harness = Some(choice.harness.clone());
            task.model = task.model.clone().or(choice.model.clone());
        }
    }
    if json {
        print_json(&plan)
    } else {
        print_out(&crate::workflow::render_plan(&plan, true))
    }
}

/// The request `wf create` sends. With `dry_run` the forge is not asked for the issue.
async fn request(
    config: &wf_core::config::Config,
    args: CreateArgs,
    dry_run: bool,
) -> Result<CreateRequest> {
    let CreateArgs {
        north_star,
        issue,
        workflow,
        params,
        dry_run: _,
        priority,
        independent,
        start,
        max_cost,
        max_jobs,
        max_pm_rounds,
        max_wall_time,
        max_review_cycles,
        json: _,
    } = args;
    let star = north_star
        .as_ref()
        .map(|s| text("the north star", s))
        .transpose()?;
    let (plan, issue) = match &workflow {
        None => (None, issue),
        Some(name) => {
            let plan = workflow_plan(config, name, &params, issue.as_deref(), star.as_deref())?;
            let issue = plan.forge_issue.clone();
            (Some(plan), issue)
        }
    };
    let (north_star, forge) = star_and_forge(config, plan.as_ref(), issue, star, dry_run).await?;
    let start = parse_enum::<JobType>(start.as_deref())?.map(|job_type| JobSpec {
        job_type,
        harness: None,
        model: None,
        context: None,
    });
    let budget = Budget {
        max_cost_usd: max_cost,
        max_jobs,
        max_pm_rounds,
        max_wall_ms: max_wall_time.as_deref().map(parse_duration).transpose()?,
        max_review_cycles,
    };
    let budget = (budget != Budget::default()).then_some(budget);
    let plan = plan.map(|mut p| {
        p.north_star = north_star.clone();
        Box::new(p)
    });
    Ok(CreateRequest {
        north_star,
        priority,
        independent,
        start,
        budget,
        forge,
        plan,
        id: None,
    })
}

/// The north star and the forge link: from the issue (read from the forge unless `dry_run`),
/// the pull request a workflow is about, the argument, or the workflow's own north star.
async fn star_and_forge(
    config: &wf_core::config::Config,
    plan: Option<&wf_core::workflow::Plan>,
    issue: Option<String>,
    star: Option<String>,
    dry_run: bool,
) -> Result<(String, Option<wf_core::model::ForgeLink>)> {
    let (north_star, mut forge) = match (issue, star) {
        (Some(_), _) if dry_run => (plan.map(|p| p.north_star.clone()).unwrap_or_default(), None),
        (Some(issue), star) => {
            // A workflow's own north star only names the issue; the issue's text says more.
            let (issue_star, link) = from_issue(config, &issue).await?;
            (star.unwrap_or(issue_star), Some(link))
        }
        (None, Some(star)) => (star, None),
        (None, None) => match plan {
            Some(p) => (p.north_star.clone(), None),
            None => return Err(Failure::usage("a north star or --issue is needed")),
        },
    };
    if let Some(pr) = plan.and_then(|p| p.forge_pull_request.clone()) {
        forge = Some(pull_request_link(config, &pr, dry_run).await?);
    }
    Ok((north_star, forge))
}

/// The plan of `--workflow NAME`; `--issue` fills the workflow's issue parameter.
fn workflow_plan(
    config: &wf_core::config::Config,
    name: &str,
    params: &[std::ffi::OsString],
    issue: Option<&str>,
    star: Option<&str>,
) -> Result<wf_core::workflow::Plan> {
    let mut given = crate::workflow::params(params)?;
    let wf =
        wf_core::workflow::find(name, &config.root).map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(issue) = issue {
        let Some(param) = &wf.forge_issue else {
            return Err(Failure::usage(format!(
                "workflow `{name}` works on no forge issue, so --issue does not go with it"
            )));
        };
        given
            .entry(param.clone())
            .or_insert_with(|| issue.to_string());
    }
    crate::workflow::plan(config, name, &given, star)
}

/// The forge link of an assignment about pull request `arg` (`N` or `owner/repo#N`).
async fn pull_request_link(
    config: &wf_core::config::Config,
    arg: &str,
    dry_run: bool,
) -> Result<wf_core::model::ForgeLink> {
    let repo = wf_runner::workspace::find_repo(&config.workdir).await;
    let default_repo = wf_runner::forge::repo_name(config, repo.as_ref()).await;
    let (name, number) = match wf_core::forge::parse_issue_arg(arg, default_repo.as_deref()) {
        Ok(found) => found,
        Err(_) if dry_run => (default_repo.unwrap_or_default(), 0),
        Err(e) => return Err(Failure::usage(e)),
    };
    Ok(wf_core::model::ForgeLink {
        pull_request: Some(wf_core::model::PullRequestRef {
            number,
            url: format!("https://github.com/{name}/pull/{number}"),
            draft: false,
        }),
        repo: name,
        issue: None,
        progress_comment: None,
    })
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
