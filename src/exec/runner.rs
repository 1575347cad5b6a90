//! The real executor: one worker thread per schedule device, interpreting its op list; hand-offs
//! move over channels; every op is timed into the same `Trace` type the simulator produces.
//!
//! Backward across a stage boundary: a stage's input is a leaf `Var`; `B(c, s)` back-propagates
//! `(out * grad_out.detach()).sum_all()` (the last stage its chunk's share of the loss) and sends
//! the input's gradient upstream. Gradients of a stage's parameters are summed over its chunks
//! and applied by `U` with Adam. Chunk losses are normalised by the whole training set, so a
//! pipeline of one chunk computes exactly the full-batch loss.
//!
//! GNNPipe (halo `stale`): each stage keeps, for each layer it owns whose input is not the
//! features, a history of that input for every vertex. A chunk writes its own rows into it as
//! they are computed and reads its neighbours' rows from it: rows of chunks before it were
//! written this epoch (fresh), rows of later chunks hold the previous epoch's values (stale;
//! zeros in the first epoch). Cross-chunk gradients follow GNNPipe's `backward` knob: `drop`
//! reads neighbours as constants; `exact` reads fresh rows as leaves, adds their gradient into a
//! per-layer buffer, and lets each chunk's backward add its rows' buffered gradient (complete,
//! since exact runs backwards in reverse chunk order behind a barrier); `deferred` does the same
//! for every neighbour row but applies the buffer one epoch late, as PipeGCN.
//!
//! Graph parallelism ([`DataFlow::GraphParallel`]) runs in [`crate::exec::parallel`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};

use super::data::{ChunkPlan, Needs, NodeData, PlanShape};
use super::device::{synchronize, Compute};
use super::layers::{cross_entropy, ExecLayer, StageInput, StageModel, Training};
use super::memory;
use super::optim::{Adam, AdamConfig};
use super::sparse::SparseMatrix;
use super::ExecError;
use crate::gnn::{GnnModel, Halo};
use crate::graph::rng::Rng;
use crate::graph::Csr;
use crate::network::Network;
use crate::scenario::Activation;
use crate::schedule::lower::{for_each_handoff, Payload};
use crate::schedule::{BackwardSync, DataFlow, Op, OpKind, Schedule};
use crate::trace::{
    MemoryCategory, MemoryEvent, Span, SpanKind, Trace, TraceDevice, TraceLink, TraceSource,
};

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Epochs to run.
    pub epochs: u32,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Dropout probability.
    pub dropout: f64,
    /// Dropout on GAT's attention coefficients.
    pub attention_dropout: f64,
    /// The non-linearity between layers.
    pub activation: Activation,
    /// Seed of the initial weights and the dropout masks.
    pub seed: u64,
}

/// What happens to gradients that cross chunks (GNNPipe's `backward` knob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrossChunk {
    /// Neighbour rows are constants.
    #[default]
    Drop,
    /// Applied one epoch late (PipeGCN).
    Deferred,
    /// Applied in the same epoch.
    Exact,
}

/// One epoch's loss and accuracies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Training loss (mean over training vertices).
    pub loss: f64,
    /// Accuracy on the training split.
    pub train_accuracy: f64,
    /// Accuracy on the validation split.
    pub val_accuracy: f64,
    /// Accuracy on the test split.
    pub test_accuracy: f64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Per epoch.
    pub epochs: Vec<EpochStats>,
    /// Each epoch's measured trace.
    pub traces: Vec<Trace>,
    /// Whether the traces carry measured memory (the counting allocator is installed).
    pub memory_measured: bool,
}

impl RunResult {
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

/// A progress callback: an epoch's figures and the number of epochs.
pub type Progress<'a> = dyn Fn(&EpochStats, u32) + Sync + 'a;

/// Everything one run reads.
pub struct ExecInput<'a> {
    /// The schedule.
    pub schedule: &'a Schedule,
    /// Schedule device -> network device.
    pub placement: &'a [usize],
    /// Names and capacities of the network's devices, for the trace.
    pub devices: Vec<TraceDevice>,
    /// Links, for transfer spans and link emulation.
    pub network: &'a Network,
    /// The model with resolved widths.
    pub model: &'a GnnModel,
    /// Layers of each stage (pipelines).
    pub stage_layers: &'a [Range<usize>],
    /// The graph.
    pub graph: &'a Csr,
    /// Each vertex's chunk (or partition).
    pub part: &'a [u32],
    /// The halo rule: drop, exact, stale (GNNPipe), or a graph-parallel exchange.
    pub halo: Halo,
    /// GNNPipe's cross-chunk gradients.
    pub cross_chunk: CrossChunk,
    /// Features, labels, splits.
    pub data: &'a NodeData,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// The candle device of each worker (schedule device).
    pub compute: &'a Compute,
    /// Threads each stage worker computes with (1 emulates one CPU core per device).
    pub threads_per_device: usize,
    /// Pace transfers to the links' latency and bandwidth.
    pub emulate_links: bool,
    /// Called after every epoch with its figures and the number of epochs (progress display).
    pub progress: Option<&'a Progress<'a>>,
}

