//! The pipeline worker: one thread per schedule device, running its stages' op list every epoch.
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
//! since exact runs backwards in reverse chunk order behind a barrier, a gate of the lowered
//! schedule); `deferred` does the same for every neighbour row but applies the buffer one epoch
//! late, as PipeGCN.
//!
//! Split backward (`I` then `W`, zero-bubble schedules): a chunk whose backward the schedule
//! splits runs its forward with a [`WeightTape`], so its dense transforms (`X W`) defer their
//! weight gradients. `I(c, s)` back-propagates as `B` does, giving the input gradient the
//! previous stage waits for and the gradients of biases and attention vectors, but no `X^T dY`;
//! the stash is freed but for what the tape keeps (each transform's input and output gradient).
//! `W(c, s)` computes the weight products from the tape, frees it, and adds the chunk's
//! gradients to the stage's sums, which `U` applies as after `B`.
//!
//! What each op sends and receives is the lowered schedule's ([`crate::schedule::lower`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::crew::Crew;
use super::data::ChunkPlan;
use super::deferred::WeightTape;
use super::device::synchronize;
use super::input::{CrossChunk, ExecInput};
use super::layers::{cross_entropy, ExecLayer, StageInput, StageModel, Training};
use super::ledger::{bytes_of, compute_span, Ledger};
use super::memory;
use super::optim::{accumulate, accumulate_parts, grad_of, grads_in, Adam, AdamConfig};
use super::rows::Rows;
use super::sparse::SparseMatrix;
use super::transport::handoffs::{outgoing, Inbound, Inbox};
use super::transport::{Tag, Transport};
use crate::gnn::Halo;
use crate::schedule::lower::Lowered;
use crate::schedule::{Op, OpKind};
use crate::trace::{MemoryCategory, Span};

/// What a chunk's forward leaves for its backward.
struct Stashed {
    /// The stage input, when it came from another stage.
    leaf: Option<Var>,
    /// Each owned layer's output (own rows for GNNPipe).
    outputs: Vec<Tensor>,
    /// Neighbour rows read with gradient: (layer, leaf, their vertices).
    halo: Vec<(usize, Var, Vec<u32>)>,
    /// Split backward: where the dense transforms leave their weight gradients for `W`.
    tape: Option<WeightTape>,
}

/// What a chunk's `I` leaves for its `W`: the transforms' inputs and output gradients on the
/// tape, and the gradients `I` did compute (biases, attention vectors; `None` for the weights).
struct Pending {
    tape: WeightTape,
    grads: Vec<Option<Tensor>>,
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
    /// Chunks whose `I` ran and whose `W` has not.
    pending: BTreeMap<u32, Pending>,
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
        pending: BTreeMap::new(),
    })
}

