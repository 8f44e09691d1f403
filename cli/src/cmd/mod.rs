//! The store commands, one module each: arguments in, one request to the backend, a table or
//! JSON out.

mod approve;
mod assignment;
mod assignments;
mod cancel;
pub(crate) mod create;
mod insert_job;
mod job;
mod jobs;
mod logs;
mod queue;
mod retry;
mod skip_job;
mod triggers;
mod update_assignment;
mod watch;
mod workspaces;

use std::io::Write;

use serde::Serialize;
use wf_runner::api::{self, Call};
use wf_runner::client::Backend;

use crate::args::StoreCommand;
use crate::input::*;
use crate::{exit, output, Failure, Result};
pub(crate) use wf_core::model::{Assignment, AssignmentStatus, Budget, Job, JobStatus, JobType};
pub(crate) use wf_runner::ops::{self, CreateRequest, InsertResult, JobDetail, JobSpec};

/// Prints to stdout; a closed pipe (`wf assignments --json | head -c 100`) ends the command
/// quietly with exit code 0.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::print_out(&format!($($arg)*))?
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::print_out(&format!("{}\n", format_args!($($arg)*)))?
    };
}

pub(crate) use {out, outln};

/// Runs one store command.
pub(crate) async fn run(
    mut backend: Backend,
    config: &wf_core::config::Config,
    command: StoreCommand,
) -> Result<()> {
    let backend = &mut backend;
    match command {
        StoreCommand::Logs(args) => logs::run(backend, config, args).await,
        StoreCommand::Watch(args) => watch::run(backend, config, args).await,
        StoreCommand::Create(args) => create::run(backend, config, args).await,
        StoreCommand::InsertJob(args) => insert_job::run(backend, args).await,
        StoreCommand::UpdateAssignment(args) => update_assignment::run(backend, args).await,
        StoreCommand::Assignments(args) => assignments::run(backend, args).await,
        StoreCommand::Assignment(args) => assignment::run(backend, args).await,
        StoreCommand::Jobs(args) => jobs::run(backend, args).await,
        StoreCommand::Job(args) => job::run(backend, args).await,
        StoreCommand::Cancel(args) => cancel::run(backend, args).await,
        StoreCommand::Retry(args) => retry::run(backend, args).await,
        StoreCommand::Approve(args) => approve::run(backend, args).await,
        StoreCommand::SkipJob(args) => skip_job::run(backend, args).await,
        StoreCommand::Triggers(args) => triggers::run(backend, args).await,
        StoreCommand::Queue(args) => queue::run(backend, args).await,
        StoreCommand::Workspaces(args) => workspaces::list(backend, config, args).await,
        StoreCommand::Gc(args) => workspaces::gc(backend, config, args).await,
        StoreCommand::Pr(args) => workspaces::pr(backend, config, args).await,
        StoreCommand::Rollback(args) => workspaces::rollback(backend, args).await,
    }
}

/// Writes `text` to stdout. A closed pipe is a normal end, not an error (ripgrep's rule).
pub(crate) fn print_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::closed_pipe()),
        Err(e) => Err(Failure {
            code: exit::ERROR,
            message: format!("cannot write to stdout: {e}"),
        }),
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("output serialises");
    print_out(&format!("{text}\n"))
}

async fn call<C: Call>(backend: &mut Backend, call: C) -> Result<C::Output> {
    Ok(backend.call(call).await?)
}
