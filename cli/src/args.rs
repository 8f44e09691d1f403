//! The `wf` command line, as clap types. Doc comments are the help text.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// wf: run a north star as a chain of focused agent jobs, each reviewed by a PM job.
#[derive(Debug, Parser)]
#[command(
    name = "wf",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage or config error, 3 store or runner unavailable, 4 not found.\n\
                  Assignment ids default to $WF_ASSIGNMENT_ID; ids may be given as unique prefixes."
)]
pub(crate) struct Cli {
    /// Config file (default: $WF_CONFIG, else .wf/config.json here or in a parent directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--json` for read commands.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct JsonFlag {
    /// Print JSON (camelCase fields) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The commands that work on the store (through the runner, or directly).
    #[command(flatten)]
    Store(StoreCommand),
    /// Check the configured harnesses (installed? version? login?) and the store.
    Doctor(DoctorArgs),
    /// Run the whole loop offline with a simulated agent, in a throwaway directory.
    Demo(DemoArgs),
    /// Workflow files: check one, list those wf sees, show one's plan.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// The simulated agent used by `wf demo` (speaks Claude's stream-json).
    #[command(hide = true)]
    SimulateAgent,
}

/// The commands that need a store.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Create an assignment from a north star; prints its id.
    Create(CreateArgs),
    /// Insert a job (or, with --jobs, a group of parallel jobs) into an assignment.
    InsertJob(InsertJobArgs),
    /// Change an assignment's status or memory.
    UpdateAssignment(UpdateAssignmentArgs),
    /// List assignments, oldest first.
    Assignments(AssignmentsArgs),
    /// Show an assignment and its chain of jobs.
    Assignment(AssignmentArgs),
    /// List jobs of all assignments, in chain order.
    Jobs(JobsArgs),
    /// Stop an assignment's running jobs, or one job, and block the assignment.
    Cancel(CancelArgs),
    /// Put a failed or cancelled job back in the queue, in place, and resume its assignment
    /// (a workflow task's finished dependents run again after it).
    Retry(RetryArgs),
    /// Pass the human gate an assignment waits at; the note reaches the next task.
    Approve(ApproveArgs),
    /// Do not run a pending job (a workflow task no longer needed); what depends on it goes
    /// ahead.
    SkipJob(SkipJobArgs),
    /// The triggers of .wf/triggers.toml, with their last and next firing.
    Triggers(TriggersArgs),
    /// Show a job with its context and result.
    Job(JobArgs),
    /// What is running, runnable and waiting, per assignment.
    Queue(QueueArgs),
    /// A job's transcript for humans (assistant text, tool calls, results, cost); -f follows
    /// a running job to its end.
    Logs(LogsArgs),
    /// A live view of the assignments (or one) and their running jobs, redrawn as they change.
    Watch(WatchArgs),
    /// List the assignments' worktrees: branch, uncommitted changes, pushed or merged, disk use.
    Workspaces(WorkspacesArgs),
    /// Remove the worktrees of finished assignments that hold nothing unpushed or unmerged
    /// (their branches stay).
    Gc(GcArgs),
    /// Show an assignment's pull request, or push its branch and open one (never a second).
    Pr(PrArgs),
    /// Stop an assignment; with --last/--to take its branch back before some jobs; with
    /// --hard delete its worktree and branch and close its pull request.
    Rollback(RollbackArgs),
}

/// The arguments of `wf create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// What the assignment must achieve (with --issue: read from the issue; with --workflow:
    /// the workflow's own when it has one).
    #[arg(required_unless_present_any = ["issue", "workflow"])]
    pub(crate) north_star: Option<OsString>,
    /// Work on a forge issue: `N`, `#N` or `owner/repo#N`. Its title, body and labels become
    /// the north star; the branch is fix/issue-N for bugs, else feature/issue-N; the
    /// pull request says `Fixes #N`.
    #[arg(long, value_name = "ISSUE", conflicts_with = "north_star")]
    pub(crate) issue: Option<String>,
    /// Instantiate a workflow (`.wf/workflows/NAME.toml`, ~/.config/wf/workflows/, or a
    /// built-in one: feature, bugfix, issue, review-pr, triage, release-notes, plan-issues).
    #[arg(long, value_name = "NAME")]
    pub(crate) workflow: Option<String>,
    /// A workflow parameter, `name=value` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "workflow")]
    pub(crate) params: Vec<OsString>,
    /// Print the workflow's plan (tasks, units, parameters, rendered instructions) and store
    /// nothing.
    #[arg(long, requires = "workflow")]
    pub(crate) dry_run: bool,
    /// Among assignments of the same age, lower runs first.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub(crate) priority: i64,
    /// Run alongside other assignments instead of one at a time.
    #[arg(long)]
    pub(crate) independent: bool,
    /// Insert a first job of this type (plan, implement, review, uat, document, pm).
    #[arg(long, value_name = "TYPE")]
    pub(crate) start: Option<String>,
    /// Budget: most US dollars over all jobs (default: budgets.maxCostUsd in the config).
    #[arg(long, value_name = "USD")]
    pub(crate) max_cost: Option<f64>,
    /// Budget: most non-PM jobs started.
    #[arg(long, value_name = "N")]
    pub(crate) max_jobs: Option<u32>,
    /// Budget: most PM runs.
    #[arg(long, value_name = "N")]
    pub(crate) max_pm_rounds: Option<u32>,
    /// Budget: most time from the first job's start, like 90m, 4h or 3600s.
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_wall_time: Option<String>,
    /// Budget: most review jobs before a human decides (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) max_review_cycles: Option<u32>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf insert-job`.
