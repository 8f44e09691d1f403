//! The forge client (GitHub REST; GitHub Enterprise through `forge.apiUrl`) and delivery: the
//! runner, not the agent, pushes the branch, opens the pull request — after looking one up for
//! the branch, so a retry never opens two — and keeps one progress comment on the issue,
//! edited in place. The token comes from the environment and never reaches a log, a
//! transcript, a prompt or an error message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use wf_core::config::{Config, ForgeConfig};
use wf_core::forge;
use wf_core::model::{Assignment, ForgeLink, IssueRef, PullRequestRef};
use wf_store::{Store, UpdateError};

use crate::git::git;
use crate::workspace::{self, Repo};

/// A forge call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    /// No token in the environment.
    #[error("no forge token: set {0} (a token that may read issues and write pull requests)")]
    NoToken(String),
    /// The forge could not be reached.
    #[error("cannot reach the forge at {url}: {why}")]
    Unreachable {
        /// The API base URL.
        url: String,
        /// The transport error.
        why: String,
    },
    /// The forge refused the call.
    #[error("the forge answered {status} to {what}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The call, e.g. `POST /repos/o/r/pulls`.
        what: String,
        /// GitHub's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("the forge's answer to {what} is not what GitHub's API documents: {why}")]
    BadAnswer {
        /// The call.
        what: String,
        /// What was wrong.
        why: String,
    },
}

