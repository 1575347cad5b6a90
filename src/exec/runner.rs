//! The real executor: one worker thread per schedule device, interpreting its op list; hand-offs
//! move over channels; every op is timed into the same `Trace` type the simulator produces.
//!
//! Backward across a stage boundary: a stage's input is a leaf `Var`; `B(c, s)` back-propagates
//! `(out * grad_out.detach()).sum_all()` (the last stage its chunk's share of the loss) and sends
//! the input's gradient upstream. Gradients of a stage's parameters are summed over its chunks
//! and applied by `U(s)` with Adam. Chunk losses are normalised by the whole training set, so a
//! pipeline of one chunk computes exactly the full-batch loss.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::data::{ChunkGraph, NodeData};
use super::layers::{cross_entropy, ExecLayer, StageInput, StageModel, Training};
use super::optim::{Adam, AdamConfig};
use super::sparse::SparseMatrix;
use super::ExecError;
use crate::gnn::GnnModel;
use crate::graph::rng::Rng;
use crate::network::Network;
use crate::schedule::lower::{for_each_handoff, Payload};
use crate::schedule::{DataFlow, Op, OpKind, Schedule};
use crate::trace::{Span, SpanKind, Trace, TraceDevice, TraceLink, TraceSource};

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
    /// Seed of the initial weights and the dropout masks.
    pub seed: u64,
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

/// Everything one run reads.
pub struct ExecInput<'a> {
    /// The schedule (a pipeline).
    pub schedule: &'a Schedule,
    /// Schedule device -> network device.
    pub placement: &'a [usize],
    /// Names and capacities of the network's devices, for the trace.
    pub devices: Vec<TraceDevice>,
    /// Links, for transfer spans.
    pub network: &'a Network,
    /// The model with resolved widths.
    pub model: &'a GnnModel,
    /// Layers of each stage.
    pub stage_layers: &'a [Range<usize>],
    /// Each chunk's subgraph.
    pub chunks: &'a [ChunkGraph],
    /// Features, labels, splits.
    pub data: &'a NodeData,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Threads each stage worker computes with (1 emulates one CPU core per device).
    pub threads_per_device: usize,
}

enum Message {
    Data {
        payload: Payload,
        to: Op,
        tensor: Tensor,
    },
}

/// What a worker reports after each epoch.
struct EpochReport {
    device: usize,
    spans: Vec<Span>,
    /// Per stage the worker owns: its parameters, in `StageModel::vars` order.
    params: Vec<(u32, Vec<Tensor>)>,
    loss: f64,
}

/// Builds every stage's model from one seeded stream, stage by stage, so the initial weights
/// do not depend on the split.
fn build_stages(input: &ExecInput<'_>, device: &Device) -> Result<Vec<StageModel>, ExecError> {
    let mut rng = Rng::new(input.config.seed);
    let n_layers = input.model.layers.len();
    let mut layers: Vec<ExecLayer> = Vec::new();
    for layer in &input.model.layers {
        layers.push(ExecLayer::new(layer, &mut rng, device).map_err(ExecError::Unsupported)?);
    }
    let mut layers = layers.into_iter();
    Ok(input
        .stage_layers
        .iter()
        .map(|range| StageModel {
            layers: layers.by_ref().take(range.len()).collect(),
            first_layer: range.start,
            is_last: range.end == n_layers,
            dropout: input.config.dropout,
        })
        .collect())
}

