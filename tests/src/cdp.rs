//! A small Chrome DevTools Protocol driver, so that tests can load the runner's web dashboard in
//! a real headless Chromium and look at it: evaluate JavaScript, wait for a condition, take a
//! screenshot, read the errors the page logged.
//!
//! [`Browser::launch`] starts Chromium (`$WF_CHROMIUM`, else `chromium` on `PATH`) in a process
//! group of its own with a fresh profile in a temp directory and `--remote-debugging-port=0`,
//! reads the DevTools address from the profile's `DevToolsActivePort` file or the
//! `DevTools listening on ws://…` line on its stderr, and connects to it with tokio-tungstenite.
//! One background task reads that socket: it hands every response to the call waiting for its
//! `(sessionId, id)` and records the events tests ask about (exceptions, `console.error`, log
//! entries, dialogs). [`Browser::open`] creates a tab and attaches to it with a flattened
//! session; a [`Page`] talks to that session. Every wait is bounded. Dropping the [`Browser`]
//! kills its process group (never anything found by name) and reaps it.
//!
//! JavaScript dialogs (`alert`, `confirm`, `prompt`) are accepted as soon as they open, so a
//! page asking `confirm()` before an action goes on as if the user said yes; their messages are
//! kept ([`Page::dialogs`]).

use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one protocol command may take to be answered (except waits, which say).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a page may take to load in [`Page::goto`].
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// What a [`Page::wait_for`] waits beyond its page-side timeout before giving up on the answer.
const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// Lines of Chromium's stderr kept for error messages.
const STDERR_TAIL: usize = 40;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Answer = Result<Value, String>;

/// A headless Chromium the test started, and the DevTools connection to it.
pub struct Browser {
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<()>,
    process: Process,
    /// The profile directory; removed after the process is gone (fields drop in order).
    _profile: tempfile::TempDir,
}

/// One tab of a [`Browser`], attached through its own flattened session.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
}

/// The DevTools connection: the writing half of the socket, the calls waiting for an answer
/// and what the events said so far.
struct Conn {
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    next_id: AtomicU64,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Calls waiting for their answer, by `(sessionId, id)`.
    pending: HashMap<(Option<String>, u64), oneshot::Sender<Answer>>,
    /// Calls waiting for the next event of a method, by session.
    event_waiters: Vec<(String, &'static str, oneshot::Sender<Value>)>,
    /// Per session: exceptions thrown and `console.error` messages.
    console_errors: HashMap<String, Vec<String>>,
    /// Per session: log entries of level `error` (failed loads, network errors, …).
    log_errors: HashMap<String, Vec<String>>,
    /// Per session: messages of the dialogs the page opened.
    dialogs: HashMap<String, Vec<String>>,
    /// Why the connection ended, once it did.
    closed: Option<String>,
}

/// The Chromium child, leader of its own process group.
struct Process {
    child: Option<Child>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Launches headless Chromium (`$WF_CHROMIUM`, else `chromium` on `PATH`) with a fresh
    /// profile and connects to its DevTools endpoint. Fails — naming what is missing — when
    /// there is no Chromium, when it exits early, or when it prints no DevTools address within
    /// 30 s.
    pub async fn launch() -> Result<Browser, String> {
        let binary = chromium_binary()?;
        let profile = tempfile::Builder::new()
            .prefix("wf-chromium-")
            .tempdir()
            .map_err(|e| format!("cannot create a profile directory for Chromium: {e}"))?;
        let mut process = Process::spawn(&binary, profile.path())?;
        let url = process.devtools_url(profile.path()).await?;
        let (socket, _) = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| format!("connecting to Chromium's DevTools at {url} timed out"))?
        .map_err(|e| format!("cannot connect to Chromium's DevTools at {url}: {e}"))?;
        let (sink, stream) = socket.split();
        let conn = Arc::new(Conn {
            sink: tokio::sync::Mutex::new(sink),
            next_id: AtomicU64::new(1),
            state: Mutex::new(ConnState::default()),
        });
        let reader = tokio::spawn(read_socket(conn.clone(), stream));
        Ok(Browser {
            conn,
            reader,
            process,
            _profile: profile,
        })
    }

