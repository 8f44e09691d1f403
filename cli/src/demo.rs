//! `wf demo`: the whole loop, offline, in a throwaway directory.
//!
//! It writes a config whose only harness is the simulated agent (this binary, `wf
//! simulate-agent`), starts a real runner in this process on the embedded store, creates an
//! assignment through the runner's control socket, and prints the chain as it progresses:
//! plan → PM → implement → PM → complete.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use wf_core::config;
use wf_core::model::{Assignment, AssignmentStatus, JobStatus, JobType};
use wf_runner::api;
use wf_runner::client::{Backend, Client, ConnectError};
use wf_runner::daemon::{self, Options};
use wf_runner::ops::{CreateRequest, JobSpec};
use wf_runner::paths;

use crate::{output, Failure, Result};

/// The demo's north star.
const NORTH_STAR: &str =
    "Add a shell script hello.sh that greets the user with \"Hello from wf!\".";

fn fail(message: String) -> Failure {
    Failure {
        code: crate::exit::ERROR,
        message,
    }
}

/// `wf demo`.
// Long: the demo is a script, read top to bottom: set up, run, show what happened.
pub(crate) fn main(config_path: Option<&Path>, keep: bool) -> Result<()> {
    if config_path.is_some() {
        return Err(Failure::usage(
            "wf demo makes its own config; --config does not apply",
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("wf-demo-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a demo directory: {e}")))?;
    let root = dir.path().to_path_buf();
    let exe =
        std::env::current_exe().map_err(|e| fail(format!("cannot find this wf binary: {e}")))?;
    let config_file = root.join(".wf").join("config.json");
    std::fs::create_dir_all(root.join(".wf"))
        .map_err(|e| fail(format!("cannot write the demo config: {e}")))?;
    let config_text = json!({
        "namespace": "demo",
        "maxConcurrent": 1,
        "timeoutMs": 60_000,
        "idleTimeoutMs": 30_000,
        "shutdownGraceMs": 5_000,
        "harnessDefaults": {"default": "simulated", "pm": "simulated"},
        "harnesses": {"simulated": {
            "command": exe.display().to_string(),
            "args": ["simulate-agent"],
            "format": "claude"
        }}
    });
    std::fs::write(
        &config_file,
        serde_json::to_string_pretty(&config_text).expect("json"),
    )
    .map_err(|e| fail(format!("cannot write the demo config: {e}")))?;
    let config = config::load(Some(&config_file), &root)?;

    println!("wf demo — the whole loop on the embedded store, with a SIMULATED agent");
    println!("(no AI model, no network, no API key: the agent is `wf simulate-agent`, which");
    println!(" speaks Claude Code's stream-json, does small real work, and decides as PM");
    println!(" through the real wf CLI)");
    println!("directory: {}\n", root.display());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the async runtime: {e}")))?;
    let final_doc = runtime.block_on(drive(config))?;

    println!();
    print!(
        "{}",
        output::assignment(&final_doc, wf_core::clock::now_ms())
    );
    if let Ok(script) = std::fs::read_to_string(root.join("hello.sh")) {
        println!("\n$ cat hello.sh\n{}", script.trim_end());
        #[expect(
            clippy::disallowed_methods,
            reason = "the demo runs the script its simulated agent wrote, to show it works"
        )]
        let ran = std::process::Command::new("sh")
            .arg("hello.sh")
            .current_dir(&root)
            .output();
        if let Ok(out) = ran {
            println!(
                "$ sh hello.sh\n{}",
                String::from_utf8_lossy(&out.stdout).trim_end()
            );
        }
    }
    println!(
        "\ntranscripts of every agent run: {}",
        root.join(".wf/transcripts").display()
    );
    if keep {
        let kept = dir.keep();
        println!(
            "kept: {} (inspect with `cd {} && wf assignment {}`)",
            kept.display(),
            kept.display(),
            final_doc.id
        );
    } else {
        println!("(the demo directory is removed; run `wf demo --keep` to keep it)");
    }
    if final_doc.status != AssignmentStatus::Complete {
        return Err(fail(format!(
            "the demo assignment ended {}",
            final_doc.status
        )));
    }
    Ok(())
}

