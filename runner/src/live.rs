//! Live events of attempts: the runner numbers each attempt's events, writes them next to its
//! transcript, hands them to the readers following it (the control socket's `events` request),
//! and on NATS publishes them to JetStream so that any machine can read them.
//!
//! A reader first replays what is written, then follows: [`Hub::subscribe`] takes the number
//! of the next event and a broadcast receiver under the same lock the publisher holds while
//! it writes and sends, so nothing falls between the replay and the live part. A reader that
//! falls behind the broadcast is told how many events it missed.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ops::OpError;
use tokio::sync::{broadcast, mpsc, watch};
use wf_core::clock::now_ms;
use wf_core::live::{apply_progress, EventFrame, LiveEvent, LiveKind, Redactor};
use wf_core::model::{Assignment, Job, JobProgress, JobStatus};
use wf_store::nats::NatsStore;

/// Events a follower may fall behind by before it is told it missed some.
const FOLLOW_CAPACITY: usize = 4096;
/// Live messages waiting for NATS before new ones are dropped (readers see the gap).
const NATS_QUEUE: usize = 8192;
/// Largest batch of transcript lines in one NATS message.
const RAW_BATCH: usize = 64 * 1024;
/// How long the end of an attempt waits for NATS to store its last events.
const NATS_DRAIN: Duration = Duration::from_secs(5);

/// Where an attempt's events are written, next to its transcript.
pub fn events_path(transcript: &Path) -> PathBuf {
    transcript.with_extension("events.jsonl")
}

/// The attempts of this runner that are running now, by job id and attempt.
pub struct Hub {
    channels: Mutex<HashMap<(String, u32), Arc<Channel>>>,
    /// Bumped whenever an attempt opens (a follower waiting for one wakes on it).
    opened: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            channels: Mutex::default(),
            opened: watch::Sender::new(0),
        }
    }
}

struct Channel {
    state: Mutex<ChannelState>,
    events: broadcast::Sender<Arc<LiveEvent>>,
    /// Transcript lines written so far (raw followers wake on it).
    lines: watch::Sender<u64>,
}

struct ChannelState {
    next_seq: u64,
    file: Option<std::fs::File>,
}

/// A follower's start: every event before `next_seq` is in the file, every later one comes
/// through `events`.
pub struct Subscription {
    /// The number of the first event that comes live.
    pub next_seq: u64,
    /// The live events.
    pub events: broadcast::Receiver<Arc<LiveEvent>>,
    /// Transcript lines written so far, changing as lines come.
    pub lines: watch::Receiver<u64>,
}

impl Hub {
    /// Follows a running attempt of this runner; `None` when it is not running here.
    pub fn subscribe(&self, job: &str, attempt: u32) -> Option<Subscription> {
        let channels = self.channels.lock().expect("hub lock");
        let channel = channels.get(&(job.to_string(), attempt))?;
        let state = channel.state.lock().expect("channel lock");
        Some(Subscription {
            next_seq: state.next_seq,
            events: channel.events.subscribe(),
            lines: channel.lines.subscribe(),
        })
    }

    /// How many attempts run here now.
    pub fn running(&self) -> usize {
        self.channels.lock().expect("hub lock").len()
    }

    /// Changes whenever an attempt opens.
    pub fn opened(&self) -> watch::Receiver<u64> {
        self.opened.subscribe()
    }

