//! A scripted GitHub REST endpoint on 127.0.0.1, owned by the test: the calls wf makes (issue
//! read, pull request lookup and create, issue comment create and edit), answered the way
//! GitHub answers them, with every request recorded for the test to count.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `PATCH`.
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body, if any.
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// Answers to give instead of the real one: method, path suffix, status, how many times.
    failures: Vec<(String, String, u16, u32)>,
    issues: HashMap<u64, Value>,
    pulls: Vec<Value>,
    comments: HashMap<u64, Value>,
    next_comment: u64,
    /// Issue number → the numbers of the issues blocking it.
    blocked_by: HashMap<u64, Vec<u64>>,
    reviews: Vec<Value>,
    requests: Vec<Request>,
}

/// The server; it stops when dropped (the listener thread ends with the process's next
/// connection, which `drop` makes).
pub struct FakeGitHub {
    port: u16,
    repo: String,
    state: Arc<Mutex<State>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeGitHub {
    /// Starts the server for repository `repo` (`owner/name`).
    pub fn start(repo: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake GitHub");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            next_comment: 1000,
            ..State::default()
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, stopping, repo_name) = (state.clone(), stop.clone(), repo.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let (st, repo) = (st.clone(), repo_name.clone());
                    std::thread::spawn(move || serve(conn, &st, &repo));
                }
            }
        });
        Self {
            port,
            repo: repo.to_string(),
            state,
            stop,
        }
    }

    /// The API base URL (what `forge.apiUrl` is set to).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds issue `number`.
    pub fn add_issue(&self, number: u64, title: &str, body: &str, labels: &[&str]) {
        let issue = json!({
            "number": number, "id": 900_000 + number, "title": title, "body": body, "state": "open",
            "html_url": format!("https://github.com/{}/issues/{number}", self.repo),
            "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        });
        self.state.lock().unwrap().issues.insert(number, issue);
    }

    /// Records that issue `number` is blocked by issue `by`.
    pub fn block(&self, number: u64, by: u64) {
        self.state
            .lock()
            .unwrap()
            .blocked_by
            .entry(number)
            .or_default()
            .push(by);
    }

    /// Closes issue `number`.
    pub fn close(&self, number: u64) {
        if let Some(i) = self.state.lock().unwrap().issues.get_mut(&number) {
            i["state"] = json!("closed");
        }
    }

    /// Issue `number` as stored.
    pub fn issue(&self, number: u64) -> Option<Value> {
        self.state.lock().unwrap().issues.get(&number).cloned()
    }

    /// Every issue, by number.
    pub fn issues(&self) -> HashMap<u64, Value> {
        self.state.lock().unwrap().issues.clone()
    }

    /// The numbers of the issues blocking issue `number`.
    pub fn blockers(&self, number: u64) -> Vec<u64> {
        self.state
            .lock()
            .unwrap()
            .blocked_by
            .get(&number)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds an open pull request `number` from `branch` at commit `sha` into `base`.
    pub fn add_pull(
        &self,
        number: u64,
        title: &str,
        branch: &str,
        sha: &str,
        base: &str,
        draft: bool,
    ) {
        let owner = self.repo.split('/').next().unwrap_or("").to_string();
        let pr = json!({
            "number": number, "title": title, "state": "open", "draft": draft,
            "html_url": format!("https://github.com/{}/pull/{number}", self.repo),
            "head": {"ref": branch, "label": format!("{owner}:{branch}"), "sha": sha},
            "base": {"ref": base}, "user": {"login": "octocat"},
        });
        self.state.lock().unwrap().pulls.push(pr);
    }

    /// Moves pull request `number`'s head to commit `sha` (a push).
    pub fn push_pull(&self, number: u64, sha: &str) {
        if let Some(p) = self
            .state
            .lock()
            .unwrap()
            .pulls
            .iter_mut()
            .find(|p| p["number"] == number)
        {
            p["head"]["sha"] = json!(sha);
        }
    }

    /// The reviews posted.
    pub fn reviews(&self) -> Vec<Value> {
        self.state.lock().unwrap().reviews.clone()
    }

    /// Answers the next `times` requests `method …suffix` with `status` (GitHub's 5xx, or 429
    /// with `Retry-After: 1`).
    pub fn fail_next(&self, method: &str, suffix: &str, status: u16, times: u32) {
        self.state.lock().unwrap().failures.push((
            method.to_string(),
            suffix.to_string(),
            status,
            times,
        ));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The pull requests created.
    pub fn pulls(&self) -> Vec<Value> {
        self.state.lock().unwrap().pulls.clone()
    }

    /// The issue comments, by id.
    pub fn comments(&self) -> HashMap<u64, Value> {
        self.state.lock().unwrap().comments.clone()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Why: wakes the accept loop so that it sees the stop flag; failure means it is gone.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, repo: &str) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = {
        let mut st = state.lock().unwrap();
        st.requests.push(Request {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        let route_path = path.split('?').next().unwrap_or("").to_string();
        let failure = st.failures.iter_mut().find(|(m, suffix, _, n)| {
            *m == method && route_path.ends_with(suffix.as_str()) && *n > 0
        });
        if let Some(f) = failure {
            f.3 -= 1;
            (f.2, json!({"message": "Server Error"}))
        } else if authorization.as_deref() != Some("Bearer test-token") {
            (401, json!({"message": "Bad credentials"}))
        } else {
            route(&mut st, repo, &method, &path, &body)
        }
    };
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        404 => "Not Found",
        _ => "Unprocessable Entity",
    };
    let mut conn = conn;
    // Why: a client that hung up needs no answer.
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{text}",
        text.len(),
        if status == 429 { "Retry-After: 1\r\n" } else { "" }
    );
}

/// Decodes `%XX` escapes of a path or query component.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// Long: one arm per REST call, the fake forge's whole API.
fn route(st: &mut State, repo: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let prefix = format!("/repos/{repo}");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return (404, json!({"message": "Not Found"}));
    };
    let (route, query) = rest.split_once('?').unwrap_or((rest, ""));
    let segments: Vec<&str> = route.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", [""]) => (200, json!({"full_name": repo, "default_branch": "main"})),
        ("GET", ["issues", n]) => match n.parse().ok().and_then(|n: u64| st.issues.get(&n)) {
            Some(issue) => (200, issue.clone()),
            None => (404, json!({"message": "Not Found"})),
        },
        ("GET", ["pulls"]) => {
            let head = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("head="))
                .map(|h| h.replace("%2F", "/").replace("%3A", ":"));
            let open_only = query.split('&').any(|kv| kv == "state=open");
            let found: Vec<Value> = st
                .pulls
                .iter()
                .filter(|p| head.as_deref().is_none_or(|h| p["head"]["label"] == h))
                .filter(|p| !open_only || p["state"] == "open")
                .cloned()
                .collect();
            (200, Value::Array(found))
        }
        ("GET", ["issues"]) => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(decode)
            };
            let label = param("labels");
            let open_only = param("state").as_deref() == Some("open");
            let mut found: Vec<Value> = st
                .issues
                .values()
                .filter(|i| !open_only || i["state"] == "open")
                .filter(|i| {
                    label.as_deref().is_none_or(|l| {
                        i["labels"]
                            .as_array()
                            .is_some_and(|ls| ls.iter().any(|x| x["name"] == l))
                    })
                })
                .cloned()
                .collect();
            found.sort_by_key(|i| i["number"].as_u64());
            (200, Value::Array(found))
        }
        ("POST", ["issues"]) => {
            let number = st.issues.keys().max().copied().unwrap_or(0) + 1;
            let issue = json!({
                "number": number, "id": 900_000 + number, "title": body["title"], "body": body["body"],
                "state": "open", "html_url": format!("https://github.com/{repo}/issues/{number}"),
                "labels": body["labels"].as_array().map(|ls| ls.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()).unwrap_or_default(),
            });
            st.issues.insert(number, issue.clone());
            (201, issue)
        }
        ("PATCH", ["issues", n]) => match n.parse().ok().and_then(|n: u64| st.issues.get_mut(&n)) {
            Some(i) => {
                if let Some(s) = body.get("state") {
                    i["state"] = s.clone();
                }
                (200, i.clone())
            }
            None => (404, json!({"message": "Not Found"})),
        },
        ("GET", ["issues", n, "dependencies", "blocked_by"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let blockers: Vec<Value> = st
                .blocked_by
                .get(&n)
                .into_iter()
                .flatten()
                .filter_map(|b| st.issues.get(b).cloned())
                .collect();
            (200, Value::Array(blockers))
        }
        ("POST", ["issues", n, "dependencies", "blocked_by"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let by = st
                .issues
                .values()
                .find(|i| i["id"] == body["issue_id"])
                .and_then(|i| i["number"].as_u64());
            match by {
                Some(b) if st.blocked_by.get(&n).is_some_and(|l| l.contains(&b)) => (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"message": "already blocked by it"}]}),
                ),
                Some(b) => {
                    st.blocked_by.entry(n).or_default().push(b);
                    (201, st.issues.get(&n).cloned().unwrap_or(Value::Null))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["issues", n, "labels"]) => {
            match n.parse().ok().and_then(|n: u64| st.issues.get_mut(&n)) {
                Some(i) => {
                    let mut labels = i["labels"].as_array().cloned().unwrap_or_default();
                    for l in body["labels"].as_array().into_iter().flatten() {
                        if !labels.iter().any(|x| x["name"] == *l) {
                            labels.push(json!({"name": l}));
                        }
                    }
                    i["labels"] = Value::Array(labels.clone());
                    (200, Value::Array(labels))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("DELETE", ["issues", n, "labels", l]) => {
            match n.parse().ok().and_then(|n: u64| st.issues.get_mut(&n)) {
                Some(i) => {
                    let l = decode(l);
                    let labels: Vec<Value> = i["labels"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|x| x["name"] != l.as_str())
                        .collect();
                    i["labels"] = Value::Array(labels.clone());
                    (200, Value::Array(labels))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let mut found: Vec<Value> = st
                .comments
                .values()
                .filter(|c| c["issue"] == n)
                .cloned()
                .collect();
            found.sort_by_key(|c| c["id"].as_u64());
            (200, Value::Array(found))
        }
        ("GET", ["pulls", n, "reviews"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let found: Vec<Value> = st
                .reviews
                .iter()
                .filter(|r| r["pull"] == n)
                .cloned()
                .collect();
            (200, Value::Array(found))
        }
        ("POST", ["pulls", n, "reviews"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let review = json!({"id": 7000 + st.reviews.len() as u64, "pull": n, "body": body["body"], "event": body["event"]});
            st.reviews.push(review.clone());
            (200, review)
        }
        ("POST", ["pulls"]) => {
            let head = body["head"].as_str().unwrap_or("");
            let label = if head.contains(':') {
                head.to_string()
            } else {
                format!("{}:{head}", repo.split('/').next().unwrap_or(""))
            };
            if st
                .pulls
                .iter()
                .any(|p| p["head"]["label"] == label.as_str())
            {
                return (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                        "message": format!("A pull request already exists for {label}.")}]}),
                );
            }
            let number = 100 + st.pulls.len() as u64;
            let pr = json!({
                "number": number,
                "html_url": format!("https://github.com/{repo}/pull/{number}"),
                "title": body["title"], "body": body["body"], "draft": body["draft"],
                "state": "open",
                "head": {"ref": head, "label": label}, "base": {"ref": body["base"]},
            });
            st.pulls.push(pr.clone());
            (201, pr)
        }
        ("POST", ["issues", n, "comments"]) => {
            st.next_comment += 1;
            let id = st.next_comment;
            let comment =
                json!({"id": id, "body": body["body"], "issue": n.parse::<u64>().unwrap_or(0)});
            st.comments.insert(id, comment.clone());
            (201, comment)
        }
        ("PATCH", ["pulls", n]) => {
            match n
                .parse()
                .ok()
                .and_then(|n: u64| st.pulls.iter_mut().find(|p| p["number"] == n))
            {
                Some(p) => {
                    if let Some(state) = body.get("state") {
                        p["state"] = state.clone();
                    }
                    (200, p.clone())
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("PATCH", ["issues", "comments", id]) => {
            match id.parse().ok().and_then(|id: u64| st.comments.get_mut(&id)) {
                Some(c) => {
                    c["body"] = body["body"].clone();
                    (200, c.clone())
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        _ => (404, json!({"message": "Not Found"})),
    }
}
