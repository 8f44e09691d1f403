//! Parser and judgement tests on real Claude Code transcripts (tests/fixtures/claude).

use super::*;
use crate::chain::Outcome;
use crate::config::{resolve, RawConfig};
use crate::config::{RetryPolicy, StreamFormat};
use crate::model::{FailureReason, Millis, Usage};

macro_rules! fixture_of {
    ($cli:literal, $name:literal) => {
        (
            include_str!(concat!(
                "../../../tests/fixtures/",
                $cli,
                "/",
                $name,
                ".jsonl"
            )),
            include_str!(concat!("../../../tests/fixtures/", $cli, "/", $name, ".rc")),
            include_str!(concat!(
                "../../../tests/fixtures/",
                $cli,
                "/",
                $name,
                ".stderr"
            )),
        )
    };
}

macro_rules! fixture {
    ($name:literal) => {
        fixture_of!("claude", $name)
    };
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        backoff_ms: vec![60_000, 120_000, 300_000],
        max_pauses: 3,
    }
}

fn run_judge(
    log: &RunLog,
    ended: &Ended,
    stderr: &str,
    now: Millis,
    pauses: u32,
    format: StreamFormat,
) -> Verdict {
    let policy = policy();
    judge(
        log,
        &JudgeInput {
            ended,
            stderr_tail: stderr,
            format,
            now,
            pauses,
            retry: &policy,
        },
    )
}

/// Replays a recorded run through the parser and the judge.
fn replay(f: (&str, &str, &str)) -> (RunLog, Verdict) {
    replay_as(StreamFormat::Claude, f)
}

fn replay_as(format: StreamFormat, (stdout, rc, stderr): (&str, &str, &str)) -> (RunLog, Verdict) {
    let mut log = RunLog::default();
    for line in stdout.lines() {
        log.push(&parse_line(format, line));
    }
    let code: i32 = rc.trim().parse().unwrap();
    let ended = if code >= 128 {
        Ended::Exited {
            code: None,
            signal: Some(code - 128),
        }
    } else {
        Ended::Exited {
            code: Some(code),
            signal: None,
        }
    };
    let verdict = run_judge(&log, &ended, stderr, 1_000_000, 0, format);
    (log, verdict)
}

#[test]
fn a_successful_tool_run() {
    let (log, v) = replay(fixture!("tool_write"));
    assert_eq!(
        log.session_id.as_deref(),
        Some("0116a5ac-f16b-40e1-a1c7-aa1666a9a2cc")
    );
    assert_eq!(log.tool_calls, 1);
    assert_eq!(log.malformed, 0);
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(
        v.text,
        "Done: I wrote hello.txt containing 'hello from claude'."
    );
    assert_eq!(v.usage.input_tokens, 260);
    assert_eq!(v.usage.output_tokens, 50);
    assert!((v.usage.cost_usd.unwrap() - 0.00255).abs() < 1e-9);
}

#[test]
fn plain_text_and_thinking_runs_succeed() {
    for f in [
        fixture!("text"),
        fixture!("thinking"),
        fixture!("partial"),
        fixture!("mcp_tool"),
    ] {
        let (_, v) = replay(f);
        assert_eq!(v.outcome, Outcome::Complete, "{v:?}");
        assert!(!v.text.is_empty());
    }
}

#[test]
fn denied_tools_still_succeed_as_claude_reports() {
    let (log, v) = replay(fixture!("tool_write_denied"));
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(log.tool_calls, 1);
}

#[test]
fn api_errors_marked_success_are_not_success() {
    // subtype "success" with is_error true: a 400 is permanent.
    let (_, v) = replay(fixture!("error400"));
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(
        v.detail.as_deref().unwrap().contains("API Error: 400"),
        "{v:?}"
    );
    let (_, v) = replay(fixture!("error401"));
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    let (_, v) = replay(fixture!("no_api_key"));
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v.text.contains("Not logged in"));
}

#[test]
fn transient_api_errors_pause_the_job() {
    for f in [
        fixture!("error500"),
        fixture!("error529"),
        fixture!("tool_then_500"),
    ] {
        let (log, v) = replay(f);
        assert_eq!(v.outcome, Outcome::RetryAt(1_000_000 + 60_000), "{v:?}");
        assert!(
            v.detail
                .as_deref()
                .unwrap()
                .starts_with("transient API error"),
            "{v:?}"
        );
        assert!(log.api_retries > 0 || log.tool_calls > 0);
    }
    // A run that recovered by itself succeeds.
    let (log, v) = replay(fixture!("flaky500"));
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(log.api_retries, 1);
}

