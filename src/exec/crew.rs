//! How the workers and the coordinating thread meet: every epoch starts together on one clock,
//! and each worker reports its epoch (spans, memory, parameters, loss) when it is done.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Tensor;

use super::transport::channel::Rendezvous;
use crate::trace::{MemoryEvent, Span};

/// What a worker reports after each epoch.
pub(super) struct EpochReport {
    pub device: usize,
    pub spans: Vec<Span>,
    pub memory: Vec<MemoryEvent>,
    /// Per stage the worker owns (graph parallelism: one replica, stage 0): its parameters.
    pub params: Vec<(u32, Vec<Tensor>)>,
    pub loss: f64,
}

/// A worker's handle on the coordinator.
#[derive(Clone)]
pub(super) struct Crew {
    pub report: Sender<Result<EpochReport, String>>,
    /// Workers and the coordinator meet here before every epoch, and once after the last.
    pub start: Arc<Rendezvous>,
    /// Time 0 of the epoch, set by the coordinator before the meeting.
    pub epoch_start: Arc<Mutex<Instant>>,
}

impl Crew {
    /// Waits for everyone to start the epoch; returns its time 0.
    pub(super) fn start_epoch(&self) -> candle_core::Result<Instant> {
        self.start.wait()?;
        Ok(*self
            .epoch_start
            .lock()
            .expect("no worker panics holding the lock"))
    }

    /// Hands the epoch's report over; false when the coordinator has stopped listening.
    pub(super) fn report(&self, report: EpochReport) -> bool {
        self.report.send(Ok(report)).is_ok()
    }

    /// The last meeting, after the last epoch.
    pub(super) fn finish(&self) -> candle_core::Result<()> {
        self.start.wait()
    }
}
