//! Fresh ids from the operating system's random source.

use wf_core::ids;

/// A fresh random id (see [`ids::from_random`]).
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // Why: getrandom only fails when the OS has no entropy source at all, which no supported
    // platform lacks; there is nothing sensible to do but stop.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    ids::from_random(u64::from_le_bytes(bytes))
}
