//! The wall clock, in the milliseconds every record uses.

use crate::model::Millis;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
