//! The process layer: the only place in wf that starts processes: agents, and the git commands,
//! verification steps and setup commands the runner runs around them.
//!
//! Every agent runs as the leader of its own process group, with its prompt on stdin (then
//! closed), stdout read line by line with a length cap, and the tail of stderr kept for error
//! messages. It dies with the runner (`PR_SET_PDEATHSIG`), and when it has to be stopped the
//! whole group gets TERM, then after a grace period KILL, so grandchildren that ignore TERM or
//! linger after their parent are gone too. When the leader exits by itself, whatever is left
//! of its group is killed as well.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use wf_core::harness::{CommandSpec, Ended};

/// Limits applied to one agent process.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest run.
    pub timeout: Duration,
    /// Longest silence (stdout or stderr).
    pub idle_timeout: Duration,
    /// TERM → KILL grace.
    pub kill_grace: Duration,
    /// How long an agent may linger after its terminal event before it is stopped.
    pub settle: Duration,
    /// Longest stdout line kept, in bytes; longer lines are reported, not stored.
    pub max_line: usize,
    /// How much of the end of stderr is kept, in bytes.
    pub stderr_tail: usize,
    /// `NAME=value` pairs in the environment of every process of this attempt (the runner's
    /// `WF_RUNNER_ID`, `WF_JOB_ID`, `WF_ATTEMPT`; children inherit them). When the attempt
    /// ends, every process that carries all of them is stopped with the agent's group, in
    /// whatever session or group it moved to. Empty: the group only.
    pub marker: Vec<(String, String)>,
}

impl Limits {
    /// Limits with the given timeouts and the usual caps.
    pub fn new(timeout: Duration, idle_timeout: Duration, kill_grace: Duration) -> Self {
        Self {
            timeout,
            idle_timeout,
            kill_grace,
            settle: Duration::from_secs(30),
            max_line: 8 * 1024 * 1024,
            stderr_tail: 16 * 1024,
            marker: Vec::new(),
        }
    }

    /// These limits, stopping also every process that carries `marker` in its environment.
    pub fn with_marker(mut self, marker: Vec<(String, String)>) -> Self {
        self.marker = marker;
        self
    }
}

/// Sends `signal` to every process (other than this one) whose environment carries all of
/// `marker`, until none is left or `passes` scans have been made; returns how many were
/// signalled. A process forking while it is killed leaves children that the next pass finds.
pub fn signal_marked(marker: &[(String, String)], signal: i32, passes: usize) -> usize {
    let mut signalled = 0;
    for _ in 0..passes {
        let found = crate::reaper::find_marked(marker);
        if found.is_empty() {
            break;
        }
        for p in &found {
            signal_pid(p.pid, signal);
        }
        signalled += found.len();
        if signal != libc::SIGKILL {
            break;
        }
    }
    signalled
}

/// One line of stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete UTF-8 line, without its newline.
    Text(&'a str),
    /// A line that could not be kept: over the length cap, or not UTF-8.
    Invalid(String),
}

/// What the line callback tells the process layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// That was the terminal event: the agent should exit soon.
    Terminal,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Why it ended.
    pub ended: Ended,
    /// The end of stderr.
    pub stderr_tail: String,
    /// The process (and group) id it had.
    pub pid: u32,
}

/// The agent could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {program:?}: {source}{hint}")]
pub struct SpawnError {
    /// The program.
    pub program: String,
    /// The cause.
    pub source: io::Error,
    hint: &'static str,
}