impl ExecInput<'_> {
    /// Each chunk's vertices, ascending.
    pub(super) fn members(&self) -> Vec<Vec<u32>> {
        let mut members = vec![Vec::new(); self.schedule.n_chunks() as usize];
        for (v, &c) in self.part.iter().enumerate() {
            members[c as usize].push(v as u32);
        }
        members
    }

    /// The plan of `chunk` for `layers` under the run's halo rule.
    pub(super) fn plan(&self, vertices: Vec<u32>, layers: Range<usize>) -> ChunkPlan {
        let shape = PlanShape {
            layers,
            n_layers: self.model.layers.len(),
            needs: Needs::of(self.model),
        };
        match self.halo {
            Halo::Drop => ChunkPlan::induced(self.graph, vertices, &shape),
            Halo::Exact => ChunkPlan::receptive_field(self.graph, vertices, &shape),
            Halo::Stale | Halo::Exchange | Halo::Broadcast => {
                ChunkPlan::neighbours(self.graph, vertices, self.part, &shape)
            }
        }
    }

    /// Every stage's layers, initialised from one seeded stream layer by layer, so the initial
    /// weights do not depend on the split.
    pub(super) fn build_model(&self, device: &Device) -> candle_core::Result<Vec<ExecLayer>> {
        let mut rng = Rng::new(self.config.seed);
        self.model
            .layers
            .iter()
            .map(|layer| ExecLayer::new(layer, &mut rng, device))
            .collect()
    }

    pub(super) fn stage_model(&self, layers: Vec<ExecLayer>, range: &Range<usize>) -> StageModel {
        StageModel {
            layers,
            first_layer: range.start,
            is_last: range.end == self.model.layers.len(),
            dropout: self.config.dropout,
            attention_dropout: self.config.attention_dropout,
            activation: self.config.activation,
        }
    }

    pub(super) fn trace_links(&self) -> Vec<TraceLink> {
        self.network
            .links()
            .iter()
            .map(|l| TraceLink {
                from: self.network.node_name(l.from).to_string(),
                to: self.network.node_name(l.to).to_string(),
            })
            .collect()
    }
}

/// A tensor handed from one op to another.
pub(super) struct Message {
    pub payload: Payload,
    pub to: Op,
    /// For graph parallelism: the partition that sent it.
    pub from_chunk: u32,
    pub tensor: Tensor,
    /// When it may be used (link emulation).
    pub arrival: Instant,
}

/// What a worker reports after each epoch.
pub(super) struct EpochReport {
    pub device: usize,
    pub spans: Vec<Span>,
    pub memory: Vec<MemoryEvent>,
    /// Per stage the worker owns (graph parallelism: one replica, stage 0): its parameters.
    pub params: Vec<(u32, Vec<Tensor>)>,
    pub loss: f64,
}

/// A barrier that can be called off: once any party aborts, every wait returns an error, so a
/// failing worker cannot leave the others waiting for it.
pub(super) struct Rendezvous {
    parties: usize,
    state: Mutex<(usize, u64)>,
    turn: Condvar,
    aborted: AtomicBool,
}

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Rendezvous {
            parties,
            state: Mutex::new((0, 0)),
            turn: Condvar::new(),
            aborted: AtomicBool::new(false),
        }
    }

    /// Waits for every party; an error if the run was aborted.
    pub(super) fn wait(&self) -> candle_core::Result<()> {
        let mut state = self.state.lock().expect("no party panics holding the lock");
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1);
            self.turn.notify_all();
        } else {
            while state.1 == generation && !self.is_aborted() {
                state = self
                    .turn
                    .wait_timeout(state, Duration::from_millis(20))
                    .expect("no party panics holding the lock")
                    .0;
            }
        }
        if self.is_aborted() {
            candle_core::bail!("the run was stopped");
        }
        Ok(())
    }

    /// Calls the run off.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.turn.notify_all();
    }

    pub(super) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }
}

/// What the workers share with the coordinating thread.
pub(super) struct Shared {
    pub senders: Vec<Sender<Message>>,
    pub report: Sender<Result<EpochReport, String>>,
    /// Workers and the coordinator meet here before every epoch.
    pub start: Arc<Rendezvous>,
    pub epoch_start: Arc<Mutex<Instant>>,
    /// Per directed link, when it is free again (ns after the epoch's start), for emulation.
    pub link_free: Arc<Mutex<Vec<u64>>>,
    /// Graph parallelism's all-reduce.
    pub board: Arc<super::parallel::Board>,
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Shared {
            senders: self.senders.clone(),
            report: self.report.clone(),
            start: self.start.clone(),
            epoch_start: self.epoch_start.clone(),
            link_free: self.link_free.clone(),
            board: self.board.clone(),
        }
    }
}

