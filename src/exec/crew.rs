//! How the workers and the coordinating thread meet: every epoch starts together on one clock,
//! and each worker reports its epoch (spans, memory, parameters, loss) when it is done.
//!
//! Between processes (a transport whose ranks are processes, MPI) each process has its own
//! coordinator and one worker: the worker meets its coordinator, then the other ranks in two
//! barriers, and takes the moment it leaves the first as the epoch's time 0 on its own clock.
//! Each rank stays in the second barrier at least as long as the first left the ranks apart
//! (the earliest to leave waits there for the last), so the longest wait in it, reported with
//! the epoch, bounds the clocks' skew. Reports go to rank 0's coordinator through the
//! transport's gather, and only rank 0 builds the trace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Tensor;

use super::transport::channel::Rendezvous;
use super::transport::handoffs::Waiting;
use super::transport::{wire, Transport};
use crate::trace::{MemoryEvent, Span};

/// What a worker reports after each epoch.
pub(super) struct EpochReport {
    pub device: usize,
    pub spans: Vec<Span>,
    pub memory: Vec<MemoryEvent>,
    /// Per stage the worker owns (graph parallelism: one replica, stage 0): its parameters.
    pub params: Vec<(u32, Vec<Tensor>)>,
    pub loss: f64,
    /// Between processes: a bound on how far apart the ranks' epoch clocks started (0 within
    /// one process, whose workers share one clock).
    pub clock_skew_ns: u64,
}

/// A worker's handle on the coordinator.
#[derive(Clone)]
pub(super) struct Crew {
    pub report: Sender<Result<EpochReport, String>>,
    /// Workers and the coordinator meet here before every epoch, and once after the last.
    pub start: Arc<Rendezvous>,
    /// Time 0 of the epoch, set by the coordinator before the meeting.
    pub epoch_start: Arc<Mutex<Instant>>,
    /// The skew bound of the epoch under way, between processes.
    pub skew_ns: Arc<AtomicU64>,
    /// How a worker waits for a hand-off.
    pub waiting: Waiting,
}

impl Crew {
    /// Waits for everyone to start the epoch; returns its time 0.
    pub(super) fn start_epoch(
        &self,
        transport: &mut dyn Transport,
    ) -> candle_core::Result<Instant> {
        self.start.wait()?;
        if transport.across_processes() {
            transport.barrier()?;
            let start = Instant::now();
            transport.barrier()?;
            self.skew_ns
                .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            return Ok(start);
        }
        Ok(*self
            .epoch_start
            .lock()
            .expect("no worker panics holding the lock"))
    }

    /// Hands the epoch's report over; false when the coordinator has stopped listening.
    pub(super) fn report(
        &self,
        transport: &mut dyn Transport,
        mut report: EpochReport,
    ) -> candle_core::Result<bool> {
        if !transport.across_processes() {
            return Ok(self.report.send(Ok(report)).is_ok());
        }
        report.clock_skew_ns = self.skew_ns.load(Ordering::Relaxed);
        let Some(reports) = transport.gather(wire::encode_report(&report)?)? else {
            return Ok(true);
        };
        for bytes in reports {
            if self.report.send(Ok(wire::decode_report(&bytes)?)).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reports `device`'s epoch: its spans, the memory its ledger recorded (taken), the
    /// parameters it reports and its loss. False when the coordinator has stopped listening.
    pub(super) fn end_epoch(
        &self,
        transport: &mut dyn Transport,
        device: usize,
        spans: &[Span],
        ledger: &mut super::ledger::Ledger,
        params: Vec<(u32, Vec<Tensor>)>,
        loss: f64,
    ) -> candle_core::Result<bool> {
        let report = EpochReport {
            device,
            spans: spans.to_vec(),
            memory: std::mem::take(&mut ledger.events),
            params,
            loss,
            clock_skew_ns: 0,
        };
        self.report(transport, report)
    }

    /// The last meeting, after the last epoch.
    pub(super) fn finish(&self) -> candle_core::Result<()> {
        self.start.wait()
    }
}