/// Sends `signal` to every process in group `pgid`. Errors (no such group) are ignored.
pub fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // Why: the group belongs to an agent this runner started (or a dead runner of ours
    // started, as checked by the caller); a vanished group is not an error.
    #[expect(unsafe_code, reason = "kill(2) on a process group has no safe std API")]
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Sends `signal` to one process. Errors (no such process) are ignored.
pub fn signal_pid(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    #[expect(
        unsafe_code,
        reason = "kill(2) has no safe std API for arbitrary signals"
    )]
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Runs one agent to its end. `on_start` gets the pid (= process group id) right after the
/// spawn; `on_line` gets every stdout line. `cancel` stops the run (TERM → grace → KILL).
pub async fn run(
    spec: &CommandSpec,
    extra_env: &BTreeMap<String, String>,
    limits: &Limits,
    cancel: &CancellationToken,
    on_start: impl FnOnce(u32),
    mut on_line: impl FnMut(Line<'_>) -> Flow,
) -> Result<Exit, SpawnError> {
    let mut child = spawn(spec, extra_env)?;
    let pid = child.id().expect("a just-spawned child has a pid");
    // If this future is dropped before the end (a panic above it, an abort), nothing of the
    // attempt may live on unsupervised.
    let mut guard = KillOnDrop {
        pid,
        marker: &limits.marker,
        armed: true,
    };
    on_start(pid);

    let stdin_task = match (child.stdin.take(), spec.stdin.clone()) {
        (Some(mut stdin), Some(bytes)) => Some(tokio::spawn(async move {
            // Why: an agent may exit without reading its prompt; the write then fails with a
            // broken pipe and the exit status tells the story.
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        })),
        _ => None,
    };
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(tail_stderr(
        stderr,
        limits.stderr_tail,
        activity.clone(),
        started,
    ));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = Stdout {
        reader: LineReader::new(stdout, limits.max_line),
        open: true,
        activity,
        started,
        max_line: limits.max_line,
    };
    let stop = watch(&mut child, &mut out, limits, cancel, &mut on_line).await;
    let ended = stop_all(&mut child, pid, stop, limits).await;
    // Read what the agent wrote before it died. Every writer in the group is dead, so EOF comes
    // at once unless a process escaped the group; do not wait long for that one.
    if out.open {
        let drain = async {
            while let Ok(Some(raw)) = out.reader.next().await {
                out.deliver(raw, &mut on_line);
            }
        };
        // Why: a timeout here only means an escaped process holds the pipe open.
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    let stderr_tail = match tokio::time::timeout(Duration::from_secs(2), stderr_task).await {
        Ok(Ok(tail)) => tail,
        _ => String::new(),
    };
    guard.armed = false;
    Ok(Exit {
        ended,
        stderr_tail,
        pid,
    })
}

/// Runs `sh -c COMMAND` in `dir` to its end (at most `timeout`) and returns its exit code and
/// its stdout (the first 16 MiB). For short helper commands (a tracker's CLI), through the one
/// spawn site, with the agents' process-group and timeout rules.
pub async fn output(
    command: &str,
    dir: &std::path::Path,
    timeout: Duration,
) -> Result<(Option<i32>, String), SpawnError> {
    let spec = CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), command.to_string()],
        env: BTreeMap::new(),
        cwd: dir.to_path_buf(),
        stdin: None,
    };
    let limits = Limits::new(timeout, timeout, Duration::from_secs(2));
    let mut out = String::new();
    let exit = run(
        &spec,
        &BTreeMap::new(),
        &limits,
        &CancellationToken::new(),
        |_| {},
        |line| {
            if let Line::Text(t) = line {
                if out.len() < 16 * 1024 * 1024 {
                    out.push_str(t);
                    out.push('\n');
                }
            }
            Flow::Continue
        },
    )
    .await?;
    let code = match exit.ended {
        Ended::Exited { code, .. } => code,
        _ => None,
    };
    if code != Some(0) && out.trim().is_empty() {
        out = exit.stderr_tail;
    }
    Ok((code, out))
}

/// Kills an attempt's group and marked processes when dropped armed.
struct KillOnDrop<'a> {
    pid: u32,
    marker: &'a [(String, String)],
    armed: bool,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pid, libc::SIGKILL);
            signal_marked(self.marker, libc::SIGKILL, KILL_PASSES);
        }
    }
}

/// Ends the attempt: whatever the leader left behind (or, when it was stopped, the leader
/// and everything else: TERM, grace, KILL), in its group or not.
async fn stop_all(child: &mut Child, pid: u32, stop: Stop, limits: &Limits) -> Ended {
    match stop {
        Stop::Exited(status) => {
            // The leader is gone; so must be whatever it left behind, in its group or not.
            signal_group(pid, libc::SIGKILL);
            signal_marked(&limits.marker, libc::SIGKILL, KILL_PASSES);
            exit_of(status)
        }
        other => {
            terminate(child, pid, limits).await;
            match other {
                Stop::Timeout => Ended::TimedOut,
                Stop::Idle => Ended::IdleTimedOut,
                Stop::Cancelled => Ended::Cancelled,
                Stop::Lingered => Ended::Lingered,
                Stop::Exited(_) => unreachable!("handled above"),
            }
        }
    }
}

