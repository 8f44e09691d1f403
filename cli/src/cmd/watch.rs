//! `wf watch`: a live view of the assignments (or one) and their running jobs. Redrawn when a
//! document changes or an event arrives (never by polling the store; a one-second tick only
//! moves the clocks on a terminal), plain lines when stdout is not a terminal, JSON Lines with
//! `--json`. Ctrl-C ends it cleanly; watching one assignment ends when it completes.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;

use super::*;
use crate::args::WatchArgs;
use wf_core::clock::now_ms;
use wf_core::live::{EventFrame, LiveKind};
use wf_core::model::Millis;
use wf_runner::ops::OpError;

/// One thing the view learnt.
enum Update {
    Doc(Box<std::result::Result<Assignment, OpError>>),
    Frame(String, String, u32, EventFrame),
}

enum Mode {
    Json,
    Lines,
    Screen,
}

pub(crate) async fn run(
    backend: &mut Backend,
    config: &wf_core::config::Config,
    args: WatchArgs,
) -> Result<()> {
    let only = opt_text("the assignment id", args.assignment.as_ref())?;
    let mode = match (args.json, std::io::stdout().is_terminal()) {
        (true, _) => Mode::Json,
        (false, false) => Mode::Lines,
        (false, true) => Mode::Screen,
    };
    let mut docs_rx = backend.watch(config, only.clone()).await?;
    let (tx, mut updates) = tokio::sync::mpsc::channel::<Update>(1024);
    let mut view = View::default();
    let mut followed = HashSet::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    if let Mode::Screen = mode {
        out!("\x1b[?25l");
    }
    let result = loop {
        let update = tokio::select! {
            _ = &mut interrupted => break Ok(()),
            doc = docs_rx.recv() => match doc {
                Some(doc) => Update::Doc(Box::new(doc)),
                None if backend.via_runner() || only.is_some() => break Ok(()),
                None => {
                    eprintln!("wf watch: no runner is running; nothing will change");
                    break Ok(());
                }
            },
            update = updates.recv() => match update {
                Some(u) => u,
                None => continue,
            },
            _ = tick.tick(), if matches!(mode, Mode::Screen) => {
                view.draw()?;
                continue;
            }
        };
        let doc = match update {
            Update::Doc(doc) => match *doc {
                Err(e) => break Err(e.into()),
                Ok(doc) => doc,
            },
            Update::Frame(aid, job, attempt, frame) => {
                view.frame(&mode, &aid, &job, attempt, frame)?;
                continue;
            }
        };
        for job in doc.jobs.iter().filter(|j| j.status == JobStatus::Running) {
            if followed.insert((job.id.clone(), job.attempt)) {
                follow(backend, config, &doc.id, job, tx.clone()).await;
            }
        }
        let finished = only.is_some() && doc.status == AssignmentStatus::Complete;
        view.doc(&mode, doc)?;
        if finished {
            break Ok(());
        }
    };
    if let Mode::Screen = mode {
        out!("\x1b[?25h\n");
    }
    result
}

/// Follows one running attempt's events into the view.
async fn follow(
    backend: &Backend,
    config: &wf_core::config::Config,
    aid: &str,
    job: &Job,
    tx: tokio::sync::mpsc::Sender<Update>,
) {
    let request = api::Events {
        job: job.id.clone(),
        attempt: Some(job.attempt),
        from: 0,
        follow: true,
        raw: false,
    };
    let Ok(mut frames) = backend.events(config, request).await else {
        return;
    };
    let (aid, jid, attempt) = (aid.to_string(), job.id.clone(), job.attempt);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = frames.recv().await {
            let end = matches!(frame, EventFrame::End {});
            let update = Update::Frame(aid.clone(), jid.clone(), attempt, frame);
            if end || tx.send(update).await.is_err() {
                return;
            }
        }
    });
}

/// What the view shows: the latest version of each assignment, the latest activity of each
/// running job.
#[derive(Default)]
struct View {
    docs: BTreeMap<String, Assignment>,
    activity: BTreeMap<String, String>,
}

impl View {
    fn doc(&mut self, mode: &Mode, doc: Assignment) -> Result<()> {
        match mode {
            Mode::Json => {
                let line = serde_json::json!({"type": "assignment", "assignment": &doc});
                outln!("{line}");
            }
            Mode::Lines => {
                let before = self.docs.get(&doc.id);
                for line in changes(before, &doc) {
                    outln!("{} {line}", clock(now_ms()));
                }
            }
            Mode::Screen => {}
        }
        self.docs.insert(doc.id.clone(), doc);
        if let Mode::Screen = mode {
            self.draw()?;
        }
        Ok(())
    }