#[test]
fn error_subtypes_use_the_errors_list_and_model_usage() {
    let (_, v) = replay(fixture!("max_turns"));
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v.text.contains("maximum number of turns"), "{}", v.text);
    // On error_max_budget_usd `usage` is zeroed; modelUsage is right.
    let (_, v) = replay(fixture!("max_budget"));
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Budget));
    assert!(v.usage.input_tokens > 0, "{v:?}");
    assert!(v.text.contains("maximum budget"), "{}", v.text);
}

#[test]
fn no_result_event_is_a_failure() {
    let (log, v) = replay(fixture!("sigterm"));
    assert!(log.session_id.is_some());
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(
        v.detail
            .as_deref()
            .unwrap()
            .contains("without a result event"),
        "{v:?}"
    );

    // CLI usage errors: nothing on stdout, the reason on stderr.
    let (_, v) = replay(fixture!("no_verbose"));
    let detail = v.detail.unwrap();
    assert!(
        detail.contains("exit code 1") && detail.contains("requires --verbose"),
        "{detail}"
    );
    let (_, v) = replay(fixture!("bypass_as_root"));
    assert!(v.detail.unwrap().contains("root"));

    // Exit 0 and no result: a malformed stream.
    let v = run_judge(
        &RunLog::default(),
        &Ended::Exited {
            code: Some(0),
            signal: None,
        },
        "",
        0,
        0,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::MalformedStream));
}

#[test]
fn success_needs_exit_zero_too() {
    let (mut log, _) = replay(fixture!("text"));
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "mcp failed",
        0,
        0,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v
        .detail
        .unwrap()
        .contains("reported success but ended with exit code 1"));
    log.result = None;
    let v = run_judge(&log, &Ended::TimedOut, "", 0, 0, StreamFormat::Claude);
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Timeout));
    let v = run_judge(&log, &Ended::IdleTimedOut, "", 0, 0, StreamFormat::Claude);
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::IdleTimeout));
}

#[test]
fn garbage_lines_are_counted_not_fatal() {
    assert!(matches!(
        claude::parse_line("not json"),
        Parsed::Malformed(_)
    ));
    assert!(matches!(claude::parse_line("[1,2]"), Parsed::Malformed(_)));
    assert!(matches!(claude::parse_line("   "), Parsed::Ignored));
    assert!(matches!(
        claude::parse_line(r#"{"type":"brand_new_event"}"#),
        Parsed::Ignored
    ));
    let mut log = RunLog::default();
    log.push(&claude::parse_line("\u{1}\u{2}garbage"));
    for line in fixture!("text").0.lines() {
        log.push(&claude::parse_line(line));
    }
    assert_eq!(log.malformed, 1);
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(0),
            signal: None,
        },
        "",
        0,
        0,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::Complete);
}

#[test]
fn rate_limit_events_pause_until_the_reset() {
    let line = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":2000,"rateLimitType":"five_hour"}}"#;
    let mut log = RunLog::default();
    log.push(&claude::parse_line(line));
    assert_eq!(log.rate_limited, Some(Some(2_000_000)));
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "",
        1_000_000,
        0,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::RetryAt(2_030_000));
    // An allowed status is not a pause.
    let ok = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#;
    let mut log = RunLog::default();
    log.push(&claude::parse_line(ok));
    assert_eq!(log.rate_limited, None);
}

#[test]
fn backoff_grows_caps_and_gives_up() {
    let p = policy();
    assert_eq!(p.backoff(1), 60_000);
    assert_eq!(p.backoff(3), 300_000);
    assert_eq!(p.backoff(50), 300_000);
    let (log, _) = replay(fixture!("error529"));
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "",
        0,
        2,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::RetryAt(300_000));
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "",
        0,
        3,
        StreamFormat::Claude,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v
        .detail
        .unwrap()
        .starts_with("gave up after 3 pauses for transient errors"));
}

fn config(text: &str) -> crate::config::Config {
    let raw: RawConfig = serde_json::from_str(text).unwrap();
    resolve(raw, None, std::path::Path::new("/p")).unwrap()
}

#[test]
fn claude_command_line() {
    let c = config(
        r#"{"harnesses": {"claude": {"args": ["--max-turns", "40"], "model": "opus",
             "permissionMode": "bypassPermissions"}}}"#,
    );
    let h = &c.harnesses["claude"];
    let spec = command(h, Some("sonnet"), "do it", "/p".into(), true).unwrap();
    assert_eq!(spec.program, "claude");
    assert_eq!(
        spec.args,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "bypassPermissions",
            "--model",
            "sonnet",
            "--allowedTools=Bash(wf:*)",
            "--max-turns",
            "40"
        ]
    );
    assert_eq!(spec.stdin.as_deref(), Some(&b"do it"[..]));
    assert_eq!(spec.env.get("IS_SANDBOX").map(String::as_str), Some("1"));
    // Not root: no sandbox claim. No job model: the harness model.
    let spec = command(h, None, "x", "/p".into(), false).unwrap();
    assert!(!spec.env.contains_key("IS_SANDBOX"));
    assert!(spec.args.windows(2).any(|w| w == ["--model", "opus"]));
}

