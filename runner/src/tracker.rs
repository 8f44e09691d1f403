//! The forge as an issue tracker, for triggers and workflow tasks: open issues with a label,
//! their blockers, open pull requests, labels, closing, comments that are posted once,
//! reviews, and new issues with their dependencies. GitHub REST through [`GitHub`]'s one
//! request path (its retries, its token handling).

use serde_json::{json, Value};

use crate::forge::{ForgeError, GitHub};
use wf_core::model::{IssueRef, PullRequestRef};

/// An open issue as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedIssue {
    /// Number, title, URL, labels.
    pub issue: IssueRef,
    /// Its REST id (what dependencies name).
    pub id: u64,
    /// Its body.
    pub body: String,
}

/// An open pull request as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPull {
    /// Number, URL, draft.
    pub pull: PullRequestRef,
    /// Its title.
    pub title: String,
    /// Its head commit.
    pub head_sha: String,
    /// Its head branch.
    pub head_ref: String,
    /// The branch it goes into.
    pub base_ref: String,
    /// Who opened it.
    pub author: String,
}

fn bad(what: &str, why: &str) -> ForgeError {
    ForgeError::BadAnswer {
        what: what.to_string(),
        why: why.to_string(),
    }
}

fn list(v: Value, what: &str) -> Result<Vec<Value>, ForgeError> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(bad(what, "not a list")),
    }
}

fn issue_of(v: &Value, what: &str) -> Result<ListedIssue, ForgeError> {
    Ok(ListedIssue {
        issue: crate::forge::issue_ref(v).ok_or_else(|| bad(what, "an issue without a number"))?,
        id: v["id"].as_u64().unwrap_or_default(),
        body: v["body"].as_str().unwrap_or_default().to_string(),
    })
}

