//! wf engine: the domain, the store, the harnesses and the runner daemon.
//!
//! # Layout
//!
//! Pure core (no I/O): [`model`] (records), [`ids`], [`chain`] (every state transition).

pub mod chain;
pub mod config;
pub mod harness;
pub mod ids;
pub mod model;
