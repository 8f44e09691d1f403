//! How `wf` reaches the state: through the running runner's control socket, or directly.
//!
//! With the embedded store, a running `wf-runner` owns the database, so `wf` sends requests
//! over the runner's socket. With no runner running, `wf` opens the database itself. The two
//! paths execute the same [`api::dispatch`].

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::api::{self, Call, Envelope, Exec, Hello, Request, Response, Welcome, PROTOCOL_VERSION};
use crate::ops::OpError;
use wf_core::config::{Config, StoreConfig};
use wf_core::live::EventFrame;
use wf_core::model::Assignment;
use wf_store::sled::SledStore;
use wf_store::{Store, StoreError};

/// How long `wf` keeps trying while a runner is starting up (it holds the database but does not
/// serve its socket yet) or another `wf` briefly holds the database.
const OPEN_PATIENCE: Duration = Duration::from_secs(20);

/// A connection to a runner's control socket.
pub struct Client {
    ws: WebSocketStream<UnixStream>,
    next_id: u64,
    welcome: Welcome,
    /// The hello was sent and its answer not read yet: it is read with the first answer, so
    /// that a command costs one round trip, not two.
    welcome_pending: bool,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No runner listens there.
    #[error("no runner is listening")]
    NotRunning,
    /// Something listens but the session failed.
    #[error(transparent)]
    Failed(OpError),
}

impl Client {
    /// Connects and exchanges protocol versions.
    pub async fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let stream = match UnixStream::connect(socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ConnectError::NotRunning)
            }
            Err(e) => {
                return Err(ConnectError::Failed(OpError::Unavailable(format!(
                    "cannot connect to the runner at {}: {e}",
                    socket.display()
                ))))
            }
        };
        if let Err(e) = crate::paths::trusted_socket(socket) {
            return Err(ConnectError::Failed(OpError::Unavailable(e.to_string())));
        }
        let unavailable = |e: tokio_tungstenite::tungstenite::Error| {
            ConnectError::Failed(OpError::Unavailable(format!(
                "the runner at {} did not accept the session: {e}",
                socket.display()
            )))
        };
        let (ws, _) = tokio_tungstenite::client_async("ws://wf-runner/", stream)
            .await
            .map_err(unavailable)?;
        let mut client = Self {
            ws,
            next_id: 1,
            welcome: Welcome {
                protocol: 0,
                runner_id: String::new(),
                namespace: String::new(),
            },
            welcome_pending: false,
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("wf {}", env!("CARGO_PKG_VERSION")),
        };
        client
            .write(Request::Hello(hello))
            .await
            .map_err(ConnectError::Failed)?;
        client.welcome_pending = true;
        Ok(client)
    }

    /// The runner's greeting.
    pub async fn welcome(&mut self) -> Result<&Welcome, OpError> {
        self.read_welcome().await?;
        Ok(&self.welcome)
    }

    /// Reads the answer to the hello, if it was not read yet; a runner of another protocol
    /// version answers with an error.
    async fn read_welcome(&mut self) -> Result<(), OpError> {
        if std::mem::take(&mut self.welcome_pending) {
            self.welcome = self.read(1).await?.into_result()?;
        }
        Ok(())
    }

    /// Sends `request` with the next id; returns the id.
    async fn write(&mut self, request: Request) -> Result<u64, OpError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::to_string(&Envelope { id, request }).expect("requests serialise");
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| OpError::Unavailable(format!("lost the connection to the runner: {e}")))?;
        Ok(id)
    }

    /// Sends a request and waits for its typed answer.
    pub async fn call<C: Call>(&mut self, call: C) -> Result<C::Output, OpError> {
        self.send(call.into()).await?.into_result()
    }

    /// [`Client::call`] for a request answered with JSON: the answer as it arrived, not read
    /// a second time.
    pub async fn call_json<C: Call<Output = Box<serde_json::value::RawValue>>>(
        &mut self,
        call: C,
    ) -> Result<Box<serde_json::value::RawValue>, OpError> {
        self.send(call.into()).await?.into_raw()
    }

    /// Sends a request and waits for its response.
    async fn send(&mut self, request: Request) -> Result<Response, OpError> {
        let written = self.write(request).await;
        // A runner that refused the hello may have closed before the request reached it: its
        // refusal says why.
        self.read_welcome().await?;
        self.read(written?).await
    }

    /// Reads until the response to request `id`.
    async fn read(&mut self, id: u64) -> Result<Response, OpError> {
        let lost = |e: tokio_tungstenite::tungstenite::Error| {
            OpError::Unavailable(format!("lost the connection to the runner: {e}"))
        };
        loop {
            let msg = match self.ws.next().await {
                None => {
                    return Err(OpError::Unavailable(
                        "the runner closed the connection before answering".into(),
                    ))
                }
                Some(m) => m.map_err(lost)?,
            };
            let Message::Text(text) = msg else { continue };
            let response: Response = serde_json::from_str(&text).map_err(|e| {
                OpError::Unavailable(format!("unreadable response from the runner: {e}"))
            })?;
            if response.id != id {
                continue;
            }
            return Ok(response);
        }
    }
}

