//! `wf`: the command line humans and PM agents use to create, steer and inspect work.
//!
//! Every command becomes one [`Request`] executed by a [`Backend`]: the running runner over its
//! control socket, or the store directly when no runner holds it. Output is a comfy-table for
//! humans or JSON with `--json`; errors are one line on stderr with a documented exit code.

mod args;
mod demo;
mod doctor;
mod output;
mod sim;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use wf_core::config::{self, Config};
use wf_core::ids;
use wf_core::model::{Assignment, AssignmentStatus, Budget, Job, JobStatus, JobType};
use wf_runner::api::Request;
use wf_runner::client::Backend;
use wf_runner::ops::{self, CreateRequest, InsertResult, JobDetail, JobSpec, OpError};

use args::{Cli, Command};

/// Exit codes of `wf`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The command failed.
    pub const ERROR: u8 = 1;
    /// Bad usage or configuration.
    pub const USAGE: u8 = 2;
    /// The store or the runner could not be reached.
    pub const UNAVAILABLE: u8 = 3;
    /// No such assignment or job.
    pub const NOT_FOUND: u8 = 4;
}

/// A failed command: its message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let code = match e.kind() {
            "not_found" => exit::NOT_FOUND,
            "invalid" => exit::ERROR,
            _ => exit::UNAVAILABLE,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Self::usage(e.to_string())
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// The `wf` entry point.
pub fn main_impl() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                // Why: printing help can only fail on a closed stdout, where nothing can be done.
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        exit::USAGE
                    } else {
                        exit::OK
                    },
                );
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("wf: error: {first} (see `wf --help`)");
            return ExitCode::from(exit::USAGE);
        }
    };
    let result = match cli.command {
        Command::SimulateAgent => sim::main(),
        Command::Demo { keep } => demo::main(cli.config.as_deref(), keep),
        Command::Doctor { json } => run_doctor(cli.config.as_deref(), json.json),
        command => run_blocking(cli.config.as_deref(), command),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("wf: error: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

fn run_blocking(config_path: Option<&Path>, command: Command) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::ERROR,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    runtime.block_on(async {
        let config = load_config(config_path)?;
        let mut backend = Backend::open(&config).await?;
        run(&mut backend, command).await
    })
}

fn run_doctor(config_path: Option<&Path>, json: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::ERROR,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    let config = load_config(config_path)?;
    runtime.block_on(doctor::run(&config, json))
}

/// Loads the configuration the way every command does.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::usage(format!("cannot read the current directory: {e}")))?;
    Ok(config::load(path, &cwd)?)
}

fn text(arg: &str, value: &OsStr) -> Result<String> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::usage(format!("{arg} is not valid UTF-8")))
}

fn opt_text(arg: &str, value: Option<&OsString>) -> Result<Option<String>> {
    value.map(|v| text(arg, v)).transpose()
}

fn id_arg(arg: &str, value: &OsStr) -> Result<String> {
    let s = text(arg, value)?;
    ids::parse_prefix(&s).map_err(|e| Failure::usage(format!("{arg}: {e}")))
}

/// The assignment argument, else `$WF_ASSIGNMENT_ID`.
fn assignment_arg(value: Option<&OsString>) -> Result<String> {
    match value {
        Some(v) => id_arg("the assignment id", v),
        None => match std::env::var_os("WF_ASSIGNMENT_ID").filter(|v| !v.is_empty()) {
            Some(v) => id_arg("$WF_ASSIGNMENT_ID", &v),
            None => Err(Failure::usage(
                "no assignment given (pass an id, or set WF_ASSIGNMENT_ID)",
            )),
        },
    }
}

/// The job running this `wf`, when an agent runs it.
fn caller() -> Result<Option<String>> {
    match std::env::var_os("WF_JOB_ID").filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some(id_arg("$WF_JOB_ID", &v)?)),
        None => Ok(None),
    }
}

fn parse_enum<T: std::str::FromStr<Err = String>>(value: Option<&str>) -> Result<Option<T>> {
    value
        .map(|v| v.parse::<T>().map_err(Failure::usage))
        .transpose()
}