    /// Registers an attempt before its agent starts, so that a reader never finds a running
    /// attempt without its channel.
    pub fn open(
        self: &Arc<Self>,
        key: AttemptKey,
        transcript: &Path,
        redactor: Arc<Redactor>,
        nats: Option<&NatsStore>,
    ) -> Publisher {
        let file = match std::fs::File::create(events_path(transcript)) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(%e, path = %transcript.display(), "cannot create the events file");
                None
            }
        };
        let (events, _) = broadcast::channel(FOLLOW_CAPACITY);
        let channel = Arc::new(Channel {
            state: Mutex::new(ChannelState { next_seq: 0, file }),
            events,
            lines: watch::Sender::new(0),
        });
        self.channels
            .lock()
            .expect("hub lock")
            .insert((key.job.clone(), key.attempt), channel.clone());
        self.opened.send_modify(|n| *n += 1);
        let nats = nats.map(|store| {
            let (tx, rx) = mpsc::channel(NATS_QUEUE);
            let subjects = (
                store.live_subject(&key.assignment, &key.job, key.attempt, false),
                store.live_subject(&key.assignment, &key.job, key.attempt, true),
            );
            (tx, tokio::spawn(forward(store.clone(), subjects, rx)))
        });
        let progress = JobProgress {
            attempt: key.attempt,
            ..Default::default()
        };
        Publisher {
            hub: self.clone(),
            key,
            channel,
            nats,
            dropped: 0,
            redactor,
            progress: watch::Sender::new(progress),
        }
    }
}

/// Which attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptKey {
    /// The assignment.
    pub assignment: String,
    /// The job.
    pub job: String,
    /// The attempt number.
    pub attempt: u32,
}

enum Outgoing {
    Event(Vec<u8>),
    Raw(String),
}

/// The writing end of one attempt's events, held by the attempt.
pub struct Publisher {
    hub: Arc<Hub>,
    key: AttemptKey,
    channel: Arc<Channel>,
    nats: Option<(mpsc::Sender<Outgoing>, tokio::task::JoinHandle<()>)>,
    dropped: u64,
    redactor: Arc<Redactor>,
    progress: watch::Sender<JobProgress>,
}

impl Publisher {
    /// The redactor of this attempt's texts.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The attempt's counters, changing with every event (the runner writes them to the
    /// document every few seconds).
    pub fn progress(&self) -> watch::Receiver<JobProgress> {
        self.progress.subscribe()
    }

    /// Numbers, writes and sends one event.
    pub fn push(&mut self, kind: LiveKind) {
        let channel = self.channel.clone();
        let event = {
            let mut state = channel.state.lock().expect("channel lock");
            let event = Arc::new(LiveEvent {
                seq: state.next_seq,
                at: now_ms(),
                kind,
            });
            state.next_seq += 1;
            let mut line = serde_json::to_vec(&*event).expect("events serialise");
            line.push(b'\n');
            if let Some(file) = state.file.as_mut() {
                // One write per event: a crash loses none already sent to a follower.
                if let Err(e) = file.write_all(&line) {
                    tracing::warn!(%e, job = %self.key.job, "cannot write the events file; going on without it");
                    state.file = None;
                }
            }
            // Why: no follower is an ordinary state, not an error.
            let _ = channel.events.send(event.clone());
            line.pop();
            self.send_nats(Outgoing::Event(line));
            event
        };
        self.progress.send_modify(|p| apply_progress(p, &event));
    }

    /// Tells raw followers a transcript line was written, and sends it to NATS.
    pub fn raw_line(&mut self, line: &str) {
        self.channel.lines.send_modify(|n| *n += 1);
        if self.nats.is_some() {
            self.send_nats(Outgoing::Raw(line.to_string()));
        }
    }