/// A stream of answers to one request: assignment versions from [`Client::watch`], event
/// frames from [`Client::events`].
pub struct Subscription<T> {
    client: Client,
    id: u64,
    _answers: std::marker::PhantomData<fn() -> T>,
}

/// A stream of assignment versions.
pub type Watch = Subscription<wf_core::model::Assignment>;

impl<T: serde::de::DeserializeOwned> Subscription<T> {
    /// The next answer; `None` when the runner went away.
    pub async fn next(&mut self) -> Option<Result<T, OpError>> {
        loop {
            let msg = match self.client.ws.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(OpError::Unavailable(format!("lost the runner: {e}")))),
            };
            let Message::Text(text) = msg else { continue };
            let response: Response = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    return Some(Err(OpError::Unavailable(format!("unreadable update: {e}"))))
                }
            };
            if response.id != self.id {
                continue;
            }
            return Some(response.into_result());
        }
    }
}

impl Client {
    /// Turns this connection into a stream of versions of one assignment (or all).
    pub async fn watch(self, assignment: Option<String>) -> Result<Watch, OpError> {
        self.subscribe(Request::Watch(api::Watch { assignment }))
            .await
    }

    /// Turns this connection into the stream of one attempt's event frames.
    pub async fn events(self, request: api::Events) -> Result<Subscription<EventFrame>, OpError> {
        self.subscribe(Request::Events(request)).await
    }

    async fn subscribe<T>(mut self, request: Request) -> Result<Subscription<T>, OpError> {
        let written = self.write(request).await;
        self.read_welcome().await?;
        let id = written?;
        Ok(Subscription {
            client: self,
            id,
            _answers: std::marker::PhantomData,
        })
    }
}

/// Event frames as `wf logs` reads them, whatever the backend.
pub type Frames = tokio::sync::mpsc::Receiver<Result<EventFrame, OpError>>;

/// Where `wf` sends its requests.
pub enum Backend {
    /// `wf` holds the store itself.
    Direct {
        /// The store.
        store: Store,
        /// The configuration requests are interpreted with.
        config: Box<Config>,
    },
    /// A runner holds it.
    Runner(Box<Client>),
}

