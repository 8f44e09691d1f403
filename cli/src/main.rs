//! wf

fn main() {}
