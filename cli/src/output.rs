//! Human output: tables, colours (only on a terminal without `NO_COLOR`), times and money.

use std::io::IsTerminal;
use std::sync::OnceLock;

use comfy_table::{Cell, Color, ContentArrangement, Table};
use comfy_table::{ContentLineStyle, LineStyle, TableStyle};
use wf_core::model::{Assignment, AssignmentStatus, Job, JobStatus, Millis, Usage};
use wf_runner::ops::{QueueEntry, QueueView};

/// Whether to colour stdout (a terminal, `NO_COLOR` unset, `TERM` not `dumb`), decided once.
pub(crate) fn colour() -> bool {
    static COLOUR: OnceLock<bool> = OnceLock::new();
    *COLOUR.get_or_init(|| wf_runner::env::colour_allowed(std::io::stdout().is_terminal()))
}

/// Columns separated by spaces, a rule under the header, no other lines.
const STYLE: TableStyle = TableStyle::new()
    .header_lines(ContentLineStyle::none().junction(' '))
    .header_separator(LineStyle::none().fill('─').junction(' '))
    .content_lines(ContentLineStyle::none().junction(' '));

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(STYLE)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().map(Cell::new));
    if !colour() {
        t.force_no_tty();
    }
    t
}

fn status_cell(text: &str, colour: Option<Color>) -> Cell {
    match colour {
        Some(c) if self::colour() => Cell::new(text).fg(c),
        _ => Cell::new(text),
    }
}

fn assignment_status(s: AssignmentStatus) -> Cell {
    let c = match s {
        AssignmentStatus::Pending => None,
        AssignmentStatus::Active => Some(Color::Cyan),
        AssignmentStatus::Blocked => Some(Color::Yellow),
        AssignmentStatus::Complete => Some(Color::Green),
    };
    status_cell(s.as_str(), c)
}

fn job_status(j: &Job) -> Cell {
    let c = match j.status {
        JobStatus::Pending => None,
        JobStatus::Running => Some(Color::Cyan),
        JobStatus::Complete => Some(Color::Green),
        JobStatus::Failed => Some(Color::Red),
        JobStatus::WaitingRetry => Some(Color::Yellow),
        JobStatus::Skipped => Some(Color::DarkGrey),
    };
    let text = match (j.status, j.failure_reason) {
        (JobStatus::Failed, Some(r)) => format!("failed ({r})"),
        (s, _) => s.to_string(),
    };
    status_cell(&text, c)
}

/// A table of plain strings.
/// A size in bytes, for humans.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub(crate) fn plain_table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = table(headers);
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

/// "3s", "4m 05s", "2h 07m".
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// "5m ago".
pub(crate) fn ago(then: Millis, now: Millis) -> String {
    format!(
        "{} ago",
        duration(now.saturating_sub(then))
            .split(' ')
            .next()
            .unwrap_or("")
    )
}

/// "$0.0123", or "unknown".
pub(crate) fn cost(u: &Usage) -> String {
    match u.cost_usd {
        Some(c) => format!("${c:.4}"),
        None if u.input_tokens == 0 && u.output_tokens == 0 => "-".into(),
        None => "unknown".into(),
    }
}

