//! Verification, the pure half: which checks a repository implies when none is configured,
//! and the test counts in a check's output. The verdict is always the exit code; counts are a
//! best-effort reading for humans and the PM.

use crate::config::{CheckConfig, DEFAULT_CHECK_TIMEOUT};
use crate::model::TestCounts;

/// The checks a repository implies, from its manifests; `read` gives a file's text (relative
/// to the repository root) if it exists.
pub fn detect_checks(read: impl Fn(&str) -> Option<String>) -> Vec<CheckConfig> {
    let check = |name: &str, command: &str| CheckConfig {
        name: name.to_string(),
        command: command.to_string(),
        timeout: DEFAULT_CHECK_TIMEOUT,
        required: true,
    };
    let mut out = Vec::new();
    if read("Cargo.toml").is_some() {
        out.push(check("Tests", "cargo test --color never 2>&1"));
    }
    if let Some(pkg) = read("package.json") {
        let test = serde_json::from_str::<serde_json::Value>(&pkg)
            .ok()
            .and_then(|v| v["scripts"]["test"].as_str().map(str::to_string));
        // npm init's placeholder fails by design; it is no test suite.
        if test.is_some_and(|t| !t.contains("no test specified")) {
            let runner = if read("pnpm-lock.yaml").is_some() {
                "pnpm test"
            } else if read("yarn.lock").is_some() {
                "yarn test"
            } else if read("bun.lockb").is_some() || read("bun.lock").is_some() {
                "bun run test"
            } else {
                "npm test"
            };
            out.push(check(
                if out.is_empty() { "Tests" } else { "JS tests" },
                &format!("{runner} 2>&1"),
            ));
        }
    }
    let pytest = read("pytest.ini").is_some()
        || read("pyproject.toml").is_some_and(|t| t.contains("pytest"))
        || read("setup.cfg").is_some_and(|t| t.contains("[tool:pytest]"))
        || read("tox.ini").is_some_and(|t| t.contains("[pytest]"));
    if pytest {
        out.push(check(
            if out.is_empty() {
                "Tests"
            } else {
                "Python tests"
            },
            "python3 -m pytest -q 2>&1",
        ));
    }
    if read("go.mod").is_some() {
        out.push(check(
            if out.is_empty() { "Tests" } else { "Go tests" },
            "go test ./... 2>&1",
        ));
    }
    out
}

/// The test counts in `output`, if it has any: the sum of every `cargo test` summary, else
/// `go test -json` events, else the last line that counts passed/failed tests (pytest, jest,
/// vitest, and the plain `N passed, N failed` many runners print).
pub fn parse_counts(output: &str) -> Option<TestCounts> {
    cargo_counts(output)
        .or_else(|| go_json_counts(output))
        .or_else(|| summary_line_counts(output))
}

/// `test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; …`, once per
/// test binary and doctest run.
fn cargo_counts(output: &str) -> Option<TestCounts> {
    let mut total: Option<TestCounts> = None;
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let c = total.get_or_insert_with(TestCounts::default);
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            // "ok. 3 passed" → the number is before the word.
            let (num, word) = match words.as_slice() {
                [_, _, w, ..] if n(1).is_some() => (n(1), *w),
                [_, w, ..] => (n(0), *w),
                _ => continue,
            };
            match (num, word) {
                (Some(v), "passed") => c.passed += v,
                (Some(v), "failed") => c.failed += v,
                (Some(v), "ignored") => c.skipped += v,
                _ => {}
            }
        }
    }
    total
}

/// `go test -json`: pass, fail and skip events of tests (not of packages).
fn go_json_counts(output: &str) -> Option<TestCounts> {
    let mut c = TestCounts::default();
    let mut seen = false;
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("Test").and_then(|t| t.as_str()).is_none() {
            continue;
        }
        match v.get("Action").and_then(|a| a.as_str()) {
            Some("pass") => c.passed += 1,
            Some("fail") => c.failed += 1,
            Some("skip") => c.skipped += 1,
            _ => continue,
        }
        seen = true;
    }
    seen.then_some(c)
}

