//! wf engine: the domain, the store, the harnesses and the runner daemon.
//!
//! # Layout
//!
//! - Pure core (no I/O): [`model`] (records), [`ids`], [`chain`] (every state transition and
//!   the scheduling rule), [`prompt::render`], [`harness`] command building, parsing and
//!   judging, [`config`] parsing.
//! - [`store`]: the store contract and its backends (one CAS primitive each).
//! - [`ops`]: what `wf` commands do, over a store; [`api`]: the control protocol and its
//!   interpreter; [`server`] and [`client`]: the control socket.
//! - [`daemon`]: the runner loop; [`harness::process`]: the only place that spawns agents;
//!   [`reaper`]: kills agents of dead runners.
//! - [`main_impl`]: the `wf-runner` binary.

pub mod api;
pub mod chain;
pub mod client;
pub mod config;
pub mod daemon;
pub mod harness;
pub mod ids;
pub mod model;
pub mod ops;
pub mod paths;
pub mod prompt;
pub mod reaper;
pub mod server;
pub mod store;

pub mod cli;

pub use cli::main_impl;