/// Starts the agent in a process group of its own, with PDEATHSIG, its stdio piped.
fn spawn(spec: &CommandSpec, extra_env: &BTreeMap<String, String>) -> Result<Child, SpawnError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .envs(extra_env)
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id() as i32;
    // Why: the agent must not outlive a runner killed with SIGKILL. PDEATHSIG fires when the
    // spawning thread exits; tokio's worker threads live as long as the runtime.
    #[expect(
        unsafe_code,
        reason = "pre_exec runs between fork and exec; only prctl/getppid"
    )]
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("the runner died while starting the agent"));
            }
            Ok(())
        });
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "this is the one spawn site of agents"
    )]
    let spawned = cmd.spawn();
    spawned.map_err(|source| SpawnError {
        program: spec.program.clone(),
        hint: if source.kind() == io::ErrorKind::NotFound {
            " (is it installed and on PATH?)"
        } else {
            ""
        },
        source,
    })
}

/// Starts the runner's guardian (see [`crate::guard`]): this executable with
/// [`crate::guard::GUARD_ARG`], in a process group of its own, its stdin a pipe the runner
/// holds.
pub(crate) fn spawn_guardian(runner_id: &str) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    // `/proc/self/exe`, not the path: it is the running binary even when an upgrade replaced
    // (unlinked) the file since this runner started.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("wf-runner-guardian");
    cmd.arg(crate::guard::GUARD_ARG)
        .arg(runner_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0);
    // Not an agent: it carries no WF_RUNNER_ID, so that it is never among what it kills.
    cmd.env_remove("WF_RUNNER_ID");
    #[expect(
        clippy::disallowed_methods,
        reason = "the guardian is the runner's own helper, not an agent"
    )]
    let child = cmd.spawn()?;
    Ok(child)
}

/// Why the watch of a running agent ended.
enum Stop {
    Exited(std::process::ExitStatus),
    Timeout,
    Idle,
    Cancelled,
    Lingered,
}

/// The agent's stdout: lines to deliver, and the time of the last activity.
struct Stdout {
    reader: LineReader<ChildStdout>,
    open: bool,
    /// Milliseconds after `started` of the last output on stdout or stderr.
    activity: Arc<AtomicU64>,
    started: Instant,
    max_line: usize,
}

impl Stdout {
    fn deliver(&self, raw: RawLine, on_line: &mut impl FnMut(Line<'_>) -> Flow) -> Flow {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match raw {
            RawLine::Line(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => on_line(Line::Text(text.strip_suffix('\r').unwrap_or(text))),
                Err(e) => on_line(Line::Invalid(format!(
                    "line of {} bytes is not UTF-8 ({e})",
                    bytes.len()
                ))),
            },
            RawLine::TooLong(n) => on_line(Line::Invalid(format!(
                "line of {n} bytes exceeds the {} byte limit and was dropped",
                self.max_line
            ))),
        }
    }

    /// How long since the last output.
    fn last_activity(&self) -> Duration {
        Duration::from_millis(self.activity.load(Ordering::Relaxed))
    }
}