/// `%`-encodes a path or query component.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl GitHub {
    /// The open issues (not pull requests) carrying `label`, oldest first (up to 100).
    pub async fn open_issues_labelled(&self, label: &str) -> Result<Vec<ListedIssue>, ForgeError> {
        let path = format!(
            "/repos/{}/issues?state=open&labels={}&sort=created&direction=asc&per_page=100",
            self.repo(),
            encode(label)
        );
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        list(v, &path)?
            .iter()
            .filter(|i| i.get("pull_request").is_none())
            .map(|i| issue_of(i, &path))
            .collect()
    }

    /// Whether every issue blocking issue `number` is closed. A forge without issue
    /// dependencies (404) blocks nothing.
    pub async fn unblocked(&self, number: u64) -> Result<bool, ForgeError> {
        let path = format!(
            "/repos/{}/issues/{number}/dependencies/blocked_by?per_page=100",
            self.repo()
        );
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(v) => Ok(list(v, &path)?
                .iter()
                .all(|b| b["state"].as_str() == Some("closed"))),
            Err(ForgeError::Refused { status: 404, .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The open pull requests (up to 100).
    pub async fn open_pulls(&self) -> Result<Vec<ListedPull>, ForgeError> {
        let path = format!("/repos/{}/pulls?state=open&per_page=100", self.repo());
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        list(v, &path)?
            .iter()
            .map(|p| {
                Ok(ListedPull {
                    pull: GitHub::pr_of(p, &path)?,
                    title: p["title"].as_str().unwrap_or_default().to_string(),
                    head_sha: p["head"]["sha"]
                        .as_str()
                        .ok_or_else(|| bad(&path, "a pull request without a head commit"))?
                        .to_string(),
                    head_ref: p["head"]["ref"].as_str().unwrap_or_default().to_string(),
                    base_ref: p["base"]["ref"].as_str().unwrap_or_default().to_string(),
                    author: p["user"]["login"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect()
    }

    /// Adds `labels` to issue `number`.
    pub async fn add_labels(&self, number: u64, labels: &[&str]) -> Result<(), ForgeError> {
        let path = format!("/repos/{}/issues/{number}/labels", self.repo());
        self.call(
            reqwest::Method::POST,
            &path,
            Some(json!({ "labels": labels })),
        )
        .await
        .map(drop)
    }

    /// Removes `label` from issue `number` (already gone is fine).
    pub async fn remove_label(&self, number: u64, label: &str) -> Result<(), ForgeError> {
        let path = format!(
            "/repos/{}/issues/{number}/labels/{}",
            self.repo(),
            encode(label)
        );
        match self.call(reqwest::Method::DELETE, &path, None).await {
            Ok(_) | Err(ForgeError::Refused { status: 404, .. }) => Ok(()),
            // DELETE answers with the remaining labels; an empty answer is not an error.
            Err(ForgeError::BadAnswer { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes issue `number` as completed.
    pub async fn close_issue(&self, number: u64) -> Result<(), ForgeError> {
        let path = format!("/repos/{}/issues/{number}", self.repo());
        self.call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"state": "closed", "state_reason": "completed"})),
        )
        .await
        .map(drop)
    }

    /// Posts `body` on issue `number` once: a comment carrying `marker` (an HTML comment) is
    /// looked for first, so a retried post finds its own. Returns the comment's id.
    pub async fn comment_once(
        &self,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let path = format!(
            "/repos/{}/issues/{number}/comments?per_page=100",
            self.repo()
        );
        let existing = list(self.call(reqwest::Method::GET, &path, None).await?, &path)?;
        let tag = format!("<!-- {marker} -->");
        if let Some(id) = existing
            .iter()
            .find(|c| c["body"].as_str().is_some_and(|b| b.contains(&tag)))
            .and_then(|c| c["id"].as_u64())
        {
            return Ok(id);
        }
        self.comment(number, &format!("{body}\n\n{tag}")).await
    }

    /// Posts a review of pull request `number`: `COMMENT`, or `REQUEST_CHANGES` when
    /// `changes` — once, recognised by `marker`.
    pub async fn review_once(
        &self,
        number: u64,
        marker: &str,
        body: &str,
        changes: bool,
    ) -> Result<u64, ForgeError> {
        let path = format!("/repos/{}/pulls/{number}/reviews", self.repo());
        let tag = format!("<!-- {marker} -->");
        let existing = list(
            self.call(reqwest::Method::GET, &format!("{path}?per_page=100"), None)
                .await?,
            &path,
        )?;
        if let Some(id) = existing
            .iter()
            .find(|r| r["body"].as_str().is_some_and(|b| b.contains(&tag)))
            .and_then(|r| r["id"].as_u64())
        {
            return Ok(id);
        }
        let event = if changes {
            "REQUEST_CHANGES"
        } else {
            "COMMENT"
        };
        let v = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({"body": format!("{body}\n\n{tag}"), "event": event})),
            )
            .await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| bad(&format!("POST {path}"), "a review without an id"))
    }

    /// Opens an issue; returns it.
    pub async fn create_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[&str],
    ) -> Result<ListedIssue, ForgeError> {
        let path = format!("/repos/{}/issues", self.repo());
        let v = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({"title": title, "body": body, "labels": labels})),
            )
            .await?;
        issue_of(&v, &path)
    }

    /// Records that issue `number` is blocked by the issue whose REST id is `blocker_id`.
    pub async fn add_blocked_by(&self, number: u64, blocker_id: u64) -> Result<(), ForgeError> {
        let path = format!(
            "/repos/{}/issues/{number}/dependencies/blocked_by",
            self.repo()
        );
        match self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "issue_id": blocker_id })),
            )
            .await
        {
            // Already recorded (a retry) is what was wanted.
            Ok(_) | Err(ForgeError::Refused { status: 422, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Open issues whose body carries `marker` (issues this runner opened before, found again
    /// after a crash), by marker.
    pub async fn issues_marked(
        &self,
        label: &str,
        marker_prefix: &str,
    ) -> Result<Vec<(String, ListedIssue)>, ForgeError> {
        let listed = self.open_issues_labelled(label).await?;
        Ok(listed
            .into_iter()
            .filter_map(|i| {
                let start = i.body.find(&format!("<!-- {marker_prefix}"))?;
                let rest = &i.body[start + 5..];
                let end = rest.find(" -->")?;
                Some((rest[..end].to_string(), i))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_for_paths() {
        assert_eq!(encode("wf:ready"), "wf%3Aready");
        assert_eq!(encode("good first issue"), "good%20first%20issue");
        assert_eq!(encode("p0"), "p0");
    }
}