#[derive(Debug, Args)]
pub(crate) struct InsertJobArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    /// Job type: plan, implement, review, uat, document or pm.
    #[arg(long = "type", value_name = "TYPE", conflicts_with_all = ["jobs", "jobs_file"])]
    pub(crate) job_type: Option<String>,
    /// Harness (default: harnessDefaults in the config).
    #[arg(long, requires = "job_type")]
    pub(crate) harness: Option<String>,
    /// Model (default: the harness's).
    #[arg(long, requires = "job_type")]
    pub(crate) model: Option<String>,
    /// What the job is to do.
    #[arg(long, requires = "job_type", conflicts_with = "context_file")]
    pub(crate) context: Option<OsString>,
    /// Read the context from a file ("-" for stdin).
    #[arg(long, value_name = "FILE", requires = "job_type")]
    pub(crate) context_file: Option<PathBuf>,
    /// A JSON array of jobs run in parallel: [{"jobType": "review", "context": "..."}].
    #[arg(long, value_name = "JSON", conflicts_with = "jobs_file")]
    pub(crate) jobs: Option<OsString>,
    /// Read the --jobs array from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub(crate) jobs_file: Option<PathBuf>,
    /// Insert after this job (default: the end of the chain, or after the calling job).
    #[arg(long, value_name = "JOB_ID")]
    pub(crate) after: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf update-assignment`.
#[derive(Debug, Args)]
pub(crate) struct UpdateAssignmentArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    /// active (resume), blocked (needs --reason) or complete.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Why it is blocked.
    #[arg(long)]
    pub(crate) reason: Option<OsString>,
    /// Artifacts: appended as a line when an agent runs this, replaced when a human does.
    #[arg(long)]
    pub(crate) artifacts: Option<OsString>,
    /// Decisions: same rule as --artifacts.
    #[arg(long)]
    pub(crate) decisions: Option<OsString>,
    /// A note for the next PM (for example when resuming a blocked assignment).
    #[arg(long)]
    pub(crate) note: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf assignments`.
#[derive(Debug, Args)]
pub(crate) struct AssignmentsArgs {
    /// Only this status: pending, active, blocked or complete.
    #[arg(long)]
    pub(crate) status: Option<String>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf assignment`.
#[derive(Debug, Args)]
pub(crate) struct AssignmentArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf jobs`.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// Only this status: pending, running, complete, failed or waiting_retry.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only jobs of this assignment.
    #[arg(long, value_name = "ID")]
    pub(crate) assignment: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf cancel`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Assignment or job id (or a unique prefix).
    pub(crate) id: OsString,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf approve`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    /// What you decided; the next task and the next PM read it.
    #[arg(long)]
    pub(crate) note: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf triggers`.
#[derive(Debug, Args)]
pub(crate) struct TriggersArgs {
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf skip-job`.
#[derive(Debug, Args)]
pub(crate) struct SkipJobArgs {
    /// Job id or prefix.
    pub(crate) job: OsString,
    /// Why it is not needed (recorded in the decisions).
    #[arg(long)]
    pub(crate) reason: OsString,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// `wf workflow …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Check a workflow file; prints its tasks, or what is wrong.
    Check(WorkflowCheckArgs),
    /// List the workflows wf sees (project, user, built-in), each checked.
    List(WorkflowListArgs),
    /// Show a workflow: its parameters and tasks, or its text with --source.
    Show(WorkflowShowArgs),
}

/// The arguments of `wf workflow check`.
#[derive(Debug, Args)]
pub(crate) struct WorkflowCheckArgs {
    /// The file.
    pub(crate) file: PathBuf,
    /// Also instantiate it with these parameters (`name=value`, repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf workflow list`.
#[derive(Debug, Args)]
pub(crate) struct WorkflowListArgs {
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf workflow show`.
#[derive(Debug, Args)]
pub(crate) struct WorkflowShowArgs {
    /// The workflow's name.
    pub(crate) name: String,
    /// Print the file as written.
    #[arg(long)]
    pub(crate) source: bool,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf retry`.
#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// Job id or prefix.
    pub(crate) job: OsString,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf job`.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// Job id or prefix.
    pub(crate) job: OsString,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Job id or prefix.
    pub(crate) job: OsString,
    /// Follow a running job until it ends.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// The original lines of the agent's stream instead of the human view.
    #[arg(long)]
    pub(crate) raw: bool,
    /// An earlier attempt (1 is the first); the latest by default.
    #[arg(long, value_name = "N")]
    pub(crate) attempt: Option<u32>,
    /// Print the events as JSON Lines.
    #[arg(long, conflicts_with = "raw")]
    pub(crate) json: bool,
}

/// The arguments of `wf watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only this assignment (id or prefix); the view ends when it completes.
    pub(crate) assignment: Option<OsString>,
    /// Print JSON Lines: assignment versions and the running jobs' events.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `wf queue`.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf workspaces`.
#[derive(Debug, Args)]
pub(crate) struct WorkspacesArgs {
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf pr`.
#[derive(Debug, Args)]
pub(crate) struct PrArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
    pub(crate) assignment: Option<OsString>,
    /// Undo the last N jobs that changed the branch (the old head stays under refs/wf/).
    #[arg(long, value_name = "N", conflicts_with_all = ["to", "hard"])]
    pub(crate) last: Option<u32>,
    /// Undo this job and every job after it.
    #[arg(long, value_name = "JOB", conflicts_with = "hard")]
    pub(crate) to: Option<String>,
    /// Delete the worktree and the branch, and close the open pull request.
    #[arg(long)]
    pub(crate) hard: bool,
    /// Go ahead even when it loses uncommitted or unpushed work, or rewrites a pushed branch.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf doctor`.
#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    pub(crate) json: JsonFlag,
}

/// The arguments of `wf demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo directory instead of deleting it.
    #[arg(long)]
    pub(crate) keep: bool,
}