/// Delivers the agent's lines until it exits, runs out of time, stays silent too long, lingers
/// after its terminal event, or is cancelled.
async fn watch(
    child: &mut Child,
    out: &mut Stdout,
    limits: &Limits,
    cancel: &CancellationToken,
    on_line: &mut impl FnMut(Line<'_>) -> Flow,
) -> Stop {
    let started = out.started;
    let deadline = tokio::time::Instant::from_std(started + limits.timeout);
    let mut terminal_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_at =
            tokio::time::Instant::from_std(started + out.last_activity() + limits.idle_timeout);
        let settle_at = terminal_at.map(|t| t + limits.settle);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Stop::Cancelled,
            status = child.wait() => return match status {
                Ok(status) => Stop::Exited(status),
                Err(_) => Stop::Cancelled,
            },
            line = out.reader.next(), if out.open => match line {
                Ok(Some(raw)) => {
                    if out.deliver(raw, on_line) == Flow::Terminal && terminal_at.is_none() {
                        terminal_at = Some(tokio::time::Instant::now());
                    }
                }
                Ok(None) | Err(_) => out.open = false,
            },
            _ = tokio::time::sleep_until(deadline) => return Stop::Timeout,
            _ = tokio::time::sleep_until(idle_at) => {
                if started.elapsed() >= out.last_activity() + limits.idle_timeout {
                    return Stop::Idle;
                }
            }
            _ = async { tokio::time::sleep_until(settle_at.expect("guarded")).await },
                if settle_at.is_some() => return Stop::Lingered,
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    Ended::Exited {
        code: status.code(),
        signal: status.signal(),
    }
}

/// TERM to the group, wait up to `grace` for the leader, then KILL the group.
/// Scans for marked processes after a kill, at most this many times.
const KILL_PASSES: usize = 5;

async fn terminate(
    child: &mut tokio::process::Child,
    pgid: u32,
    limits: &Limits,
) -> Option<std::process::ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    signal_marked(&limits.marker, libc::SIGTERM, 1);
    let status = match tokio::time::timeout(limits.kill_grace, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => None,
    };
    signal_group(pgid, libc::SIGKILL);
    signal_marked(&limits.marker, libc::SIGKILL, KILL_PASSES);
    match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    }
}

async fn tail_stderr(
    mut stderr: impl AsyncRead + Unpin,
    cap: usize,
    activity: Arc<AtomicU64>,
    started: Instant,
) -> String {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(cap.min(64 * 1024));
    let mut buf = vec![0u8; 8192];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                tail.extend(&buf[..n]);
                while tail.len() > cap {
                    tail.pop_front();
                }
            }
        }
    }
    let bytes: Vec<u8> = tail.into();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A raw stdout line.
#[derive(Debug, PartialEq, Eq)]
enum RawLine {
    Line(Vec<u8>),
    TooLong(usize),
}

/// Splits a byte stream into lines without ever holding more than `max` bytes of one line.
struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where the next line starts in `buf` (lines before it were delivered; the space is
    /// reclaimed when it is half the buffer, so each byte is moved at most once more).
    start: usize,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    /// Length of an over-long line being skipped, if any.
    skipping: Option<usize>,
    max: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            skipping: None,
            max,
            eof: false,
        }
    }

    /// The next line; `None` at end of stream. Cancel-safe: state lives in `self`.
    async fn next(&mut self) -> io::Result<Option<RawLine>> {
        loop {
            let from = self.scanned.max(self.start);
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[from..]) {
                let end = from + pos;
                let line = self.buf[self.start..end].to_vec();
                self.start = end + 1;
                self.scanned = self.start;
                if self.start * 2 >= self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    self.scanned = 0;
                }
                return Ok(Some(match self.skipping.take() {
                    Some(skipped) => RawLine::TooLong(skipped + line.len()),
                    None => RawLine::Line(line),
                }));
            }
            self.scanned = self.buf.len();
            if self.buf.len() - self.start > self.max {
                *self.skipping.get_or_insert(0) += self.buf.len() - self.start;
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
            }
            if self.eof {
                let rest = self.buf.len() - self.start;
                if let Some(skipped) = self.skipping.take() {
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                    return Ok(Some(RawLine::TooLong(skipped + rest)));
                }
                if rest == 0 {
                    return Ok(None);
                }
                let line = self.buf[self.start..].to_vec();
                self.buf.clear();
                self.start = 0;
                self.scanned = 0;
                return Ok(Some(RawLine::Line(line)));
            }
            // Read straight into the buffer: no zeroed chunk, no second copy.
            self.buf.reserve(64 * 1024);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<RawLine> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_last_partial_one() {
        let got = lines(b"a\nbb\n\nccc", 100).await;
        assert_eq!(
            got,
            [
                RawLine::Line(b"a".to_vec()),
                RawLine::Line(b"bb".to_vec()),
                RawLine::Line(Vec::new()),
                RawLine::Line(b"ccc".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn over_long_lines_are_dropped_with_their_length() {
        let mut input = vec![b'x'; 200_000];
        input.extend_from_slice(b"\nok\n");
        input.extend(vec![b'y'; 150_000]);
        let got = lines(&input, 1000).await;
        assert_eq!(
            got,
            [
                RawLine::TooLong(200_000),
                RawLine::Line(b"ok".to_vec()),
                RawLine::TooLong(150_000)
            ]
        );
    }
}
