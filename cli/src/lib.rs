//! wf CLI.