/// Trains for `config.epochs` epochs on the input's devices and measures every op.
pub fn run(input: &ExecInput<'_>) -> Result<RunResult, ExecError> {
    let schedule = input.schedule;
    if schedule.has_split_backward() {
        return Err(ExecError::Unsupported(
            "split backwards (I and W ops) are simulated but not yet run by the executor".into(),
        ));
    }
    let memory_measured = memory::available() || input.compute.is_cuda();
    let n_devices = schedule.n_devices();
    let (senders, receivers): (Vec<Sender<Message>>, Vec<Receiver<Message>>) =
        (0..n_devices).map(|_| channel()).unzip();
    let (report_tx, report_rx) = channel::<Result<EpochReport, String>>();
    let shared = Shared {
        senders,
        report: report_tx,
        start: Arc::new(Rendezvous::new(n_devices + 1)),
        epoch_start: Arc::new(Mutex::new(Instant::now())),
        link_free: Arc::new(Mutex::new(vec![0; input.network.links().len()])),
        board: Arc::new(super::parallel::Board::new(n_devices)),
    };
    let evaluator = Evaluator::new(input);
    let mut result = RunResult {
        epochs: Vec::new(),
        traces: Vec::new(),
        memory_measured,
    };
    let graph_parallel = matches!(schedule.flow(), DataFlow::GraphParallel { .. });
    std::thread::scope(|scope| -> Result<(), ExecError> {
        for (d, inbox) in receivers.into_iter().enumerate() {
            let slot = memory::take_slot();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(input.threads_per_device)
                .start_handler(move |_| memory::enter(slot))
                .build()
                .map_err(|e| ExecError::Failed(format!("cannot start a worker pool: {e}")))?;
            let shared = shared.clone();
            // Each worker's candle ops run on a pool of its own, one thread per core of a
            // `cpu-core` device, so stages run side by side as the devices they stand for.
            scope.spawn(move || {
                pool.install(|| {
                    let (failed, start) = (shared.report.clone(), shared.start.clone());
                    let outcome = if graph_parallel {
                        super::parallel::work(input, d, slot, inbox, shared)
                    } else {
                        work(input, d, slot, inbox, shared)
                    };
                    if let Err(err) = outcome {
                        if !start.is_aborted() {
                            let _ = failed.send(Err(err.to_string()));
                        }
                        start.abort();
                    }
                })
            });
        }
        let Shared {
            report: report_tx,
            start,
            epoch_start,
            ..
        } = shared;
        drop(report_tx);
        for epoch in 1..=input.config.epochs {
            *epoch_start
                .lock()
                .expect("no worker panics holding the lock") = Instant::now();
            if start.wait().is_err() {
                return Err(failure(&report_rx));
            }
            let mut reports = Vec::new();
            for _ in 0..n_devices {
                match report_rx.recv() {
                    Ok(Ok(report)) => reports.push(report),
                    Ok(Err(message)) => {
                        start.abort();
                        return Err(ExecError::Failed(message));
                    }
                    Err(_) => return Err(ExecError::Failed("a worker stopped".into())),
                }
            }
            reports.sort_by_key(|r| r.device);
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

/// Accuracy after each epoch: the model's forward with dropout off, over the chunks' induced
/// subgraphs for halo `drop` (how such a pipeline infers) and over the whole graph otherwise.
struct Evaluator {
    plans: Vec<ChunkPlan>,
    features: Vec<SparseMatrix>,
}

impl Evaluator {
    fn new(input: &ExecInput<'_>) -> Self {
        let all = 0..input.model.layers.len();
        let plans: Vec<ChunkPlan> = match input.halo {
            Halo::Drop => input
                .members()
                .into_iter()
                .map(|vertices| input.plan(vertices, all.clone()))
                .collect(),
            _ => {
                let everyone: Vec<u32> = (0..input.graph.n_nodes() as u32).collect();
                let shape = PlanShape {
                    layers: all.clone(),
                    n_layers: all.end,
                    needs: Needs::of(input.model),
                };
                let zeros = vec![0; input.graph.n_nodes()];
                vec![ChunkPlan::neighbours(input.graph, everyone, &zeros, &shape)]
            }
        };
        let features = plans
            .iter()
            .map(|p| input.data.feature_rows(&p.layer(0).read))
            .collect();
        Evaluator { plans, features }
    }

    fn accuracy(
        &self,
        input: &ExecInput<'_>,
        params: &BTreeMap<u32, Vec<Tensor>>,
    ) -> candle_core::Result<(f64, f64, f64)> {
        let device = Device::Cpu;
        let layers = input.build_model(&device)?;
        let all = 0..input.model.layers.len();
        let model = input.stage_model(layers, &all);
        let vars = model.vars();
        let values: Vec<&Tensor> = params.values().flatten().collect();
        if values.len() != vars.len() {
            candle_core::bail!(
                "the workers reported {} parameters for a model of {}",
                values.len(),
                vars.len()
            );
        }
        for (var, value) in vars.iter().zip(values) {
            var.set(value)?;
        }
        let mut predicted = vec![u32::MAX; input.data.labels.len()];
        for (plan, features) in self.plans.iter().zip(&self.features) {
            let mut h = StageInput::Sparse(features.clone());
            let mut logits = None;
            for l in all.clone() {
                let graph = plan.layer(l);
                let out = model.layer_forward(
                    l,
                    h,
                    graph,
                    graph.attention.as_ref().map(|a| &a.edges),
                    None,
                )?;
                h = StageInput::Dense(out.clone());
                logits = Some(out);
            }
            let classes = logits
                .expect("a model has a layer")
                .argmax(1)?
                .to_vec1::<u32>()?;
            for (&v, class) in plan.vertices.iter().zip(classes) {
                predicted[v as usize] = class;
            }
        }
        let accuracy = |split: &[u32]| {
            let correct = split
                .iter()
                .filter(|&&v| {
                    i64::from(predicted[v as usize]) == i64::from(input.data.labels[v as usize])
                })
                .count();
            correct as f64 / split.len().max(1) as f64
        };
        Ok((
            accuracy(&input.data.train),
            accuracy(&input.data.val),
            accuracy(&input.data.test),
        ))
    }
}

/// An `N x width` buffer of rows (history, cross-chunk gradients).
pub(super) struct Rows {
    width: usize,
    data: Vec<f32>,
}

impl Rows {
    pub(super) fn zeros(n: usize, width: usize) -> Self {
        Rows {
            width,
            data: vec![0.0; n * width],
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        4 * self.data.len() as u64
    }

    pub(super) fn clear(&mut self) {
        self.data.fill(0.0);
    }

    /// `rows[i] = t[i]`.
    pub(super) fn write(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            self.data[v as usize * self.width..][..self.width]
                .copy_from_slice(&values[i * self.width..][..self.width]);
        }
        Ok(())
    }

    /// `rows[i] += t[i]`.
    pub(super) fn add(&mut self, rows: &[u32], t: &Tensor) -> candle_core::Result<()> {
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        for (i, &v) in rows.iter().enumerate() {
            let dst = &mut self.data[v as usize * self.width..][..self.width];
            for (d, s) in dst.iter_mut().zip(&values[i * self.width..][..self.width]) {
                *d += s;
            }
        }
        Ok(())
    }

    /// The rows as a `(rows.len(), width)` tensor on `device`.
    pub(super) fn read(&self, rows: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let mut values = Vec::with_capacity(rows.len() * self.width);
        for &v in rows {
            values.extend_from_slice(&self.data[v as usize * self.width..][..self.width]);
        }
        Tensor::from_vec(values, (rows.len(), self.width), device)
    }
}

/// A worker's memory as it evolves through an epoch: the buffers it knows exactly, the received
/// data waiting to be used, and (from the allocator, or the GPU's used bytes) activations as the
/// rest.
pub(super) struct Ledger {
    slot: usize,
    /// On a GPU: what the device reports.
    gpu: Option<memory::DeviceMeter>,
    device: u32,
    known: [i64; MemoryCategory::ALL.len()],
    /// Allocated bytes at the epoch's start beyond the known buffers.
    workspace: i64,
    pub events: Vec<MemoryEvent>,
}

impl Ledger {
    pub(super) fn new(slot: usize, device: u32, gpu: Option<memory::DeviceMeter>) -> Self {
        Ledger {
            slot,
            gpu,
            device,
            known: [0; MemoryCategory::ALL.len()],
            workspace: 0,
            events: Vec::new(),
        }
    }

    fn emit(&mut self, time_ns: u64, category: MemoryCategory, delta_bytes: i64) {
        if delta_bytes != 0 {
            self.events.push(MemoryEvent {
                device: self.device,
                time_ns,
                category,
                delta_bytes,
            });
        }
    }

    /// Starts an epoch with the resident buffers: everything else allocated now is workspace.
    pub(super) fn start(&mut self, resident: &[(MemoryCategory, u64)]) -> candle_core::Result<()> {
        self.events.clear();
        self.known = [0; MemoryCategory::ALL.len()];
        for &(category, bytes) in resident {
            self.known[category.index()] += bytes as i64;
        }
        let explained: i64 = self.known.iter().sum();
        let live = match self.gpu.as_mut() {
            Some(gpu) => gpu.start(explained)?,
            None => {
                memory::take_peak(self.slot);
                memory::current(self.slot)
            }
        };
        self.workspace = (live - explained).max(0);
        self.known[MemoryCategory::Workspace.index()] = self.workspace;
        for category in MemoryCategory::ALL {
            let bytes = self.known[category.index()];
            self.emit(0, category, bytes);
        }
        Ok(())
    }

    /// A known buffer changed size.
    pub(super) fn change(&mut self, time_ns: u64, category: MemoryCategory, delta: i64) {
        self.known[category.index()] += delta;
        self.emit(time_ns, category, delta);
    }

    /// An op starts on `device` once its queued work is done: samples the memory it starts
    /// from and returns the start (`epoch_start` is time 0 of the memory events).
    pub(super) fn op_starts(
        &mut self,
        device: &Device,
        epoch_start: Instant,
    ) -> candle_core::Result<Instant> {
        synchronize(device)?;
        let began = Instant::now();
        if let Some(gpu) = self.gpu.as_mut() {
            gpu.mark()?;
        }
        self.sample(began.duration_since(epoch_start).as_nanos() as u64)?;
        Ok(began)
    }

    /// Samples the allocator (or the GPU): activations are what it holds beyond everything
    /// known. The allocator's peak since the last sample, if higher, shows as workspace one
    /// nanosecond long.
    pub(super) fn sample(&mut self, time_ns: u64) -> candle_core::Result<()> {
        let (live, peak) = match self.gpu.as_mut() {
            Some(gpu) => {
                let live = gpu.live()?;
                (live, live)
            }
            None => (memory::current(self.slot), memory::take_peak(self.slot)),
        };
        let activations = MemoryCategory::Activations.index();
        let others: i64 = self
            .known
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != activations)
            .map(|(_, b)| b)
            .sum();
        let now = (live - others).max(0);
        // What an op allocated and freed again before its end (its temporaries) is workspace
        // for that moment.
        let spike = (peak - live).max(0);
        if spike > 0 && time_ns > 0 {
            self.emit(time_ns - 1, MemoryCategory::Workspace, spike);
            self.emit(time_ns, MemoryCategory::Workspace, -spike);
        }
        let delta = now - self.known[activations];
        self.change(time_ns, MemoryCategory::Activations, delta);
        Ok(())
    }
}

/// Sends `tensor` for hand-off `(payload, to)` from this worker; with link emulation the message
/// may be used only once the route has carried it, links queueing first-in first-out. Returns
/// the transfer spans.
#[allow(clippy::too_many_arguments)]
pub(super) fn send(
    input: &ExecInput<'_>,
    shared: &Shared,
    from_device: usize,
    from_chunk: u32,
    payload: Payload,
    to: Op,
    tensor: Tensor,
    start: Instant,
) -> Vec<Span> {
    let schedule = input.schedule;
    let receiver = schedule.device_of(to);
    let (src, dst) = (input.placement[from_device], input.placement[receiver]);
    let now = start.elapsed().as_nanos() as u64;
    let bytes = (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
    let route = input.network.route(src, dst);
    let (begin, end) = if input.emulate_links && src != dst {
        let mut free = shared
            .link_free
            .lock()
            .expect("no worker panics holding the lock");
        let begin = route.links.iter().map(|&l| free[l]).fold(now, u64::max);
        let end = begin + route.transfer_ns(bytes);
        for &l in &route.links {
            free[l] = end;
        }
        (begin, end)
    } else {
        (now, now)
    };
    let spans = route
        .links
        .iter()
        .enumerate()
        .map(|(hop, &link)| Span {
            kind: SpanKind::Transfer(payload),
            hop: hop as u16,
            lane_index: link as u32,
            chunk: to.chunk,
            stage: to.stage,
            device: dst as u32,
            start_ns: begin,
            end_ns: end,
            bytes,
            requested_ns: now,
        })
        .collect();
    let _ = shared.senders[receiver].send(Message {
        payload,
        to,
        from_chunk,
        tensor: tensor.detach(),
        arrival: start + Duration::from_nanos(end),
    });
    spans
}

/// Received messages waiting for the op they are addressed to.
pub(super) struct Inbox {
    channel: Receiver<Message>,
    /// The receiving worker's device.
    device: Device,
    abort: Arc<Rendezvous>,
    /// (payload, to, from chunk) -> (tensor, arrival, bytes).
    pending: BTreeMap<(Payload, Op, u32), (Tensor, Instant)>,
}

impl Inbox {
    pub(super) fn new(channel: Receiver<Message>, abort: Arc<Rendezvous>, device: Device) -> Self {
        Inbox {
            channel,
            device,
            abort,
            pending: BTreeMap::new(),
        }
    }

    fn keep(
        &mut self,
        message: Message,
        ledger: &mut Ledger,
        now_ns: u64,
    ) -> candle_core::Result<()> {
        // The receiver holds its own copy, as after a transfer between devices: on another
        // GPU (or another stream of the same one) a device-to-device copy on the receiver's
        // stream.
        let tensor = if message.tensor.device().same_device(&self.device) {
            message.tensor.copy()?
        } else {
            message.tensor.to_device(&self.device)?
        };
        let bytes = (tensor.elem_count() * 4) as i64;
        ledger.change(now_ns, MemoryCategory::Communication, bytes);
        self.pending.insert(
            (message.payload, message.to, message.from_chunk),
            (tensor, message.arrival),
        );
        Ok(())
    }

    /// Takes in whatever has arrived, without waiting.
    pub(super) fn drain(&mut self, ledger: &mut Ledger, now_ns: u64) -> candle_core::Result<()> {
        while let Ok(message) = self.channel.try_recv() {
            self.keep(message, ledger, now_ns)?;
        }
        Ok(())
    }

    /// Waits until the message `key` has been received.
    pub(super) fn wait_for(
        &mut self,
        key: (Payload, Op, u32),
        ledger: &mut Ledger,
        start: Instant,
    ) -> candle_core::Result<()> {
        // Spin a little before blocking: a device polling for its input picks it up within a
        // microsecond, where a blocked thread takes tens of microseconds to wake, and the
        // worker's core has nothing else to do meanwhile.
        let spin_until = Instant::now() + Duration::from_micros(500);
        while !self.pending.contains_key(&key) && Instant::now() < spin_until {
            match self.channel.try_recv() {
                Ok(message) => {
                    let now = start.elapsed().as_nanos() as u64;
                    self.keep(message, ledger, now)?;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        while !self.pending.contains_key(&key) {
            match self.channel.recv_timeout(Duration::from_millis(20)) {
                Ok(message) => {
                    let now = start.elapsed().as_nanos() as u64;
                    self.keep(message, ledger, now)?;
                }
                Err(RecvTimeoutError::Timeout) if !self.abort.is_aborted() => {}
                Err(_) => candle_core::bail!("the run was stopped"),
            }
        }
        Ok(())
    }

    /// Waits for message `key` and its emulated arrival, and hands it over: from now on it is
    /// the consuming op's.
    pub(super) fn take(
        &mut self,
        key: (Payload, Op, u32),
        ledger: &mut Ledger,
        start: Instant,
    ) -> candle_core::Result<Tensor> {
        self.wait_for(key, ledger, start)?;
        let (tensor, arrival) = self.pending.remove(&key).expect("waited for above");
        wait_until(arrival);
        let now = start.elapsed().as_nanos() as u64;
        ledger.change(
            now,
            MemoryCategory::Communication,
            -((tensor.elem_count() * 4) as i64),
        );
        Ok(tensor)
    }
}

/// Sleeps (then spins) until `moment`.
fn wait_until(moment: Instant) {
    loop {
        let now = Instant::now();
        if now >= moment {
            return;
        }
        let left = moment - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

pub(super) fn compute_span(op: Op, device: u32, start_ns: u64, end_ns: u64) -> Span {
    Span {
        kind: SpanKind::Compute(op.kind),
        hop: 0,
        lane_index: device,
        chunk: op.chunk,
        stage: op.stage,
        device,
        start_ns,
        end_ns,
        bytes: 0,
        requested_ns: start_ns,
    }
}

/// Gradient of `var` in `grads`, zeros when it did not take part. Detached: a gradient computed
/// from tracked tensors carries their graph, which would otherwise live on in the optimizer's
/// moments, epoch after epoch.
pub(super) fn grad_of(
    grads: &candle_core::backprop::GradStore,
    var: &Var,
) -> candle_core::Result<Tensor> {
    match grads.get(var.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => var.as_tensor().detach().zeros_like(),
    }
}

/// `summed` (none before the first backward since a step) plus each variable's gradient in
/// `store`.
pub(super) fn accumulate(
    summed: Option<Vec<Tensor>>,
    store: &candle_core::backprop::GradStore,
    vars: &[Var],
) -> candle_core::Result<Vec<Tensor>> {
    let mut summed = summed.unwrap_or_default();
    for (i, var) in vars.iter().enumerate() {
        let g = grad_of(store, var)?;
        if summed.len() <= i {
            summed.push(g);
        } else {
            summed[i] = (&summed[i] + g)?;
        }
    }
    Ok(summed)
}

/// Bytes of f32 tensors.
pub(super) fn bytes_of<'t>(tensors: impl IntoIterator<Item = &'t Tensor>) -> i64 {
    tensors
        .into_iter()
        .map(|t| (t.elem_count() * 4) as i64)
        .sum()
}

/// What a chunk's forward leaves for its backward.
struct Stashed {
    /// The stage input, when it came from another stage.
    leaf: Option<Var>,
    /// Each owned layer's output (own rows for GNNPipe).
    outputs: Vec<Tensor>,
    /// Neighbour rows read with gradient: (layer, leaf, their vertices).
    halo: Vec<(usize, Var, Vec<u32>)>,
}

/// One stage a worker owns.
struct Stage {
    index: u32,
    layers: Range<usize>,
    model: StageModel,
    adam: Adam,
    plans: Vec<ChunkPlan>,
    /// First stage: each chunk's input features.
    features: Vec<SparseMatrix>,
    /// Last stage: each chunk's training rows (local index, label).
    train_rows: Vec<Vec<(u32, u32)>>,
    /// GNNPipe: per owned layer whose input is not the features.
    history: BTreeMap<usize, Rows>,
    /// Cross-chunk gradients being gathered this epoch.
    grad_now: BTreeMap<usize, Rows>,
    /// Deferred: last epoch's, applied this epoch.
    grad_prev: BTreeMap<usize, Rows>,
    /// Summed parameter gradients since the last step.
    grads: Option<Vec<Tensor>>,
    stash: BTreeMap<u32, Stashed>,
}

impl Stage {
    fn resident(&self) -> Vec<(MemoryCategory, u64)> {
        let params: u64 = self
            .model
            .vars()
            .iter()
            .map(|v| 4 * v.as_tensor().elem_count() as u64)
            .sum();
        let rows = |map: &BTreeMap<usize, Rows>| map.values().map(Rows::bytes).sum::<u64>();
        vec![
            (MemoryCategory::Parameters, params),
            (MemoryCategory::OptimizerState, 2 * params),
            (
                MemoryCategory::Features,
                self.features.iter().map(super::data::sparse_bytes).sum(),
            ),
            (
                MemoryCategory::Graph,
                self.plans.iter().map(ChunkPlan::bytes).sum(),
            ),
            (MemoryCategory::History, rows(&self.history)),
            (
                MemoryCategory::DeferredGradients,
                rows(&self.grad_now) + rows(&self.grad_prev),
            ),
        ]
    }
}

fn build_stage(input: &ExecInput<'_>, s: u32, device: &Device) -> candle_core::Result<Stage> {
    let range = input.stage_layers[s as usize].clone();
    let layers: Vec<ExecLayer> = input
        .build_model(device)?
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .collect();
    let model = input.stage_model(layers, &range);
    let adam = Adam::new(
        model.vars(),
        AdamConfig::new(input.config.lr, input.config.weight_decay),
    )?;
    let plans: Vec<ChunkPlan> = input
        .members()
        .into_iter()
        .map(|vertices| input.plan(vertices, range.clone()))
        .collect();
    let features = if range.start == 0 {
        plans
            .iter()
            .map(|p| input.data.feature_rows(&p.layer(0).read))
            .collect()
    } else {
        Vec::new()
    };
    let train_rows = if model.is_last {
        plans
            .iter()
            .map(|plan| {
                input
                    .data
                    .train
                    .iter()
                    .filter_map(|&v| {
                        plan.vertices
                            .binary_search(&v)
                            .ok()
                            .map(|local| (local as u32, input.data.labels[v as usize] as u32))
                    })
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    let n = input.graph.n_nodes();
    let stale = input.halo == Halo::Stale;
    let buffered: Vec<(usize, usize)> = range
        .clone()
        .filter(|&l| stale && l > 0)
        .map(|l| (l, input.model.layers[l].d_in as usize))
        .collect();
    let buffers = |on: bool| -> BTreeMap<usize, Rows> {
        buffered
            .iter()
            .filter(|_| on)
            .map(|&(l, d)| (l, Rows::zeros(n, d)))
            .collect()
    };
    Ok(Stage {
        index: s,
        history: buffers(true),
        grad_now: buffers(input.cross_chunk != CrossChunk::Drop),
        grad_prev: buffers(input.cross_chunk == CrossChunk::Deferred),
        layers: range,
        model,
        adam,
        plans,
        features,
        train_rows,
        grads: None,
        stash: BTreeMap::new(),
    })
}

/// A pipeline worker: builds its stages in its own thread (so the allocator counts them), then
/// runs its op list every epoch.
fn work(
    input: &ExecInput<'_>,
    device: usize,
    slot: usize,
    inbox: Receiver<Message>,
    shared: Shared,
) -> candle_core::Result<()> {
    let schedule = input.schedule;
    let dev = input.compute.device(device).clone();
    let meter = memory::DeviceMeter::new(&dev, input.compute.is_shared())?;
    let mut stages: BTreeMap<u32, Stage> = BTreeMap::new();
    for s in 0..schedule.n_stages() {
        if schedule.device_of(Op::forward(0, s)) == device {
            stages.insert(s, build_stage(input, s, &dev)?);
        }
    }
    let mut inbox = Inbox::new(inbox, shared.start.clone(), dev.clone());
    let placed = input.placement[device] as u32;
    let mut ledger = Ledger::new(slot, placed, meter);
    let order = &schedule.orders()[device];
    let mut spans: Vec<Span> = Vec::with_capacity(4 * order.len());
    for epoch in 1..=input.config.epochs {
        shared.start.wait()?;
        let start = *shared
            .epoch_start
            .lock()
            .expect("no worker panics holding the lock");
        for stage in stages.values_mut() {
            match input.cross_chunk {
                CrossChunk::Exact => stage.grad_now.values_mut().for_each(Rows::clear),
                CrossChunk::Deferred => {
                    std::mem::swap(&mut stage.grad_now, &mut stage.grad_prev);
                    stage.grad_now.values_mut().for_each(Rows::clear);
                }
                CrossChunk::Drop => {}
            }
        }
        let resident: Vec<(MemoryCategory, u64)> =
            stages.values().flat_map(Stage::resident).collect();
        ledger.start(&resident)?;
        spans.clear();
        let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
        let mut loss_total = 0.0;
        // Stages whose backward barrier has opened this epoch.
        let mut passed = std::collections::BTreeSet::new();
        let training = Training {
            seed: input.config.seed,
            epoch,
        };
        for &op in order {
            inbox.drain(&mut ledger, ns(Instant::now()))?;
            let stage = stages
                .get_mut(&op.stage)
                .expect("the schedule places its stages");
            let mut sends: Vec<(Payload, Op, Tensor)> = Vec::new();
            let began = match op.kind {
                OpKind::InputGrad | OpKind::WeightGrad => {
                    unreachable!("`run` refuses split backwards before any worker starts")
                }
                OpKind::Forward => {
                    let received = if stage.index > 0 {
                        Some(inbox.take((Payload::Activation, op, op.chunk), &mut ledger, start)?)
                    } else {
                        None
                    };
                    let began = ledger.op_starts(&dev, start)?;
                    let out = forward(input, stage, op.chunk, received, training, &dev)?;
                    for_each_handoff(schedule, op, |h| sends.push((h.payload, h.to, out.clone())));
                    began
                }
                OpKind::Backward => {
                    let upstream = if stage.model.is_last {
                        None
                    } else {
                        let barrier = matches!(
                            schedule.flow(),
                            DataFlow::Pipeline {
                                backward: BackwardSync::Barrier,
                                ..
                            }
                        );
                        if barrier && passed.insert(op.stage) {
                            // The barrier: every chunk's gradient from the next stage first.
                            for c in 0..schedule.n_chunks() {
                                let to = Op::backward(c, op.stage);
                                inbox.wait_for((Payload::Gradient, to, c), &mut ledger, start)?;
                            }
                        }
                        Some(inbox.take((Payload::Gradient, op, op.chunk), &mut ledger, start)?)
                    };
                    let began = ledger.op_starts(&dev, start)?;
                    let first = stage.grads.is_none();
                    let (loss, grad_in) = backward(input, stage, op.chunk, upstream, &dev)?;
                    loss_total += loss;
                    if let Some(g) = grad_in {
                        for_each_handoff(schedule, op, |h| {
                            sends.push((h.payload, h.to, g.clone()))
                        });
                    }
                    if first {
                        // The first backward since the last step creates the accumulators.
                        let bytes = bytes_of(stage.grads.iter().flatten());
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, bytes);
                    }
                    began
                }
                OpKind::Optimizer => {
                    let began = ledger.op_starts(&dev, start)?;
                    if let Some(g) = stage.grads.take() {
                        stage.adam.step(&g)?;
                        let bytes = bytes_of(&g);
                        drop(g);
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, -bytes);
                    }
                    began
                }
            };
            // Handing the results on is the device's work too: the span ends after it.
            synchronize(&dev)?;
            for (payload, to, tensor) in sends {
                spans.extend(send(
                    input, &shared, device, op.chunk, payload, to, tensor, start,
                ));
            }
            let ended = Instant::now();
            ledger.sample(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        let params = stages
            .iter()
            .map(|(&s, stage)| stage.model.values().map(|p| (s, p)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let report = EpochReport {
            device,
            spans: spans.clone(),
            memory: std::mem::take(&mut ledger.events),
            params,
            loss: loss_total,
        };
        if shared.report.send(Ok(report)).is_err() {
            return Ok(());
        }
    }
    shared.start.wait()
}

/// `F(c, s)`: the stage's layers over chunk `c`; returns what the next stage receives.
fn forward(
    input: &ExecInput<'_>,
    stage: &mut Stage,
    c: u32,
    received: Option<Tensor>,
    training: Training,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let plan = &stage.plans[c as usize];
    let stale = input.halo == Halo::Stale;
    let leaf = received.map(|t| Var::from_tensor(&t)).transpose()?;
    let mut outputs: Vec<Tensor> = Vec::with_capacity(stage.layers.len());
    let mut halo_leaves = Vec::new();
    for (i, l) in stage.layers.clone().enumerate() {
        let graph = plan.layer(l);
        let own = match (i, &leaf) {
            (0, Some(leaf)) => Some(leaf.as_tensor().clone()),
            (0, None) => None,
            _ => Some(outputs[i - 1].clone()),
        };
        let x = match own {
            None => StageInput::Sparse(stage.features[c as usize].clone()),
            Some(own) if stale => {
                let history = stage
                    .history
                    .get_mut(&l)
                    .expect("a buffer per layer after the first");
                history.write(&plan.vertices, &own)?;
                let halo = graph.halo_rows();
                // Rows of chunks before this one come first (halo rows are ordered by chunk).
                let fresh = halo.partition_point(|&u| input.part[u as usize] < c);
                let with_grad = match input.cross_chunk {
                    CrossChunk::Drop => 0,
                    CrossChunk::Exact => fresh,
                    CrossChunk::Deferred => halo.len(),
                };
                let mut parts = vec![own];
                if with_grad > 0 {
                    let var = Var::from_tensor(&history.read(&halo[..with_grad], device)?)?;
                    parts.push(var.as_tensor().clone());
                    halo_leaves.push((l, var, halo[..with_grad].to_vec()));
                }
                if with_grad < halo.len() {
                    parts.push(history.read(&halo[with_grad..], device)?);
                }
                StageInput::Dense(Tensor::cat(&parts, 0)?)
            }
            Some(own) => StageInput::Dense(own),
        };
        let y = stage.model.layer_forward(
            i,
            x,
            graph,
            graph.attention.as_ref().map(|a| &a.edges),
            Some(training),
        )?;
        outputs.push(y);
    }
    let out = outputs.last().expect("a stage owns a layer").clone();
    stage.stash.insert(
        c,
        Stashed {
            leaf,
            outputs,
            halo: halo_leaves,
        },
    );
    Ok(out)
}

/// `B(c, s)`: back-propagates chunk `c` through the stage; returns its loss share (last stage)
/// and the gradient of its input (later stages).
fn backward(
    input: &ExecInput<'_>,
    stage: &mut Stage,
    c: u32,
    upstream: Option<Tensor>,
    device: &Device,
) -> candle_core::Result<(f64, Option<Tensor>)> {
    let Stashed {
        leaf,
        outputs,
        halo,
    } = stage.stash.remove(&c).ok_or_else(|| {
        candle_core::Error::Msg(format!("B({c},{}) before its forward", stage.index))
    })?;
    let vertices = &stage.plans[c as usize].vertices;
    let out = outputs.last().expect("a stage owns a layer");
    let mut loss = 0.0;
    let mut objective = match upstream {
        None => {
            let l = cross_entropy(
                out,
                &stage.train_rows[c as usize],
                input.data.train.len().max(1),
            )?;
            loss = f64::from(l.to_scalar::<f32>()?);
            l
        }
        Some(grad) => (out * grad.detach())?.sum_all()?,
    };
    // Gradients other chunks' reads left for this chunk's rows at the stage's inner layers.
    let buffered = match input.cross_chunk {
        CrossChunk::Drop => None,
        CrossChunk::Exact => Some(&stage.grad_now),
        CrossChunk::Deferred => Some(&stage.grad_prev),
    };
    if let Some(buffers) = buffered {
        for (i, l) in stage.layers.clone().enumerate().skip(1) {
            if let Some(rows) = buffers.get(&l) {
                let g = rows.read(vertices, device)?;
                objective = (objective + (&outputs[i - 1] * g)?.sum_all()?)?;
            }
        }
    }
    let grads = objective.backward()?;
    let summed = accumulate(stage.grads.take(), &grads, &stage.model.vars())?;
    let grad_in = match leaf {
        None => None,
        Some(leaf) => {
            let mut g = grad_of(&grads, &leaf)?;
            if let Some(rows) = buffered.and_then(|b| b.get(&stage.layers.start)) {
                g = (g + rows.read(vertices, device)?)?;
            }
            Some(g)
        }
    };
    stage.grads = Some(summed);
    // The gradient of the neighbour rows read goes to their chunks' buffers (rows of other
    // chunks than this one, so the order against the read above does not matter).
    for (l, var, rows) in &halo {
        let g = grad_of(&grads, var)?;
        stage
            .grad_now
            .get_mut(l)
            .expect("a gradient buffer per layer read with gradient")
            .add(rows, &g)?;
    }
    Ok((loss, grad_in))
}