    /// Opens a new tab, attaches to it (`Target.attachToTarget` with `flatten`), enables the
    /// `Page`, `Runtime` and `Log` domains, then loads `url` and waits for its `load` event —
    /// so the page's own script runs with the error collection already on.
    pub async fn open(&self, url: &str) -> Result<Page, String> {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = str_field(&target, "targetId")?;
        let attached = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        let page = Page {
            conn: self.conn.clone(),
            session: str_field(&attached, "sessionId")?,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        page.goto(url).await?;
        Ok(page)
    }
}

impl Drop for Browser {
    /// Stops reading the socket, kills Chromium's process group (the one it was started in,
    /// by that group's id only) and reaps it.
    fn drop(&mut self) {
        self.reader.abort();
        self.process.kill();
    }
}

impl Page {
    /// Evaluates `expression` in the page (`Runtime.evaluate` with `awaitPromise` and
    /// `returnByValue`): a promise is awaited, the value comes back as JSON (`null` for
    /// `undefined`). A thrown exception or a rejected promise is an `Err` with its text.
    /// Top-level `const`/`let` declarations live on in the page's global scope, so a later
    /// call declaring the same name fails: wrap statements in a block (`{ … }`) or an arrow.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        self.eval_within(expression, COMMAND_TIMEOUT).await
    }

    /// Waits until the JavaScript expression `condition_js` is truthy in the page: a promise
    /// in the page checks it every 50 ms (an exception counts as not yet) and gives up after
    /// `timeout`. The `Err` names the condition, the timeout and the last exception, if any.
    pub async fn wait_for(&self, condition_js: &str, timeout: Duration) -> Result<(), String> {
        let ms = timeout.as_millis();
        let quoted = serde_json::to_string(condition_js).expect("a string serialises");
        let js = format!(
            r#"new Promise((resolve, reject) => {{
  const condition = () => ({condition_js}
  );
  const deadline = Date.now() + {ms};
  let timer = null;
  let last = null;
  const check = () => {{
    try {{
      if (condition()) {{ clearInterval(timer); resolve(true); return; }}
      last = null;
    }} catch (e) {{ last = String(e); }}
    if (Date.now() >= deadline) {{
      clearInterval(timer);
      reject(new Error("timed out after {ms} ms waiting for " + {quoted}
        + (last ? " (last exception: " + last + ")" : "")));
    }}
  }};
  timer = setInterval(check, 50);
  check();
}})"#
        );
        self.eval_within(&js, timeout + WAIT_MARGIN)
            .await
            .map(|_| ())
            .map_err(|e| format!("wait_for({condition_js}) within {timeout:?}: {e}"))
    }

    /// Captures the viewport as PNG (`Page.captureScreenshot`) and writes it to `path`
    /// (creating its directory).
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(str_field(&shot, "data")?)
            .map_err(|e| format!("the screenshot is not base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The exceptions the page threw (`Runtime.exceptionThrown`, unhandled rejections
    /// included) and the messages it logged with `console.error`, in order, so far.
    pub async fn console_errors(&self) -> Vec<String> {
        self.conn.recorded(&self.session, |s| &s.console_errors)
    }

    /// The browser's own log entries of level `error` for this page (`Log.entryAdded`: a
    /// resource that failed to load, a WebSocket that could not connect, …), so far.
    pub async fn log_errors(&self) -> Vec<String> {
        self.conn.recorded(&self.session, |s| &s.log_errors)
    }

    /// The messages of the dialogs (`alert`, `confirm`, `prompt`) the page opened; each was
    /// accepted when it opened.
    pub async fn dialogs(&self) -> Vec<String> {
        self.conn.recorded(&self.session, |s| &s.dialogs)
    }

    /// Loads `url` in this tab (`Page.navigate`) and waits for its `load` event. For a change
    /// of the fragment only, which fires no `load`, set `location.hash` with [`Page::eval`].
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        let loaded = self.conn.next_event(&self.session, "Page.loadEventFired");
        let nav = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            if !error.is_empty() {
                return Err(format!("loading {url} failed: {error}"));
            }
        }
        match tokio::time::timeout(LOAD_TIMEOUT, loaded).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(format!(
                "the DevTools connection ended while {url} was loading"
            )),
            Err(_) => Err(format!("{url} did not load within {LOAD_TIMEOUT:?}")),
        }
    }

    /// Sends any other DevTools command to this page's session (for example
    /// `Emulation.setDeviceMetricsOverride` to look at the page as a phone would) and returns
    /// its result.
    pub async fn command(&self, method: &str, params: Value) -> Result<Value, String> {
        self.call(method, params).await
    }

    async fn eval_within(&self, expression: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
            "userGesture": true,
        });
        let answer = self
            .conn
            .call_within(Some(&self.session), "Runtime.evaluate", params, timeout)
            .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(exception_text(details));
        }
        Ok(answer
            .get("result")
            .and_then(|r| r.get("value"))
            .cloned()
            .unwrap_or(Value::Null))
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.conn.call(Some(&self.session), method, params).await
    }
}