/// Shortens to `n` characters on one line.
pub(crate) fn one_line(text: &str, n: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= n {
        flat
    } else {
        let mut s: String = flat.chars().take(n.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

fn job_duration(j: &Job, now: Millis) -> String {
    match (j.started_at, j.completed_at, j.status) {
        (Some(s), Some(e), _) => duration(e.saturating_sub(s)),
        (Some(s), None, JobStatus::Running) => format!("{}…", duration(now.saturating_sub(s))),
        _ => "-".into(),
    }
}

/// `wf assignments`.
pub(crate) fn assignments(docs: &[Assignment], now: Millis) -> String {
    if docs.is_empty() {
        return "no assignments".into();
    }
    let mut t = table(&[
        "ID",
        "STATUS",
        "NORTH STAR",
        "JOBS",
        "PRI",
        "MODE",
        "TIME",
        "TOKENS",
        "COST",
        "CREATED",
    ]);
    for d in docs {
        let done = d.jobs.iter().filter(|j| j.status.is_finished()).count();
        t.add_row(vec![
            Cell::new(&d.id),
            assignment_status(d.status),
            Cell::new(one_line(&d.north_star, 60)),
            Cell::new(format!("{done}/{}", d.jobs.len())),
            Cell::new(d.priority),
            Cell::new(if d.independent {
                "independent"
            } else {
                "sequential"
            }),
            Cell::new(assignment_duration(d, now)),
            Cell::new(tokens(&d.usage)),
            Cell::new(cost(&d.usage)),
            Cell::new(ago(d.created_at, now)),
        ]);
    }
    t.to_string()
}

/// From the first job's start to now (or to the last change, once complete).
fn assignment_duration(d: &Assignment, now: Millis) -> String {
    match (d.started_at, d.status) {
        (Some(s), AssignmentStatus::Complete) => duration(d.updated_at.saturating_sub(s)),
        (Some(s), _) => duration(now.saturating_sub(s)),
        (None, _) => "-".into(),
    }
}

/// Input + output tokens, "-" for none.
fn tokens(u: &Usage) -> String {
    match u.input_tokens + u.output_tokens {
        0 => "-".into(),
        n => n.to_string(),
    }
}

fn jobs_table(jobs: &[Job], now: Millis, with_assignment: bool) -> Table {
    let mut headers = vec![
        "#", "JOB", "TYPE", "HARNESS", "STATUS", "TRY", "TIME", "TOKENS", "COST", "NOTE",
    ];
    if with_assignment {
        headers.insert(1, "ASSIGNMENT");
    }
    let mut t = table(&headers);
    for (i, j) in jobs.iter().enumerate() {
        let mut note = String::new();
        if let Some(t) = &j.task {
            note.push_str(&format!("task {}", t.id));
            if t.round > 1 {
                note.push_str(&format!(" round {}", t.round));
            }
            note.push_str("; ");
        }
        if j.group_id.is_some() {
            note.push_str("parallel group; ");
        }
        if j.pm_reminder {
            note.push_str("reminder; ");
        }
        if let Some(d) = &j.failure_detail {
            note.push_str(d);
        } else if let (JobStatus::WaitingRetry, Some(at)) = (j.status, j.retry_after) {
            note.push_str(&format!("retry in {}", duration(at.saturating_sub(now))));
        }
        let harness = match &j.model {
            Some(m) => format!("{} ({m})", j.harness),
            None => j.harness.clone(),
        };
        let mut row = vec![
            Cell::new(i + 1),
            Cell::new(&j.id),
            Cell::new(j.job_type),
            Cell::new(harness),
            job_status(j),
            Cell::new(j.attempt),
            Cell::new(job_duration(j, now)),
            Cell::new(tokens(&j.usage)),
            Cell::new(cost(&j.usage)),
            Cell::new(one_line(note.trim_end_matches("; "), 70)),
        ];
        if with_assignment {
            row.insert(1, Cell::new(&j.assignment_id));
        }
        t.add_row(row);
    }
    t
}

/// `wf jobs`.
pub(crate) fn jobs(jobs: &[Job], now: Millis) -> String {
    if jobs.is_empty() {
        return "no jobs".into();
    }
    jobs_table(jobs, now, true).to_string()
}

/// The workflow an assignment follows, in one line.
fn workflow_line(w: &wf_core::workflow::WorkflowRef) -> String {
    let params: Vec<String> = w.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} version {} ({}, hash {}){}",
        w.name,
        w.version,
        w.source,
        w.hash,
        if params.is_empty() {
            String::new()
        } else {
            format!(", {}", params.join(", "))
        }
    )
}

/// `wf assignment`.
pub(crate) fn assignment(d: &Assignment, now: Millis) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<13}{v}\n"));
    line("assignment", &d.id);
    let status = match &d.blocked_reason {
        Some(r) => format!("{} — {}", d.status, r),
        None => d.status.to_string(),
    };
    line("status", &status);
    line("north star", &one_line(&d.north_star, 200));
    line(
        "scheduling",
        &format!(
            "{}, priority {}",
            if d.independent {
                "independent"
            } else {
                "sequential"
            },
            d.priority
        ),
    );
    line("created", &ago(d.created_at, now));
    if let Some(w) = &d.workflow {
        line("workflow", &workflow_line(w));
    }
    line(
        "spent",
        &format!(
            "{} ({} in / {} out tokens, {} PM rounds)",
            cost(&d.usage),
            d.usage.input_tokens,
            d.usage.output_tokens,
            d.pm_rounds
        ),
    );
    if let Some(l) = &d.lease {
        line(
            "running on",
            &format!("runner {} on {} (epoch {})", l.runner_id, l.host, l.epoch),
        );
    }
    for (k, v) in [("artifacts", &d.artifacts), ("decisions", &d.decisions)] {
        if !v.is_empty() {
            out.push_str(&format!("{k}:\n"));
            for l in v.lines() {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    if !d.notes.is_empty() {
        out.push_str("notes:\n");
        for n in &d.notes {
            out.push_str(&format!("  {}\n", n.text));
        }
    }
    out.push('\n');
    if d.jobs.is_empty() {
        out.push_str(&format!(
            "no jobs yet; insert one with `wf insert-job {} --type plan`\n",
            d.id
        ));
    } else {
        if d.archive.jobs > 0 {
            out.push_str(&format!(
                "{} earlier finished jobs are archived; `wf jobs --assignment {}` lists them all\n",
                d.archive.jobs, d.id
            ));
        }
        out.push_str(&jobs_table(&d.jobs, now, false).to_string());
        out.push('\n');
    }
    out
}

/// `wf job`.
pub(crate) fn job(detail: &wf_runner::ops::JobDetail, now: Millis) -> String {
    let j = &detail.job;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13}{v}\n"));
    line("job", j.id.clone());
    line(
        "assignment",
        format!("{} ({})", j.assignment_id, detail.assignment_status),
    );
    line("type", j.job_type.to_string());
    line(
        "harness",
        match &j.model {
            Some(m) => format!("{} (model {m})", j.harness),
            None => j.harness.clone(),
        },
    );
    let status = match (j.status, j.failure_reason, &j.failure_detail) {
        (JobStatus::Failed, Some(r), Some(d)) => format!("failed ({r}): {d}"),
        (JobStatus::Failed, Some(r), None) => format!("failed ({r})"),
        (s, _, Some(d)) => format!("{s}: {d}"),
        (s, _, None) => s.to_string(),
    };
    line("status", status);
    line("attempts", j.attempt.to_string());
    if let Some(code) = j.exit_code {
        line("exit code", code.to_string());
    }
    line("time", job_duration(j, now));
    line(
        "spent",
        format!(
            "{} ({} in / {} out tokens)",
            cost(&j.usage),
            j.usage.input_tokens,
            j.usage.output_tokens
        ),
    );
    if let Some(s) = &j.session_id {
        line("session", s.clone());
    }
    if let Some(g) = &j.group_id {
        line("group", g.clone());
    }
    if !j.reviews.is_empty() {
        line("reviews", j.reviews.join(", "));
    }
    if let Some(p) = &j.inserted_by {
        line("inserted by", p.clone());
    }
    out.push_str(&evidence(j));
    for (k, v) in [("context", &detail.context), ("result", &detail.result)] {
        out.push_str(&format!("\n{k}:\n"));
        match v {
            Some(text) => {
                for l in text.lines() {
                    out.push_str(&format!("  {l}\n"));
                }
            }
            None => out.push_str("  (none)\n"),
        }
    }
    out
}

/// What the runner saw of job `j`: its commits and its verification steps.
fn evidence(j: &Job) -> String {
    let mut out = String::new();
    if let Some(c) = &j.commits {
        let short = |s: &str| s.chars().take(10).collect::<String>();
        let commits = if c.start == c.end {
            format!("none (at {})", short(&c.end))
        } else {
            format!("{}..{}", short(&c.start), short(&c.end))
        };
        out.push_str(&format!("{:<13}{commits}\n", "commits"));
    }
    if !j.checks.is_empty() {
        out.push_str("\nverification:\n");
        for c in &j.checks {
            out.push_str(&format!(
                "  {} — `{}` ({})\n",
                c.summary(),
                c.command,
                duration(c.duration_ms)
            ));
        }
    }
    out
}

/// `wf queue`.
pub(crate) fn queue(view: &QueueView, now: Millis) -> String {
    if view.assignments.is_empty() {
        return "nothing queued: no pending or active assignments".into();
    }
    let mut t = table(&[
        "ASSIGNMENT",
        "STATUS",
        "NORTH STAR",
        "RUNNING",
        "NEXT",
        "WAITING",
    ]);
    for e in &view.assignments {
        t.add_row(queue_row(e, now));
    }
    t.to_string()
}

fn queue_row(e: &QueueEntry, now: Millis) -> Vec<Cell> {
    let running = e
        .running
        .iter()
        .map(|r| {
            format!(
                "{} {} on {}@{} ({})",
                r.job_type,
                r.job_id,
                r.runner_id,
                r.host,
                r.started_at
                    .map_or("-".into(), |s| duration(now.saturating_sub(s)))
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut next = e
        .next
        .iter()
        .map(|n| format!("{} {}", n.job_type, n.job_id))
        .collect::<Vec<_>>()
        .join("\n");
    if let Some(ws) = &e.workspace {
        next.push_str(&format!("\n(on {}, worktree on {})", ws.branch, ws.host));
    }
    let waiting = match (&e.waiting_until, &e.blocked_reason) {
        (_, Some(reason)) => one_line(reason, 40),
        (Some(at), None) => format!("retry in {}", duration(at.saturating_sub(now))),
        (None, None) => String::new(),
    };
    vec![
        Cell::new(&e.id),
        assignment_status(e.status),
        Cell::new(one_line(&e.north_star, 40)),
        Cell::new(if running.is_empty() {
            "-".into()
        } else {
            running
        }),
        Cell::new(if next.is_empty() { "-".into() } else { next }),
        Cell::new(waiting),
    ]
}