    fn send_nats(&mut self, msg: Outgoing) {
        if let Some((tx, _)) = &self.nats {
            if tx.try_send(msg).is_err() {
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!(job = %self.key.job, "NATS is not keeping up with the live events; dropping some (readers are told)");
                }
            }
        }
    }

    /// Sends the last event, unregisters the attempt, and waits (a little) for NATS to store
    /// what was sent.
    pub async fn finish(mut self, exit: LiveKind) {
        self.push(exit);
        self.hub
            .channels
            .lock()
            .expect("hub lock")
            .remove(&(self.key.job.clone(), self.key.attempt));
        if let Some((tx, task)) = self.nats.take() {
            drop(tx);
            if tokio::time::timeout(NATS_DRAIN, task).await.is_err() {
                tracing::warn!(job = %self.key.job, "the last live events did not reach NATS in time");
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // An attempt abandoned without `finish` leaves no channel behind.
        self.hub
            .channels
            .lock()
            .expect("hub lock")
            .remove(&(self.key.job.clone(), self.key.attempt));
    }
}

/// Publishes an attempt's events (one message each) and transcript lines (in batches) to
/// NATS, acknowledgements pipelined per batch; an empty transcript message ends the attempt.
async fn forward(
    store: NatsStore,
    (events, raw): (String, String),
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut failed = false;
    let mut report = |e: wf_store::StoreError| {
        if !failed {
            tracing::warn!(%e, "cannot publish live events to NATS");
            failed = true;
        }
    };
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut acks = Vec::new();
        let mut lines = String::new();
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for msg in batch.drain(..) {
            match msg {
                Outgoing::Event(bytes) => {
                    acks.push(store.publish_live(events.clone(), bytes).await)
                }
                Outgoing::Raw(line) => {
                    lines.push_str(&line);
                    lines.push('\n');
                    if lines.len() >= RAW_BATCH {
                        let chunk = std::mem::take(&mut lines).into_bytes();
                        acks.push(store.publish_live(raw.clone(), chunk).await);
                    }
                }
            }
        }
        if !lines.is_empty() {
            acks.push(store.publish_live(raw.clone(), lines.into_bytes()).await);
        }
        for ack in acks {
            if let Err(e) = async { ack?.stored().await }.await {
                report(e);
            }
        }
    }
    let end = async { store.publish_live(raw, Vec::new()).await?.stored().await };
    if let Err(e) = end.await {
        report(e);
    }
}

/// The events written in an events file from number `from` on, until `until` (exclusive)
/// when given. A torn last line (the runner died mid-write) is left out.
pub fn read_events_file(path: &Path, from: u64, until: Option<u64>) -> Vec<LiveEvent> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<LiveEvent>(&line).ok())
        .filter(|e| e.seq >= from && until.is_none_or(|u| e.seq < u))
        .collect()
}

