//! What the runner does on the forge with a workflow task's result (`publish`), and when a
//! trigger's assignment completes (`on_complete`): the runner, never the agent, writes to the
//! forge, with the token only it holds.
//!
//! Every write is posted once: comments and reviews carry a marker and are looked for before
//! they are posted, issues opened from a plan carry one per work package, so a job run again
//! after a crash finds what it already wrote.

use crate::forge::{ForgeError, GitHub};
use wf_core::config::Config;
use wf_core::model::Assignment;
use wf_core::trigger::RawOnComplete;
use wf_core::workflow::Publish;

/// The labels a result names on its last `LABELS:` line.
pub fn labels_in(text: &str) -> Vec<String> {
    text.lines()
        .rev()
        .find_map(|l| {
            let clean = l.trim().trim_matches(|c| c == '*' || c == '`');
            let upper = clean.to_ascii_uppercase();
            upper
                .starts_with("LABELS:")
                .then(|| clean["LABELS:".len()..].to_string())
        })
        .map(|rest| {
            rest.split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// One work package of a plan, as `publish = "issues"` reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedIssue {
    /// A short key other packages name.
    pub key: String,
    /// The issue's title.
    pub title: String,
    /// The issue's body.
    #[serde(default)]
    pub body: String,
    /// The keys of the packages that must be done first.
    #[serde(default)]
    pub blocked_by: Vec<String>,
}

/// The work packages in the last fenced JSON block of `text`, checked: unique keys, known
/// dependencies, no cycle.
pub fn planned_issues(text: &str) -> Result<Vec<PlannedIssue>, String> {
    let start = text
        .rfind("```json")
        .ok_or("no ```json block with the issues in the final message")?;
    let rest = &text[start + "```json".len()..];
    let end = rest.find("```").ok_or("the ```json block is not closed")?;
    let issues: Vec<PlannedIssue> = serde_json::from_str(rest[..end].trim()).map_err(|e| {
        format!("the issues block is not a list of {{key, title, body, blockedBy}}: {e}")
    })?;
    if issues.is_empty() {
        return Err("the issues block is empty".into());
    }
    for (i, issue) in issues.iter().enumerate() {
        if issue.key.trim().is_empty() || issue.title.trim().is_empty() {
            return Err(format!("issue {i}: a key and a title are needed"));
        }
        if issues[..i].iter().any(|o| o.key == issue.key) {
            return Err(format!("issue key `{}` is used twice", issue.key));
        }
        for b in &issue.blocked_by {
            // Blockers come first: that also rules out cycles.
            if !issues[..i].iter().any(|o| &o.key == b) {
                return Err(format!(
                    "issue `{}` is blocked by `{b}`, which is not listed before it",
                    issue.key
                ));
            }
        }
    }
    Ok(issues)
}

fn client(config: &Config, doc: &Assignment) -> Result<GitHub, String> {
    let repo = doc
        .forge
        .as_ref()
        .map(|f| f.repo.clone())
        .or_else(|| config.forge.repo.clone())
        .ok_or("which repository? the assignment has no forge link and forge.repo is not set")?;
    GitHub::new(&config.forge, &repo).map_err(|e| e.to_string())
}

fn forge_err(what: &str) -> impl Fn(ForgeError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Publishes the result `text` of job `job_id` of `doc` as `how` says; `passed` is the
/// verdict (for reviews). Returns one line saying what was done, for the PM.
pub async fn publish(
    config: &Config,
    doc: &Assignment,
    job_id: &str,
    how: Publish,
    text: &str,
    passed: bool,
) -> Result<String, String> {
    let gh = client(config, doc)?;
    let marker = format!("wf:publish:{}:{job_id}", doc.id);
    let issue = doc.forge.as_ref().and_then(|f| f.issue.as_ref());
    match how {
        Publish::IssueComment => {
            let issue = issue.ok_or("the assignment has no forge issue to comment on")?;
            gh.comment_once(issue.number, &marker, text.trim())
                .await
                .map_err(forge_err("cannot comment"))?;
            Ok(format!(
                "wf posted this result as a comment on issue #{}",
                issue.number
            ))
        }
        Publish::IssueLabels => {
            let issue = issue.ok_or("the assignment has no forge issue to label")?;
            let labels = labels_in(text);
            if labels.is_empty() {
                return Err("no `LABELS: a, b` line in the final message".into());
            }
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            gh.add_labels(issue.number, &refs)
                .await
                .map_err(forge_err("cannot label"))?;
            Ok(format!(
                "wf labelled issue #{}: {}",
                issue.number,
                labels.join(", ")
            ))
        }
        Publish::PrReview => {
            let pr = doc
                .forge
                .as_ref()
                .and_then(|f| f.pull_request.as_ref())
                .ok_or("the assignment has no pull request to review")?;
            gh.review_once(pr.number, &marker, text.trim(), !passed)
                .await
                .map_err(forge_err("cannot post the review"))?;
            Ok(format!(
                "wf posted this result as a review of pull request #{} ({})",
                pr.number,
                if passed {
                    "comment"
                } else {
                    "changes requested"
                }
            ))
        }
        Publish::Issues => {
            let label = doc
                .workflow
                .as_ref()
                .and_then(|w| w.params.get("label"))
                .cloned()
                .unwrap_or_else(|| "wf:ready".into());
            open_issues(&gh, doc, text, &label).await
        }
    }
}

/// Opens one issue per work package of the plan in `text` (finding those opened before by
/// their markers), then records their dependencies.
async fn open_issues(
    gh: &GitHub,
    doc: &Assignment,
    text: &str,
    label: &str,
) -> Result<String, String> {
    let planned = planned_issues(text)?;
    let prefix = format!("wf:plan:{}:", doc.id);
    let existing = gh
        .issues_marked(label, &prefix)
        .await
        .map_err(forge_err("cannot list the issues opened before"))?;
    let mut opened: Vec<(String, u64, u64)> = Vec::new();
    for p in &planned {
        let marker = format!("{prefix}{}", p.key);
        let found = existing
            .iter()
            .find(|(m, _)| *m == marker)
            .map(|(_, i)| i.clone());
        let issue = match found {
            Some(i) => i,
            None => {
                let body = format!(
                    "{}\n\nFrom the plan of wf assignment `{}`.\n\n<!-- {marker} -->",
                    p.body.trim(),
                    doc.id
                );
                gh.create_issue(p.title.trim(), &body, &[label])
                    .await
                    .map_err(forge_err("cannot open an issue"))?
            }
        };
        opened.push((p.key.clone(), issue.issue.number, issue.id));
    }
    for p in &planned {
        let number = opened
            .iter()
            .find(|o| o.0 == p.key)
            .map(|o| o.1)
            .unwrap_or(0);
        for b in &p.blocked_by {
            if let Some((_, _, id)) = opened.iter().find(|o| &o.0 == b) {
                gh.add_blocked_by(number, *id)
                    .await
                    .map_err(forge_err("cannot record a dependency"))?;
            }
        }
    }
    let list: Vec<String> = opened
        .iter()
        .map(|(k, n, _)| format!("#{n} ({k})"))
        .collect();
    Ok(format!(
        "wf opened {} issues labelled `{label}`: {}",
        opened.len(),
        list.join(", ")
    ))
}

/// Does what a trigger's `on_complete` says for the completed assignment `doc`: a comment
/// (once), labels, closing its issue.
pub async fn on_complete(
    config: &Config,
    doc: &Assignment,
    what: &RawOnComplete,
) -> Result<(), String> {
    let Some(issue) = doc.forge.as_ref().and_then(|f| f.issue.as_ref()) else {
        return Ok(());
    };
    let gh = client(config, doc)?;
    if let Some(comment) = &what.comment {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let pr = doc
            .forge
            .as_ref()
            .and_then(|f| f.pull_request.as_ref())
            .map(|p| p.url.clone())
            .unwrap_or_default();
        let ctx = serde_json::json!({"assignment": {
            "id": doc.id, "north_star": doc.north_star, "pull_request": pr,
            "branch": doc.workspace.as_ref().map(|w| w.branch.clone()).unwrap_or_default(),
        }});
        let text = env
            .render_str(comment, &ctx)
            .map_err(|e| format!("on_complete.comment: {e}"))?;
        gh.comment_once(issue.number, &format!("wf:complete:{}", doc.id), &text)
            .await
            .map_err(forge_err("cannot comment"))?;
    }
    if let Some(l) = &what.add_label {
        gh.add_labels(issue.number, &[l.as_str()])
            .await
            .map_err(forge_err("cannot label"))?;
    }
    if let Some(l) = &what.remove_label {
        gh.remove_label(issue.number, l)
            .await
            .map_err(forge_err("cannot remove a label"))?;
    }
    if what.close_issue {
        gh.close_issue(issue.number)
            .await
            .map_err(forge_err("cannot close the issue"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_plans_are_read_from_the_final_message() {
        assert_eq!(labels_in("bug, p1\nLABELS: bug, p1"), ["bug", "p1"]);
        assert_eq!(labels_in("**Labels: `needs-info`**"), ["needs-info"]);
        assert!(labels_in("no labels here").is_empty());
        let plan = "The plan.\n```json\n[{\"key\": \"a\", \"title\": \"A\", \"body\": \"x\"},\n {\"key\": \"b\", \"title\": \"B\", \"blockedBy\": [\"a\"]}]\n```\n";
        let issues = planned_issues(plan).unwrap();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[1].blocked_by, ["a"]);
        for (bad, want) in [
            ("no block", "no ```json block"),
            ("```json\n[]\n```", "empty"),
            ("```json\n[{\"key\": \"a\", \"title\": \"A\", \"blockedBy\": [\"b\"]}]\n```", "not listed before it"),
            ("```json\n[{\"key\": \"a\", \"title\": \"A\"}, {\"key\": \"a\", \"title\": \"B\"}]\n```", "used twice"),
            ("```json\n[{\"key\": \"a\"}]\n```", "not a list of"),
        ] {
            let err = planned_issues(bad).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
