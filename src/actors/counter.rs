//! What the orchestrators count for the Scaler: the client reads each
//! serves (its handle counts them), and those the others serve (the
//! leading one's election watcher adds them up from their nodes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Client db reads, each request once: the orchestrator's handle counts,
/// the Scaler reads the count (it only grows; the core keeps where each
/// window began).
#[derive(Clone, Debug, Default)]
pub struct ReadCounter(Arc<AtomicU64>);

impl ReadCounter {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_n(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