/// Trains for `config.epochs` epochs on the CPU and measures every op.
pub fn run(input: &ExecInput<'_>) -> Result<RunResult, ExecError> {
    let schedule = input.schedule;
    if *schedule.flow() != DataFlow::PIPELINE {
        return Err(ExecError::Unsupported(
            "the executor runs GPipe, 1F1B and custom pipelines so far (not GNNPipe's history or graph parallelism)".into(),
        ));
    }
    let device = Device::Cpu;
    let mut stages: Vec<Option<StageModel>> = build_stages(input, &device)?
        .into_iter()
        .map(Some)
        .collect();
    let n_devices = schedule.n_devices();
    let (senders, receivers): (Vec<Sender<Message>>, Vec<Receiver<Message>>) =
        (0..n_devices).map(|_| channel()).unzip();
    let (report_tx, report_rx) = channel::<Result<EpochReport, String>>();
    let barrier = Arc::new(Barrier::new(n_devices));
    let epoch_start = Arc::new(Mutex::new(Instant::now()));
    let n_train = input.data.train.len().max(1);
    let train_rows: Vec<Vec<(u32, u32)>> = input
        .chunks
        .iter()
        .map(|chunk| {
            let mut rows = Vec::new();
            for &v in &input.data.train {
                if let Ok(local) = chunk.vertices.binary_search(&v) {
                    rows.push((local as u32, input.data.labels[v as usize] as u32));
                }
            }
            rows
        })
        .collect();
    let device_features: Vec<SparseMatrix> = input
        .chunks
        .iter()
        .map(|chunk| input.data.feature_rows_sparse(&chunk.vertices))
        .collect();
    let mut result = RunResult {
        epochs: Vec::new(),
        traces: Vec::new(),
    };
    std::thread::scope(|scope| -> Result<(), ExecError> {
        for (d, inbox) in receivers.into_iter().enumerate() {
            let owned: BTreeMap<u32, StageModel> = (0..schedule.n_stages())
                .filter(|&s| schedule.device_of(Op::forward(0, s)) == d)
                .map(|s| {
                    (
                        s,
                        stages[s as usize]
                            .take()
                            .expect("each stage has one device"),
                    )
                })
                .collect();
            let worker = Worker {
                device: d,
                input,
                owned,
                inbox,
                pending: BTreeMap::new(),
                senders: senders.clone(),
                report: report_tx.clone(),
                barrier: barrier.clone(),
                epoch_start: epoch_start.clone(),
                train_rows: &train_rows,
                n_train,
                features: &device_features,
            };
            // Each worker's candle ops run on a pool of its own, one thread per core of a
            // `cpu-core` device, so stages run side by side as the devices they stand for.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(input.threads_per_device)
                .build()
                .map_err(|e| ExecError::Failed(format!("cannot start a worker pool: {e}")))?;
            scope.spawn(move || pool.install(|| worker.run()));
        }
        drop(report_tx);
        for epoch in 1..=input.config.epochs {
            let mut reports = Vec::new();
            for _ in 0..n_devices {
                match report_rx.recv() {
                    Ok(Ok(report)) => reports.push(report),
                    Ok(Err(message)) => return Err(ExecError::Failed(message)),
                    Err(_) => return Err(ExecError::Failed("a worker stopped".into())),
                }
            }
            reports.sort_by_key(|r| r.device);
            let loss: f64 = reports.iter().map(|r| r.loss).sum();
            if !loss.is_finite() {
                return Err(ExecError::NotFinite { epoch });
            }
            let params: BTreeMap<u32, Vec<Tensor>> =
                reports.iter().flat_map(|r| r.params.clone()).collect();
            let (train, val, test) =
                evaluate(input, &params).map_err(|e| ExecError::Failed(e.to_string()))?;
            result.epochs.push(EpochStats {
                epoch,
                loss,
                train_accuracy: train,
                val_accuracy: val,
                test_accuracy: test,
            });
            let mut trace = Trace::with_capacity(
                TraceSource::Measured,
                input.devices.clone(),
                input
                    .network
                    .links()
                    .iter()
                    .map(|l| TraceLink {
                        from: input.network.node_name(l.from).to_string(),
                        to: input.network.node_name(l.to).to_string(),
                    })
                    .collect(),
                (schedule.n_stages(), schedule.n_chunks()),
                schedule.n_ops(),
            );
            for report in reports {
                trace.spans.extend(report.spans);
            }
            trace
                .spans
                .sort_by_key(|s| (s.start_ns, s.end_ns, s.lane_index));
            result.traces.push(trace);
        }
        Ok(())
    })?;
    Ok(result)
}