#[test]
fn codex_and_gemini_command_lines() {
    let c = config(
        r#"{"harnesses": {"codex": {"sandbox": "bypass", "model": "gpt-5", "args": ["-c", "k=v"]},
                          "gemini": {"approvalMode": "yolo"}}}"#,
    );
    let spec = command(&c.harnesses["codex"], None, "p", "/p".into(), true).unwrap();
    assert_eq!(
        spec.args,
        [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--model",
            "gpt-5",
            "-c",
            "k=v",
            "-"
        ]
    );
    assert_eq!(spec.stdin.as_deref(), Some(&b"p"[..]));
    let defaults = config("{}");
    let spec = command(&defaults.harnesses["codex"], None, "p", "/p".into(), true).unwrap();
    assert!(spec
        .args
        .windows(2)
        .any(|w| w == ["--sandbox", "workspace-write"]));
    let spec = command(
        &c.harnesses["gemini"],
        Some("gemini-2.5-pro"),
        "p",
        "/p".into(),
        true,
    )
    .unwrap();
    assert_eq!(
        spec.args,
        [
            "--output-format",
            "stream-json",
            "--skip-trust",
            "--yolo",
            "--model",
            "gemini-2.5-pro"
        ]
    );
    let spec = command(&defaults.harnesses["gemini"], None, "p", "/p".into(), true).unwrap();
    assert!(spec
        .args
        .windows(2)
        .any(|w| w == ["--approval-mode", "auto_edit"]));
}

#[test]
fn custom_harnesses_take_the_prompt_on_stdin_or_in_an_argument() {
    let c = config(
        r#"{"harnesses": {
            "piped": {"command": "my-agent", "args": ["--fast"], "format": "codex"},
            "argv": {"command": "llm", "args": ["-m", "{model}", "{prompt}"], "model": "m1"}}}"#,
    );
    let spec = command(
        &c.harnesses["piped"],
        Some("x"),
        "hello",
        "/p".into(),
        false,
    )
    .unwrap();
    assert_eq!(
        (spec.args.as_slice(), spec.stdin.as_deref()),
        (&["--fast".to_string()][..], Some(&b"hello"[..]))
    );
    assert_eq!(spec.env.get("WF_MODEL").map(String::as_str), Some("x"));
    let spec = command(&c.harnesses["argv"], None, "hello", "/p".into(), false).unwrap();
    assert_eq!(spec.args, ["-m", "m1", "hello"]);
    assert_eq!(spec.stdin, None);
    let long = "x".repeat(200_000);
    assert_eq!(
        command(&c.harnesses["argv"], None, &long, "/p".into(), false),
        Err(PromptTooLong(200_000))
    );
    assert_eq!(c.harnesses["argv"].format(), StreamFormat::Text);
}

#[test]
fn plain_text_harnesses_succeed_on_exit_zero() {
    let mut log = RunLog::default();
    for line in ["first line", "second line"] {
        log.push(&parse_line(StreamFormat::Text, line));
    }
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(0),
            signal: None,
        },
        "",
        0,
        0,
        StreamFormat::Text,
    );
    assert_eq!(
        (v.outcome, v.text.as_str()),
        (Outcome::Complete, "first line\nsecond line")
    );
    let v = run_judge(
        &log,
        &Ended::Exited {
            code: Some(2),
            signal: None,
        },
        "boom",
        0,
        0,
        StreamFormat::Text,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v.detail.unwrap().contains("exit code 2; stderr: boom"));
}

macro_rules! codex {
    ($name:literal) => {
        replay_as(StreamFormat::Codex, fixture_of!("codex", $name))
    };
}

macro_rules! gemini {
    ($name:literal) => {
        replay_as(StreamFormat::Gemini, fixture_of!("gemini", $name))
    };
}