/// A pipeline worker for rank `transport.rank()`: builds its stages in its own thread (so the
/// allocator counts them), then runs its op list every epoch.
pub(super) fn work(
    input: &ExecInput<'_>,
    lowered: &Lowered,
    slot: usize,
    transport: &mut dyn Transport,
    crew: &Crew,
) -> candle_core::Result<()> {
    let schedule = input.schedule;
    let device = transport.rank();
    let dev = input.compute.device(device).clone();
    let meter = memory::DeviceMeter::new(&dev)?;
    let mut stages: BTreeMap<u32, Stage> = BTreeMap::new();
    for s in 0..schedule.n_stages() {
        if schedule.device_of(Op::forward(0, s)) == device {
            stages.insert(s, build_stage(input, s, &dev)?);
        }
    }
    let mut inbox = Inbox::new(dev.clone(), crew.waiting);
    let inbound = Inbound::new(lowered, device);
    let placed = input.placement[device] as u32;
    let mut ledger = Ledger::new(slot, placed, meter).sharing(crew.cores.clone());
    let positions = lowered.positions(device);
    let mut spans: Vec<Span> = Vec::with_capacity(4 * positions.len());
    for epoch in 1..=input.config.epochs {
        let start = crew.start_epoch(transport)?;
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
        // Gates (GNNPipe's exact backward barrier) that have opened this epoch.
        let mut passed = BTreeSet::new();
        let training = Training {
            seed: input.config.seed,
            epoch,
        };
        for (index, position) in positions.clone().enumerate() {
            let op = lowered.op(position);
            inbox.drain(transport, &mut ledger, ns(Instant::now()))?;
            let stage = stages
                .get_mut(&op.stage)
                .expect("the schedule places its stages");
            let incoming = inbound.of(index);
            let mut results: Option<Tensor> = None;
            let began = match op.kind {
                OpKind::Forward => {
                    let received = match incoming {
                        [] => None,
                        [activation] => {
                            Some(inbox.take(transport, activation.tag(), &mut ledger, start)?)
                        }
                        _ => candle_core::bail!("{op} takes one activation"),
                    };
                    let began = ledger.op_starts(&dev, start)?;
                    results = Some(forward(input, stage, op.chunk, received, training, &dev)?);
                    began
                }
                OpKind::Backward | OpKind::InputGrad => {
                    let upstream = if stage.model.is_last {
                        None
                    } else {
                        let [gradient] = incoming else {
                            candle_core::bail!("{op} takes one gradient");
                        };
                        if let Some(gate) = gradient.gate {
                            if passed.insert(gate) {
                                // The barrier: every hand-off into the gate first.
                                for &tag in inbound.gate(gate) {
                                    inbox.wait_for(transport, tag, &mut ledger, start)?;
                                }
                            }
                        }
                        Some(inbox.take(transport, gradient.tag(), &mut ledger, start)?)
                    };
                    let began = ledger.op_starts(&dev, start)?;
                    let first = stage.grads.is_none();
                    let (loss, grad_in) = backward(input, stage, op.chunk, upstream, &dev)?;
                    loss_total += loss;
                    results = grad_in;
                    if first && stage.grads.is_some() {
                        // The first backward since the last step creates the accumulators.
                        let bytes = bytes_of(stage.grads.iter().flatten());
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, bytes);
                    }
                    began
                }
                OpKind::WeightGrad => {
                    let began = ledger.op_starts(&dev, start)?;
                    let first = stage.grads.is_none();
                    weight_grad(stage, op.chunk)?;
                    if first {
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
            if let Some(tensor) = &results {
                for (handoff, to) in outgoing(lowered, position) {
                    spans.extend(transport.send(to, Tag::of(&handoff), tensor, start)?);
                }
            }
            drop(results);
            let ended = Instant::now();
            ledger.op_ends(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        let params = stages
            .iter()
            .map(|(&s, stage)| stage.model.values().map(|p| (s, p)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if !crew.end_epoch(transport, device, &spans, &mut ledger, params, loss_total)? {
            return Ok(());
        }
    }
    crew.finish()
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
    // A split backward's `I` leaves the weight products to `W`.
    let split = input.schedule.gradient_op(c, stage.index).kind == OpKind::InputGrad;
    let tape = split.then(WeightTape::new);
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
        let y = stage.model.layer_forward_split(
            i,
            x,
            graph,
            graph.attention.as_ref().map(|a| &a.edges),
            Some(training),
            tape.as_ref(),
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
            tape,
        },
    );
    Ok(out)
}

/// `B(c, s)`, or a split backward's `I(c, s)`: back-propagates chunk `c` through the stage;
/// returns its loss share (last stage) and the gradient of its input (later stages). `B` adds
/// the chunk's parameter gradients to the stage's sums; `I`, whose forward deferred the weight
/// products to a tape, leaves the tape and the gradients it computed for `W`.
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
        tape,
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
    let vars = stage.model.vars();
    match tape {
        None => stage.grads = Some(accumulate(stage.grads.take(), &grads, &vars)?),
        Some(tape) => {
            let pending = Pending {
                tape,
                grads: grads_in(&grads, &vars),
            };
            stage.pending.insert(c, pending);
        }
    }
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

/// `W(c, s)`: the weight products `I(c, s)` deferred (`X^T dY` per dense transform), added with
/// the gradients `I` computed to the stage's sums; what the tape kept is freed.
fn weight_grad(stage: &mut Stage, c: u32) -> candle_core::Result<()> {
    let Pending { tape, mut grads } = stage
        .pending
        .remove(&c)
        .ok_or_else(|| candle_core::Error::Msg(format!("W({c},{}) before its I", stage.index)))?;
    let vars = stage.model.vars();
    for (i, g) in tape.weight_grads(&vars)? {
        grads[i] = Some(match grads[i].take() {
            Some(partial) => (partial + g)?,
            None => g,
        });
    }
    drop(tape);
    stage.grads = Some(accumulate_parts(stage.grads.take(), grads, &vars)?);
    Ok(())
}
