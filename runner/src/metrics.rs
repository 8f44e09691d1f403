//! The runner's metrics, in the Prometheus text format (`GET /metrics` on the dashboard's
//! address).
//!
//! Counters and histograms count what *this* runner did (each attempt is run, and counted, by
//! exactly one runner), and `wf_jobs_running` counts the agents running here: summing them over
//! every runner of a fleet counts each job once. The only fleet-wide figures, the jobs waiting
//! in the store, are named `wf_fleet_*`: they read the same on every runner, so aggregate them
//! with `max`, never `sum`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use wf_core::model::{Assignment, AssignmentStatus, JobStatus, Usage};

/// Upper bounds of the job duration histogram, in seconds (agents run for minutes).
const DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];
/// Upper bounds of the claim-to-spawn histogram, in seconds (the runner's own overhead).
const SPAWN_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What this runner counted.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    finished: BTreeMap<(String, String, String), u64>,
    failures: BTreeMap<String, u64>,
    duration: Histogram,
    spawn: Histogram,
    cost: BTreeMap<String, f64>,
    tokens: BTreeMap<(String, &'static str), u64>,
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, bound) in buckets.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, buckets: &[f64], runner: &str) {
        family(out, name, "histogram", help);
        for (i, bound) in buckets.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            line(
                out,
                format!("{name}_bucket{{runner=\"{runner}\",le=\"{bound}\"}} {n}"),
            );
        }
        line(
            out,
            format!(
                "{name}_bucket{{runner=\"{runner}\",le=\"+Inf\"}} {}",
                self.count
            ),
        );
        line(
            out,
            format!("{name}_sum{{runner=\"{runner}\"}} {}", self.sum),
        );
        line(
            out,
            format!("{name}_count{{runner=\"{runner}\"}} {}", self.count),
        );
    }
}

/// One finished attempt, as the metrics see it.
pub struct Finished<'a> {
    /// Its job's type.
    pub job_type: &'a str,
    /// Its harness.
    pub harness: &'a str,
    /// Its model (`unknown` when neither the job nor the harness names one).
    pub model: &'a str,
    /// `complete`, `failed`, `paused` or `interrupted`.
    pub outcome: &'a str,
    /// The failure reason, when it failed.
    pub reason: Option<String>,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// What it spent.
    pub usage: &'a Usage,
}

impl Metrics {
    /// Counts the time from a claim to its agent's spawn.
    pub fn spawned(&self, seconds: f64) {
        self.inner
            .lock()
            .expect("metrics lock")
            .spawn
            .observe(SPAWN_BUCKETS, seconds);
    }

    /// Counts a finished attempt.
    pub fn finished(&self, f: &Finished<'_>) {
        let mut m = self.inner.lock().expect("metrics lock");
        let key = (
            f.job_type.to_string(),
            f.harness.to_string(),
            f.outcome.to_string(),
        );
        *m.finished.entry(key).or_default() += 1;
        if let Some(reason) = &f.reason {
            *m.failures.entry(reason.clone()).or_default() += 1;
        }
        m.duration.observe(DURATION_BUCKETS, f.seconds);
        if let Some(cost) = f.usage.cost_usd {
            *m.cost.entry(f.model.to_string()).or_default() += cost;
        }
        *m.tokens.entry((f.model.to_string(), "input")).or_default() += f.usage.input_tokens;
        *m.tokens.entry((f.model.to_string(), "output")).or_default() += f.usage.output_tokens;
    }

    /// The text exposition: this runner's figures (`running` agents here) and the fleet's
    /// waiting jobs from `docs`.
    pub fn render(&self, runner: &str, running: usize, docs: &[Assignment]) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let r = escape(runner);
        family(
            &mut out,
            "wf_jobs_running",
            "gauge",
            "Agents running on this runner.",
        );
        line(
            &mut out,
            format!("wf_jobs_running{{runner=\"{r}\"}} {running}"),
        );
        family(
            &mut out,
            "wf_jobs_total",
            "counter",
            "Attempts this runner finished, by job type, harness and outcome.",
        );
        for ((t, h, o), n) in &m.finished {
            let h = escape(h);
            line(&mut out, format!("wf_jobs_total{{runner=\"{r}\",type=\"{t}\",harness=\"{h}\",outcome=\"{o}\"}} {n}"));
        }
        family(
            &mut out,
            "wf_job_failures_total",
            "counter",
            "Failed attempts on this runner, by reason.",
        );
        for (reason, n) in &m.failures {
            line(
                &mut out,
                format!("wf_job_failures_total{{runner=\"{r}\",reason=\"{reason}\"}} {n}"),
            );
        }
        m.duration.render(
            &mut out,
            "wf_job_duration_seconds",
            "How long this runner's attempts ran.",
            DURATION_BUCKETS,
            &r,
        );
        m.spawn.render(
            &mut out,
            "wf_spawn_seconds",
            "From a claim to its agent's spawn, on this runner.",
            SPAWN_BUCKETS,
            &r,
        );
        render_spend(&mut out, &m, &r);
        render_fleet(&mut out, docs);
        out
    }
}

/// What this runner's attempts spent, by model.
fn render_spend(out: &mut String, m: &Inner, r: &str) {
    family(
        out,
        "wf_cost_usd_total",
        "counter",
        "What this runner's attempts cost, by model (unpriced attempts add nothing).",
    );
    for (model, cost) in &m.cost {
        line(
            out,
            format!(
                "wf_cost_usd_total{{runner=\"{r}\",model=\"{}\"}} {cost}",
                escape(model)
            ),
        );
    }
    family(
        out,
        "wf_tokens_total",
        "counter",
        "Tokens this runner's attempts used, by model and kind.",
    );
    for ((model, kind), n) in &m.tokens {
        line(
            out,
            format!(
                "wf_tokens_total{{runner=\"{r}\",model=\"{}\",kind=\"{kind}\"}} {n}",
                escape(model)
            ),
        );
    }
}

/// The fleet's waiting work, from the store's documents.
fn render_fleet(out: &mut String, docs: &[Assignment]) {
    let (mut queued, mut waiting, mut blocked) = (0, 0, 0);
    for d in docs {
        if d.status == AssignmentStatus::Blocked {
            blocked += 1;
        }
        if matches!(
            d.status,
            AssignmentStatus::Pending | AssignmentStatus::Active
        ) {
            queued += d
                .jobs
                .iter()
                .filter(|j| j.status == JobStatus::Pending)
                .count();
            waiting += d
                .jobs
                .iter()
                .filter(|j| j.status == JobStatus::WaitingRetry)
                .count();
        }
    }
    let fleet = "(the same on every runner: aggregate with max)";
    family(
        out,
        "wf_fleet_jobs_queued",
        "gauge",
        &format!("Pending jobs of open assignments in the store {fleet}."),
    );
    line(out, format!("wf_fleet_jobs_queued {queued}"));
    family(
        out,
        "wf_fleet_jobs_waiting_retry",
        "gauge",
        &format!("Jobs paused until a retry time {fleet}."),
    );
    line(out, format!("wf_fleet_jobs_waiting_retry {waiting}"));
    family(
        out,
        "wf_fleet_assignments_blocked",
        "gauge",
        &format!("Assignments waiting for a human {fleet}."),
    );
    line(out, format!("wf_fleet_assignments_blocked {blocked}"));
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    line(out, format!("# HELP {name} {help}"));
    line(out, format!("# TYPE {name} {kind}"));
}

fn line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
