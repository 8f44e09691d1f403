//! wf's engine: what `wf` commands do over a store, the control protocol and socket, the
//! process layer, and the runner daemon. The domain lives in `wf_core`, the store in
//! `wf_store`.
//!
//! # Layout
//!
//! - [`ops`]: what `wf` commands do, over a store; [`api`]: the control protocol and its
//!   interpreter; [`server`] and [`client`]: the control socket.
//! - [`daemon`]: the runner loop; [`process`]: the only place that spawns agents;
//!   [`guard`]: the guardian that stops a dead runner's agents; [`liveness`]: which runners
//!   of a state directory are alive; [`reaper`]: kills agents of
//!   dead runners; [`random`]: fresh ids; [`env`](mod@env): host name,
//!   where `wf` is, and the agents' environment.
//! - [`workspace`]: worktrees, branches and the runner's commits; [`git`]: git through the
//!   process layer; [`forge`]: issues, pull requests and the progress comment (GitHub REST);
//!   [`rollback`]: `wf rollback`; [`tracker`]: the forge as an issue tracker (ready issues,
//!   blockers, pull requests, labels, reviews, new issues).
//! - [`http`]: the dashboard (`--http`): its page, and the protocol over a WebSocket.
//! - [`publish`]: a workflow task's result on the forge (comment, labels, review, issues),
//!   and a trigger's `on_complete`.
//! - [`triggers`]: cron, issue-ready and pull-request triggers, each firing a workflow once.
//! - [`metrics`]: what this runner counted, in the Prometheus text format.
//! - [`notify`]: delivering the notifications recorded in assignments' outboxes.
//! - [`live`]: the numbered live events of running attempts, their followers, NATS.
//! - [`main_impl`]: the `wf-runner` binary.

pub mod api;
pub mod client;
pub mod daemon;
pub mod env;
pub mod forge;
pub mod git;
pub mod guard;
pub mod http;
pub mod live;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod paths;
pub mod process;
pub mod publish;
pub mod random;
pub mod reaper;
pub mod rollback;
pub mod server;
pub mod tracker;
pub mod triggers;
pub mod workspace;

pub mod cli;

pub use cli::main_impl;
