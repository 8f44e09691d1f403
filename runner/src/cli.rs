//! The `wf-runner` command line: flags, logging, signals, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::sync::mpsc;

use crate::daemon::{self, Options};
use wf_core::config;

/// Exit codes of `wf-runner`.
pub mod exit {
    /// Clean shutdown.
    pub const OK: u8 = 0;
    /// Internal error.
    pub const ERROR: u8 = 1;
    /// Bad configuration or usage.
    pub const CONFIG: u8 = 2;
}

/// Runs wf jobs: claims runnable jobs, runs their agents, records outcomes, starts PM jobs.
#[derive(Debug, Parser)]
#[command(name = "wf-runner", version, about)]
struct Args {
    /// Config file (default: $WF_CONFIG, else .wf/config.json here or in a parent directory).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Serve the dashboard at this address (e.g. 127.0.0.1:8787); an address that is not
    /// loopback needs a token in $WF_HTTP_TOKEN. Overrides the config's `http`.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

/// glibc gives a thread that finds the arenas in use an arena of its own, up to eight per
/// core, and keeps what is freed in each. With 50 agents streaming through the runner's
/// threads it grew from 33 to 170 MiB in ten minutes (peak 304 MiB); with two arenas it stays
/// flat at about 47 MiB (`wf-bench stream`). Set before any other thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "mallopt(3) has no safe wrapper")]
    unsafe {
        // Why: mallopt returns 0 only for an unknown parameter; the default then stays.
        let _ = libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The `wf-runner` entry point.
pub fn main_impl() -> ExitCode {
    if let Some(code) = crate::guard::main_if_requested() {
        return code;
    }
    limit_malloc_arenas();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(crate::env::colour_allowed(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .with_target(false)
        .init();
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("wf-runner: error: cannot read the current directory: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let config = match config::load(args.config.as_deref(), &cwd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wf-runner: error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let http = args.http.or(config.http_listen);
    if let Some(addr) = http {
        let token = std::env::var(crate::http::TOKEN_ENV).ok();
        if let Err(e) = crate::http::check_address(addr, token.as_deref()) {
            eprintln!("wf-runner: error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wf-runner: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        let opts = Options {
            config,
            wf_dir: crate::env::find_wf_dir(),
            http,
        };
        daemon::run(opts, rx).await
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("wf-runner: error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