/// A client for one repository.
pub struct GitHub {
    http: reqwest::Client,
    api: String,
    repo: String,
    token: String,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of every rendering.
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// A client for `repo`, with the token from the configured environment variable.
    pub fn new(config: &ForgeConfig, repo: &str) -> Result<Self, ForgeError> {
        let token = config
            .token_env
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|t| !t.trim().is_empty()))
            .ok_or_else(|| ForgeError::NoToken(config.token_env.join(" or ")))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("wf/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ForgeError::Unreachable {
                url: config.api_url.clone(),
                why: e.to_string(),
            })?;
        Ok(Self {
            http,
            api: config.api_url.clone(),
            repo: repo.to_string(),
            token: token.trim().to_string(),
        })
    }

    /// One call, retried when the forge says to come back later: 429 or a rate-limited 403
    /// always (the request was not carried out), a 5xx or a lost connection when repeating it
    /// is harmless (reads, edits, and creating a PR, which is looked up first). Waits what
    /// `Retry-After` says (at most a minute), else 1, 2, 4 s.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let repeatable = method != reqwest::Method::POST || path.ends_with("/pulls");
        let mut wait = Duration::from_secs(1);
        for attempt in 1.. {
            let (result, retry_after) = self.call_once(method.clone(), path, body.clone()).await;
            let again = match &result {
                Ok(_) => false,
                Err(ForgeError::Refused { status: 429, .. }) => true,
                Err(ForgeError::Refused {
                    status: 403,
                    message,
                    ..
                }) => message.to_ascii_lowercase().contains("rate limit"),
                Err(ForgeError::Refused { status, .. }) => *status >= 500 && repeatable,
                Err(ForgeError::Unreachable { .. }) => repeatable,
                Err(_) => false,
            };
            if !again || attempt >= 4 {
                return result;
            }
            let pause = retry_after.unwrap_or(wait).min(Duration::from_secs(60));
            tracing::info!(call = %format!("{method} {path}"), secs = pause.as_secs_f32(), "the forge asks to retry later");
            tokio::time::sleep(pause).await;
            wait *= 2;
        }
        unreachable!("the loop returns")
    }

    /// One request; the answer, and how long the forge asks to wait before another.
    async fn call_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (Result<Value, ForgeError>, Option<Duration>) {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = match request.send().await {
            Ok(a) => a,
            Err(e) => {
                let err = ForgeError::Unreachable {
                    url: self.api.clone(),
                    // reqwest's message names the URL, never the headers.
                    why: e.without_url().to_string(),
                };
                return (Err(err), None);
            }
        };
        let retry_after = answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        (Self::answer(answer, what).await, retry_after)
    }

    async fn answer(answer: reqwest::Response, what: String) -> Result<Value, ForgeError> {
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let mut message = value["message"].as_str().unwrap_or("").to_string();
            if let Some(errors) = value["errors"].as_array() {
                let details: Vec<String> = errors
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect();
                if !details.is_empty() {
                    message = format!("{message} ({})", details.join("; "));
                }
            }
            if message.is_empty() {
                message = text.chars().take(200).collect();
            }
            return Err(ForgeError::Refused {
                status: status.as_u16(),
                what,
                message,
            });
        }
        if value.is_null() {
            return Err(ForgeError::BadAnswer {
                what,
                why: format!("not JSON: {}", text.chars().take(120).collect::<String>()),
            });
        }
        Ok(value)
    }

    /// Issue `number` and its body. A pull request's number is refused: the issues API
    /// answers for pull requests too.
    pub async fn issue(&self, number: u64) -> Result<(IssueRef, String), ForgeError> {
        let path = format!("/repos/{}/issues/{number}", self.repo);
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        let bad = |why: &str| ForgeError::BadAnswer {
            what: format!("GET {path}"),
            why: why.to_string(),
        };
        if v.get("pull_request").is_some() {
            return Err(bad("it is a pull request, not an issue"));
        }
        if v["title"].as_str().is_none() {
            return Err(bad("no title"));
        }
        let issue = issue_ref(&v).ok_or_else(|| bad("no number"))?;
        Ok((issue, v["body"].as_str().unwrap_or("").to_string()))
    }

    /// The repository, `owner/repo`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    fn owner(&self) -> &str {
        self.repo.split('/').next().unwrap_or("")
    }

    pub(crate) fn pr_of(v: &Value, what: &str) -> Result<PullRequestRef, ForgeError> {
        Ok(PullRequestRef {
            number: v["number"].as_u64().ok_or_else(|| ForgeError::BadAnswer {
                what: what.to_string(),
                why: "a pull request without a number".into(),
            })?,
            url: v["html_url"].as_str().unwrap_or_default().to_string(),
            draft: v["draft"].as_bool().unwrap_or(false),
        })
    }

    /// The pull request whose head is `branch` (open or closed), if there is one.
    pub async fn find_pr(&self, branch: &str) -> Result<Option<PullRequestRef>, ForgeError> {
        let path = format!(
            "/repos/{}/pulls?head={}%3A{}&state=all",
            self.repo,
            self.owner(),
            branch.replace('/', "%2F")
        );
        let v = self.call(reqwest::Method::GET, &path, None).await?;
        let list = v.as_array().ok_or_else(|| ForgeError::BadAnswer {
            what: format!("GET {path}"),
            why: "not a list".into(),
        })?;
        list.first().map(|p| Self::pr_of(p, &path)).transpose()
    }

    /// Opens a pull request from `branch` into `base`; when one exists already (a retry
    /// after an answer was lost), returns that one.
    pub async fn create_pr(
        &self,
        title: &str,
        branch: &str,
        base: &str,
        body: &str,
        draft: bool,
    ) -> Result<PullRequestRef, ForgeError> {
        let path = format!("/repos/{}/pulls", self.repo);
        let asked = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({"title": title, "head": branch, "base": base, "body": body, "draft": draft})),
            )
            .await;
        match asked {
            Ok(v) => Self::pr_of(&v, &path),
            Err(ForgeError::Refused {
                status: 422,
                message,
                ..
            }) if message.contains("already exists") => {
                self.find_pr(branch).await?.ok_or(ForgeError::Refused {
                    status: 422,
                    what: format!("POST {path}"),
                    message,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Closes pull request `number`.
    pub async fn close_pr(&self, number: u64) -> Result<(), ForgeError> {
        let path = format!("/repos/{}/pulls/{number}", self.repo);
        self.call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"state": "closed"})),
        )
        .await
        .map(drop)
    }

    /// Adds a comment to issue `number`; returns its id.
    pub async fn comment(&self, number: u64, body: &str) -> Result<u64, ForgeError> {
        let path = format!("/repos/{}/issues/{number}/comments", self.repo);
        let v = self
            .call(reqwest::Method::POST, &path, Some(json!({"body": body})))
            .await?;
        v["id"].as_u64().ok_or(ForgeError::BadAnswer {
            what: format!("POST {path}"),
            why: "a comment without an id".into(),
        })
    }

    /// Replaces the text of comment `id`.
    pub async fn edit_comment(&self, id: u64, body: &str) -> Result<(), ForgeError> {
        let path = format!("/repos/{}/issues/comments/{id}", self.repo);
        self.call(reqwest::Method::PATCH, &path, Some(json!({"body": body})))
            .await
            .map(drop)
    }
}