/// Reads a growing transcript line by line, from where it stopped; a line still being written
/// (no newline yet) waits for the next read.
pub struct LineReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LineReader {
    /// A reader from the start of `path`.
    pub fn new(path: &Path) -> Self {
        LineReader {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last read.
    pub fn read_more(&mut self) -> Vec<String> {
        use std::io::{Read, Seek};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err()
            || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&done)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Turns a broadcast receive into the frame a follower gets; `None` when the stream is over.
pub fn frame_of(
    received: Result<Arc<LiveEvent>, broadcast::error::RecvError>,
) -> Option<EventFrame> {
    match received {
        Ok(e) => Some(EventFrame::Event((*e).clone())),
        Err(broadcast::error::RecvError::Lagged(n)) => Some(EventFrame::Missed(n)),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// The values a runner must never show: its environment's tokens, keys, secrets and
/// passwords, and the forge token.
pub fn redactor(env: &std::collections::BTreeMap<String, String>) -> Redactor {
    let secret_name = |name: &str| {
        let n = name.to_ascii_uppercase();
        ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"]
            .iter()
            .any(|w| n.contains(w))
    };
    let from_process = std::env::vars().filter(|(k, _)| secret_name(k));
    let from_agents = env
        .iter()
        .filter(|(k, _)| secret_name(k))
        .map(|(k, v)| (k.clone(), v.clone()));
    Redactor::new(from_process.chain(from_agents).map(|(_, v)| v))
}

/// The assignment, job and attempt an `events` request names; an attempt the job never ran
/// is an error naming how many it ran.
pub async fn resolve_attempt(
    store: &wf_store::Store,
    request: &crate::api::Events,
) -> Result<(Assignment, Job, u32), OpError> {
    let (doc, job) = crate::ops::find_job(store, &request.job).await?;
    let attempt = match request.attempt {
        None => job.attempt,
        Some(n) if n >= 1 && n <= job.attempt => n,
        Some(n) => {
            return Err(OpError::NotFound(format!(
                "job {} has no attempt {n}: it has run {} time(s)",
                job.id, job.attempt
            )))
        }
    };
    Ok((doc, job, attempt))
}

/// The frames of a finished attempt read from the files its runner wrote on this machine.
pub async fn file_frames(
    transcript: &Path,
    request: &crate::api::Events,
    tx: &mpsc::Sender<Result<EventFrame, OpError>>,
) {
    let frames: Vec<EventFrame> = if request.raw {
        LineReader::new(transcript)
            .read_more()
            .into_iter()
            .map(EventFrame::Line)
            .collect()
    } else {
        read_events_file(&events_path(transcript), request.from, None)
            .into_iter()
            .map(EventFrame::Event)
            .collect()
    };
    for frame in frames.into_iter().chain([EventFrame::End {}]) {
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
    }
}

/// How long a follower waits for an attempt's last events once its document says it ended
/// (they are stored before the outcome is recorded; this covers a runner that died).
const END_GRACE: Duration = Duration::from_secs(3);

/// The frames of an attempt read from JetStream (any machine): replayed, then followed until
/// its exit (or, not following, until the stored ones are read). Gaps in the numbers (events
/// the runner could not publish, or the stream's limits discarded) are told as missed.
// Long: one select loop over the messages and the document's changes, with the end rules.
pub async fn nats_frames(
    nats: NatsStore,
    store: wf_store::Store,
    doc: Assignment,
    job: Job,
    attempt: u32,
    request: crate::api::Events,
    tx: mpsc::Sender<Result<EventFrame, OpError>>,
) {
    let subject = nats.live_subject(&doc.id, &job.id, attempt, request.raw);
    let send = |frame: Result<EventFrame, OpError>| {
        let tx = tx.clone();
        async move { tx.send(frame).await.is_ok() }
    };
    let unavailable = |e: wf_store::StoreError| Err(OpError::Unavailable(e.to_string()));
    let running = |d: &Assignment| {
        d.job(&job.id)
            .is_some_and(|j| j.attempt == attempt && j.status == JobStatus::Running)
    };
    let mut changes = store.subscribe().await;
    let mut follow = request.follow && running(&doc);
    if !follow {
        match nats.live_subject_empty(&subject).await {
            Ok(true) => {
                send(Ok(EventFrame::End {})).await;
                return;
            }
            Ok(false) => {}
            Err(e) => {
                send(unavailable(e)).await;
                return;
            }
        }
    }
    let mut messages = match nats.live_messages(&subject).await {
        Ok(m) => m,
        Err(e) => {
            send(unavailable(e)).await;
            return;
        }
    };
    let mut expected = 0u64;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let message = tokio::select! {
            message = messages.next() => message,
            change = changes.recv(), if follow && grace.is_none() => {
                match change {
                    Ok(c) if c.doc.id == doc.id && !running(&c.doc) => {
                        grace = Some(tokio::time::Instant::now() + END_GRACE);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => follow = false,
                    _ => {}
                }
                continue;
            }
            _ = tokio::time::sleep_until(grace.unwrap_or(far)), if grace.is_some() => None,
        };
        let Some(message) = message else { break };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                send(unavailable(e)).await;
                return;
            }
        };
        let mut frames = Vec::new();
        let mut ended = !follow && message.pending == 0;
        if request.raw {
            ended |= message.payload.is_empty();
            let text = String::from_utf8_lossy(&message.payload);
            frames.extend(text.lines().map(|l| EventFrame::Line(l.to_string())));
        } else if let Ok(event) = serde_json::from_slice::<LiveEvent>(&message.payload) {
            if event.seq > expected {
                frames.push(EventFrame::Missed(event.seq - expected));
            }
            expected = event.seq + 1;
            ended |= event.kind.is_exit();
            if event.seq >= request.from {
                frames.push(EventFrame::Event(event));
            }
        }
        for frame in frames {
            if !send(Ok(frame)).await {
                return;
            }
        }
        if ended {
            break;
        }
    }
    send(Ok(EventFrame::End {})).await;
}
