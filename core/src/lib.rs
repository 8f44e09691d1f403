//! wf's pure domain: what an assignment is and every way it may change, with no I/O beyond
//! reading a config file or a template override.
//!
//! - [`model`]: the records (`Assignment`, `Job`, …) and their status enums; [`ids`]: ids and
//!   namespaces; [`clock`]: the wall clock in milliseconds.
//! - [`chain`]: every state transition and the scheduling rule, as pure functions of a
//!   document; the store applies them inside its compare-and-swap.
//! - [`config`]: the config file, parsed strictly and resolved; [`forge`]: issue references,
//!   branch names from issues, the pull request's title and body.
//! - [`prompt`]: the prompt templates and their strict rendering; [`verify`]: the checks a
//!   repository implies and the test counts in their output.
//! - [`trigger`]: `.wf/triggers.toml`, trigger states, firing ids, the cron catch-up rule.
//! - [`workflow`]: workflow files (TOML), checked and instantiated into the tasks of an
//!   assignment; what the stored documents keep of them.
//! - [`harness`]: per agent CLI, the command line of an attempt and the parser of its event
//!   stream; the one event model, the run log and `judge` (success, failure reason, pause).
//!
//! This crate depends on no async runtime, no `libc`, and no store: that it stays pure is a
//! compile error away, not a promise.

pub mod chain;
pub mod clock;
pub mod config;
pub mod forge;
pub mod harness;
pub mod ids;
pub mod live;
pub mod model;
pub mod prompt;
pub mod trigger;
pub mod verify;
pub mod workflow;
