//! The coordinator of a run: it starts one worker thread per schedule device (the pipeline
//! worker, `pipeline`, graph parallelism's, `parallel` for 1D and `replicated` for 1.5D, or
//! GNNPipe's hybrid's, `hybrid`), each with an
//! endpoint of the in-process transport ([`super::transport::channel`]) and a compute pool of
//! its own; it starts every epoch on one clock, gathers the workers' reports into the epoch's
//! measured `Trace` (the type the simulator produces), and evaluates the model after each epoch
//! (`evaluate`).
//!
//! Between processes ([`run_rank`]) every process coordinates its one worker the same way, the
//! workers meet across processes through their transport (`crew`), and rank 0's coordinator
//! receives every rank's report and alone builds the trace and evaluates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::crew::{Cores, Crew, EpochReport};
use super::evaluate::Evaluator;
use super::input::{EpochStats, ExecInput};
use super::memory;
use super::transport::channel::{ChannelTransport, Rendezvous};
use super::transport::handoffs::Waiting;
use super::transport::links::Links;
use super::transport::Transport;
use super::ExecError;
use crate::schedule::lower::Lowered;
use crate::schedule::DataFlow;
use crate::trace::{Trace, TraceSource};

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Per epoch.
    pub epochs: Vec<EpochStats>,
    /// Each epoch's measured trace.
    pub traces: Vec<Trace>,
    /// Whether the traces carry measured memory (the counting allocator is installed).
    pub memory_measured: bool,
    /// Per epoch, a bound on how far apart the ranks' clocks started it: between processes,
    /// the longest any rank waited in the barrier after the one that started the epoch (0
    /// within one process, whose workers share one clock).
    pub clock_skew_ns: Vec<u64>,
}

impl RunResult {
    /// The epochs' traces that time the run: all but the first, which warms caches up, when
    /// there are others.
    pub fn timed_traces(&self) -> &[Trace] {
        match self.traces.as_slice() {
            [_, rest @ ..] if !rest.is_empty() => rest,
            all => all,
        }
    }

    /// Test accuracy at the epoch with the best validation accuracy (the first, on ties).
    pub fn test_at_best_val(&self) -> f64 {
        let mut best = (f64::MIN, 0.0);
        for e in &self.epochs {
            if e.val_accuracy > best.0 {
                best = (e.val_accuracy, e.test_accuracy);
            }
        }
        best.1
    }
}

/// Trains for `config.epochs` epochs on the input's devices and measures every op.
pub fn run(input: &ExecInput<'_>) -> Result<RunResult, ExecError> {
    let stop = Arc::new(AtomicBool::new(false));
    let links = Links {
        network: input.network,
        placement: input.placement,
        emulate: input.emulate_links,
    };
    let transports = ChannelTransport::mesh(input.schedule.n_devices(), links, stop.clone());
    coordinate(input, transports, stop)
}

/// One rank of a run between processes (`transport.across_processes()`): this process trains
/// the schedule device `transport.rank()`, and rank 0 returns the run as [`run`] does; the
/// other ranks return `None`.
pub fn run_rank<T: Transport>(
    input: &ExecInput<'_>,
    transport: T,
) -> Result<Option<RunResult>, ExecError> {
    let n_devices = input.schedule.n_devices();
    if transport.n_ranks() != n_devices || !transport.across_processes() {
        return Err(ExecError::Failed(format!(
            "{} ranks in their own processes run a schedule of {n_devices} devices",
            transport.n_ranks()
        )));
    }
    let root = transport.rank() == 0;
    let result = coordinate(input, vec![transport], Arc::new(AtomicBool::new(false)))?;
    Ok(root.then_some(result))
}