/// Accuracy on the three splits with the given parameters, through the same chunked forward
/// as training (dropout off).
fn evaluate(
    input: &ExecInput<'_>,
    params: &BTreeMap<u32, Vec<Tensor>>,
) -> candle_core::Result<(f64, f64, f64)> {
    let device = Device::Cpu;
    let mut stages =
        build_stages(input, &device).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for (s, stage) in stages.iter_mut().enumerate() {
        for (var, value) in stage.vars().iter().zip(&params[&(s as u32)]) {
            var.set(value)?;
        }
    }
    let mut predicted = vec![u32::MAX; input.data.labels.len()];
    for chunk in input.chunks {
        let mut h = StageInput::Sparse(input.data.feature_rows_sparse(&chunk.vertices));
        let mut logits = None;
        for stage in &stages {
            let out = stage.forward(h, chunk, None)?;
            h = StageInput::Dense(out.clone());
            logits = Some(out);
        }
        let classes = logits
            .expect("a model has a stage")
            .argmax(1)?
            .to_vec1::<u32>()?;
        for (&v, class) in chunk.vertices.iter().zip(classes) {
            predicted[v as usize] = class;
        }
    }
    let accuracy = |split: &[u32]| {
        let correct = split
            .iter()
            .filter(|&&v| predicted[v as usize] as i64 == i64::from(input.data.labels[v as usize]))
            .count();
        correct as f64 / split.len().max(1) as f64
    };
    Ok((
        accuracy(&input.data.train),
        accuracy(&input.data.val),
        accuracy(&input.data.test),
    ))
}

struct Worker<'a> {
    device: usize,
    input: &'a ExecInput<'a>,
    owned: BTreeMap<u32, StageModel>,
    inbox: Receiver<Message>,
    pending: BTreeMap<(u8, u32, u32), Tensor>,
    senders: Vec<Sender<Message>>,
    report: Sender<Result<EpochReport, String>>,
    barrier: Arc<Barrier>,
    epoch_start: Arc<Mutex<Instant>>,
    train_rows: &'a [Vec<(u32, u32)>],
    n_train: usize,
    /// Each chunk's input features, built once.
    features: &'a [SparseMatrix],
}

fn payload_key(payload: Payload) -> u8 {
    payload as u8
}

