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
use std::sync::{Arc, Condvar, Mutex};
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
    /// The cores the workers take turns on, where their threads outnumber them.
    pub cores: Option<Arc<Cores>>,
}

/// The cores the workers of one process share where their threads outnumber them: an op
/// computes once it holds one of `turns` turns, granted first come first served, and keeps it
/// to its end, as the simulator's shared processor runs them (`SimInput::compute_slots`).
/// Without it the system's scheduler would slice ops into each other, every op's span would
/// stretch by the others' time on its core, and each slice would evict the others' caches.
pub(super) struct Cores {
    turns: u64,
    /// Tickets issued and turns given back: ticket `t` runs once `t < given_back + turns`.
    state: Mutex<(u64, u64)>,
    changed: Condvar,
}

impl Cores {
    pub(super) fn new(turns: u32) -> Self {
        Cores {
            turns: u64::from(turns.max(1)),
            state: Mutex::new((0, 0)),
            changed: Condvar::new(),
        }
    }

    /// Waits for a turn, behind every worker that asked before; the turn ends when the
    /// returned value is dropped.
    pub(super) fn take(self: &Arc<Self>) -> Turn {
        let mut state = self
            .state
            .lock()
            .expect("no worker panics holding the lock");
        let ticket = state.0;
        state.0 += 1;
        while ticket >= state.1 + self.turns {
            state = self
                .changed
                .wait(state)
                .expect("no worker panics holding the lock");
        }
        Turn(Arc::clone(self))
    }
}

/// A worker's turn on the shared cores ([`Cores::take`]), given back when dropped (a worker
/// that fails mid-op gives it back as it unwinds its state).
pub(super) struct Turn(Arc<Cores>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.1 += 1;
        }
        self.0.changed.notify_all();
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Never more than `turns` holders at once, and every one of them gets its turn.
    #[test]
    fn turns_bound_the_ops_at_once() {
        let cores = Arc::new(Cores::new(2));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..5 {
                let (cores, now, most, done) = (&cores, &now, &most, &done);
                scope.spawn(move || {
                    for _ in 0..20 {
                        let turn = cores.take();
                        let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(held, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        now.fetch_sub(1, Ordering::SeqCst);
                        drop(turn);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!(most.load(Ordering::SeqCst), 2, "two turns, five workers");
    }

    /// A worker that asks while every turn is held waits for one to be given back, and turns
    /// go in the order they were asked for.
    #[test]
    fn turns_go_first_come_first_served() {
        let cores = Arc::new(Cores::new(1));
        let order = Mutex::new(Vec::new());
        let first = cores.take();
        std::thread::scope(|scope| {
            for who in 0..3 {
                let (cores, order) = (&cores, &order);
                scope.spawn(move || {
                    let _turn = cores.take();
                    order.lock().unwrap().push(who);
                });
                // Asked in this order: each waits behind the held turn.
                while cores.state.lock().unwrap().0 < who + 2 {
                    std::thread::yield_now();
                }
            }
            assert!(order.lock().unwrap().is_empty(), "the turn is still held");
            drop(first);
        });
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }
}
