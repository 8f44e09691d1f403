//! The `wf-runner` daemon.

fn main() {}
