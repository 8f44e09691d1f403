//! The forge, the pure half: issue references, branch names from issues, the remote URL's
//! `owner/repo`, and the pull request's title and body (with `Fixes #n` first and the runner's
//! verification), all without I/O.

use crate::model::{Assignment, CheckResult, IssueRef, JobType};

/// Longest PR or comment body GitHub accepts, in characters.
pub const MAX_BODY: usize = 65_536;

/// `owner/repo#n`, `#n` or `n` (the configured repository): the repository and the number.
pub fn parse_issue_arg(arg: &str, default_repo: Option<&str>) -> Result<(String, u64), String> {
    let (repo, number) = match arg.rsplit_once('#') {
        Some((repo, n)) if !repo.is_empty() => (Some(repo.to_string()), n),
        Some((_, n)) => (None, n),
        None => (None, arg),
    };
    let number: u64 = number
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--issue {arg:?}: expected a number, #n or owner/repo#n"))?;
    let repo = match repo.or_else(|| default_repo.map(str::to_string)) {
        Some(r) => r,
        None => {
            return Err(format!(
                "--issue {arg:?}: which repository? Set forge.repo, use owner/repo#{number}, or add a GitHub remote"
            ))
        }
    };
    check_repo(&repo)?;
    Ok((repo, number))
}

/// Checks an `owner/repo` name.
pub fn check_repo(repo: &str) -> Result<(), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((o, r)) if ok(o) && ok(r) => Ok(()),
        _ => Err(format!("{repo:?} is not an owner/repo name")),
    }
}

/// The `owner/repo` of a GitHub remote URL (`https://github.com/o/r.git`,
/// `git@github.com:o/r.git`, `ssh://git@host/o/r`), if it names one.
pub fn repo_of_remote_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/')?.1
    } else {
        url.split_once(':')?.1
    };
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.rsplitn(3, '/');
    let (name, owner) = (parts.next()?, parts.next()?);
    let repo = format!("{owner}/{name}");
    check_repo(&repo).ok().map(|()| repo)
}

/// The branch an issue's work goes on: `fix/issue-<n>` for bugs, else `feature/issue-<n>`.
pub fn branch_for_issue(issue: &IssueRef) -> String {
    let bug = issue
        .labels
        .iter()
        .any(|l| l.to_ascii_lowercase().contains("bug"));
    format!(
        "{}/issue-{}",
        if bug { "fix" } else { "feature" },
        issue.number
    )
}

/// The north star of an assignment made from an issue.
pub fn north_star_of_issue(repo: &str, issue: &IssueRef, body: &str) -> String {
    let mut text = format!(
        "Resolve issue {repo}#{}: {}\n\n{}",
        issue.number,
        issue.title.trim(),
        body.trim()
    );
    if !issue.labels.is_empty() {
        text.push_str(&format!("\n\nLabels: {}", issue.labels.join(", ")));
    }
    text.push_str(&format!("\n\n{}", issue.url));
    text.trim().to_string()
}

/// The latest checks of the assignment: those of the last job that has any.
pub fn latest_checks(doc: &Assignment) -> &[CheckResult] {
    doc.jobs
        .iter()
        .rev()
        .find(|j| !j.checks.is_empty())
        .map_or(&[], |j| j.checks.as_slice())
}

/// Whether the PR should be a draft: a required check failed.
pub fn is_draft(doc: &Assignment) -> bool {
    latest_checks(doc).iter().any(|c| c.required && !c.passed)
}

/// The pull request's title.
pub fn pr_title(doc: &Assignment) -> String {
    let title = match doc.forge.as_ref().and_then(|f| f.issue.as_ref()) {
        Some(issue) => issue.title.trim().to_string(),
        None => doc
            .north_star
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    let mut out: String = title.chars().take(120).collect();
    if out.is_empty() {
        out = format!("wf assignment {}", doc.id);
    }
    out
}

/// The pull request's body: `Fixes #n` on the first line (when from an issue), the changes
/// (`commits`: the branch's commit subjects, oldest first; the artifacts), and the runner's
/// verification, one line per check.
pub fn pr_body(doc: &Assignment, commits: &[String]) -> String {
    let mut out = String::new();
    if let Some(issue) = doc.forge.as_ref().and_then(|f| f.issue.as_ref()) {
        out.push_str(&format!("Fixes #{}\n\n", issue.number));
    }
    let star = doc.north_star.trim();
    out.push_str(&format!("{}\n\n", cut(star, 2000)));
    out.push_str("## Changes\n\n");
    if commits.is_empty() {
        out.push_str("- (no commits)\n");
    }
    for c in commits {
        out.push_str(&format!("- {c}\n"));
    }
    if !doc.artifacts.trim().is_empty() {
        out.push_str("\nArtifacts:\n\n");
        for l in doc.artifacts.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("- {}\n", l.trim()));
        }
    }
    out.push_str("\n## Verification\n\n");
    let checks = latest_checks(doc);
    if checks.is_empty() {
        out.push_str("No checks ran.\n");
    }
    for c in checks {
        out.push_str(&format!("{}\n", c.summary()));
    }
    let jobs = doc.archive.jobs as usize + doc.jobs.len();
    let implements = doc
        .jobs
        .iter()
        .filter(|j| j.job_type == JobType::Implement)
        .count();
    out.push_str(&format!(
        "\n---\nMade by wf (assignment `{}`: {jobs} jobs, {implements} implement jobs, {} PM rounds).\n",
        doc.id, doc.pm_rounds
    ));
    cut(&out, MAX_BODY)
}