impl Backend {
    /// Reaches the state described by `config`.
    pub async fn open(config: &Config) -> Result<Self, OpError> {
        match &config.store {
            StoreConfig::Sled { path } => {
                let socket = crate::paths::socket_path(&config.state_dir);
                let started = Instant::now();
                let mut pause = Duration::from_millis(5);
                loop {
                    match Client::connect(&socket).await {
                        Ok(client) => return Ok(Backend::Runner(Box::new(client))),
                        Err(ConnectError::Failed(e)) => return Err(e),
                        Err(ConnectError::NotRunning) => {}
                    }
                    match SledStore::open(path, &config.namespace, Duration::ZERO) {
                        Ok(store) => {
                            let store = Store::Sled(store);
                            store.configure(config);
                            return Ok(Backend::Direct {
                                store,
                                config: Box::new(config.clone()),
                            });
                        }
                        Err(StoreError::Locked { .. }) if started.elapsed() < OPEN_PATIENCE => {}
                        Err(e) => return Err(e.into()),
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
            StoreConfig::Nats(nats) => {
                let store =
                    wf_store::nats::NatsStore::connect(nats, &config.namespace, "wf", false)
                        .await
                        .map_err(|e| OpError::Unavailable(e.to_string()))?;
                let store = Store::Nats(store);
                store.configure(config);
                Ok(Backend::Direct {
                    store,
                    config: Box::new(config.clone()),
                })
            }
        }
    }

    /// Executes one request and returns its typed answer.
    pub async fn call<C: Call>(&mut self, call: C) -> Result<C::Output, OpError> {
        match self {
            Backend::Direct { store, config } => {
                let exec = Exec {
                    store,
                    config,
                    runner: None,
                };
                call.execute(exec).await
            }
            Backend::Runner(client) => client.call(call).await,
        }
    }

    /// [`Backend::call`] for a request answered with JSON (see [`Client::call_json`]).
    pub async fn call_json<C: Call<Output = Box<serde_json::value::RawValue>>>(
        &mut self,
        call: C,
    ) -> Result<Box<serde_json::value::RawValue>, OpError> {
        match self {
            Backend::Runner(client) => client.call_json(call).await,
            direct => direct.call(call).await,
        }
    }

    /// One attempt's event frames (or transcript lines), replayed then followed as asked,
    /// `end` last: from the runner (embedded store), the files it wrote (no runner), or
    /// JetStream (NATS, from any machine).
    pub async fn events(&self, config: &Config, request: api::Events) -> Result<Frames, OpError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        match self {
            Backend::Runner(_) => {
                let client = Self::connection(config).await?;
                let mut sub = client.events(request).await?;
                tokio::spawn(async move {
                    while let Some(frame) = sub.next().await {
                        let end = matches!(frame, Ok(EventFrame::End {}) | Err(_));
                        if tx.send(frame).await.is_err() || end {
                            return;
                        }
                    }
                    // Why: the reader may have gone; nothing else to tell it.
                    let _ = tx
                        .send(Err(OpError::Unavailable("lost the runner".into())))
                        .await;
                });
            }
            Backend::Direct { store, config } => {
                let (doc, job, attempt) = crate::live::resolve_attempt(store, &request).await?;
                match store {
                    Store::Nats(nats) => {
                        let (nats, store) = (nats.clone(), store.clone());
                        tokio::spawn(crate::live::nats_frames(
                            nats, store, doc, job, attempt, request, tx,
                        ));
                    }
                    Store::Sled(_) => {
                        let transcript = crate::paths::transcript_path(
                            &config.state_dir,
                            &doc.id,
                            &job.id,
                            attempt,
                        );
                        crate::live::file_frames(&transcript, &request, &tx).await;
                    }
                }
            }
        }
        Ok(rx)
    }

    /// Another connection to the runner, for a stream.
    async fn connection(config: &Config) -> Result<Client, OpError> {
        match Client::connect(&crate::paths::socket_path(&config.state_dir)).await {
            Ok(c) => Ok(c),
            Err(ConnectError::Failed(e)) => Err(e),
            Err(ConnectError::NotRunning) => {
                Err(OpError::Unavailable("the runner went away".into()))
            }
        }
    }

    /// Versions of one assignment (or all): the current ones, then each change, from the
    /// runner (embedded store) or the store's change feed (NATS). With the embedded store and
    /// no runner nothing can change: the current versions come, then the stream ends.
    pub async fn watch(
        &self,
        config: &Config,
        assignment: Option<String>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Assignment, OpError>>, OpError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        match self {
            Backend::Runner(_) => {
                let mut sub = Self::connection(config).await?.watch(assignment).await?;
                tokio::spawn(async move {
                    while let Some(doc) = sub.next().await {
                        let failed = doc.is_err();
                        if tx.send(doc).await.is_err() || failed {
                            return;
                        }
                    }
                });
            }
            Backend::Direct { store, .. } => {
                let mut changes = store.subscribe().await;
                let current = match &assignment {
                    Some(prefix) => vec![crate::ops::find_assignment(store, prefix).await?],
                    None => crate::ops::list_assignments(store, None).await?,
                };
                let only = assignment
                    .as_ref()
                    .and(current.first())
                    .map(|d| d.id.clone());
                let live = matches!(store, Store::Nats(_));
                tokio::spawn(async move {
                    for doc in current {
                        if tx.send(Ok(doc)).await.is_err() {
                            return;
                        }
                    }
                    if !live {
                        return;
                    }
                    loop {
                        let doc = match changes.recv().await {
                            Ok(change) => Ok(std::sync::Arc::unwrap_or_clone(change.doc)),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Err(
                                OpError::Unavailable("the watch fell behind; watch again".into()),
                            ),
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        };
                        let failed = doc.is_err();
                        if doc
                            .as_ref()
                            .is_ok_and(|d| only.as_ref().is_some_and(|id| *id != d.id))
                        {
                            continue;
                        }
                        if tx.send(doc).await.is_err() || failed {
                            return;
                        }
                    }
                });
            }
        }
        Ok(rx)
    }

    /// Whether requests go through a runner.
    pub fn via_runner(&self) -> bool {
        matches!(self, Backend::Runner(_))
    }
}
