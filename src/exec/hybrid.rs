//! The hybrid worker: GNNPipe's pipeline stages, each a group of G devices that each own one
//! graph partition (`schedule.partitions`, [`DataFlow::Hybrid`]). Device `(s, g)` runs the
//! layers of stage s for the K chunks of partition g (a chunk of a partition is a *piece*), one
//! op per layer: `F(c, l·G + g)` and `B(c, l·G + g)`, and a step `U(0, l·G + g)` per layer.
//!
//! A piece computes its own rows at every layer and reads all their neighbours:
//!
//! - rows of the same chunk of another partition h arrive by the halo hand-off from h's device
//!   of the same stage, fresh, and their gradients go back to h in the same epoch (so with one
//!   chunk the hybrid trains exactly as the full graph does);
//! - rows of other chunks (of any partition) come from the layer's history: the rows this
//!   device computed or received this epoch (earlier chunks, fresh) or the previous epoch (later
//!   chunks, stale; zeros in the first), as GNNPipe reads them. Under `backward: deferred` the
//!   gradients of the partition's own history rows are applied one epoch late, as GNNPipe's;
//!   rows of other partitions read from history are constants (their gradients would have to
//!   cross the group, which the simulator does not model either).
//!
//! What crosses a stage boundary is each partition's own rows, partition to partition, so a
//! boundary carries N x d per direction per epoch in all. The halo exchange stays inside a
//! group: at a stage's first layer, device `(s, h)` forwards the rows of its piece that
//! partition g reads to `(s, g)` as soon as it has taken them from `(s - 1, h)`; backwards, the
//! gradients g computed for h's rows go to `(s, h)`, which adds them to its own gradient before
//! handing that to `(s - 1, h)`. Which messages travel where is the lowering's
//! ([`crate::schedule::lower::handoff_endpoints`]), read through `transport::handoffs`.
//!
//! Each stage's weight gradients, summed over the device's chunks, are all-reduced within its
//! group (added in partition order, so every replica takes the same step); one Adam per layer
//! applies them at that layer's `U`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::crew::Crew;
use super::data::{ChunkPlan, Needs, PlanShape};
use super::device::synchronize;
use super::input::{CrossChunk, ExecInput};
use super::layers::{cross_entropy, ExecLayer, StageInput, Training};
use super::ledger::{bytes_of, compute_span, share_span, Ledger};
use super::memory;
use super::optim::{accumulate, grad_of, Adam, AdamConfig};
use super::rows::{Rows, Slots};
use super::sparse::SparseMatrix;
use super::transport::handoffs::{outgoing, Inbound, Inbox};
use super::transport::{Tag, Transport};
use crate::schedule::lower::{Lowered, Payload};
use crate::schedule::{DataFlow, Op, OpKind};
use crate::trace::{MemoryCategory, Span};

/// One piece (a chunk of this device's partition) and how its rows meet the group's.
struct Piece {
    plan: ChunkPlan,
    /// First stage: the input features of the rows the piece reads.
    features: Option<SparseMatrix>,
    /// Last stage: training rows (local index, label).
    train_rows: Vec<(u32, u32)>,
    /// Per partition that reads this piece's rows: their positions among the piece's rows
    /// (`None` when it reads none of them in this chunk).
    sent: BTreeMap<u32, Option<Tensor>>,
    /// Per partition whose rows of this chunk the partition reads: their global ids, as they
    /// arrive.
    received: BTreeMap<u32, Vec<u32>>,
    /// Per such partition: the positions among the arrived rows of those this piece reads.
    fresh: BTreeMap<u32, Tensor>,
    /// Halo rows read from the history: first the partition's own, then other partitions'.
    own_history: Range<usize>,
    other_history: Range<usize>,
}

/// The inputs of a layer's forward of a piece whose gradients its backward hands on; the
/// backward also takes the layer's output.
#[derive(Default)]
struct Leaves {
    /// The layer's own input rows (layers after the first).
    own: Option<Var>,
    /// The rows each other partition sent (their gradients go back).
    halo: Vec<(u32, Var)>,
    /// `deferred`: the partition's own history rows read with gradient, and their vertices.
    history: Option<(Var, Vec<u32>)>,
}