/// The text of the living progress comment on the issue.
pub fn progress_comment(doc: &Assignment, event: &str) -> String {
    let mut out = format!("**wf** is working on this (assignment `{}`).\n\n", doc.id);
    if let Some(ws) = &doc.workspace {
        out.push_str(&format!(
            "Branch: `{}` (from `{}`)\n\n",
            ws.branch, ws.base_branch
        ));
    }
    for j in doc.jobs.iter().filter(|j| j.job_type != JobType::Pm) {
        out.push_str(&format!("- {} `{}`: {}\n", j.job_type, j.id, j.status));
    }
    for c in latest_checks(doc) {
        out.push_str(&format!("\n{}", c.summary()));
    }
    if let Some(pr) = doc.forge.as_ref().and_then(|f| f.pull_request.as_ref()) {
        out.push_str(&format!("\n\nPull request: {}", pr.url));
    }
    out.push_str(&format!("\n\n_Latest: {event}_\n"));
    cut(&out, MAX_BODY)
}

fn cut(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars - 20).collect();
    out.push_str("\n[… truncated]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_arguments_and_remote_urls_name_a_repository() {
        assert_eq!(parse_issue_arg("o/r#7", None), Ok(("o/r".into(), 7)));
        assert_eq!(parse_issue_arg("#7", Some("a/b")), Ok(("a/b".into(), 7)));
        assert_eq!(parse_issue_arg("12", Some("a/b")), Ok(("a/b".into(), 12)));
        assert!(parse_issue_arg("12", None)
            .unwrap_err()
            .contains("which repository"));
        assert!(parse_issue_arg("x", Some("a/b"))
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_issue_arg("bad repo#1", None).is_err());
        for url in [
            "https://github.com/o/r.git",
            "git@github.com:o/r.git",
            "ssh://git@ghe.example.com/o/r",
            "https://ghe.example.com/o/r/",
        ] {
            assert_eq!(repo_of_remote_url(url).as_deref(), Some("o/r"), "{url}");
        }
        assert_eq!(repo_of_remote_url("/srv/git/origin.git"), None);
    }

    #[test]
    fn the_pr_body_starts_with_fixes_and_ends_with_the_runners_verification() {
        use crate::model::{CheckResult, ForgeLink, JobStatus, JobType, TestCounts};
        let mut doc = crate::chain::new_assignment("a1".into(), "ns", "Fix it".into(), 10, true, 1);
        doc.forge = Some(ForgeLink {
            repo: "o/r".into(),
            issue: Some(IssueRef {
                number: 7,
                title: "Crash on empty input".into(),
                url: "u".into(),
                labels: vec![],
            }),
            pull_request: None,
            progress_comment: None,
        });
        let check = |name: &str, passed: bool, required: bool| CheckResult {
            name: name.into(),
            command: "c".into(),
            required,
            passed,
            exit_code: Some(if passed { 0 } else { 1 }),
            timed_out: false,
            counts: Some(TestCounts {
                passed: 42,
                failed: u64::from(!passed),
                skipped: 0,
            }),
            duration_ms: 1,
            output_tail: String::new(),
            commit: None,
        };
        crate::chain::insert_jobs(
            &mut doc,
            &[crate::chain::NewJob {
                id: "j1".into(),
                job_type: JobType::Implement,
                harness: "claude".into(),
                model: None,
                has_context: false,
                context_hash: None,
            }],
            None,
            &crate::chain::Position::End,
            crate::chain::Caller::Human,
            None,
            2,
        )
        .unwrap();
        doc.jobs[0].status = JobStatus::Complete;
        doc.jobs[0].checks = vec![check("Tests", true, true), check("Lint", false, false)];
        let body = pr_body(&doc, &["wf: implement job j1 (complete)".into()]);
        assert!(body.starts_with("Fixes #7\n"), "{body}");
        assert!(body.contains("- wf: implement job j1 (complete)"), "{body}");
        assert!(
            body.contains("## Verification\n\n✅ Tests: 42 passed, 0 failed\n❌ Lint (optional): 42 passed, 1 failed\n"),
            "{body}"
        );
        assert_eq!(pr_title(&doc), "Crash on empty input");
        // Only a required failure makes a draft.
        assert!(!is_draft(&doc));
        doc.jobs[0].checks[0] = check("Tests", false, true);
        assert!(is_draft(&doc));
        // Bodies stay under GitHub's limit.
        doc.north_star = "x".repeat(100);
        let many: Vec<String> = (0..20_000).map(|i| format!("commit {i}")).collect();
        assert!(pr_body(&doc, &many).chars().count() <= MAX_BODY);
    }

    #[test]
    fn bugs_get_fix_branches_and_the_rest_feature_branches() {
        let mut issue = IssueRef {
            number: 7,
            title: "t".into(),
            url: "u".into(),
            labels: vec!["Type: Bug".into()],
        };
        assert_eq!(branch_for_issue(&issue), "fix/issue-7");
        issue.labels = vec!["enhancement".into()];
        assert_eq!(branch_for_issue(&issue), "feature/issue-7");
    }
}