/// An issue as the REST API describes it (`None` without a number).
pub(crate) fn issue_ref(v: &Value) -> Option<IssueRef> {
    Some(IssueRef {
        number: v["number"].as_u64()?,
        title: v["title"].as_str().unwrap_or_default().to_string(),
        url: v["html_url"].as_str().unwrap_or_default().to_string(),
        labels: v["labels"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["name"].as_str().or(l.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The repository's `owner/repo`: the configured one, else the remote's URL's.
pub async fn repo_name(config: &Config, repo: Option<&Repo>) -> Option<String> {
    if let Some(r) = &config.forge.repo {
        return Some(r.clone());
    }
    let repo = repo?;
    let remote = workspace::remote(&config.workspace, repo).await?;
    let url = git(&repo.top, &["remote", "get-url", &remote]).await.ok()?;
    forge::repo_of_remote_url(&url)
}

/// Pushes the assignment's branch and opens its pull request (or finds the one already open
/// for the branch), records it in the document and says so in the progress comment.
pub async fn deliver(config: &Config, store: &Store, aid: &str) -> Result<PullRequestRef, String> {
    let doc = store
        .get(aid)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no assignment {aid}"))?;
    let ws = doc.workspace.clone().ok_or_else(|| {
        format!("assignment {aid} has no workspace (worktree mode), so no branch to propose")
    })?;
    let repo = workspace::main_repo(&config.workdir, &ws).await?;
    let name = match doc.forge.as_ref().map(|f| f.repo.clone()) {
        Some(n) => n,
        None => repo_name(config, Some(&repo))
            .await
            .ok_or("which repository? set forge.repo, or use a GitHub remote")?,
    };
    let remote = workspace::remote(&config.workspace, &repo)
        .await
        .ok_or("the repository has no remote to push the branch to")?;
    workspace::push(Path::new(&ws.path), &remote, &ws.branch)
        .await
        .map_err(|e| format!("cannot push {}: {e}", ws.branch))?;
    let client = GitHub::new(&config.forge, &name).map_err(|e| e.to_string())?;
    let pr = open_or_find(&client, &doc, &ws).await?;
    let doc = record_pr(store, &doc, &name, &pr).await?;
    progress(
        config,
        store,
        &doc,
        &format!("pull request opened: {}", pr.url),
        true,
    )
    .await;
    Ok(pr)
}

/// The branch's pull request: the one the forge has for it, else a new one.
async fn open_or_find(
    client: &GitHub,
    doc: &Assignment,
    ws: &wf_core::model::Workspace,
) -> Result<PullRequestRef, String> {
    if let Some(pr) = client
        .find_pr(&ws.branch)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(pr);
    }
    let log = git(
        Path::new(&ws.path),
        &[
            "log",
            "--reverse",
            "--format=%s",
            &format!("{}..HEAD", ws.base_commit),
        ],
    )
    .await
    .map_err(|e| e.to_string())?;
    let commits: Vec<String> = log.lines().map(str::to_string).collect();
    client
        .create_pr(
            &forge::pr_title(doc),
            &ws.branch,
            &ws.base_branch,
            &forge::pr_body(doc, &commits),
            forge::is_draft(doc),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Records `pr` in the assignment (once); returns the document as it now is.
async fn record_pr(
    store: &Store,
    doc: &Assignment,
    repo: &str,
    pr: &PullRequestRef,
) -> Result<Assignment, String> {
    let written = store
        .update(&doc.id, |d| {
            let link = d.forge.get_or_insert_with(|| ForgeLink {
                repo: repo.to_string(),
                issue: None,
                pull_request: None,
                progress_comment: None,
            });
            if link.pull_request.as_ref() == Some(pr) {
                return Err(());
            }
            link.pull_request = Some(pr.clone());
            Ok(())
        })
        .await;
    match written {
        Ok((d, ())) => Ok(d),
        Err(UpdateError::Refused(())) => Ok(doc.clone()),
        Err(UpdateError::Store(e)) => Err(format!("opened {} but cannot record it: {e}", pr.url)),
    }
}

/// Brings the progress comment on the assignment's issue up to date with `event`: created
/// once, then edited in place, at most once every few seconds unless `force`. Failures are
/// logged, never fatal: the comment is a view.
pub async fn progress(config: &Config, store: &Store, doc: &Assignment, event: &str, force: bool) {
    const MIN_GAP: Duration = Duration::from_secs(5);
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let Some(link) = &doc.forge else { return };
    let Some(issue) = &link.issue else { return };
    {
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match last.get(&doc.id) {
            Some(at) if !force && at.elapsed() < MIN_GAP => return,
            _ => {
                last.insert(doc.id.clone(), Instant::now());
            }
        }
    }
    let client = match GitHub::new(&config.forge, &link.repo) {
        Ok(c) => c,
        Err(e) => return tracing::warn!(%e, "cannot update the issue's progress comment"),
    };
    let body = forge::progress_comment(doc, event);
    match link.progress_comment {
        Some(id) => {
            if let Err(e) = client.edit_comment(id, &body).await {
                tracing::warn!(%e, "cannot edit the issue's progress comment");
            }
        }
        None => match client.comment(issue.number, &body).await {
            Ok(id) => {
                let recorded = store
                    .update(&doc.id, |d| match d.forge.as_mut() {
                        Some(f) if f.progress_comment.is_none() => {
                            f.progress_comment = Some(id);
                            Ok(())
                        }
                        _ => Err(()),
                    })
                    .await;
                if let Err(UpdateError::Store(e)) = recorded {
                    tracing::warn!(%e, "cannot record the progress comment's id");
                }
            }
            Err(e) => tracing::warn!(%e, "cannot comment on the issue"),
        },
    }
}
