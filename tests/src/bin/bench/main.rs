//! `wf-bench`: measures what BENCHMARKS.md reports, with the real binaries, each figure next
//! to a baseline measured in the same run (so the machine's noise cancels) and its goal.
//!
//! Run it from a release build:
//! `cargo build --release -p wf-tests --bins && target/release/wf-bench [--quick] [--write]`.
//! It prints the report on stdout; `--write` also writes BENCHMARKS.md at the workspace root.
//! Figures (all by default): `cli` (list, write commands, filtered lists, start-up and idle
//! memory at 200 and 10,000 assignments, sled and NATS), `dispatch`, `overhead`, `recovery`,
//! `stream` (50 agents at 1 MB/s each for 10 minutes: memory and CPU), `parse` (1 GB
//! transcript). `--quick` shortens the runs (1 minute of streaming, 200 MB to parse).
//!
//! The NATS figures use the first server of `$WF_NATS_SERVERS`, else `nats-server` on PATH.

#![allow(
    clippy::disallowed_methods,
    reason = "the benchmark starts the binaries it measures and their baselines"
)]

mod cli;
mod dispatch;
mod fill;
mod stream;
mod util;

use std::process::Command;

use util::Figure;

fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The machine, in one paragraph.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let kernel = version_of("uname", &["-r"]);
    format!("{cpus} CPUs ({model}), {mem} of memory, Linux {kernel}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().any(|a| a == "--write");
    let which: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let wants = |name: &str| which.is_empty() || which.contains(&name);
    let bins = util::bins();
    let nats = std::env::var_os("WF_NATS_SERVERS")
        .and_then(|v| std::env::split_paths(&v).next())
        .unwrap_or_else(wf_tests::nats_server);
    let mut figures: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if wants("cli") {
        notes.push(cli::run(&bins, &nats, quick, &mut figures));
    }
    if wants("dispatch") {
        dispatch::dispatch(&bins, &nats, quick, &mut figures);
    }
    if wants("overhead") {
        dispatch::overhead(&bins, quick, &mut figures);
    }
    if wants("recovery") {
        dispatch::recovery(&bins, &nats, quick, &mut figures);
    }
    if wants("stream") {
        notes.push(stream::streaming(&bins, quick, &mut figures));
    }
    if wants("parse") {
        stream::parsing(quick, &mut figures);
    }
    if wants("cli") {
        // The seed this project descends from: its CLI is a TypeScript program started through
        // tsx, which this machine class ran in about a second per command. Kept as a
        // reference; it is not re-run (the seed is not installed here).
        figures.push(Figure {
            name: "reference: the seed's CLI (claude-comms `cli.ts` through tsx), one command"
                .into(),
            command: "— (measured before wf existed)".into(),
            value: "≈ 1000 ms".into(),
            baseline: "—".into(),
            relation: "—".into(),
            goal: "reference row".into(),
            met: true,
        });
    }
    let date = version_of("date", &["-u", "+%Y-%m-%d"]);
    let report = format!(
        "## Figures\n\nMeasured on {date} by `wf-bench{}{}` (release build) on {}; {}; nats-server {}.\nEach figure is a median over repeated runs, next to a baseline measured in the same run.\n\n{}\n{}\n",
        if quick { " --quick" } else { "" },
        if which.is_empty() { String::new() } else { format!(" {}", which.join(" ")) },
        machine(),
        version_of("rustc", &["--version"]),
        wf_tests::nats_server_version(&nats),
        util::table(&figures),
        notes.iter().map(|n| format!("{n}\n")).collect::<String>(),
    );
    println!("{report}");
    if write {
        let path = wf_tests::workspace_root().join("BENCHMARKS.md");
        let head = std::fs::read_to_string(&path).unwrap_or_default();
        let keep = head.split("\n## Figures\n").next().unwrap_or("").trim_end();
        let tail = head
            .split_once("\n## The edit–test loop")
            .map(|(_, t)| format!("\n## The edit–test loop{t}"))
            .unwrap_or_default();
        std::fs::write(&path, format!("{keep}\n\n{report}{tail}")).expect("write BENCHMARKS.md");
        eprintln!("wrote {}", path.display());
    }
}