/// Runs a worker per endpoint of `transports` and coordinates them; the trace and the
/// evaluation come from the process that holds rank 0 (every rank's report reaches it).
fn coordinate<T: Transport>(
    input: &ExecInput<'_>,
    transports: Vec<T>,
    stop: Arc<AtomicBool>,
) -> Result<RunResult, ExecError> {
    let schedule = input.schedule;
    let memory_measured = memory::available() || input.compute.is_cuda();
    let n_devices = schedule.n_devices();
    // Both workers read their hand-offs from the one lowering the checker and the simulator
    // read.
    let lowered = Lowered::new(schedule);
    let root = transports.iter().any(|t| t.rank() == 0);
    let n_reports = if root { n_devices } else { 0 };
    let (report_tx, report_rx) = channel::<Result<EpochReport, String>>();
    let across_processes = transports.iter().any(Transport::across_processes);
    let crew = Crew {
        report: report_tx,
        start: Arc::new(Rendezvous::new(transports.len() + 1, stop)),
        epoch_start: Arc::new(Mutex::new(Instant::now())),
        skew_ns: Arc::new(AtomicU64::new(0)),
        waiting: waiting(
            transports.len() * input.threads_per_device,
            across_processes,
        ),
        // Between processes each has cores of its own to the system's scheduler.
        cores: input
            .compute_slots
            .filter(|_| !across_processes)
            .map(|turns| Arc::new(Cores::new(turns))),
    };
    let evaluator = root.then(|| Evaluator::new(input));
    let mut result = RunResult {
        epochs: Vec::new(),
        traces: Vec::new(),
        memory_measured,
        clock_skew_ns: Vec::new(),
    };
    let flow = schedule.flow();
    let lowered = &lowered;
    std::thread::scope(|scope| -> Result<(), ExecError> {
        for mut transport in transports {
            let slot = memory::take_slot();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(input.threads_per_device)
                .start_handler(move |_| memory::enter(slot))
                .build()
                .map_err(|e| ExecError::Failed(format!("cannot start a worker pool: {e}")))?;
            let crew = crew.clone();
            // Each worker's candle ops run on a pool of its own, one thread per core of a
            // `cpu-core` device, so stages run side by side as the devices they stand for.
            scope.spawn(move || {
                pool.install(|| {
                    // The worker's matrix-product buffer, before its first epoch's start.
                    let device = input.compute.device(transport.rank());
                    let outcome =
                        super::device::take_matrix_buffer(device).and_then(|()| match flow {
                            DataFlow::GraphParallel { .. } if input.replication.is_some() => {
                                super::replicated::work(input, lowered, slot, &mut transport, &crew)
                            }
                            DataFlow::GraphParallel { .. } => {
                                super::parallel::work(input, lowered, slot, &mut transport, &crew)
                            }
                            DataFlow::Hybrid { .. } => {
                                super::hybrid::work(input, lowered, slot, &mut transport, &crew)
                            }
                            DataFlow::Pipeline { .. } => {
                                super::pipeline::work(input, lowered, slot, &mut transport, &crew)
                            }
                        });
                    if let Err(err) = outcome {
                        if !crew.start.is_aborted() {
                            let _ = crew.report.send(Err(err.to_string()));
                        }
                        transport.abort();
                        crew.start.abort();
                    }
                })
            });
        }
        let Crew {
            report: report_tx,
            start,
            epoch_start,
            ..
        } = crew;
        drop(report_tx);
        for epoch in 1..=input.config.epochs {
            *epoch_start
                .lock()
                .expect("no worker panics holding the lock") = Instant::now();
            if start.wait().is_err() {
                return Err(failure(&report_rx));
            }
            let mut reports = Vec::new();
            for _ in 0..n_reports {
                match report_rx.recv() {
                    Ok(Ok(report)) => reports.push(report),
                    Ok(Err(message)) => {
                        start.abort();
                        return Err(ExecError::Failed(message));
                    }
                    Err(_) => return Err(ExecError::Failed("a worker stopped".into())),
                }
            }
            let Some(evaluator) = &evaluator else {
                continue;
            };
            reports.sort_by_key(|r| r.device);
            let skew = reports.iter().map(|r| r.clock_skew_ns).max().unwrap_or(0);
            result.clock_skew_ns.push(skew);
            let loss: f64 = reports.iter().map(|r| r.loss).sum();
            if !loss.is_finite() {
                start.abort();
                return Err(ExecError::NotFinite { epoch });
            }
            let params: BTreeMap<u32, Vec<Tensor>> =
                reports.iter().flat_map(|r| r.params.clone()).collect();
            let (train, val, test) = evaluator.accuracy(input, &params).map_err(|e| {
                start.abort();
                ExecError::Failed(e.to_string())
            })?;
            let stats = EpochStats {
                epoch,
                loss,
                train_accuracy: train,
                val_accuracy: val,
                test_accuracy: test,
            };
            if let Some(progress) = input.progress {
                progress(&stats, input.config.epochs);
            }
            result.epochs.push(stats);
            let mut trace = Trace::with_capacity(
                TraceSource::Measured,
                input.devices.clone(),
                input.trace_links(),
                (schedule.n_stages(), schedule.n_chunks()),
                schedule.n_ops(),
            );
            for report in reports {
                trace.spans.extend(report.spans);
                if memory_measured {
                    trace.memory.extend(report.memory);
                }
            }
            trace
                .spans
                .sort_by_key(|s| (s.start_ns, s.end_ns, s.lane_index));
            trace.memory.sort_by_key(|m| (m.time_ns, m.device));
            result.traces.push(trace);
        }
        // Let the workers finish their last wait.
        start.wait().map_err(|_| failure(&report_rx))?;
        Ok(())
    })?;
    Ok(result)
}

/// The first error a worker reported, after an abort.
fn failure(reports: &Receiver<Result<EpochReport, String>>) -> ExecError {
    match reports.recv_timeout(Duration::from_secs(1)) {
        Ok(Err(message)) => ExecError::Failed(message),
        _ => ExecError::Failed("a worker stopped".into()),
    }
}

/// How a worker waits for a hand-off, with `threads` worker threads in this process: it keeps
/// its core and polls while every thread has a core of its own and no other process shares
/// them; else it polls a little (a polling worker picks its input up within a microsecond
/// where a blocked one takes tens of microseconds to wake), and not at all where threads
/// outnumber the cores, where a polling worker would take the core of one that has work.
fn waiting(threads: usize, across_processes: bool) -> Waiting {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match (threads <= cores, across_processes) {
        (true, false) => Waiting::Spin,
        (true, true) => Waiting::Block {
            after: Duration::from_micros(500),
        },
        (false, _) => Waiting::Block {
            after: Duration::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_keeps_its_core_only_when_it_has_one_and_no_other_process_shares_them() {
        assert_eq!(waiting(1, false), Waiting::Spin);
        assert_eq!(
            waiting(1, true),
            Waiting::Block {
                after: Duration::from_micros(500)
            }
        );
        assert_eq!(
            waiting(usize::MAX, false),
            Waiting::Block {
                after: Duration::ZERO
            }
        );
    }
}