/// The last line with `<n> passed` or `<n> failed` (any order, `,` or `|` between, words such
/// as `tests` in between are fine): pytest's `3 passed, 1 failed, 2 skipped in 0.1s`, jest's
/// `Tests: 1 failed, 2 passed, 3 total`, vitest's `Tests 2 passed | 1 failed (3)`.
fn summary_line_counts(output: &str) -> Option<TestCounts> {
    output.lines().rev().find_map(|line| {
        let words: Vec<String> = line
            .split(|c: char| {
                c.is_whitespace() || c == ',' || c == '|' || c == '=' || c == '(' || c == ')'
            })
            .filter(|w| !w.is_empty())
            .map(|w| w.trim_end_matches(['.', ':', ';']).to_ascii_lowercase())
            .collect();
        let mut c = TestCounts::default();
        let mut found = false;
        for (i, w) in words.iter().enumerate() {
            let Some(n) = i.checked_sub(1).and_then(|p| words[p].parse::<u64>().ok()) else {
                continue;
            };
            match w.as_str() {
                "passed" | "passing" => c.passed += n,
                "failed" | "failing" | "failures" | "errors" | "error" => c.failed += n,
                "skipped" | "pending" | "ignored" | "todo" => c.skipped += n,
                _ => continue,
            }
            found = true;
        }
        (found
            && (c.passed > 0 || c.failed > 0 || line.contains("passed") || line.contains("failed")))
        .then_some(c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64, skipped: u64) -> Option<TestCounts> {
        Some(TestCounts {
            passed,
            failed,
            skipped,
        })
    }

    #[test]
    fn cargo_test_summaries_are_summed_over_every_binary() {
        let out = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n\
                   running 2 tests\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
                   Doc-tests x\ntest result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.2s\n";
        assert_eq!(parse_counts(out), counts(8, 1, 1));
    }

    #[test]
    fn other_runners_summary_lines_are_read() {
        assert_eq!(
            parse_counts("....F\n=== 1 failed, 4 passed, 2 skipped in 0.12s ==="),
            counts(4, 1, 2)
        );
        assert_eq!(
            parse_counts("Tests:       1 failed, 2 passed, 3 total\nTime: 1s"),
            counts(2, 1, 0)
        );
        assert_eq!(
            parse_counts(" Test Files  1 passed (1)\n      Tests  5 passed | 1 skipped (6)\n"),
            counts(5, 0, 1)
        );
        assert_eq!(parse_counts("Tests: 42 passed, 0 failed"), counts(42, 0, 0));
        let go = [
            r#"{"Action":"run","Package":"p","Test":"TestA"}"#,
            r#"{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0}"#,
            r#"{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0}"#,
            r#"{"Action":"skip","Package":"p","Test":"TestC","Elapsed":0}"#,
            r#"{"Action":"fail","Package":"p","Elapsed":0}"#,
        ]
        .join("\n");
        assert_eq!(parse_counts(&go), counts(1, 1, 1));
        assert_eq!(parse_counts("error: could not compile `x`\n"), None);
        assert_eq!(parse_counts("all good\n"), None);
    }

    #[test]
    fn checks_are_detected_from_manifests() {
        let files = |names: &'static [(&'static str, &'static str)]| {
            move |p: &str| {
                names
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, t)| t.to_string())
            }
        };
        let rust = detect_checks(files(&[("Cargo.toml", "[package]")]));
        assert_eq!(rust.len(), 1);
        assert!(rust[0].command.starts_with("cargo test"));
        let js = detect_checks(files(&[
            ("package.json", r#"{"scripts": {"test": "vitest run"}}"#),
            ("pnpm-lock.yaml", ""),
        ]));
        assert_eq!(js[0].command, "pnpm test 2>&1");
        let placeholder = detect_checks(files(&[(
            "package.json",
            r#"{"scripts": {"test": "echo \"Error: no test specified\" && exit 1"}}"#,
        )]));
        assert!(placeholder.is_empty());
        let many = detect_checks(files(&[
            ("go.mod", "module x"),
            ("pyproject.toml", "[tool.pytest.ini_options]"),
        ]));
        let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Tests", "Go tests"]);
        assert!(detect_checks(files(&[])).is_empty());
    }
}
