//! `wf`: the command line humans and PM agents use to create, steer and inspect work.
//!
//! Every command becomes one request ([`wf_runner::api::Call`]) executed by a [`Backend`]: the
//! running runner over its control socket, or the store directly when no runner holds it.
//! Output is a comfy-table for humans or JSON with `--json`; errors are one line on stderr with
//! a documented exit code; a closed stdout ends a command quietly.

mod args;
mod cmd;
mod demo;
mod doctor;
mod input;
mod output;
mod pretty;
mod sim;
mod workflow;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use wf_core::config::{self, Config};
use wf_core::model::ErrorKind;
use wf_runner::client::Backend;
use wf_runner::ops::OpError;

use args::{Cli, Command, StoreCommand};

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

    /// Stdout was closed by its reader (`wf … | head`): a normal end, exit 0, no message.
    fn closed_pipe() -> Self {
        Self {
            code: exit::OK,
            message: String::new(),
        }
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let code = match e.kind() {
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::Invalid => exit::ERROR,
            ErrorKind::Store | ErrorKind::Unavailable => exit::UNAVAILABLE,
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
    // The demo runs a runner in this process; its guardian is this executable too.
    if let Some(code) = wf_runner::guard::main_if_requested() {
        return code;
    }
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
        Command::Demo(args) => demo::main(cli.config.as_deref(), args.keep),
        Command::Doctor(args) => run_doctor(cli.config.as_deref(), args.json.json),
        Command::Workflow(command) => workflow::main(cli.config.as_deref(), command),
        Command::Store(command) => run_blocking(cli.config.as_deref(), command),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) if f.code == exit::OK => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("wf: error: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

fn run_blocking(config_path: Option<&Path>, command: StoreCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: exit::ERROR,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    runtime.block_on(async {
        let config = load_config(config_path)?;
        // A dry run stores nothing, so it opens no store.
        if let StoreCommand::Create(args) = command {
            if args.dry_run {
                return cmd::create::dry_run(&config, args).await;
            }
            let backend = Backend::open(&config).await?;
            return cmd::run(backend, &config, StoreCommand::Create(args)).await;
        }
        let backend = Backend::open(&config).await?;
        cmd::run(backend, &config, command).await
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
