//! Parser and judgement tests on real Claude Code transcripts (tests/fixtures/claude).

use super::*;
use crate::config::{resolve, RawConfig};

macro_rules! fixture {
    ($name:literal) => {
        (
            include_str!(concat!("../../../tests/fixtures/claude/", $name, ".jsonl")),
            include_str!(concat!("../../../tests/fixtures/claude/", $name, ".rc")),
            include_str!(concat!("../../../tests/fixtures/claude/", $name, ".stderr")),
        )
    };
}

/// Replays a recorded run through the parser and the judge.
fn replay((stdout, rc, stderr): (&str, &str, &str)) -> (RunLog, Verdict) {
    let mut log = RunLog::default();
    for line in stdout.lines() {
        log.push(&claude::parse_line(line));
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
    let verdict = judge(&log, &ended, stderr, 1_000_000, 1);
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
    let v = judge(
        &RunLog::default(),
        &Ended::Exited {
            code: Some(0),
            signal: None,
        },
        "",
        0,
        1,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::MalformedStream));
}

#[test]
fn success_needs_exit_zero_too() {
    let (mut log, _) = replay(fixture!("text"));
    let v = judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "mcp failed",
        0,
        1,
    );
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Exit));
    assert!(v
        .detail
        .unwrap()
        .contains("reported success but ended with exit code 1"));
    log.result = None;
    let v = judge(&log, &Ended::TimedOut, "", 0, 1);
    assert_eq!(v.outcome, Outcome::Failed(FailureReason::Timeout));
    let v = judge(&log, &Ended::IdleTimedOut, "", 0, 1);
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
    let v = judge(
        &log,
        &Ended::Exited {
            code: Some(0),
            signal: None,
        },
        "",
        0,
        1,
    );
    assert_eq!(v.outcome, Outcome::Complete);
}

#[test]
fn rate_limit_events_pause_until_the_reset() {
    let line = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":2000,"rateLimitType":"five_hour"}}"#;
    let mut log = RunLog::default();
    log.push(&claude::parse_line(line));
    assert_eq!(log.rate_limited, Some(Some(2_000_000)));
    let v = judge(
        &log,
        &Ended::Exited {
            code: Some(1),
            signal: None,
        },
        "",
        1_000_000,
        1,
    );
    assert_eq!(v.outcome, Outcome::RetryAt(2_030_000));
    // An allowed status is not a pause.
    let ok = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#;
    let mut log = RunLog::default();
    log.push(&claude::parse_line(ok));
    assert_eq!(log.rate_limited, None);
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff_ms(1), 60_000);
    assert_eq!(backoff_ms(3), 300_000);
    assert_eq!(backoff_ms(50), 1_800_000);
}

#[test]
fn claude_command_line() {
    let raw: RawConfig = serde_json::from_str(
        r#"{"harnesses": {"claude": {"args": ["--max-turns", "40"], "model": "opus",
             "permissionMode": "bypassPermissions"}}}"#,
    )
    .unwrap();
    let c = resolve(raw, None, std::path::Path::new("/p")).unwrap();
    let h = &c.harnesses["claude"];
    let spec = command(h, Some("sonnet"), "do it", "/p".into(), true);
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
            "--max-turns",
            "40"
        ]
    );
    assert_eq!(spec.stdin.as_deref(), Some(&b"do it"[..]));
    assert_eq!(spec.env.get("IS_SANDBOX").map(String::as_str), Some("1"));
    // Not root: no sandbox claim. No job model: the harness model.
    let spec = command(h, None, "x", "/p".into(), false);
    assert!(!spec.env.contains_key("IS_SANDBOX"));
    assert!(spec.args.windows(2).any(|w| w == ["--model", "opus"]));
}
