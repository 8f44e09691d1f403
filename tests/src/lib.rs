//! Test support: a throwaway project with the real `wf` and `wf-runner` binaries and the
//! fake agent, and helpers to drive them.
//!
//! Each [`TestEnv`] has its own temp directory: `bin/` with `wf`, `wf-runner` and
//! `fake-agent` (symlinks to the binaries cargo built), `project/.wf/config.json` whose
//! `claude` harness is the fake agent, and `work/` for what agents record. Runners are real
//! processes; waiting uses the runner's watch stream with a deadline, never a fixed sleep.

#![allow(
    clippy::disallowed_methods,
    reason = "the test harness starts the binaries under test and their helpers"
)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_core::model::Assignment;
use wf_runner::client::{Client, ConnectError};

pub mod cdp;
pub mod github;
pub mod webhook;

/// Paths of the binaries under test (from `env!("CARGO_BIN_EXE_…")`).
#[derive(Debug, Clone)]
pub struct Bins {
    /// `wf`.
    pub wf: PathBuf,
    /// `wf-runner`.
    pub runner: PathBuf,
    /// The fake agent.
    pub fake_agent: PathBuf,
}

/// A throwaway project.
pub struct TestEnv {
    tmp: tempfile::TempDir,
    /// Directory with `wf`, `wf-runner`, `fake-agent`.
    pub bin: PathBuf,
    /// The project root (agents' working directory).
    pub root: PathBuf,
    /// Scratch space for agent records.
    pub work: PathBuf,
    runners: Vec<Option<Child>>,
    runners_started: u32,
    nats: Option<(String, String)>,
    /// Extra environment per runner number (e.g. a faked clock).
    runner_env: HashMap<usize, Vec<(String, String)>>,
    runner_args: HashMap<usize, Vec<String>>,
}

/// Runs `git -C dir args…` and returns its trimmed stdout; panics with its stderr when it
/// fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Merges `extra` into `base`, object by object.
fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e.clone(),
    }
}

