//! Stop signals: why a running job is being stopped, shared between the scheduler, the lease
//! renewer, the budget timer and the process layer.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Why a job is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The runner is shutting down: the job goes back to pending.
    Shutdown,
    /// The lease could not be renewed: someone else may own the job; record nothing.
    LeaseLost,
    /// A human cancelled it (`wf cancel`).
    Cancelled,
    /// A budget of its assignment ran out (the reason names it).
    Budget(String),
}

/// A cancellation token with the reason of the first cancel.
#[derive(Debug, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl StopSignal {
    /// Stops with `reason` (the first reason wins).
    pub fn stop(&self, reason: StopReason) {
        // Why: a second stop keeps the first reason, by design.
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why it was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }

    /// The token the process layer watches.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether it was stopped.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The stop signals of the jobs of one unit.
#[derive(Debug, Clone, Default)]
pub(super) struct UnitStops(Arc<HashMap<String, Arc<StopSignal>>>);

impl UnitStops {
    pub(super) fn new(job_ids: &[String]) -> Self {
        Self(Arc::new(
            job_ids
                .iter()
                .map(|id| (id.clone(), Arc::new(StopSignal::default())))
                .collect(),
        ))
    }

    pub(super) fn all(&self, reason: &StopReason) {
        for signal in self.0.values() {
            signal.stop(reason.clone());
        }
    }

    pub(super) fn job(&self, id: &str) -> Option<&Arc<StopSignal>> {
        self.0.get(id)
    }
}