impl Worker<'_> {
    fn run(mut self) {
        let mut optimizers: BTreeMap<u32, Adam> = BTreeMap::new();
        for (&s, stage) in &self.owned {
            match Adam::new(
                stage.vars(),
                AdamConfig::new(self.input.config.lr, self.input.config.weight_decay),
            ) {
                Ok(adam) => {
                    optimizers.insert(s, adam);
                }
                Err(e) => {
                    let _ = self.report.send(Err(e.to_string()));
                    return;
                }
            }
        }
        for epoch in 1..=self.input.config.epochs {
            if self.barrier.wait().is_leader() {
                *self
                    .epoch_start
                    .lock()
                    .expect("no worker panics holding the lock") = Instant::now();
            }
            self.barrier.wait();
            let start = *self
                .epoch_start
                .lock()
                .expect("no worker panics holding the lock");
            let report = self
                .epoch(epoch, start, &mut optimizers)
                .map_err(|e| e.to_string());
            let failed = report.is_err();
            if self.report.send(report).is_err() || failed {
                return;
            }
        }
    }

    /// Waits for a hand-off addressed to `to`.
    fn receive(&mut self, payload: Payload, to: Op) -> candle_core::Result<Tensor> {
        let key = (payload_key(payload), to.chunk, to.stage);
        loop {
            if let Some(t) = self.pending.remove(&key) {
                return Ok(t);
            }
            match self.inbox.recv() {
                Ok(Message::Data {
                    payload,
                    to,
                    tensor,
                }) => {
                    self.pending
                        .insert((payload_key(payload), to.chunk, to.stage), tensor);
                }
                Err(_) => candle_core::bail!("a neighbouring stage stopped"),
            }
        }
    }

    fn epoch(
        &mut self,
        epoch: u32,
        start: Instant,
        optimizers: &mut BTreeMap<u32, Adam>,
    ) -> candle_core::Result<EpochReport> {
        let input = self.input;
        let schedule = input.schedule;
        let placed = input.placement[self.device] as u32;
        let mut spans = Vec::new();
        let mut stash: BTreeMap<(u32, u32), (Option<Var>, Tensor)> = BTreeMap::new();
        let mut grads: BTreeMap<u32, Vec<Tensor>> = BTreeMap::new();
        let mut loss_total = 0.0;
        let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
        for &op in &schedule.orders()[self.device] {
            let (c, s) = (op.chunk, op.stage);
            let chunk = &input.chunks[c as usize];
            let began = Instant::now();
            let mut sends: Vec<(Payload, Op, Tensor)> = Vec::new();
            match op.kind {
                OpKind::Forward => {
                    let (leaf, x) = if s == 0 {
                        (None, StageInput::Sparse(self.features[c as usize].clone()))
                    } else {
                        let received = self.receive(Payload::Activation, op)?;
                        let var = Var::from_tensor(&received)?;
                        let x = StageInput::Dense(var.as_tensor().clone());
                        (Some(var), x)
                    };
                    let began = Instant::now().max(began);
                    let training = Training {
                        seed: input.config.seed,
                        epoch,
                        chunk: c,
                    };
                    let out = self.owned[&s].forward(x, chunk, Some(training))?;
                    stash.insert((c, s), (leaf, out.clone()));
                    for_each_handoff(schedule, op, |h| sends.push((h.payload, h.to, out.clone())));
                    spans.push(compute_span(op, placed, ns(began), ns(Instant::now())));
                }
                OpKind::Backward => {
                    let upstream = if self.owned[&s].is_last {
                        None
                    } else {
                        Some(self.receive(Payload::Gradient, op)?)
                    };
                    let began = Instant::now().max(began);
                    let (leaf, out) = stash.remove(&(c, s)).ok_or_else(|| {
                        candle_core::Error::Msg(format!("{op} before its forward"))
                    })?;
                    let objective = match upstream {
                        None => {
                            let loss =
                                cross_entropy(&out, &self.train_rows[c as usize], self.n_train)?;
                            loss_total += loss.to_scalar::<f32>()? as f64;
                            loss
                        }
                        Some(grad) => (out * grad.detach())?.sum_all()?,
                    };
                    let store = objective.backward()?;
                    let vars = self.owned[&s].vars();
                    let acc = grads.entry(s).or_default();
                    for (i, var) in vars.iter().enumerate() {
                        let g = match store.get(var.as_tensor()) {
                            Some(g) => g.clone(),
                            None => var.as_tensor().zeros_like()?,
                        };
                        if acc.len() <= i {
                            acc.push(g);
                        } else {
                            acc[i] = (&acc[i] + g)?;
                        }
                    }
                    if let Some(leaf) = leaf {
                        let g = match store.get(leaf.as_tensor()) {
                            Some(g) => g.clone(),
                            None => leaf.as_tensor().zeros_like()?,
                        };
                        for_each_handoff(schedule, op, |h| {
                            sends.push((h.payload, h.to, g.clone()))
                        });
                    }
                    spans.push(compute_span(op, placed, ns(began), ns(Instant::now())));
                }
                OpKind::Optimizer => {
                    if let (Some(adam), Some(g)) = (optimizers.get_mut(&s), grads.remove(&s)) {
                        adam.step(&g)?;
                    }
                    spans.push(compute_span(op, placed, ns(began), ns(Instant::now())));
                }
            }
            for (payload, to, tensor) in sends {
                let receiver = schedule.device_of(to);
                let sent = ns(Instant::now());
                let bytes = (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
                let route = input
                    .network
                    .route(placed as usize, input.placement[receiver]);
                for (hop, &link) in route.links.iter().enumerate() {
                    spans.push(Span {
                        kind: SpanKind::Transfer(payload),
                        hop: hop as u16,
                        lane_index: link as u32,
                        chunk: to.chunk,
                        stage: to.stage,
                        device: input.placement[receiver] as u32,
                        start_ns: sent,
                        end_ns: sent,
                        bytes,
                        requested_ns: sent,
                    });
                }
                let _ = self.senders[receiver].send(Message::Data {
                    payload,
                    to,
                    tensor: tensor.detach(),
                });
            }
        }
        Ok(EpochReport {
            device: self.device,
            spans,
            params: self
                .owned
                .iter()
                .map(|(&s, stage)| {
                    (
                        s,
                        stage
                            .vars()
                            .iter()
                            .map(|v| v.as_tensor().copy())
                            .collect::<candle_core::Result<Vec<_>>>(),
                    )
                })
                .map(|(s, p)| p.map(|p| (s, p)))
                .collect::<candle_core::Result<Vec<_>>>()?,
            loss: loss_total,
        })
    }
}

fn compute_span(op: Op, device: u32, start_ns: u64, end_ns: u64) -> Span {
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