impl Conn {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Answer {
        self.call_within(session, method, params, COMMAND_TIMEOUT)
            .await
    }

    /// Sends one command and waits up to `timeout` for its answer.
    async fn call_within(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (session.map(str::to_string), id);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state.lock().expect("cdp state");
            if let Some(why) = &state.closed {
                return Err(format!(
                    "{method}: the DevTools connection is closed ({why})"
                ));
            }
            state.pending.insert(key.clone(), tx);
        }
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let sent = self
            .sink
            .lock()
            .await
            .send(Message::text(message.to_string()))
            .await;
        if let Err(e) = sent {
            self.state.lock().expect("cdp state").pending.remove(&key);
            return Err(format!("{method}: cannot send to DevTools: {e}"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err(format!("{method}: the DevTools connection closed")),
            Err(_) => {
                self.state.lock().expect("cdp state").pending.remove(&key);
                Err(format!("{method}: no answer within {timeout:?}"))
            }
        }
    }

    /// A receiver of the next `method` event of `session` (register before causing it).
    fn next_event(&self, session: &str, method: &'static str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        self.state
            .lock()
            .expect("cdp state")
            .event_waiters
            .push((session.to_string(), method, tx));
        rx
    }

    fn recorded(
        &self,
        session: &str,
        which: impl Fn(&ConnState) -> &HashMap<String, Vec<String>>,
    ) -> Vec<String> {
        let state = self.state.lock().expect("cdp state");
        which(&state).get(session).cloned().unwrap_or_default()
    }

    /// Hands a response to its waiter.
    fn answer(&self, message: &Value, id: u64) {
        let session = message
            .get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let answer = match message.get("error") {
            Some(e) => Err(format!(
                "DevTools error {}: {}{}",
                e.get("code").unwrap_or(&Value::Null),
                e.get("message").and_then(Value::as_str).unwrap_or("?"),
                e.get("data")
                    .and_then(Value::as_str)
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        };
        let waiter = self
            .state
            .lock()
            .expect("cdp state")
            .pending
            .remove(&(session, id));
        if let Some(tx) = waiter {
            // Why: the caller may have timed out and gone; nobody else wants this answer.
            let _ = tx.send(answer);
        }
    }

    /// Ends every wait: the connection is gone.
    fn close(&self, why: String) {
        let mut state = self.state.lock().expect("cdp state");
        state.closed = Some(why.clone());
        for (_, tx) in state.pending.drain() {
            // Why: a waiter that already gave up has nothing to be told.
            let _ = tx.send(Err(format!("the DevTools connection closed: {why}")));
        }
        state.event_waiters.clear();
    }
}

/// The background task: reads every message of the DevTools socket until it ends.
async fn read_socket(conn: Arc<Conn>, mut stream: SplitStream<Socket>) {
    let why = loop {
        let text = match stream.next().await {
            None => break "the socket ended".to_string(),
            Some(Err(e)) => break format!("reading the socket failed: {e}"),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => break format!("Chromium closed it ({frame:?})"),
            Some(Ok(_)) => continue,
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match message.get("id").and_then(Value::as_u64) {
            Some(id) => conn.answer(&message, id),
            None => on_event(&conn, &message),
        }
    };
    conn.close(why);
}

/// Records what tests ask about, wakes event waiters and accepts dialogs.
fn on_event(conn: &Arc<Conn>, message: &Value) {
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let Some(session) = message.get("sessionId").and_then(Value::as_str) else {
        return;
    };
    let mut state = conn.state.lock().expect("cdp state");
    let waiters = std::mem::take(&mut state.event_waiters);
    for (s, m, tx) in waiters {
        if s == session && m == method {
            // Why: a waiter that gave up does not need the event.
            let _ = tx.send(params.clone());
        } else {
            state.event_waiters.push((s, m, tx));
        }
    }
    let (kind, text) = match method {
        "Runtime.exceptionThrown" => (
            &mut state.console_errors,
            exception_text(&params["exceptionDetails"]),
        ),
        "Runtime.consoleAPICalled" if params["type"] == "error" => {
            (&mut state.console_errors, console_text(&params))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            let entry = &params["entry"];
            let text = entry["text"].as_str().unwrap_or("").to_string();
            let url = entry["url"].as_str().map(|u| format!(" ({u})"));
            (&mut state.log_errors, text + &url.unwrap_or_default())
        }
        "Page.javascriptDialogOpening" => {
            let text = params["message"].as_str().unwrap_or("").to_string();
            accept_dialog(conn.clone(), session.to_string());
            (&mut state.dialogs, text)
        }
        _ => return,
    };
    kind.entry(session.to_string()).or_default().push(text);
}

/// Accepts the dialog a page just opened (from a task of its own: the reader must go on
/// reading to receive the answer).
fn accept_dialog(conn: Arc<Conn>, session: String) {
    tokio::spawn(async move {
        let params = json!({"accept": true});
        if let Err(e) = conn
            .call(Some(&session), "Page.handleJavaScriptDialog", params)
            .await
        {
            let mut state = conn.state.lock().expect("cdp state");
            let errors = state.console_errors.entry(session).or_default();
            errors.push(format!("cannot accept a dialog: {e}"));
        }
    });
}

/// The text of a `Runtime.ExceptionDetails`: the exception's description (message and
/// stack), else its value, else the details' own text.
fn exception_text(details: &Value) -> String {
    let exception = &details["exception"];
    if let Some(d) = exception["description"].as_str() {
        return d.to_string();
    }
    if let Some(v) = exception.get("value").filter(|v| !v.is_null()) {
        return format!("{} {v}", details["text"].as_str().unwrap_or("Uncaught"));
    }
    details["text"]
        .as_str()
        .unwrap_or("an exception without text")
        .to_string()
}

/// The arguments of a `console.error` call, joined by spaces.
fn console_text(params: &Value) -> String {
    let args = params["args"].as_array().cloned().unwrap_or_default();
    args.iter()
        .map(|a| match (&a["value"], a["description"].as_str()) {
            (Value::String(s), _) => s.clone(),
            (Value::Null, Some(d)) => d.to_string(),
            (Value::Null, None) => a["type"].as_str().unwrap_or("?").to_string(),
            (v, _) => v.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn str_field(v: &Value, field: &str) -> Result<String, String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("DevTools answered without {field:?}: {v}"))
}

/// `$WF_CHROMIUM`, else the first `chromium` on `PATH`.
fn chromium_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("WF_CHROMIUM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "WF_CHROMIUM is {}, which is not a file",
                path.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "chromium not found on PATH: install it (apt-get install chromium) or set \
             WF_CHROMIUM to a Chromium binary"
                .to_string()
        })
}

impl Process {
    /// Starts Chromium headless in a process group of its own, profile in `profile`.
    fn spawn(binary: &Path, profile: &Path) -> Result<Process, String> {
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-breakpad",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut tail = tail.lock().expect("stderr tail");
                if tail.len() == STDERR_TAIL {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        Ok(Process {
            child: Some(child),
            stderr_tail,
        })
    }

    /// The browser's DevTools WebSocket address: from `DevToolsActivePort` in the profile
    /// (port, then path) or the `DevTools listening on ws://…` line on stderr, within
    /// [`LAUNCH_TIMEOUT`].
    async fn devtools_url(&mut self, profile: &Path) -> Result<String, String> {
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        let port_file = profile.join("DevToolsActivePort");
        loop {
            if let Some(url) = read_port_file(&port_file).or_else(|| self.url_on_stderr()) {
                return Ok(url);
            }
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "chromium exited ({status}) before it listened for DevTools:\n{}",
                    self.stderr()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromium printed no DevTools address within {LAUNCH_TIMEOUT:?} (no {} and \
                     no \"DevTools listening on\" line):\n{}",
                    port_file.display(),
                    self.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url_on_stderr(&self) -> Option<String> {
        let tail = self.stderr_tail.lock().expect("stderr tail");
        tail.iter().find_map(|l| {
            l.split_once("DevTools listening on ")
                .map(|(_, url)| url.trim().to_string())
        })
    }

    fn stderr(&self) -> String {
        self.stderr_tail.lock().expect("stderr tail").join("\n")
    }

    /// Kills the process group Chromium leads (its renderers and helpers with it) and reaps
    /// Chromium. Idempotent.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = i32::try_from(child.id()).expect("a pid fits in i32");
        #[expect(
            unsafe_code,
            reason = "kill(2) of the process group this test started; no memory is involved"
        )]
        // SAFETY: kill(2) takes plain integers; a negative pid names the group we created.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        // Why: reaping the child just killed; how it died says nothing the test needs.
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ws://127.0.0.1:<port><path>` from a complete `DevToolsActivePort` file.
fn read_port_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let port: u16 = lines.next()?.trim().parse().ok()?;
    let ws_path = lines.next()?.trim();
    ws_path
        .starts_with('/')
        .then(|| format!("ws://127.0.0.1:{port}{ws_path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `html` as a `data:` URL, every byte but letters and digits percent-encoded.
    fn data_url(html: &str) -> String {
        let mut url = String::from("data:text/html;charset=utf-8,");
        for b in html.bytes() {
            if b.is_ascii_alphanumeric() {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url
    }

    #[tokio::test]
    async fn cdp_drives_a_headless_chromium() {
        let browser = Browser::launch().await.expect("launching chromium");
        let page = browser
            .open(&data_url(
                "<!doctype html><title>t</title><p id=p>hello</p><script>\
                 setTimeout(() => { document.body.dataset.ready = 'yes'; \
                 console.error('seen', 42); }, 300);</script>",
            ))
            .await
            .expect("opening a page");
        page.wait_for(
            "document.body.dataset.ready === 'yes'",
            Duration::from_secs(10),
        )
        .await
        .expect("the attribute is set");
        let value = page
            .eval("Promise.resolve(document.getElementById('p').textContent + (1 + 2))")
            .await
            .expect("evaluating");
        assert_eq!(value, json!("hello3"));
        let thrown = page.eval("null.x").await.expect_err("a TypeError");
        assert!(thrown.contains("TypeError"), "{thrown}");
        let late = page
            .wait_for("window.never", Duration::from_millis(200))
            .await
            .expect_err("a timeout");
        assert!(
            late.contains("window.never") && late.contains("200"),
            "{late}"
        );
        assert_eq!(
            page.eval("confirm('sure?')").await.expect("confirm"),
            json!(true)
        );
        assert_eq!(page.dialogs().await, vec!["sure?".to_string()]);
        let errors = page.console_errors().await;
        assert_eq!(errors, vec!["seen 42".to_string()], "{errors:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shot.png");
        page.screenshot(&path).await.expect("screenshot");
        let png = std::fs::read(&path).expect("the screenshot file");
        assert!(png.len() > 100, "{} bytes", png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
