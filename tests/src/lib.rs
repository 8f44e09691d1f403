//! Test support: a throwaway project with the real `wf` and `wf-runner` binaries and the
//! fake agent, and helpers to drive them.
//!
//! Each [`TestEnv`] has its own temp directory: `bin/` with `wf`, `wf-runner` and
//! `fake-agent` (symlinks to the binaries cargo built), `project/.wf/config.json` whose
//! `claude` harness is the fake agent, and `work/` for what agents record. Runners are real
//! processes; waiting uses the runner's watch stream with a deadline, never a fixed sleep.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wf_runner::client::{Client, ConnectError};
use wf_runner::model::Assignment;

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
    runner: Option<Child>,
    runners_started: u32,
}

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
        Self {
            tmp,
            bin,
            root,
            work,
            runner: None,
            runners_started: 0,
        }
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

    /// The assignment document.
    pub fn assignment(&self, id: &str) -> Assignment {
        serde_json::from_value(self.wf_json(&["assignment", id])).expect("assignment json")
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("runner.log")
    }

    /// Everything the runners of this test logged.
    pub fn runner_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        wf_runner::paths::socket_path(&self.root.join(".wf"))
    }

    /// Starts `wf-runner` and waits until it serves its socket.
    pub fn start_runner(&mut self) {
        assert!(self.runner.is_none(), "a runner is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let mut cmd = Command::new(self.bin.join("wf-runner"));
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env("WF_LOG", "debug");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WF_") && k != "WF_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("starting wf-runner");
        self.runners_started += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = runtime();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("wf-runner exited early ({status}):\n{}", self.runner_log());
            }
            match rt.block_on(Client::connect(&self.socket())) {
                Ok(_) => break,
                Err(ConnectError::NotRunning) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(ConnectError::NotRunning) => {
                    panic!("wf-runner not ready in 30 s:\n{}", self.runner_log())
                }
                Err(ConnectError::Failed(e)) => panic!("cannot talk to wf-runner: {e}"),
            }
        }
        self.runner = Some(child);
    }

    /// The running runner's pid.
    pub fn runner_pid(&self) -> u32 {
        self.runner.as_ref().expect("no runner").id()
    }

    /// Sends `signal` to the runner and, for KILL, reaps it.
    pub fn signal_runner(&mut self, signal: i32) {
        let pid = self.runner_pid();
        // Why: the runner is our child; signalling it is the point of the test.
        #[expect(unsafe_code, reason = "kill(2) on our own child")]
        unsafe {
            libc::kill(pid as i32, signal);
        }
        if signal == libc::SIGKILL {
            self.runner.take().expect("runner").wait().expect("wait");
        }
    }

    /// Waits for the runner to exit by itself and returns its status.
    pub fn wait_runner(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.runner.take().expect("no runner");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "wf-runner did not exit in {timeout:?}:\n{}",
                    self.runner_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until assignment `id` satisfies `pred`, following the runner's watch stream.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Assignment) -> bool,
    ) -> Assignment {
        let deadline = tokio::time::Instant::now() + timeout;
        let rt = runtime();
        let socket = self.socket();
        let found = rt.block_on(async {
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
        });
        found.unwrap_or_else(|| {
            panic!(
                "assignment {id} did not reach the expected state in {timeout:?}; last seen:\n{}\nrunner log:\n{}",
                String::from_utf8_lossy(&self.wf(&["assignment", id]).stdout),
                self.runner_log()
            )
        })
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
        if let Some(mut child) = self.runner.take() {
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
