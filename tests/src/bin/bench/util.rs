//! What every figure needs: the binaries, timing and statistics, the runner's memory and CPU
//! from `/proc`, and the figure rows BENCHMARKS.md is made of.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wf_tests::{Bins, TestEnv};

/// The binaries next to this one (a release build: `cargo build --release -p wf-tests --bins`).
pub(crate) fn bins() -> Bins {
    let dir = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("dir")
        .to_path_buf();
    let bins = Bins {
        wf: dir.join("wf-dup"),
        runner: dir.join("wf-runner-dup"),
        fake_agent: dir.join("fake-agent"),
    };
    for p in [&bins.wf, &bins.runner, &bins.fake_agent] {
        assert!(
            p.exists(),
            "{} is missing: build with `cargo build --release -p wf-tests --bins`",
            p.display()
        );
    }
    bins
}

/// Microseconds since the epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

/// The `q` quantile of `xs` (0.5: the median).
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The median of `xs`.
pub(crate) fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

/// Runs `f` `runs` times; its wall times in ms.
pub(crate) fn time_ms(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Wall time of `wf ARGS` (the whole process), `runs` times, in ms.
pub(crate) fn time_wf(env: &TestEnv, args: &[&str], runs: usize) -> Vec<f64> {
    time_ms(runs, || {
        let out = env.wf(args);
        assert!(
            out.status.success(),
            "wf {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// Wall time of `program ARGS` with stdout read through a pipe (as `wf`'s is), in ms.
pub(crate) fn time_cmd(program: &str, args: &[&str], runs: usize) -> Vec<f64> {
    time_ms(runs, || {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the baseline");
        assert!(out.status.success(), "{program} failed");
    })
}

/// `/bin/true` spawned and waited for, then `bytes` written to a file and fsynced: what the
/// least a durable write command could cost.
pub(crate) fn spawn_and_fsync(dir: &Path, bytes: usize, runs: usize) -> Vec<f64> {
    use std::io::Write;
    let data = vec![b'x'; bytes];
    let path = dir.join("fsync-baseline");
    time_ms(runs, || {
        let status = Command::new("/bin/true").status().expect("/bin/true");
        assert!(status.success());
        let mut f = std::fs::File::create(&path).expect("baseline file");
        f.write_all(&data).expect("write");
        f.sync_data().expect("fsync");
    })
}

/// A process's resident memory now, and at its peak, in MiB.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A process's CPU time so far (user + system), in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Waits until `path` holds `needle` after byte `from`; the time it took.
pub(crate) fn wait_log(path: &Path, from: u64, needle: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let text = std::fs::read(path).unwrap_or_default();
        let tail = text.get(from as usize..).unwrap_or_default();
        if String::from_utf8_lossy(tail).contains(needle) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{needle:?} not in {} within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// One figure of BENCHMARKS.md: what was measured next to its baseline and its goal.
pub(crate) struct Figure {
    /// What.
    pub(crate) name: String,
    /// How to measure it again.
    pub(crate) command: String,
    /// The value, as shown.
    pub(crate) value: String,
    /// The baseline and its value, as shown.
    pub(crate) baseline: String,
    /// The ratio or difference to the baseline, as shown.
    pub(crate) relation: String,
    /// The goal, as shown.
    pub(crate) goal: String,
    /// Whether the goal is met.
    pub(crate) met: bool,
}

impl Figure {
    /// A figure whose goal is a ratio to its baseline of at most `max`.
    pub(crate) fn ratio(
        name: &str,
        command: &str,
        value: f64,
        baseline_name: &str,
        baseline: f64,
        max: f64,
        unit: &str,
    ) -> Self {
        let ratio = value / baseline;
        Self {
            name: name.into(),
            command: command.into(),
            value: format!("{value:.2} {unit}"),
            baseline: format!("{baseline_name}: {baseline:.2} {unit}"),
            relation: format!("{ratio:.2}×"),
            goal: format!("≤ {max}×"),
            met: ratio <= max,
        }
    }
}

/// The figures as a Markdown table.
pub(crate) fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | measured | baseline (same run) | ratio | goal | met | command |\n|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | `{}` |\n",
            f.name,
            f.value,
            f.baseline,
            f.relation,
            f.goal,
            if f.met { "yes" } else { "**no**" },
            f.command
        ));
    }
    out
}

/// How many jobs run now.
pub(crate) fn running_agents(env: &TestEnv) -> usize {
    env.wf_json(&["jobs", "--status", "running"])
        .as_array()
        .map_or(0, Vec::len)
}