impl TestEnv {
    /// A project whose `claude` harness is the fake agent running `script`.
    pub fn new(bins: &Bins, script: Value, extra_config: Value) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("wf-test-")
            .tempdir()
            .expect("tempdir");
        let bin = tmp.path().join("bin");
        let root = tmp.path().join("project");
        let work = tmp.path().join("work");
        for d in [&bin, &root.join(".wf"), &work] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for (name, target) in [
            ("wf", &bins.wf),
            ("wf-runner", &bins.runner),
            ("fake-agent", &bins.fake_agent),
        ] {
            std::os::unix::fs::symlink(target, bin.join(name)).expect("symlink");
        }
        let script_path = work.join("script.json");
        std::fs::write(&script_path, script.to_string()).expect("script");
        let mut config = json!({
            "namespace": "test",
            "leaseMs": 3000,
            "killGraceMs": 500,
            "shutdownGraceMs": 2000,
            "maxConcurrent": 4,
            "harnesses": {"claude": {
                "command": bin.join("fake-agent").display().to_string(),
                "env": {"FAKE_AGENT_SCRIPT": script_path.display().to_string()}
            }}
        });
        merge(&mut config, &extra_config);
        std::fs::write(
            root.join(".wf/config.json"),
            serde_json::to_string_pretty(&config).expect("json"),
        )
        .expect("config");
        let nats = match (&config["store"]["kind"], &config["store"]["url"]) {
            (Value::String(k), Value::String(url)) if k == "nats" => Some((
                url.clone(),
                config["namespace"].as_str().unwrap_or("test").to_string(),
            )),
            _ => None,
        };
        Self {
            tmp,
            bin,
            root,
            work,
            runners: Vec::new(),
            runners_started: 0,
            nats,
            runner_env: HashMap::new(),
            runner_args: HashMap::new(),
        }
    }

    /// Makes the project a git repository on branch `main` with one commit (a README and a
    /// `.gitignore` that ignores `.wf/`), as a user's checkout would be.
    pub fn git_init(&self) {
        git(&self.root, &["init", "-q", "-b", "main"]);
        std::fs::write(self.root.join(".gitignore"), "/.wf/\n").expect("gitignore");
        std::fs::write(self.root.join("README.md"), "# project\n").expect("readme");
        git(&self.root, &["add", "-A"]);
        git(&self.root, &["commit", "-q", "-m", "initial"]);
    }

    /// [`git_init`](Self::git_init), plus a bare repository beside the project as its
    /// `origin`, with `main` pushed; returns the bare repository's path.
    pub fn git_init_with_origin(&self) -> PathBuf {
        self.git_init();
        let origin = self.dir().join("origin.git");
        let origin_s = origin.display().to_string();
        git(
            self.dir(),
            &["init", "-q", "--bare", "-b", "main", &origin_s],
        );
        git(&self.root, &["remote", "add", "origin", &origin_s]);
        git(&self.root, &["push", "-q", "origin", "main"]);
        origin
    }

    /// The temp directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A `wf` command in the project, with no `WF_*` variables inherited.
    pub fn wf_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("wf"));
        cmd.args(args).current_dir(&self.root);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WF_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// Runs `wf`.
    pub fn wf(&self, args: &[&str]) -> Output {
        self.wf_cmd(args).output().expect("running wf")
    }

    /// Runs `wf` and returns stdout whatever its exit code (for `wf doctor`, which exits 1
    /// on findings).
    pub fn wf_ok_allowing_failure(&self, args: &[&str]) -> String {
        String::from_utf8(self.wf(args).stdout).expect("utf-8 stdout")
    }

    /// Runs `wf` and returns stdout; panics with stderr when it fails.
    pub fn wf_ok(&self, args: &[&str]) -> String {
        let out = self.wf(args);
        assert!(
            out.status.success(),
            "wf {args:?} failed ({}): {}\nrunner log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.runner_log()
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `wf … --json` and parses the output.
    pub fn wf_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.wf_ok(&all)).expect("wf --json output")
    }

    /// Creates an assignment and returns its id.
    pub fn create(&self, north_star: &str) -> String {
        self.wf_ok(&["create", north_star]).trim().to_string()
    }

    /// Writes `bytes` as the stored document `id`, bypassing every check: fault injection (a
    /// corrupt document, one written by a newer wf). With the embedded store no runner may be
    /// running.
    pub fn put_raw_document(&self, id: &str, bytes: &[u8]) {
        let config = wf_core::config::load(None, &self.root).expect("config");
        runtime().block_on(async {
            let store = wf_runner::daemon::open_store(&config, Duration::from_secs(10))
                .await
                .expect("opening the store");
            store
                .put_raw(id, bytes)
                .await
                .expect("writing the raw document");
        });
    }

    /// The assignment document.
    pub fn assignment(&self, id: &str) -> Assignment {
        serde_json::from_value(self.wf_json(&["assignment", id])).expect("assignment json")
    }

    /// The file runner `n` logs to.
    pub fn log_path(&self, n: usize) -> PathBuf {
        self.tmp.path().join(format!("runner-{n}.log"))
    }

    /// Everything the runners of this test logged.
    pub fn runner_log(&self) -> String {
        (0..self.runners.len().max(1))
            .map(|n| {
                format!(
                    "--- runner {n}:\n{}",
                    std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The control socket (embedded store).
    pub fn socket(&self) -> PathBuf {
        wf_runner::paths::socket_path(&self.root.join(".wf"))
    }

    /// The project's config file (`.wf/config.json`) as JSON.
    pub fn config(&self) -> Value {
        let text = std::fs::read_to_string(self.root.join(".wf/config.json")).expect("config");
        serde_json::from_str(&text).expect("config json")
    }

    /// Merges `extra` into the project's config file (for the next runner or `wf` started).
    pub fn merge_config(&self, extra: &Value) {
        let mut config = self.config();
        merge(&mut config, extra);
        std::fs::write(self.root.join(".wf/config.json"), config.to_string()).expect("config");
    }

    /// Sets extra arguments for runner `n`, used from its next start.
    pub fn set_runner_args(&mut self, n: usize, args: &[&str]) {
        self.runner_args
            .insert(n, args.iter().map(|a| a.to_string()).collect());
    }

    /// Sets extra environment for runner `n`, used from its next start.
    pub fn set_runner_env(&mut self, n: usize, vars: &[(&str, &str)]) {
        self.runner_env.insert(
            n,
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Starts runner 0 and waits until it is ready.
    pub fn start_runner(&mut self) {
        self.start_runner_n(0);
    }

    /// Starts runner `n` and waits until it is ready. Runner 0 uses the project's state
    /// directory; others get `.wf/state-<n>`, as separate machines would have their own.
    pub fn start_runner_n(&mut self, n: usize) {
        self.start_runner_with(n, n > 0, None, true);
    }

    /// Starts runner `n` on the project's state directory and config, beside runner 0 (a second
    /// `wf-runner &`, or a rolling restart). `ready` says whether to wait for it to be ready;
    /// without, it may also exit (a refusal).
    pub fn start_runner_sharing(&mut self, n: usize, config: Option<&Path>, ready: bool) {
        self.start_runner_with(n, false, config, ready);
    }

    fn start_runner_with(
        &mut self,
        n: usize,
        own_state: bool,
        config: Option<&Path>,
        wait_ready: bool,
    ) {
        if self.runners.len() <= n {
            self.runners.resize_with(n + 1, || None);
        }
        assert!(self.runners[n].is_none(), "runner {n} is already running");
        let log_path = self.log_path(n);
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log");
        let mut cmd = Command::new(self.bin.join("wf-runner"));
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        if own_state {
            let mut config = self.config();
            config["stateDir"] = json!(format!(".wf/state-{n}"));
            let path = self.root.join(format!(".wf/runner-{n}.json"));
            std::fs::write(&path, config.to_string()).expect("runner config");
            cmd.arg("--config").arg(&path);
        }
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("WF_LOG", "debug,async_nats=info");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WF_") && k != "WF_LOG" {
                cmd.env_remove(k);
            }
        }
        if let Some(args) = self.runner_args.get(&n) {
            cmd.args(args);
        }
        if let Some(vars) = self.runner_env.get(&n) {
            cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        }
        let mut child = cmd.spawn().expect("starting wf-runner");
        self.runners_started += 1;
        if !wait_ready {
            self.runners[n] = Some(child);
            return;
        }
        self.wait_ready(n, &mut child, &log_path, offset);
        self.runners[n] = Some(child);
    }

    /// Waits until runner `n` (`child`, logging to `log_path` from `offset`) serves.
    fn wait_ready(&self, n: usize, child: &mut Child, log_path: &Path, offset: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = runtime();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "wf-runner {n} exited early ({status}):\n{}",
                    self.runner_log()
                );
            }
            let ready = if self.nats.is_some() {
                std::fs::read(log_path)
                    .map(|b| {
                        String::from_utf8_lossy(&b[offset as usize..]).contains("wf-runner ready")
                    })
                    .unwrap_or(false)
            } else {
                match rt.block_on(Client::connect(&self.socket())) {
                    Ok(_) => true,
                    Err(ConnectError::NotRunning) => false,
                    Err(ConnectError::Failed(e)) => panic!("cannot talk to wf-runner: {e}"),
                }
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wf-runner {n} not ready in 30 s:\n{}",
                self.runner_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runner 0's pid.
    pub fn runner_pid(&self) -> u32 {
        self.runner_pid_n(0)
    }

    /// Runner `n`'s pid.
    pub fn runner_pid_n(&self, n: usize) -> u32 {
        self.runners
            .get(n)
            .and_then(Option::as_ref)
            .expect("no such runner")
            .id()
    }

    /// Whether runner `n` is running.
    pub fn runner_running(&self, n: usize) -> bool {
        self.runners.get(n).is_some_and(Option::is_some)
    }

    /// Sends `signal` to runner 0 and, for KILL, reaps it.
    pub fn signal_runner(&mut self, signal: i32) {
        self.signal_runner_n(0, signal);
    }

    /// Sends `signal` to runner `n` and, for KILL, reaps it.
    pub fn signal_runner_n(&mut self, n: usize, signal: i32) {
        let pid = self.runner_pid_n(n);
        // Why: the runner is our child; signalling it is the point of the test.
        #[expect(unsafe_code, reason = "kill(2) on our own child")]
        unsafe {
            libc::kill(pid as i32, signal);
        }
        if signal == libc::SIGKILL {
            self.runners[n]
                .take()
                .expect("runner")
                .wait()
                .expect("wait");
        }
    }

    /// Waits for runner 0 to exit by itself and returns its status.
    pub fn wait_runner(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.wait_runner_n(0, timeout)
    }

    /// Waits for runner `n` to exit by itself and returns its status.
    pub fn wait_runner_n(&mut self, n: usize, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self
            .runners
            .get_mut(n)
            .and_then(Option::take)
            .expect("no runner");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                // Why: the child may have exited already; cleanup is best effort.
                let _ = child.kill();
                panic!(
                    "wf-runner did not exit in {timeout:?}:\n{}",
                    self.runner_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until assignment `id` satisfies `pred`, following the store's change feed (the
    /// runner's watch stream with the embedded store, a KV watch with NATS).
    // Long: one wait, written out for each backend's change feed.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Assignment) -> bool,
    ) -> Assignment {
        let deadline = tokio::time::Instant::now() + timeout;
        let rt = runtime();
        let found = match &self.nats {
            Some((url, ns)) => rt.block_on(async {
                let config: wf_core::config::RawConfig =
                    serde_json::from_value(json!({"store": {"kind": "nats", "url": url}}))
                        .expect("config");
                let resolved =
                    wf_core::config::resolve(config, None, Path::new("/")).expect("config");
                let wf_core::config::StoreConfig::Nats(nats) = resolved.store else {
                    unreachable!()
                };
                let ns = wf_core::ids::Namespace::new(ns).expect("namespace");
                loop {
                    let store =
                        match wf_store::nats::NatsStore::connect(&nats, &ns, "test", false).await {
                            Ok(s) => wf_store::Store::Nats(s),
                            Err(_) if tokio::time::Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                            Err(_) => return None,
                        };
                    let mut changes = store.subscribe().await;
                    if let Ok(Some(doc)) = store.get(id).await {
                        if pred(&doc) {
                            return Some(doc);
                        }
                    }
                    loop {
                        match tokio::time::timeout_at(deadline, changes.recv()).await {
                            Err(_) => return None,
                            Ok(Ok(c)) if c.doc.id == id && pred(&c.doc) => {
                                return Some(std::sync::Arc::unwrap_or_clone(c.doc))
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                            Ok(Err(_)) => return None,
                        }
                    }
                }
            }),
            None => {
                let socket = self.socket();
                rt.block_on(async {
                    loop {
                        let client = match Client::connect(&socket).await {
                            Ok(c) => c,
                            Err(_) if tokio::time::Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Err(_) => return None,
                        };
                        let Ok(mut watch) = client.watch(Some(id.to_string())).await else {
                            continue;
                        };
                        loop {
                            match tokio::time::timeout_at(deadline, watch.next()).await {
                                Err(_) => return None,
                                Ok(Some(Ok(doc))) if pred(&doc) => return Some(doc),
                                Ok(Some(Ok(_))) => {}
                                Ok(Some(Err(_)) | None) => break,
                            }
                        }
                    }
                })
            }
        };
        found.unwrap_or_else(|| {
            panic!(
                "assignment {id} did not reach the expected state in {timeout:?}; last seen:\n{}\nrunner log:\n{}",
                String::from_utf8_lossy(&self.wf(&["assignment", id]).stdout),
                self.runner_log()
            )
        })
    }

    /// Creates `n` independent assignments named `<prefix> <i>`, each started with one job of
    /// `job_type`; returns their ids in order.
    pub fn create_started(&self, prefix: &str, n: usize, job_type: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                let north_star = format!("{prefix} {i}");
                self.wf_ok(&["create", &north_star, "--independent", "--start", job_type])
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// Waits until agents have appended at least `n` lines to `work/<name>`; panics with the
    /// runner log after `timeout`.
    pub fn wait_records(&self, name: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.records(name).len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} agent runs recorded in {timeout:?}:\n{}",
                self.runner_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The JSON lines agents appended to `work/<name>`.
    pub fn records(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.work.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record line"))
            .collect()
    }

    /// A path in `work/`, as a string for scripts.
    pub fn work_path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// How many runners this test started.
    pub fn runners_started(&self) -> u32 {
        self.runners_started
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Waits (bounded) for `pid` to disappear.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Sends `signal` to `pid`, a process this test started (directly or through wf).
pub fn kill_pid(pid: u32, signal: i32) {
    #[expect(unsafe_code, reason = "kill(2) on a process of this test")]
    // Why: a process that is already gone is what the caller wants anyway.
    let _ = unsafe { libc::kill(pid as i32, signal) };
}

/// The guardian process of the runner `runner_pid` (its child started with `--wf-guard`).
pub fn guardian_pid(runner_pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat[stat.rfind(')')? + 2..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let is_guard = cmdline.split(|&b| b == 0).any(|a| a == b"--wf-guard");
        (ppid == runner_pid && is_guard).then_some(pid)
    })
}

/// The pids listed one per line in `path`.
pub fn pids_in(path: &Path) -> HashSet<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::env::var_os("WF_TEST_KEEP").is_some() {
            eprintln!("WF_TEST_KEEP: kept {}", self.tmp.path().display());
            let keep = tempfile::Builder::new()
                .prefix("wf-test-gone-")
                .tempdir()
                .expect("tempdir");
            let kept = std::mem::replace(&mut self.tmp, keep);
            // Why: keeping the directory for inspection is best effort.
            let _ = kept.keep();
        }
        for mut child in self.runners.drain(..).flatten() {
            // Why: the child may have exited already; cleanup is best effort.
            let _ = child.kill();
            let _ = child.wait();
        }
        // Grandchildren the fake agent started (and recorded) must not outlive the test.
        let marker = format!(
            "FAKE_AGENT_SCRIPT={}",
            self.work.join("script.json").display()
        );
        for pid in pids_in(&self.work.join("grandchildren")) {
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false);
            if ours && alive(pid) {
                #[expect(unsafe_code, reason = "kill(2) on a process this test's agent started")]
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// The `nats-server` binaries to test against: `$WF_NATS_SERVERS` (paths separated by `:`), or
/// `nats-server` on `PATH`. Panics — the NATS tests must fail, not skip — when there is none.
pub fn nats_servers() -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = match std::env::var_os("WF_NATS_SERVERS") {
        Some(v) => std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        None => std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nats-server"))
                    .filter(|p| p.is_file())
                    .take(1)
                    .collect()
            })
            .unwrap_or_default(),
    };
    assert!(
        !listed.is_empty() && listed.iter().all(|p| p.is_file()),
        "nats-server not found ({listed:?}): run the suite with ./test, which installs the pinned \
         servers, or list binaries in WF_NATS_SERVERS; the NATS tests do not skip"
    );
    listed
}

/// The version a `nats-server` binary reports (`nats-server: v2.9.10` → `2.9.10`).
pub fn nats_server_version(bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .expect("nats-server --version");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or("?")
        .to_string()
}

/// [`nats_server_version`] as numbers, for comparisons.
pub fn nats_server_version_parts(bin: &Path) -> (u32, u32, u32) {
    let version = nats_server_version(bin);
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    });
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// The newest of [`nats_servers`].
pub fn newest_nats_server() -> PathBuf {
    nats_servers()
        .into_iter()
        .max_by_key(|b| nats_server_version_parts(b))
        .expect("nats_servers is never empty")
}

/// Two documents no wf of this version can read — one corrupt, one from a newer wf — are
/// skipped: every other assignment of the namespace runs to completion, `wf assignments` lists
/// the readable ones, `wf doctor` names both, the runner logs them, and reading the newer one
/// says to upgrade. Shared by the sled and NATS tests.
pub fn unreadable_documents_are_skipped(env: &mut TestEnv) {
    let corrupt = "zzzzzzzzzzzz";
    let garbage = b"{\"id\": \"zzzzzzzzzzzz\", oops";
    env.put_raw_document(corrupt, garbage);
    let newer_id = "yyyyyyyyyyyy";
    let newer = serde_json::json!({"schemaVersion": 99, "id": newer_id, "futureField": true});
    env.put_raw_document(newer_id, newer.to_string().as_bytes());
    std::fs::write(
        env.work.join("script.json"),
        serde_json::json!({
            "plan": [{"init": true}, {"result": "planned"}],
            "pm": [{"init": true}, {"wf": ["update-assignment", "--status", "complete"]},
                   {"result": "done"}]
        })
        .to_string(),
    )
    .expect("script");
    env.start_runner();
    let ids = env.create_started("Works beside unreadable documents", 3, "plan");
    for id in &ids {
        env.wait_for(id, Duration::from_secs(120), |d| {
            d.status == wf_core::model::AssignmentStatus::Complete && d.lease.is_none()
        });
    }
    let listed = env.wf_json(&["assignments"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    let out = env.wf(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    assert_eq!(report["ok"], false, "{report}");
    let unreadable = report["store"]["unreadable"]
        .as_array()
        .expect("unreadable");
    assert_eq!(unreadable.len(), 2, "{report}");
    let newer_entry = unreadable
        .iter()
        .find(|u| u["newerSchema"] == 99)
        .expect("the newer document is named");
    assert!(
        newer_entry["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "schema version 99, newer than this wf reads ({})",
                wf_core::model::SCHEMA_VERSION
            )),
        "{newer_entry}"
    );
    let table = env.wf_ok_allowing_failure(&["doctor"]);
    assert!(table.contains("2 UNREADABLE"), "{table}");

    let refused = env.wf(&["assignment", newer_id]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("upgrade this wf"), "{stderr}");
    assert!(
        env.runner_log().contains("skipped an unreadable document"),
        "{}",
        env.runner_log()
    );
}

/// Debian's `libfaketime.so.1` (`$WF_LIBFAKETIME`, as `./test` sets it). Panics — the skew
/// test must fail, not skip — when it is missing.
pub fn libfaketime() -> PathBuf {
    let path = std::env::var_os("WF_LIBFAKETIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join(".cache/faketime/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
        });
    assert!(
        path.is_file(),
        "libfaketime not found at {}: run the suite with ./test, which fetches it, or set \
         WF_LIBFAKETIME",
        path.display()
    );
    path
}

/// A TCP proxy on 127.0.0.1 the test owns, in front of one server. It forwards both ways; after
/// [`Proxy::black_hole`] it keeps every connection open but passes nothing (a partition: no
/// reset, no answer); after [`Proxy::withhold_answers_after`] it holds the server's bytes back
/// for a while once the client has sent a pattern (a lost acknowledgement). Its threads end
/// with the test process.
pub struct Proxy {
    port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    black_hole: std::sync::atomic::AtomicBool,
    /// A pattern the client may send, and how long to hold the server's bytes back after it.
    trigger: std::sync::Mutex<Option<(Vec<u8>, Duration)>>,
    /// Until when the server's bytes are held back.
    held_until: std::sync::Mutex<Option<Instant>>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let up = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                for (to_server, (from, to)) in [(true, up), (false, (server, client))] {
                    let state = shared.clone();
                    std::thread::spawn(move || state.pump(from, to, to_server));
                }
            }
        });
        Self { port, state }
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on nothing passes, in either direction.
    pub fn black_hole(&self) {
        self.state
            .black_hole
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next time the client sends `pattern`, the server's answers are held back for `hold`
    /// (then delivered): the client's request times out although the server did the work.
    pub fn withhold_answers_after(&self, pattern: &[u8], hold: Duration) {
        *self.state.trigger.lock().expect("lock") = Some((pattern.to_vec(), hold));
    }
}

impl ProxyState {
    fn pump(&self, mut from: std::net::TcpStream, mut to: std::net::TcpStream, to_server: bool) {
        use std::io::{Read, Write};
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if self.black_hole.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            if !to_server {
                let until = *self.held_until.lock().expect("lock");
                if let Some(wait) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
                    std::thread::sleep(wait);
                }
            }
            if to_server {
                // Before the bytes go on, so that the answer cannot slip through first.
                let mut trigger = self.trigger.lock().expect("lock");
                let hit = trigger.as_ref().is_some_and(|(pattern, _)| {
                    buf[..n]
                        .windows(pattern.len())
                        .any(|w| w == pattern.as_slice())
                });
                if hit {
                    let (_, hold) = trigger.take().expect("checked");
                    *self.held_until.lock().expect("lock") = Some(Instant::now() + hold);
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }
}

/// The server most NATS tests run against: the first of [`nats_servers`].
pub fn nats_server() -> PathBuf {
    nats_servers().remove(0)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `nats-server` with JetStream, on loopback, started and stopped by a test.
pub struct NatsServer {
    bin: PathBuf,
    config: PathBuf,
    /// Client port.
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl NatsServer {
    /// A single server with its own store directory.
    pub fn start(bin: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wf-nats-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let config = dir.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: wf-test-{port}\njetstream {{ store_dir: \"{}\" }}\n",
                dir.path().join("js").display()
            ),
        )
        .expect("server config");
        let log = dir.path().join("server.log");
        let mut server = Self {
            bin: bin.to_path_buf(),
            config,
            port,
            child: None,
            _dir: Some(dir),
            log,
        };
        server.boot();
        server
    }

    /// A three-node JetStream cluster on loopback; `dir` holds their stores.
    pub fn cluster(bin: &Path, dir: &Path) -> Vec<Self> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes: Vec<Self> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let config = dir.join(format!("n{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "listen: 127.0.0.1:{port}\nserver_name: n{i}\n\
                         jetstream {{ store_dir: \"{}\" }}\n\
                         cluster {{ name: wf-test\n listen: 127.0.0.1:{route}\n routes: [{}] }}\n",
                        dir.join(format!("js{i}")).display(),
                        routes.join(", ")
                    ),
                )
                .expect("node config");
                Self {
                    bin: bin.to_path_buf(),
                    config,
                    port: *port,
                    child: None,
                    _dir: None,
                    log: dir.join(format!("n{i}.log")),
                }
            })
            .collect();
        for n in &mut nodes {
            n.spawn();
        }
        for n in &mut nodes {
            n.wait_ready();
        }
        nodes
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "nats-server exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn boot(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Stops the server (SIGKILL when `hard`, else SIGTERM and wait).
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            #[expect(unsafe_code, reason = "kill(2) on our own child")]
            unsafe {
                libc::kill(
                    child.id() as i32,
                    if hard { libc::SIGKILL } else { libc::SIGTERM },
                );
            }
            // Why: reaping a child that was killed; its status is not needed.
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop(false);
        self.boot();
    }

    /// Starts a stopped server again.
    pub fn start_again(&mut self) {
        self.boot();
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The directory holding the real `claude`, `codex` and `gemini` (pinned in
/// `tests/agent-clis/package.json`): `$WF_AGENT_CLIS`, else `.cache/agent-clis/node_modules/.bin`.
/// Panics — these tests must fail, not skip — when they are not installed.
pub fn agent_clis() -> PathBuf {
    let dir = std::env::var_os("WF_AGENT_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/agent-clis/node_modules/.bin"));
    for cli in ["claude", "codex", "gemini"] {
        assert!(
            dir.join(cli).exists(),
            "{} not found in {}: run the suite with ./test, which installs the pinned agent CLIs \
             into .cache/agent-clis, or set WF_AGENT_CLIS",
            cli,
            dir.display()
        );
    }
    dir
}

/// The scripted model endpoint (`tests/model_server/model_server.py`), on loopback.
pub struct ModelServer {
    child: Child,
    /// Its port.
    pub port: u16,
    log: PathBuf,
}

impl ModelServer {
    /// Starts it with `scenario`, keeping its files in `dir`.
    pub fn start(scenario: &Value, dir: &Path) -> Self {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).expect("model server dir");
        let scenario_path = dir.join("scenario.json");
        std::fs::write(&scenario_path, scenario.to_string()).expect("scenario");
        let log = dir.join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/model_server/model_server.py"))
            .arg("--scenario")
            .arg(&scenario_path)
            .arg("--log")
            .arg(&log)
            .arg("--port")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the scripted model endpoint");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("model server output");
        let port = first
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("model server did not start: {first:?}"));
        Self { child, port, log }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests it answered.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        // Why: the child may have exited already; cleanup is best effort.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