#[test]
fn codex_successful_runs() {
    let (log, v) = codex!("tool_shell_write");
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(
        v.text,
        "Done: I wrote hello.txt containing 'hello from codex'."
    );
    assert_eq!(
        log.session_id.as_deref(),
        Some("01a1fd2b-161a-7493-86f4-fef3f022d9a7")
    );
    assert_eq!(log.tool_calls, 1);
    assert_eq!(
        (
            v.usage.input_tokens,
            v.usage.output_tokens,
            v.usage.cost_usd
        ),
        (6058, 84, None)
    );
    assert_eq!(log.result.as_ref().unwrap().cached_input_tokens, 400);
    for f in [
        codex!("text"),
        codex!("tool_patch"),
        codex!("tool_shell_fail"),
        codex!("mcp_tool"),
        codex!("flaky500"),
    ] {
        assert_eq!(f.1.outcome, Outcome::Complete, "{:?}", f.1);
    }
    // A reconnect warning is not fatal.
    let (log, v) = codex!("stream_cut");
    assert_eq!(v.outcome, Outcome::Complete);
    assert!(log.last_warning.unwrap().starts_with("Reconnecting"));
    // The duplicated "id" key of web_search items parses.
    let (log, v) = codex!("web_search");
    assert_eq!(
        (v.outcome, log.tool_calls, log.malformed),
        (Outcome::Complete, 1, 0)
    );
    // After a resume the usage is the thread total: the latest total is taken, not a sum.
    let (_, v) = codex!("resume_2");
    assert_eq!(v.usage.input_tokens, 5916);
}

#[test]
fn codex_failures() {
    let (_, v) = codex!("error500");
    assert_eq!(v.outcome, Outcome::RetryAt(1_000_000 + 60_000), "{v:?}");
    for f in [
        codex!("error400"),
        codex!("error401"),
        codex!("failed_stream"),
        codex!("missing_key"),
    ] {
        assert_eq!(
            f.1.outcome,
            Outcome::Failed(FailureReason::Exit),
            "{:?}",
            f.1
        );
    }
    let (_, v) = codex!("error401");
    assert!(v.detail.unwrap().contains("401 Unauthorized"));
    let (_, v) = codex!("sigterm");
    assert!(v.detail.unwrap().contains("without a result event"));
}

#[test]
fn gemini_runs() {
    let (log, v) = gemini!("tool_write");
    assert_eq!(v.outcome, Outcome::Complete);
    assert_eq!(
        v.text, "Done: I wrote hello.txt containing 'hello from gemini'.",
        "only the text after the last tool call"
    );
    assert_eq!(
        log.session_id.as_deref(),
        Some("0d02d785-b36d-404c-8ce2-e1f953ff363a")
    );
    assert_eq!((v.usage.input_tokens, v.usage.output_tokens), (1560, 90));
    for f in [
        gemini!("text"),
        gemini!("tool_shell"),
        gemini!("thinking"),
        gemini!("mcp_tool"),
        gemini!("tool_write_default"),
    ] {
        assert_eq!(f.1.outcome, Outcome::Complete, "{:?}", f.1);
    }
    // API errors: the exit code is the HTTP status mod 256 and the result says error.
    let (_, v) = gemini!("error429");
    assert!(matches!(v.outcome, Outcome::RetryAt(_)), "{v:?}");
    let (_, v) = gemini!("error500");
    assert!(matches!(v.outcome, Outcome::RetryAt(_)), "{v:?}");
    for f in [
        gemini!("error400"),
        gemini!("error403"),
        gemini!("max_turns"),
    ] {
        assert_eq!(
            f.1.outcome,
            Outcome::Failed(FailureReason::Exit),
            "{:?}",
            f.1
        );
    }
    // Killed (group kill): exit 0 but no result event.
    let (_, v) = gemini!("sigterm_pgroup");
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::MalformedStream));
    // Auth failures: no result, only stderr.
    let (_, v) = gemini!("auth_missing_key");
    let detail = v.detail.unwrap();
    assert!(
        detail.contains("exit code 41") && detail.contains("GEMINI_API_KEY"),
        "{detail}"
    );
}

#[test]
fn error_texts_are_classified() {
    assert_eq!(
        classify_error_text("unexpected status 401 Unauthorized: bad key"),
        (Some(401), false)
    );
    assert_eq!(
        classify_error_text("exceeded retry limit, last status: 429 Too Many Requests"),
        (Some(429), true)
    );
    assert_eq!(
        classify_error_text(r#"[API Error: {"error":{"code":500,"message":"x"}}]"#),
        (Some(500), true)
    );
    assert_eq!(
        classify_error_text("We’re currently experiencing high demand"),
        (Some(503), true)
    );
    assert_eq!(
        classify_error_text("Codex ran out of room in the model's context window."),
        (None, false)
    );
}

#[test]
fn prices_give_a_cost() {
    let price = crate::config::Price {
        input_per_m_tok: 2.0,
        output_per_m_tok: 10.0,
        cached_input_per_m_tok: Some(0.5),
    };
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        cost_usd: None,
    };
    assert!((cost(&usage, 400_000, &price) - (1.2 + 0.2 + 1.0)).abs() < 1e-9);
}

