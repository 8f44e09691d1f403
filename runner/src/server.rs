//! The runner's control socket: WebSocket over a Unix socket (mode 0600), JSON messages.
//!
//! Each connection must open with `hello` and a matching protocol version. After that every
//! text frame is one [`Envelope`], answered by one [`Response`]. A frame that is not a valid
//! envelope gets an error response and changes nothing; the connection stays usable.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Envelope, Request, Response, Welcome, PROTOCOL_VERSION};
use crate::ops::OpError;
use wf_core::config::Config;
use wf_core::live::EventFrame;
use wf_core::model::JobStatus;
use wf_store::Store;

/// What request handlers need.
pub struct ServerState {
    /// The store the runner owns.
    pub store: Store,
    /// The runner's configuration.
    pub config: Config,
    /// The runner's id.
    pub runner_id: String,
    /// The running attempts' live events.
    pub hub: Arc<crate::live::Hub>,
    /// What the runner counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Binds the socket at `path` with mode 0600, replacing a stale socket of a dead runner.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if dir == crate::paths::short_socket_dir() {
            crate::paths::ensure_private_dir(dir)?;
        } else {
            std::fs::create_dir_all(dir)?;
        }
    }
    // The caller holds the store's lock, so no other runner of this store is alive: a socket
    // file left here belongs to a dead one.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bind under a temporary name and rename, so that the socket is never reachable before
    // its mode is 0600.
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    // Why: a leftover of an earlier attempt may or may not be there; bind reports real trouble.
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// What a session may run over.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(api::MAX_MESSAGE))
        .max_frame_size(Some(api::MAX_MESSAGE))
}

/// The first wait after a failed accept; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between accepts after repeated failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves connections until `shutdown` is cancelled.
///
/// A failed accept (EMFILE when the runner is out of file descriptors, ENOBUFS, …) is retried
/// after a pause that doubles while failures go on, instead of spinning on a listener that
/// stays readable; the first accept that succeeds resets it.
pub async fn serve(listener: UnixListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    stream
                }
                Err(e) => {
                    tracing::warn!(%e, retry_in = ?backoff, "control socket accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, state, shutdown).await {
                tracing::debug!(%e, "control connection ended");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await?;
    session(ws, state, shutdown).await
}

/// One session of the control protocol over an accepted WebSocket (the Unix socket's, or the
/// dashboard's).
// Long: the protocol's one loop: hello, then requests, watches and event streams.
pub(crate) async fn session<S: Stream>(
    mut ws: WebSocketStream<S>,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut greeted = false;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = ws.next() => match msg {
                None => return Ok(()),
                Some(msg) => msg?,
            },
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return Ok(()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Binary(_) => {
                let err = OpError::Invalid("binary frames are not part of the protocol".into());
                ws.send(reply(&Response::err(0, &err))).await?;
                continue;
            }
        };
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                let id = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0);
                let err = OpError::Invalid(format!("malformed request: {e}"));
                ws.send(reply(&Response::err(id, &err))).await?;
                continue;
            }
        };
        let response = match (greeted, envelope.request) {
            (false, Request::Hello(api::Hello { protocol, client })) => {
                if protocol != PROTOCOL_VERSION {
                    let err = OpError::Invalid(format!(
                        "protocol version {protocol} is not supported by this runner (it speaks {PROTOCOL_VERSION}); use matching wf and wf-runner binaries"
                    ));
                    ws.send(reply(&Response::err(envelope.id, &err))).await?;
                    return Ok(());
                }
                tracing::debug!(%client, "control client connected");
                greeted = true;
                let welcome = Welcome {
                    protocol: PROTOCOL_VERSION,
                    runner_id: state.runner_id.clone(),
                    namespace: state.config.namespace.to_string(),
                };
                Response::ok(envelope.id, &welcome)
            }
            (false, _) => Response::err(
                envelope.id,
                &OpError::Invalid("the first message must be hello".into()),
            ),
            (true, Request::Watch(api::Watch { assignment })) => {
                return watch(ws, &state, envelope.id, assignment, shutdown).await;
            }
            (true, Request::Events(request)) => {
                return events(ws, &state, envelope.id, request, shutdown).await;
            }
            (true, request) => {
                let exec = api::Exec {
                    store: &state.store,
                    config: &state.config,
                    runner: Some(&state.runner_id),
                };
                api::dispatch(exec, envelope.id, request).await
            }
        };
        ws.send(reply(&response)).await?;
    }
}