    fn frame(
        &mut self,
        mode: &Mode,
        aid: &str,
        job: &str,
        attempt: u32,
        frame: EventFrame,
    ) -> Result<()> {
        if let Mode::Json = mode {
            let line = match &frame {
                EventFrame::Event(e) => serde_json::json!({
                    "type": "event", "assignment": aid, "job": job, "attempt": attempt, "event": e
                }),
                EventFrame::Missed(n) => serde_json::json!({
                    "type": "missed", "assignment": aid, "job": job, "attempt": attempt, "count": n
                }),
                _ => return Ok(()),
            };
            outln!("{line}");
            return Ok(());
        }
        let EventFrame::Event(event) = frame else {
            return Ok(());
        };
        let activity = match &event.kind {
            LiveKind::ToolUse { name, input, .. } => format!("[{name}] {input}"),
            LiveKind::Text { text, delta: false } => text.lines().next().unwrap_or("").to_string(),
            LiveKind::RateLimit { rejected: true, .. } => "rate limited".into(),
            LiveKind::Warning { message } => format!("! {message}"),
            _ => return Ok(()),
        };
        let activity = output::one_line(&activity, 100);
        if let Mode::Lines = mode {
            outln!("{} {job} {activity}", clock(event.at));
        }
        self.activity.insert(job.to_string(), activity);
        if let Mode::Screen = mode {
            self.draw()?;
        }
        Ok(())
    }

    fn draw(&self) -> Result<()> {
        let now = now_ms();
        let shown: Vec<&Assignment> = self
            .docs
            .values()
            .filter(|d| {
                d.status != AssignmentStatus::Complete
                    || now.saturating_sub(d.updated_at) < 600_000
                    || self.docs.len() == 1
            })
            .collect();
        let running = shown
            .iter()
            .flat_map(|d| &d.jobs)
            .filter(|j| j.status == JobStatus::Running)
            .count();
        let mut screen = format!(
            "\x1b[H\x1b[2Jwf watch · {} assignment(s) · {running} running · {}   (Ctrl-C to leave)\n\n",
            shown.len(),
            clock(now)
        );
        for d in shown {
            screen.push_str(&format!(
                "{}  {:<8} {}  {}\n",
                d.id,
                d.status.to_string(),
                output::cost(&d.usage),
                output::one_line(&d.north_star, 60)
            ));
            if let Some(reason) = &d.blocked_reason {
                screen.push_str(&format!("    blocked: {}\n", output::one_line(reason, 90)));
            }
            for j in &d.jobs {
                screen.push_str(&job_line(j, now, self.activity.get(&j.id)));
            }
            screen.push('\n');
        }
        out!("{screen}");
        Ok(())
    }
}

/// One job's line on the screen (and its activity line when it runs).
fn job_line(j: &Job, now: Millis, activity: Option<&String>) -> String {
    let mark = match j.status {
        JobStatus::Complete => "✓",
        JobStatus::Running => "▶",
        JobStatus::Failed => "✗",
        JobStatus::WaitingRetry => "⏸",
        _ => "·",
    };
    let mut line = format!(
        "  {mark} {} {:<10} {:<7} {}",
        j.id,
        j.job_type.to_string(),
        j.harness,
        j.status
    );
    match (j.status, j.started_at, j.completed_at) {
        (JobStatus::Running, Some(s), _) => {
            line.push_str(&format!(" {}", output::duration(now.saturating_sub(s))));
            if let Some(p) = &j.progress {
                line.push_str(&format!(
                    " · idle {} · {} tools · {} tok · {}",
                    output::duration(now.saturating_sub(p.last_event_at)),
                    p.tool_calls,
                    p.input_tokens + p.output_tokens,
                    p.cost_usd
                        .map_or("cost unknown".into(), |c| format!("${c:.4}"))
                ));
            }
        }
        (_, Some(s), Some(e)) => line.push_str(&format!(
            " {} · {} tok · {}",
            output::duration(e.saturating_sub(s)),
            j.usage.input_tokens + j.usage.output_tokens,
            output::cost(&j.usage)
        )),
        _ => {}
    }
    if let (JobStatus::WaitingRetry, Some(at)) = (j.status, j.retry_after) {
        line.push_str(&format!(
            " · retry in {}",
            output::duration(at.saturating_sub(now))
        ));
    }
    line.push('\n');
    if j.status == JobStatus::Running {
        let last = activity.or(j.progress.as_ref().map(|p| &p.last_activity));
        if let Some(a) = last.filter(|a| !a.is_empty()) {
            line.push_str(&format!("      {}\n", output::one_line(a, 100)));
        }
    }
    line
}

/// The lines that say what changed between two versions of an assignment.
fn changes(before: Option<&Assignment>, after: &Assignment) -> Vec<String> {
    let mut lines = Vec::new();
    if before.map(|b| b.status) != Some(after.status) {
        let mut line = format!("{} {}", after.id, after.status);
        if let Some(r) = &after.blocked_reason {
            line.push_str(&format!(": {}", output::one_line(r, 100)));
        }
        if before.is_none() {
            line.push_str(&format!(" · {}", output::one_line(&after.north_star, 60)));
        }
        lines.push(line);
    }
    for j in &after.jobs {
        let old = before.and_then(|b| b.job(&j.id));
        if old.map(|o| (o.status, o.attempt)) != Some((j.status, j.attempt)) {
            let mut line = format!("{} {} {} {}", after.id, j.id, j.job_type, j.status);
            if j.attempt > 1 {
                line.push_str(&format!(" (attempt {})", j.attempt));
            }
            if let Some(r) = j.failure_reason {
                line.push_str(&format!(" ({r})"));
            }
            if let (JobStatus::WaitingRetry, Some(at)) = (j.status, j.retry_after) {
                line.push_str(&format!(" until {}", clock(at)));
            }
            lines.push(line);
        }
    }
    lines
}

fn clock(at: Millis) -> String {
    wf_core::live::clock_text(at)
        .trim_end_matches(" UTC")
        .to_string()
}
