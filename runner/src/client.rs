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
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("wf {}", env!("CARGO_PKG_VERSION")),
        };
        client.welcome = client.call(hello).await.map_err(ConnectError::Failed)?;
        Ok(client)
    }

    /// The runner's greeting.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends a request and waits for its typed answer.
    pub async fn call<C: Call>(&mut self, call: C) -> Result<C::Output, OpError> {
        self.send(call.into()).await?.into_result()
    }

    /// Sends a request and waits for its response.
    async fn send(&mut self, request: Request) -> Result<Response, OpError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::to_string(&Envelope { id, request }).expect("requests serialise");
        let lost = |e: tokio_tungstenite::tungstenite::Error| {
            OpError::Unavailable(format!("lost the connection to the runner: {e}"))
        };
        self.ws.send(Message::text(text)).await.map_err(lost)?;
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

/// A stream of assignment versions from [`Client::watch`].
pub struct Watch {
    client: Client,
    id: u64,
}

impl Watch {
    /// The next version; `None` when the runner went away.
    pub async fn next(&mut self) -> Option<Result<wf_core::model::Assignment, OpError>> {
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
    pub async fn watch(mut self, assignment: Option<String>) -> Result<Watch, OpError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::to_string(&Envelope {
            id,
            request: Request::Watch(api::Watch { assignment }),
        })
        .expect("requests serialise");
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| OpError::Unavailable(format!("lost the connection to the runner: {e}")))?;
        Ok(Watch { client: self, id })
    }
}

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
                            store.set_max_document(config.max_document_bytes);
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
                store.set_max_document(config.max_document_bytes);
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

    /// Whether requests go through a runner.
    pub fn via_runner(&self) -> bool {
        matches!(self, Backend::Runner(_))
    }
}