#[test]
fn only_claude_is_held_to_the_budget_while_it_runs() {
    let c = config("{}");
    assert_eq!(
        budget_args(&c.harnesses["claude"], 1.5),
        ["--max-budget-usd", "1.5000"]
    );
    assert_eq!(
        budget_args(&c.harnesses["claude"], -2.0),
        ["--max-budget-usd", "0.0001"]
    );
    assert!(budget_args(&c.harnesses["codex"], 1.5).is_empty());
    assert!(budget_args(&c.harnesses["gemini"], 1.5).is_empty());
}

#[test]
fn agents_without_a_cost_are_priced_by_their_model() {
    let c = config(
        r#"{"prices": {"gpt-5": {"inputPerMTok": 1.0, "outputPerMTok": 10.0,
                                 "cachedInputPerMTok": 0.5}}}"#,
    );
    let mut log = RunLog::default();
    log.model = Some("gpt-5".into());
    let mut usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        ..Usage::default()
    };
    priced(&mut usage, &log, None, &c.prices);
    assert_eq!(usage.cost_usd, Some(2.0));
    // A reported cost stands; an unknown model stays unpriced.
    priced(&mut usage, &log, Some("other"), &c.prices);
    assert_eq!(usage.cost_usd, Some(2.0));
    let mut unknown = Usage::default();
    priced(&mut unknown, &log, Some("other"), &c.prices);
    assert_eq!(unknown.cost_usd, None);
}

/// An attempt that never reached its result still says what it spent: Claude's assistant
/// messages carry their usage, repeated in every event of one message (counted once).
#[test]
fn the_usage_of_an_unfinished_claude_stream_is_the_sum_of_its_turns() {
    let msg = |id: &str, out: u64| {
        format!(
            r#"{{"type":"assistant","message":{{"id":"{id}","content":[{{"type":"text","text":"hi"}}],"usage":{{"input_tokens":10,"cache_read_input_tokens":1000,"cache_creation_input_tokens":5,"output_tokens":{out}}}}}}}"#
        )
    };
    let transcript = [msg("m1", 7), msg("m1", 9), msg("m2", 3), "not json".into()].join("\n");
    let log = RunLog::of_transcript(crate::config::StreamFormat::Claude, &transcript);
    let (usage, cached) = log.usage_so_far();
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_usd,
            cached
        ),
        (2 * 1015, 9 + 3, None, 2000)
    );
    // Priced at the configured price of the model, cached input at its own price.
    let c = config(
        r#"{"prices": {"claude-x": {"inputPerMTok": 3.0, "outputPerMTok": 15.0,
                                    "cachedInputPerMTok": 0.3}}}"#,
    );
    let mut priced_usage = usage.clone();
    priced(&mut priced_usage, &log, Some("claude-x"), &c.prices);
    let want = (30.0 * 3.0 + 2000.0 * 0.3 + 12.0 * 15.0) / 1e6;
    assert!((priced_usage.cost_usd.unwrap() - want).abs() < 1e-12);
    // Once the result came, its usage is the attempt's.
    let done = format!(
        "{transcript}\n{}",
        r#"{"type":"result","subtype":"success","is_error":false,"result":"ok","total_cost_usd":0.5,"usage":{"input_tokens":1,"output_tokens":2}}"#
    );
    let log = RunLog::of_transcript(crate::config::StreamFormat::Claude, &done);
    assert_eq!(log.usage_so_far().0.cost_usd, Some(0.5));
}

#[test]
fn the_fast_path_gives_the_events_of_the_general_parser_on_every_recorded_line() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/claude");
    let mut lines = 0;
    let mut fast = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture");
        // Real lines, and the same lines with their shapes bent where the schema may drift.
        let bent = text
            .replace("\"content\":[", "\"content\":\"a string\",\"was\":[")
            .replace("\"is_error\":false", "\"is_error\":null");
        for line in text.lines().chain(bent.lines()) {
            lines += 1;
            let general = claude::parse_general(line);
            if let Some(events) = claude_lean::events(line.trim()) {
                fast += 1;
                let lean = if events.is_empty() {
                    Parsed::Ignored
                } else {
                    Parsed::Events(events)
                };
                assert_eq!(lean, general, "{}: {line}", path.display());
            }
            assert_eq!(claude::parse_line(line), general, "{line}");
        }
    }
    assert!(
        lines > 100 && fast > 20,
        "{lines} lines, {fast} on the fast path"
    );
}