/// Serves a watch: the current document(s), then every new version, until the client leaves.
async fn watch<S: Stream>(
    mut ws: WebSocketStream<S>,
    state: &ServerState,
    id: u64,
    assignment: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut changes = state.store.subscribe().await;
    let current = match &assignment {
        Some(prefix) => crate::ops::find_assignment(&state.store, prefix)
            .await
            .map(|d| vec![d]),
        None => crate::ops::list_assignments(&state.store, None).await,
    };
    let current = match current {
        Ok(docs) => docs,
        Err(err) => {
            ws.send(reply(&Response::err(id, &err))).await?;
            return Ok(());
        }
    };
    let only = current
        .first()
        .map(|d| d.id.clone())
        .filter(|_| assignment.is_some());
    let doc_response = |doc: &wf_core::model::Assignment| Response::ok(id, doc);
    for doc in &current {
        ws.send(reply(&doc_response(doc))).await?;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = ws.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
            change = changes.recv() => match change {
                Ok(change) => {
                    if only.as_ref().is_none_or(|id| *id == change.doc.id) {
                        ws.send(reply(&doc_response(&change.doc))).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let err = OpError::Unavailable("the watch fell behind; watch again".into());
                    ws.send(reply(&Response::err(id, &err))).await?;
                    return Ok(());
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// Serves an `events` request: the attempt's events (or transcript lines) from the file, then,
/// when following a running attempt, each new one until its exit; `end` last.
async fn events<S: Stream>(
    mut ws: WebSocketStream<S>,
    state: &ServerState,
    id: u64,
    request: api::Events,
    shutdown: CancellationToken,
) -> WsResult {
    let (doc, job, attempt) = match crate::live::resolve_attempt(&state.store, &request).await {
        Ok(found) => found,
        Err(err) => return ws.send(reply(&Response::err(id, &err))).await,
    };
    let transcript =
        crate::paths::transcript_path(&state.config.state_dir, &doc.id, &job.id, attempt);
    let sub = match request.follow {
        true => tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            sub = subscribe_when_started(state, &doc.id, &job.id, attempt) => sub,
        },
        false => None,
    };
    let frame = |f: &EventFrame| Response::ok(id, f);
    if request.raw {
        return raw_lines(ws, id, &transcript, sub, shutdown).await;
    }
    let until = sub.as_ref().map(|s| s.next_seq);
    let path = crate::live::events_path(&transcript);
    for event in crate::live::read_events_file(&path, request.from, until) {
        ws.send(reply(&frame(&EventFrame::Event(event)))).await?;
    }
    if let Some(mut sub) = sub {
        let from = request.from.max(sub.next_seq);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                msg = ws.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => continue,
                },
                received = sub.events.recv() => received,
            };
            let Some(f) = crate::live::frame_of(received) else {
                break;
            };
            let exit = match &f {
                EventFrame::Event(e) if e.seq < from => continue,
                EventFrame::Event(e) => e.kind.is_exit(),
                _ => false,
            };
            ws.send(reply(&frame(&f))).await?;
            if exit {
                break;
            }
        }
    }
    ws.send(reply(&frame(&EventFrame::End {}))).await
}

/// Follows the attempt if it runs here: at once when it is open, else as soon as it opens,
/// for as long as the document says the job is (about to be) running that attempt.
async fn subscribe_when_started(
    state: &ServerState,
    aid: &str,
    job: &str,
    attempt: u32,
) -> Option<crate::live::Subscription> {
    let mut opened = state.hub.opened();
    let mut changes = state.store.subscribe().await;
    loop {
        if let Some(sub) = state.hub.subscribe(job, attempt) {
            return Some(sub);
        }
        // Not open (yet): worth waiting only while the job is claimed for this attempt.
        let doc = state.store.get(aid).await.ok().flatten()?;
        let running = doc
            .job(job)
            .is_some_and(|j| j.status == JobStatus::Running && j.attempt == attempt);
        if !running {
            return None;
        }
        tokio::select! {
            changed = opened.changed() => changed.ok()?,
            change = changes.recv() => match change {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
        }
    }
}

/// Serves a transcript's lines: what is written, then (following) each line as it is written.
async fn raw_lines<S: Stream>(
    mut ws: WebSocketStream<S>,
    id: u64,
    transcript: &Path,
    mut sub: Option<crate::live::Subscription>,
    shutdown: CancellationToken,
) -> WsResult {
    let mut reader = crate::live::LineReader::new(transcript);
    loop {
        for line in reader.read_more() {
            ws.send(reply(&Response::ok(id, &EventFrame::Line(line))))
                .await?;
        }
        let Some(s) = sub.as_mut() else { break };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = ws.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
            changed = s.lines.changed() => {
                if changed.is_err() {
                    // The attempt ended: what it wrote last, then the end.
                    sub = None;
                }
            }
        }
    }
    ws.send(reply(&Response::ok(id, &EventFrame::End {}))).await
}

fn reply(response: &Response) -> Message {
    Message::text(serde_json::to_string(response).expect("responses serialise"))
}
