//! The runner under load — 50 agents each streaming 1 MB/s, its memory sampled over the run
//! and its CPU per 10 MB/s streamed — and the stream parser's throughput on a large Claude
//! transcript, next to `wc -l` over the same file.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wf_tests::{Bins, TestEnv};

use crate::util::*;

/// 50 agents streaming 1 MB/s each for `seconds`: the runner's memory over the run (first
/// and last minute) and its CPU time per 10 MB/s.
// Long: one load scenario — start, warm up, sample, judge — read top to bottom.
pub(crate) fn streaming(bins: &Bins, quick: bool, figures: &mut Vec<Figure>) -> String {
    let (agents, rate) = (50u64, 1_000_000u64);
    let seconds = if quick { 60.0 } else { 600.0 };
    let script = json!({
        "plan": [{"init": true}, {"stream": {"bytesPerSec": rate, "seconds": seconds}}, {"result": "streamed"}],
        "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]}, {"result": "ok"}],
    });
    let mut env = TestEnv::new(
        bins,
        script,
        json!({"maxConcurrent": agents, "idleTimeoutMs": 120000, "timeoutMs": 7200000}),
    );
    env.set_runner_env(0, &[("WF_LOG", "info")]);
    env.start_runner();
    let pid = env.runner_pid();
    for i in 0..agents {
        let out = env.wf(&[
            "create",
            &format!("stream {i}"),
            "--independent",
            "--start",
            "plan",
        ]);
        assert!(out.status.success());
    }
    // Wait for every agent to run, then sample.
    let warm = Instant::now();
    while crate::util::running_agents(&env) < agents as usize {
        assert!(
            warm.elapsed() < Duration::from_secs(120),
            "the agents did not all start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = Instant::now();
    let cpu0 = cpu_secs(pid);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while start.elapsed().as_secs_f64() < seconds - 5.0 {
        samples.push((start.elapsed().as_secs_f64(), rss_mib(pid).0));
        std::thread::sleep(Duration::from_secs(2));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let peak = rss_mib(pid).1;
    let streamed_mb_s = (agents * rate) as f64 / 1e6;
    let core_share = cpu / elapsed * 100.0;
    let per_10 = core_share / (streamed_mb_s / 10.0);
    let early: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t < seconds / 10.0 + 5.0)
        .map(|s| s.1)
        .collect();
    let late: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t > seconds * 0.8)
        .map(|s| s.1)
        .collect();
    let (early_rss, late_rss) = (median(&early), median(&late));
    figures.push(Figure {
        name: format!(
            "runner memory, {agents} agents streaming 1 MB/s each for {:.0} min",
            seconds / 60.0
        ),
        command: "wf-bench stream".into(),
        value: format!("{late_rss:.1} MiB at the end (peak {peak:.1})"),
        baseline: format!("at the start: {early_rss:.1} MiB"),
        relation: format!("{:+.1} MiB", late_rss - early_rss),
        goal: "≤ 150 MiB, flat".into(),
        met: peak <= 150.0 && late_rss <= early_rss * 1.2 + 5.0,
    });
    figures.push(Figure {
        name: format!("runner CPU, {agents} agents streaming {streamed_mb_s:.0} MB/s in all"),
        command: "wf-bench stream".into(),
        value: format!("{core_share:.1} % of one core"),
        baseline: format!("bytes streamed: {streamed_mb_s:.0} MB/s"),
        relation: format!("{per_10:.2} % per 10 MB/s"),
        goal: "≤ 5 % of one core per 10 MB/s".into(),
        met: per_10 <= 5.0,
    });
    let points: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 10).max(1))
        .map(|(t, m)| format!("{t:.0} s: {m:.1} MiB"))
        .collect();
    format!(
        "Runner memory during the streaming run: {}.",
        points.join(", ")
    )
}

/// A synthetic Claude Code transcript of about `bytes`: assistant text, tool calls and
/// results, as the real CLI prints them, then a result.
fn transcript(path: &Path, bytes: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("transcript"));
    let filler = "The parser reads the date field, then checks the zone offset against the table. ";
    let lines = [
        json!({"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-sonnet-4-5"}).to_string(),
        json!({"type": "assistant", "message": {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": filler.repeat(20)}], "usage": {"input_tokens": 1200, "output_tokens": 300}}, "session_id": "s1"}).to_string(),
        json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "cargo test -p widgets", "description": "run the tests"}}]}, "session_id": "s1"}).to_string(),
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": filler.repeat(60)}]}, "session_id": "s1"}).to_string(),
    ];
    let mut written = 0u64;
    let mut i = 1;
    writeln!(out, "{}", lines[0]).expect("write");
    while written < bytes {
        let l = &lines[1 + i % 3];
        writeln!(out, "{l}").expect("write");
        written += l.len() as u64 + 1;
        i += 1;
    }
    writeln!(
        out,
        "{}",
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "done", "total_cost_usd": 1.5, "usage": {"input_tokens": 5, "output_tokens": 6}, "session_id": "s1"})
    )
    .expect("write");
}

/// The stream parser over a large transcript, next to `wc -l`.
pub(crate) fn parsing(quick: bool, figures: &mut Vec<Figure>) {
    let size: u64 = if quick { 200_000_000 } else { 1_000_000_000 };
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("transcript.jsonl");
    transcript(&path, size);
    let p = path.display().to_string();
    let runs = if quick { 2 } else { 3 };
    let wc = median(&time_cmd("wc", &["-l", &p], runs));
    let before = rss_mib(std::process::id()).1;
    let parse = median(&time_ms(runs, || {
        // As the runner reads an agent: a line at a time into a buffer, checked as UTF-8,
        // parsed, folded into the run's log.
        let mut file =
            std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).expect("open"));
        let mut log = wf_core::harness::RunLog::default();
        let mut line = Vec::new();
        while file.read_until(b'\n', &mut line).expect("read") > 0 {
            let text = std::str::from_utf8(&line).expect("UTF-8");
            log.push(&wf_core::harness::parse_line(
                wf_core::config::StreamFormat::Claude,
                text.trim_end_matches('\n'),
            ));
            line.clear();
        }
        assert!(log.result.is_some(), "the result was parsed");
    }));
    let grew = rss_mib(std::process::id()).1 - before;
    let gb = size as f64 / 1e9;
    let mut f = Figure::ratio(
        &format!("stream parsing, a {gb:.1} GB Claude transcript (speed)"),
        "wf-bench parse",
        (size as f64 / 1e6) / (parse / 1000.0),
        "`wc -l` over the same file",
        (size as f64 / 1e6) / (wc / 1000.0),
        f64::INFINITY,
        "MB/s",
    );
    let ratio = wc / parse;
    f.relation = format!("{ratio:.2}× of `wc -l`");
    f.goal = "≥ 0.3×, memory bounded".into();
    f.met = ratio >= 0.3 && grew < 64.0;
    f.value = format!("{} (peak memory +{grew:.0} MiB)", f.value);
    figures.push(f);
}
