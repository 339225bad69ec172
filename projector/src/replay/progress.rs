//! Live counters of a running replay, and the snapshots made of them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jobstream_core::replay::{ProgressSnapshot, ReplaySummary};

use super::ReplayError;

/// Live counters of a replay, readable while it runs (CLI progress line, admin API).
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<&'static str>,
    pub(super) position: AtomicU64,
    pub(super) target: AtomicU64,
    pub(super) events: AtomicU64,
    pub(super) pending: AtomicU64,
    finished: AtomicBool,
    started: Mutex<Option<Instant>>,
    error: Mutex<Option<String>>,
    summary: Mutex<Option<ReplaySummary>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Progress {
    pub(super) fn set_phase(&self, phase: &'static str) {
        *lock(&self.phase) = phase;
    }

    pub(super) fn start_clock(&self) {
        lock(&self.started).get_or_insert_with(Instant::now);
    }

    pub(super) fn finish(&self, outcome: &Result<ReplaySummary, ReplayError>) {
        match outcome {
            Ok(s) => {
                self.set_phase(if s.interrupted { "interrupted" } else { "done" });
                *lock(&self.summary) = Some(s.clone());
            }
            Err(e) => {
                self.set_phase("failed");
                *lock(&self.error) = Some(e.to_string());
            }
        }
        self.finished.store(true, Ordering::SeqCst);
    }

    /// The current counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let events = self.events.load(Ordering::Relaxed);
        let elapsed = lock(&self.started).map_or(0.0, |s| s.elapsed().as_secs_f64());
        let rate = if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        };
        let pending = self.pending.load(Ordering::Relaxed);
        let phase = *lock(&self.phase);
        ProgressSnapshot {
            phase: if phase.is_empty() { "starting" } else { phase }.to_owned(),
            position: self.position.load(Ordering::Relaxed),
            target: self.target.load(Ordering::Relaxed),
            events,
            events_per_sec: rate,
            eta_secs: (rate > 0.0).then(|| pending as f64 / rate),
            finished: self.finished.load(Ordering::SeqCst),
            error: lock(&self.error).clone(),
            summary: lock(&self.summary).clone(),
            updated_at: None,
        }
    }
}