fn read_input(arg: &str, path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    let res = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    res.map_err(|e| Failure::usage(format!("cannot read {arg} {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("{arg} {} is not valid UTF-8", path.display())))
}

fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serialises")
    );
}

async fn call<T: serde::de::DeserializeOwned>(
    backend: &mut Backend,
    request: Request,
) -> Result<T> {
    Ok(backend.call_as(request).await?)
}

async fn run(backend: &mut Backend, command: Command) -> Result<()> {
    let now = wf_core::clock::now_ms();
    match command {
        Command::Create {
            north_star,
            priority,
            independent,
            start,
            max_cost,
            max_jobs,
            max_pm_rounds,
            max_wall_time,
            json,
        } => {
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
            let doc: Assignment = call(backend, Request::Create(req)).await?;
            if json.json {
                print_json(&doc);
            } else {
                println!("{}", doc.id);
                if doc.jobs.is_empty() {
                    eprintln!("next: wf insert-job {} --type plan", doc.id);
                }
            }
        }
        Command::InsertJob {
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
        } => {
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
                (None, None, Some(f)) => {
                    parse_jobs("--jobs-file", &read_input("--jobs-file", &f)?)?
                }
                _ => return Err(Failure::usage("give one of --type, --jobs or --jobs-file")),
            };
            let after = after.map(|a| id_arg("--after", &a)).transpose()?;
            let request = Request::InsertJobs {
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
                print_json(&result);
            } else {
                for j in &result.jobs {
                    println!("{}", j.id);
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
        }
        Command::UpdateAssignment {
            assignment,
            status,
            reason,
            artifacts,
            decisions,
            note,
            json,
        } => {
            let request = Request::UpdateAssignment {
                assignment: assignment_arg(assignment.as_ref())?,
                status: parse_enum::<AssignmentStatus>(status.as_deref())?,
                reason: opt_text("--reason", reason.as_ref())?,
                artifacts: opt_text("--artifacts", artifacts.as_ref())?,
                decisions: opt_text("--decisions", decisions.as_ref())?,
                note: opt_text("--note", note.as_ref())?,
                caller: caller()?,
            };
            let doc: Assignment = call(backend, request).await?;
            if json.json {
                print_json(&doc);
            } else {
                let status = match &doc.blocked_reason {
                    Some(r) => format!("{} ({r})", doc.status),
                    None => doc.status.to_string(),
                };
                println!("{} {status}", doc.id);
            }
        }
        Command::Assignments { status, json } => {
            let status = parse_enum::<AssignmentStatus>(status.as_deref())?;
            let docs: Vec<Assignment> = call(backend, Request::ListAssignments { status }).await?;
            if json.json {
                print_json(&docs);
            } else {
                println!("{}", output::assignments(&docs, now));
            }
        }
        Command::Assignment { assignment, json } => {
            let assignment = assignment_arg(assignment.as_ref())?;
            let doc: Assignment = call(backend, Request::GetAssignment { assignment }).await?;
            if json.json {
                print_json(&doc);
            } else {
                print!("{}", output::assignment(&doc, now));
            }
        }
        Command::Jobs {
            status,
            assignment,
            json,
        } => {
            let status = parse_enum::<JobStatus>(status.as_deref())?;
            let jobs: Vec<Job> = match assignment {
                Some(a) => {
                    let assignment = id_arg("--assignment", &a)?;
                    let doc: Assignment =
                        call(backend, Request::GetAssignment { assignment }).await?;
                    doc.jobs
                        .into_iter()
                        .filter(|j| status.is_none_or(|s| j.status == s))
                        .collect()
                }
                None => call(backend, Request::ListJobs { status }).await?,
            };
            if json.json {
                print_json(&jobs);
            } else {
                println!("{}", output::jobs(&jobs, now));
            }
        }
        Command::Job { job, json } => {
            let job = id_arg("the job id", &job)?;
            let detail: JobDetail = call(backend, Request::GetJob { job }).await?;
            if json.json {
                print_json(&detail);
            } else {
                print!("{}", output::job(&detail, now));
            }
        }
        Command::Cancel { id, json } => {
            let target = id_arg("the id", &id)?;
            let doc: Assignment = call(backend, Request::Cancel { target }).await?;
            if json.json {
                print_json(&doc);
            } else {
                println!(
                    "{} {}",
                    doc.id,
                    doc.blocked_reason.as_deref().unwrap_or(doc.status.as_str())
                );
                if doc.lease.is_some() {
                    eprintln!("the runner holding it stops the agent now");
                }
            }
        }
        Command::Retry { job, json } => {
            let job = id_arg("the job id", &job)?;
            let doc: Assignment = call(backend, Request::Retry { job }).await?;
            if json.json {
                print_json(&doc);
            } else {
                println!("{} {}", doc.id, doc.status);
            }
        }
        Command::Queue { json } => {
            let docs: Vec<Assignment> =
                call(backend, Request::ListAssignments { status: None }).await?;
            let view = ops::queue_view(docs);
            if json.json {
                print_json(&view);
            } else {
                println!("{}", output::queue(&view, now));
            }
        }
        Command::Demo { .. } | Command::SimulateAgent | Command::Doctor { .. } => {
            unreachable!("dispatched before a backend is opened")
        }
    }
    Ok(())
}

/// "90m", "4h", "3600s", "1500ms", or a number of seconds.
fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Failure::usage(format!(
            "bad duration {text:?}: use a number with ms, s, m, h or d"
        ))
    };
    let factor = match unit {
        "" | "s" => 1_000.0,
        "ms" => 1.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(bad()),
    };
    match num.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * factor) as u64),
        _ => Err(bad()),
    }
}

fn parse_jobs(arg: &str, text: &str) -> Result<Vec<JobSpec>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Failure::usage(format!("{arg} is not valid JSON: {e}")))?;
    if !value.is_array() {
        return Err(Failure::usage(format!(
            "{arg} must be a JSON array of jobs, like [{{\"jobType\": \"review\", \"context\": \"...\"}}]"
        )));
    }
    let de = serde_path_to_error::deserialize::<_, Vec<JobSpec>>(value);
    de.map_err(|e| {
        Failure::usage(format!(
            "{arg}: job {}: {} (each job: {{\"jobType\", \"harness\"?, \"model\"?, \"context\"?}})",
            e.path(),
            e.inner()
        ))
    })
}
