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
    /// Create an assignment from a north star; prints its id.
    Create {
        /// What the assignment must achieve.
        north_star: OsString,
        /// Among assignments of the same age, lower runs first.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
        priority: i64,
        /// Run alongside other assignments instead of one at a time.
        #[arg(long)]
        independent: bool,
        /// Insert a first job of this type (plan, implement, review, uat, document, pm).
        #[arg(long, value_name = "TYPE")]
        start: Option<String>,
        /// Budget: most US dollars over all jobs (default: budgets.maxCostUsd in the config).
        #[arg(long, value_name = "USD")]
        max_cost: Option<f64>,
        /// Budget: most non-PM jobs started.
        #[arg(long, value_name = "N")]
        max_jobs: Option<u32>,
        /// Budget: most PM runs.
        #[arg(long, value_name = "N")]
        max_pm_rounds: Option<u32>,
        /// Budget: most time from the first job's start, like 90m, 4h or 3600s.
        #[arg(long, value_name = "DURATION")]
        max_wall_time: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Insert a job (or, with --jobs, a group of parallel jobs) into an assignment.
    InsertJob {
        /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
        assignment: Option<OsString>,
        /// Job type: plan, implement, review, uat, document or pm.
        #[arg(long = "type", value_name = "TYPE", conflicts_with_all = ["jobs", "jobs_file"])]
        job_type: Option<String>,
        /// Harness (default: harnessDefaults in the config).
        #[arg(long, requires = "job_type")]
        harness: Option<String>,
        /// Model (default: the harness's).
        #[arg(long, requires = "job_type")]
        model: Option<String>,
        /// What the job is to do.
        #[arg(long, requires = "job_type", conflicts_with = "context_file")]
        context: Option<OsString>,
        /// Read the context from a file ("-" for stdin).
        #[arg(long, value_name = "FILE", requires = "job_type")]
        context_file: Option<PathBuf>,
        /// A JSON array of jobs run in parallel: [{"jobType": "review", "context": "..."}].
        #[arg(long, value_name = "JSON", conflicts_with = "jobs_file")]
        jobs: Option<OsString>,
        /// Read the --jobs array from a file ("-" for stdin).
        #[arg(long, value_name = "FILE")]
        jobs_file: Option<PathBuf>,
        /// Insert after this job (default: the end of the chain, or after the calling job).
        #[arg(long, value_name = "JOB_ID")]
        after: Option<OsString>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change an assignment's status or memory.
    UpdateAssignment {
        /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
        assignment: Option<OsString>,
        /// active (resume), blocked (needs --reason) or complete.
        #[arg(long)]
        status: Option<String>,
        /// Why it is blocked.
        #[arg(long)]
        reason: Option<OsString>,
        /// Artifacts: appended as a line when an agent runs this, replaced when a human does.
        #[arg(long)]
        artifacts: Option<OsString>,
        /// Decisions: same rule as --artifacts.
        #[arg(long)]
        decisions: Option<OsString>,
        /// A note for the next PM (for example when resuming a blocked assignment).
        #[arg(long)]
        note: Option<OsString>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List assignments, oldest first.
    Assignments {
        /// Only this status: pending, active, blocked or complete.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show an assignment and its chain of jobs.
    Assignment {
        /// Assignment id or prefix (default: $WF_ASSIGNMENT_ID).
        assignment: Option<OsString>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List jobs of all assignments, in chain order.
    Jobs {
        /// Only this status: pending, running, complete, failed or waiting_retry.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this assignment.
        #[arg(long, value_name = "ID")]
        assignment: Option<OsString>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop an assignment's running jobs, or one job, and block the assignment.
    Cancel {
        /// Assignment or job id (or a unique prefix).
        id: OsString,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Put a failed or cancelled job back in the queue, in place, and resume its assignment.
    Retry {
        /// Job id or prefix.
        job: OsString,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a job with its context and result.
    Job {
        /// Job id or prefix.
        job: OsString,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// What is running, runnable and waiting, per assignment.
    Queue {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check the configured harnesses (installed? version? login?) and the store.
    Doctor {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Run the whole loop offline with a simulated agent, in a throwaway directory.
    Demo {
        /// Keep the demo directory instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
    /// The simulated agent used by `wf demo` (speaks Claude's stream-json).
    #[command(hide = true)]
    SimulateAgent,
}