/// The positions among `rows` of those with a neighbour in partition `q` (`part[u] / k`).
fn read_by(input: &ExecInput<'_>, k: u32, rows: &[u32], q: u32) -> Vec<u32> {
    (0..rows.len() as u32)
        .filter(|&i| {
            input
                .graph
                .neighbors(rows[i as usize])
                .iter()
                .any(|&u| input.part[u as usize] / k == q)
        })
        .collect()
}

fn index(positions: &[u32], device: &Device) -> candle_core::Result<Option<Tensor>> {
    if positions.is_empty() {
        return Ok(None);
    }
    Tensor::new(positions, device).map(Some)
}

/// `t`'s rows at `at`, or none of them.
fn rows_at(t: &Tensor, at: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match at {
        Some(at) => t.index_select(at, 0),
        None => Tensor::zeros((0, t.dim(1)?), t.dtype(), t.device()),
    }
}

/// `t` plus `rows` added at `at`.
fn add_at(t: Tensor, at: Option<&Tensor>, rows: &Tensor) -> candle_core::Result<Tensor> {
    match at {
        Some(at) => t.index_add(at, rows, 0),
        None => Ok(t),
    }
}

/// A hybrid worker for rank `transport.rank()`.
pub(super) fn work(
    input: &ExecInput<'_>,
    lowered: &Lowered,
    slot: usize,
    transport: &mut dyn Transport,
    crew: &Crew,
) -> candle_core::Result<()> {
    let schedule = input.schedule;
    let DataFlow::Hybrid {
        partitions,
        readers,
    } = schedule.flow()
    else {
        candle_core::bail!("a hybrid worker runs GNNPipe's hybrid");
    };
    let g_count = *partitions;
    let k = schedule.n_chunks();
    let device = transport.rank();
    let positions = lowered.positions(device);
    let Some(first) = positions.clone().next().map(|p| lowered.op(p)) else {
        candle_core::bail!("device {device} of the hybrid has no ops");
    };
    let g = first.stage % g_count;
    let Some(s) = input
        .stage_layers
        .iter()
        .position(|r| r.contains(&((first.stage / g_count) as usize)))
    else {
        candle_core::bail!("{first} belongs to no stage");
    };
    let layers = input.stage_layers[s].clone();
    let n_layers = input.model.layers.len();
    // The relays make a group's devices wait on each other at the same op: every partition of
    // a stage runs the same order (`schedule::generate_hybrid` repeats the stage's), so those
    // waits follow the lowering's.
    let lane = |l: usize, h: u32| l as u32 * g_count + h;
    // The stage's group, in partition order: the all-reduce adds in this order.
    let group: Vec<usize> = (0..g_count)
        .map(|h| schedule.device_of(Op::forward(0, lane(layers.start, h))))
        .collect();
    let dev = input.compute.device(device).clone();
    let meter = memory::DeviceMeter::new(&dev)?;

    // The pieces of every partition, then this partition's with their plans.
    let n_pieces = (g_count * k) as usize;
    let mut members = vec![Vec::new(); n_pieces];
    for (v, &piece) in input.part.iter().enumerate() {
        members
            .get_mut(piece as usize)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "vertex {v} is in piece {piece} of {n_pieces} ({g_count} partitions of {k} chunks)"
                ))
            })?
            .push(v as u32);
    }
    let shape = PlanShape {
        layers: layers.clone(),
        n_layers,
        needs: Needs::of(input.model),
    };
    let reads_me: Vec<u32> = (0..g_count)
        .filter(|&h| readers[h as usize].contains(&g))
        .collect();
    let mut pieces = Vec::with_capacity(k as usize);
    for c in 0..k {
        let vertices = members[(g * k + c) as usize].clone();
        // Rows of the same chunk of other partitions first (by partition), then the history:
        // this partition's other chunks, then the other partitions'.
        let key = |u: u32| {
            let piece = input.part[u as usize];
            let (h, chunk) = (piece / k, piece % k);
            if chunk == c {
                u64::from(h)
            } else if h == g {
                u64::from(g_count)
            } else {
                u64::from(g_count) + 1 + u64::from(piece)
            }
        };
        let plan = ChunkPlan::neighbours(input.graph, vertices, key, &shape);
        let halo = plan.layer(layers.start).halo_rows();
        let mut received = BTreeMap::new();
        let mut fresh = BTreeMap::new();
        let mut at = 0;
        for &h in &reads_me {
            let theirs = &members[(h * k + c) as usize];
            let arriving: Vec<u32> = read_by(input, k, theirs, g)
                .into_iter()
                .map(|i| theirs[i as usize])
                .collect();
            let n = halo[at..].partition_point(|&u| input.part[u as usize] == h * k + c);
            let picked: Vec<u32> = halo[at..at + n]
                .iter()
                .map(|u| {
                    arriving.binary_search(u).map(|i| i as u32).map_err(|_| {
                        candle_core::Error::Msg(format!(
                            "vertex {u} of partition {h} is read by partition {g} but not sent"
                        ))
                    })
                })
                .collect::<candle_core::Result<_>>()?;
            at += n;
            if let Some(picked) = index(&picked, &dev)? {
                fresh.insert(h, picked);
            }
            received.insert(h, arriving);
        }
        if halo[at..].iter().any(|&u| input.part[u as usize] % k == c) {
            candle_core::bail!(
                "piece ({c}, {g}) reads rows of chunk {c} from a partition that sends none"
            );
        }
        let own_end = at + halo[at..].partition_point(|&u| input.part[u as usize] / k == g);
        let n_halo = halo.len();
        let sent = readers[g as usize]
            .iter()
            .map(|&q| Ok((q, index(&read_by(input, k, &plan.vertices, q), &dev)?)))
            .collect::<candle_core::Result<_>>()?;
        let features = (layers.start == 0).then(|| input.data.feature_rows(&plan.layer(0).read));
        let train_rows = if layers.end == n_layers {
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
        } else {
            Vec::new()
        };
        pieces.push(Piece {
            plan,
            features,
            train_rows,
            sent,
            received,
            fresh,
            own_history: at..own_end,
            other_history: own_end..n_halo,
        });
    }

    // The stage's layers, one Adam per layer (each `U` steps its own).
    let all_layers: Vec<ExecLayer> = input
        .build_model(&dev)?
        .into_iter()
        .skip(layers.start)
        .take(layers.len())
        .collect();
    let var_counts: Vec<usize> = all_layers.iter().map(|l| l.vars().len()).collect();
    let model = input.stage_model(all_layers, &layers);
    let config = AdamConfig::new(input.config.lr, input.config.weight_decay);
    let vars = model.vars();
    let mut adams = Vec::with_capacity(layers.len());
    let mut var_ranges = Vec::with_capacity(layers.len());
    let mut at = 0;
    for &n in &var_counts {
        adams.push(Adam::new(vars[at..at + n].to_vec(), config)?);
        var_ranges.push(at..at + n);
        at += n;
    }
    let n = input.graph.n_nodes();
    let deferred = input.cross_chunk == CrossChunk::Deferred;
    if input.cross_chunk == CrossChunk::Exact {
        candle_core::bail!("the hybrid runs backward drop or deferred");
    }
    let inner: Vec<(usize, usize)> = layers
        .clone()
        .filter(|&l| l > 0)
        .map(|l| (l, input.model.layers[l].d_in as usize))
        .collect();
    // The history holds the rows the partition owns and reads; the gradient buffers its own
    // rows, the only ones read with gradient.
    let own_rows = || pieces.iter().flat_map(|p| p.plan.vertices.iter().copied());
    let read_rows = pieces
        .iter()
        .flat_map(|p| p.plan.layer(layers.start).halo_rows().iter().copied());
    let everything = Arc::new(Slots::new(n, own_rows().chain(read_rows)));
    let own_only = Arc::new(Slots::new(n, own_rows()));
    let buffers = |on: bool, slots: &Arc<Slots>| -> BTreeMap<usize, Rows> {
        inner
            .iter()
            .filter(|_| on)
            .map(|&(l, d)| (l, Rows::zeros_over(slots.clone(), d)))
            .collect()
    };
    let mut history = buffers(true, &everything);
    let mut grad_now = buffers(deferred, &own_only);
    let mut grad_prev = buffers(deferred, &own_only);
    let params: u64 = vars.iter().map(|v| v.as_tensor().elem_count() as u64).sum();
    let allreduce_bytes =
        (2.0 * (f64::from(g_count) - 1.0) / f64::from(g_count) * params as f64 * 4.0).ceil() as u64;
    // The all-reduce starts after the device's last backward.
    let last_backward = positions
        .clone()
        .rev()
        .find(|&p| lowered.op(p).kind == OpKind::Backward);

    let mut inbox = Inbox::new(dev.clone(), crew.waiting);
    let inbound = Inbound::new(lowered, device);
    let placed = input.placement[device] as u32;
    let mut ledger = Ledger::new(slot, placed, meter).sharing(crew.cores.clone());
    let mut spans: Vec<Span> = Vec::with_capacity(4 * positions.len());
    for epoch in 1..=input.config.epochs {
        let start = crew.start_epoch(transport)?;
        if deferred {
            std::mem::swap(&mut grad_now, &mut grad_prev);
            grad_now.values_mut().for_each(Rows::clear);
        }
        let rows_bytes = |map: &BTreeMap<usize, Rows>| map.values().map(Rows::bytes).sum::<u64>();
        ledger.start(&[
            (MemoryCategory::Parameters, 4 * params),
            (MemoryCategory::OptimizerState, 8 * params),
            (
                MemoryCategory::Features,
                pieces
                    .iter()
                    .filter_map(|p| p.features.as_ref())
                    .map(super::data::sparse_bytes)
                    .sum(),
            ),
            (
                MemoryCategory::Graph,
                pieces.iter().map(|p| p.plan.bytes()).sum(),
            ),
            (MemoryCategory::History, rows_bytes(&history)),
            (
                MemoryCategory::DeferredGradients,
                rows_bytes(&grad_now) + rows_bytes(&grad_prev),
            ),
        ])?;
        spans.clear();
        let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
        let training = Training {
            seed: input.config.seed,
            epoch,
        };
        let mut stash: BTreeMap<(u32, usize), (Leaves, Tensor)> = BTreeMap::new();
        let mut grads: Option<Vec<Tensor>> = None;
        let mut summed: Option<Vec<Tensor>> = None;
        let mut loss_total = 0.0;
        for (index, position) in positions.clone().enumerate() {
            let op = lowered.op(position);
            inbox.drain(transport, &mut ledger, ns(Instant::now()))?;
            let l = (op.stage / g_count) as usize;
            let i = l - layers.start;
            let c = op.chunk;
            let piece = &pieces[c as usize];
            let incoming = inbound.of(index);
            let began;
            let mut ended = None;
            match op.kind {
                OpKind::Forward => {
                    // This piece's own rows first: the relays to the group go out before this
                    // device waits for the group's.
                    let mut own = None;
                    for came in incoming
                        .iter()
                        .filter(|m| m.handoff.from.stage % g_count == g)
                    {
                        own = Some(inbox.take(transport, came.tag(), &mut ledger, start)?);
                    }
                    for &(handoff, to) in inbound.relays(index) {
                        let own = own.as_ref().ok_or_else(|| {
                            candle_core::Error::Msg(format!("{op} relays rows it did not receive"))
                        })?;
                        let q = handoff.to.stage % g_count;
                        let rows = rows_at(own, sent_to(piece, q, op)?)?;
                        spans.extend(transport.send(to, Tag::of(&handoff), &rows, start)?);
                    }
                    let mut halo = Vec::new();
                    for came in incoming
                        .iter()
                        .filter(|m| m.handoff.from.stage % g_count != g)
                    {
                        let t = inbox.take(transport, came.tag(), &mut ledger, start)?;
                        halo.push((came.handoff.from.stage % g_count, t));
                    }
                    began = ledger.op_starts(&dev, start)?;
                    let graph = piece.plan.layer(l);
                    let mut record = Leaves::default();
                    let x = match (&piece.features, own) {
                        (Some(features), None) if l == 0 => StageInput::Sparse(features.clone()),
                        (_, Some(own)) => {
                            let rows = history.get_mut(&l).ok_or_else(|| {
                                candle_core::Error::Msg(format!("{op}: no history for layer {l}"))
                            })?;
                            rows.write(&piece.plan.vertices, &own)?;
                            for (h, t) in &halo {
                                rows.write(&piece.received[h], t)?;
                            }
                            let own = Var::from_tensor(&own)?;
                            let mut parts = vec![own.as_tensor().clone()];
                            record.own = Some(own);
                            for (h, t) in halo {
                                let var = Var::from_tensor(&t)?;
                                if let Some(at) = piece.fresh.get(&h) {
                                    parts.push(var.as_tensor().index_select(at, 0)?);
                                }
                                record.halo.push((h, var));
                            }
                            let read = graph.halo_rows();
                            let mine = &read[piece.own_history.clone()];
                            if !mine.is_empty() {
                                let t = rows.read(mine, &dev)?;
                                if deferred {
                                    let var = Var::from_tensor(&t)?;
                                    parts.push(var.as_tensor().clone());
                                    record.history = Some((var, mine.to_vec()));
                                } else {
                                    parts.push(t);
                                }
                            }
                            let theirs = &read[piece.other_history.clone()];
                            if !theirs.is_empty() {
                                parts.push(rows.read(theirs, &dev)?);
                            }
                            StageInput::Dense(Tensor::cat(&parts, 0)?)
                        }
                        _ => candle_core::bail!("{op} takes its own rows"),
                    };
                    let out = model.layer_forward(
                        i,
                        x,
                        graph,
                        graph.attention.as_ref().map(|a| &a.edges),
                        Some(training),
                    )?;
                    synchronize(&dev)?;
                    for (handoff, to) in outgoing(lowered, position) {
                        let q = handoff.to.stage % g_count;
                        let rows = if q == g {
                            out.clone()
                        } else {
                            rows_at(&out, sent_to(piece, q, op)?)?
                        };
                        spans.extend(transport.send(to, Tag::of(&handoff), &rows, start)?);
                    }
                    stash.insert((c, l), (record, out));
                }
                OpKind::Backward => {
                    // The gradient of this piece's rows at this layer's output: from the next
                    // layer's op of this partition, plus what the partitions that read them
                    // computed, added at their rows.
                    let mut g_out: Option<Tensor> = None;
                    let mut partners = Vec::new();
                    let mut relayed = Vec::new();
                    for came in incoming {
                        let q = came.handoff.from.stage % g_count;
                        if came.handoff.to != op {
                            relayed.push((q, *came));
                            continue;
                        }
                        let t = inbox.take(transport, came.tag(), &mut ledger, start)?;
                        if q == g {
                            g_out = Some(t);
                        } else {
                            partners.push((q, t));
                        }
                    }
                    if let Some(mut g_sum) = g_out.take() {
                        for (q, t) in &partners {
                            g_sum = add_at(g_sum, sent_to(piece, *q, op)?, t)?;
                        }
                        g_out = Some(g_sum);
                    } else if l + 1 < n_layers {
                        candle_core::bail!("{op} takes the gradient of its rows");
                    }
                    began = ledger.op_starts(&dev, start)?;
                    let (record, out) = stash.remove(&(c, l)).ok_or_else(|| {
                        candle_core::Error::Msg(format!("{op} before its forward"))
                    })?;
                    let objective = match g_out {
                        None => {
                            let loss = cross_entropy(
                                &out,
                                &piece.train_rows,
                                input.data.train.len().max(1),
                            )?;
                            loss_total += f64::from(loss.to_scalar::<f32>()?);
                            loss
                        }
                        Some(g_sum) => (&out * g_sum.detach())?.sum_all()?,
                    };
                    let store = objective.backward()?;
                    let first_grads = grads.is_none();
                    grads = Some(accumulate(grads.take(), &store, &vars)?);
                    if first_grads {
                        let bytes = bytes_of(grads.iter().flatten());
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, bytes);
                    }
                    if let Some((var, rows)) = &record.history {
                        let buffer = grad_now.get_mut(&l).ok_or_else(|| {
                            candle_core::Error::Msg(format!("{op}: no gradient buffer"))
                        })?;
                        buffer.add(rows, &grad_of(&store, var)?)?;
                    }
                    // The input's gradient, with what last epoch's reads of these rows left
                    // (`deferred`).
                    let mut grad_in = match &record.own {
                        Some(own) => Some(grad_of(&store, own)?),
                        None => None,
                    };
                    if let (Some(g_in), Some(buffer)) = (&mut grad_in, grad_prev.get(&l)) {
                        *g_in = (&*g_in + buffer.read(&piece.plan.vertices, &dev)?)?;
                    }
                    // The gradients of the rows other partitions sent go back to them; the
                    // gradient of this piece's own input waits for the group's share of it.
                    let mut own_sends = Vec::new();
                    for (handoff, to) in outgoing(lowered, position) {
                        let q = handoff.to.stage % g_count;
                        match handoff.payload {
                            Payload::Gradient if q == g => own_sends.push((handoff, to)),
                            Payload::Gradient => {
                                let (_, var) =
                                    record.halo.iter().find(|(h, _)| *h == q).ok_or_else(|| {
                                        candle_core::Error::Msg(format!(
                                            "{op} owes partition {q} a gradient for rows it never received"
                                        ))
                                    })?;
                                let t = grad_of(&store, var)?;
                                spans.extend(transport.send(to, Tag::of(&handoff), &t, start)?);
                            }
                            Payload::Weights if Some(position) == last_backward => {
                                spans.push(share_span(
                                    input,
                                    (device, to),
                                    handoff.to,
                                    Payload::Weights,
                                    allreduce_bytes,
                                    ns(Instant::now()),
                                ));
                            }
                            Payload::Weights => {}
                            Payload::Activation => {
                                candle_core::bail!("{op} hands on no activation")
                            }
                        }
                    }
                    if Some(position) == last_backward {
                        transport.start_all_reduce(&group, grads.clone().unwrap_or_default())?;
                    }
                    synchronize(&dev)?;
                    let now = Instant::now();
                    ended = Some(now);
                    if !own_sends.is_empty() || !relayed.is_empty() {
                        let mut g_in = grad_in.ok_or_else(|| {
                            candle_core::Error::Msg(format!("{op} has no input to hand a gradient"))
                        })?;
                        for (q, came) in relayed {
                            let t = inbox.take(transport, came.tag(), &mut ledger, start)?;
                            g_in = add_at(g_in, sent_to(piece, q, op)?, &t)?;
                        }
                        for (handoff, to) in own_sends {
                            spans.extend(transport.send(to, Tag::of(&handoff), &g_in, start)?);
                        }
                    }
                }
                OpKind::Optimizer => {
                    if summed.is_none() {
                        summed = Some(transport.finish_all_reduce(&dev)?);
                    }
                    began = ledger.op_starts(&dev, start)?;
                    let sums = summed.as_ref().expect("taken above");
                    let range = var_ranges[i].clone();
                    if sums.len() != vars.len() {
                        candle_core::bail!(
                            "the group's all-reduce gave {} gradients for {} parameters",
                            sums.len(),
                            vars.len()
                        );
                    }
                    adams[i].step(&sums[range])?;
                    if l + 1 == layers.end {
                        if let Some(g) = grads.take() {
                            let bytes = bytes_of(&g);
                            ledger.change(ns(Instant::now()), MemoryCategory::Gradients, -bytes);
                        }
                    }
                }
                OpKind::InputGrad | OpKind::WeightGrad => {
                    candle_core::bail!("the hybrid runs whole backwards, not {op}")
                }
            }
            synchronize(&dev)?;
            let ended = ended.unwrap_or_else(Instant::now);
            ledger.op_ends(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        let params = if g == 0 {
            vec![(s as u32, model.values()?)]
        } else {
            Vec::new()
        };
        if !crew.end_epoch(transport, device, &spans, &mut ledger, params, loss_total)? {
            return Ok(());
        }
    }
    crew.finish()
}

/// The positions of the piece's rows partition `q` reads; an error where the lowering names a
/// partition the data flow does not.
fn sent_to(piece: &Piece, q: u32, op: Op) -> candle_core::Result<Option<&Tensor>> {
    piece.sent.get(&q).map(Option::as_ref).ok_or_else(|| {
        candle_core::Error::Msg(format!("{op}: partition {q} reads none of its rows"))
    })
}