async fn connect(
    socket: &Path,
    runner: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(ConnectError::Failed(e)) => return Err(e.into()),
            Err(ConnectError::NotRunning) if runner.is_finished() => {
                return Err(fail("the demo runner stopped before it was ready".into()))
            }
            Err(ConnectError::NotRunning) if tokio::time::Instant::now() > deadline => {
                return Err(fail("the demo runner did not start within 20 s".into()))
            }
            Err(ConnectError::NotRunning) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn drive(config: config::Config) -> Result<Assignment> {
    let socket = paths::socket_path(&config.state_dir);
    let (stop, signals) = mpsc::unbounded_channel();
    let opts = Options {
        config,
        wf_dir: wf_runner::env::find_wf_dir(),
        http: None,
    };
    let runner = tokio::spawn(daemon::run(opts, signals));
    let result = async {
        let mut backend = Backend::Runner(Box::new(connect(&socket, &runner).await?));
        let req = CreateRequest {
            north_star: NORTH_STAR.into(),
            priority: 10,
            independent: false,
            start: Some(JobSpec {
                job_type: JobType::Plan,
                harness: None,
                model: None,
                context: None,
            }),
            budget: None,
            forge: None,
            plan: None,
            id: None,
        };
        let doc: Assignment = backend.call(req).await?;
        println!("created assignment {}: {NORTH_STAR}", doc.id);
        let mut watch = connect(&socket, &runner)
            .await?
            .watch(Some(doc.id.clone()))
            .await?;
        let mut seen: HashMap<String, JobStatus> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let next = tokio::time::timeout_at(deadline, watch.next())
                .await
                .map_err(|_| fail("the demo did not finish within 120 s".into()))?;
            let doc = match next {
                Some(d) => d?,
                None => return Err(fail("the demo runner went away".into())),
            };
            report(&mut backend, &doc, &mut seen).await;
            if doc.lease.is_none()
                && matches!(
                    doc.status,
                    AssignmentStatus::Complete | AssignmentStatus::Blocked
                )
            {
                println!("assignment {} is {}", doc.id, doc.status);
                return Ok(doc);
            }
        }
    }
    .await;
    // Why: the runner stops when asked; if it already stopped, the send has no receiver.
    let _ = stop.send(());
    match runner.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(fail(format!("the demo runner failed: {e:#}"))),
        Err(e) => return Err(fail(format!("the demo runner panicked: {e}"))),
    }
    result
}

/// Prints what changed since the last version.
async fn report(backend: &mut Backend, doc: &Assignment, seen: &mut HashMap<String, JobStatus>) {
    for (i, job) in doc.jobs.iter().enumerate() {
        let before = seen.insert(job.id.clone(), job.status);
        if before == Some(job.status) {
            continue;
        }
        let who = match &job.inserted_by {
            Some(pm) => format!("inserted by PM job {pm}"),
            None if job.job_type == JobType::Pm => "PM shadow job, inserted by the runner".into(),
            None => "inserted by you".into(),
        };
        let label = format!("{:>2}. {:<9} {}", i + 1, job.job_type.as_str(), job.id);
        match job.status {
            JobStatus::Pending if before.is_none() => println!("{label}  queued ({who})"),
            JobStatus::Running => println!(
                "{label}  running (simulated agent, attempt {})",
                job.attempt
            ),
            JobStatus::Complete | JobStatus::Failed => {
                let took = match (job.started_at, job.completed_at) {
                    (Some(s), Some(e)) => output::duration(e.saturating_sub(s)),
                    _ => "-".into(),
                };
                let result = match backend
                    .call(api::GetJob {
                        job: job.id.clone(),
                    })
                    .await
                {
                    Ok(d) => d.result.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                println!(
                    "{label}  {} in {took}: {}",
                    job.status,
                    output::one_line(&result, 90)
                );
            }
            _ => println!("{label}  {}", job.status),
        }
    }
}
