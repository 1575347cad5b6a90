//! Graph parallelism's 1.5D worker (CAGNET): P devices hold P/c block rows, each replicated
//! c times; device `r·c + j` is replica j of block row r (the layout `plan::cagnet` simulates;
//! block k is the union of the 1D layout's partitions `k·c .. k·c + c - 1`).
//!
//! Layer 0 reads the input features every device holds, as 1D does: every replica computes
//! its block row whole. Every later layer aggregates (GCN's `Â H`, GraphSAGE's neighbour mean)
//! by column blocks: replica j aggregates only the blocks k with `k mod c = j`, which the root
//! of block k in replica group j (device `k·c + j`) sends whole to every other member of the
//! group (CAGNET's broadcast); the replicas' partial aggregations, `d_in` wide, are then
//! all-reduced (summed in replica order), and every replica applies the weights, GraphSAGE's
//! own term, the bias and the activation to the same sum. Backwards the same in reverse: each
//! replica's partial aggregation gives the gradients of the blocks it read, which go back to
//! their roots and are summed there with the root's own; an all-reduce over the replicas gives
//! every replica its block row's whole gradient.
//!
//! Everything after the aggregation (and all of layer 0) every replica computes alike: only
//! replica 0 adds its parameters' gradients (and the loss) to the weight all-reduce over every
//! device, the others zeros, so the step is the full graph's. Aggregations are linear in the
//! rows read, which holds for GCN and GraphSAGE; GAT's softmax over each row's neighbours does
//! not split by column blocks, and is refused.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use super::crew::Crew;
use super::data::{ChunkPlan, LayerGraph, Needs, PlanShape};
use super::device::synchronize;
use super::input::ExecInput;
use super::layers::{cross_entropy, StageInput, Training};
use super::ledger::{bytes_of, compute_span, share_span, Ledger};
use super::optim::{accumulate, accumulate_parts, grad_of, Adam, AdamConfig};
use super::transport::{Tag, Transport};
use crate::schedule::lower::{Lowered, Payload};
use crate::schedule::{Op, OpKind};
use crate::trace::{MemoryCategory, Span};

/// A layer's forward record.
struct Record {
    /// Layers after the first: what the aggregation by column blocks leaves.
    partial: Option<Partial>,
    /// The layer's output rows.
    out: Tensor,
}

/// Leaves of a layer's forward past layer 0, and its partial aggregation.
struct Partial {
    /// The block row's input rows.
    own: Var,
    /// Each block this replica multiplied, whole.
    received: Vec<(u32, Var)>,
    /// This replica's part of the aggregation.
    product: Tensor,
    /// The replicas' parts summed.
    summed: Var,
}

/// A 1.5D worker for device `transport.rank()`.
pub(super) fn work(
    input: &ExecInput<'_>,
    lowered: &Lowered,
    slot: usize,
    transport: &mut dyn Transport,
    crew: &Crew,
) -> candle_core::Result<()> {
    let c = input.replication.unwrap_or(1) as usize;
    let n_devices = input.schedule.n_devices();
    if c == 0 || n_devices % c != 0 {
        candle_core::bail!("1.5D with {c} replicas on {n_devices} devices");
    }
    let rows = n_devices / c;
    let device = transport.rank();
    let (r, j) = (device / c, device % c);
    let replicas: Vec<usize> = (0..c).map(|i| r * c + i).collect();
    let everyone: Vec<usize> = (0..n_devices).collect();
    // Block k is the union of the 1D layout's partitions k·c .. k·c + c - 1.
    let block_of = |v: u32| input.part[v as usize] as usize / c;
    let mut blocks = vec![Vec::new(); rows];
    for v in 0..input.graph.n_nodes() as u32 {
        let k = block_of(v);
        blocks
            .get_mut(k)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("vertex {v} is in block {k} of {rows}"))
            })?
            .push(v);
    }
    let n_layers = input.model.layers.len();
    let dev = input.compute.device(device).clone();
    let meter = super::memory::DeviceMeter::new(&dev)?;
    let all = 0..n_layers;
    let model = input.stage_model(input.build_model(&dev)?, &all);
    let vars = model.vars();
    let mut adam = Adam::new(
        vars.clone(),
        AdamConfig::new(input.config.lr, input.config.weight_decay),
    )?;
    let shape = PlanShape {
        layers: all.clone(),
        n_layers,
        needs: Needs::of(input.model),
    };
    let plan = ChunkPlan::neighbours(
        input.graph,
        blocks[r].clone(),
        |u| block_of(u) as u64,
        &shape,
    );
    let graph = plan.layer(0);
    let own = &plan.vertices;
    let features = input.data.feature_rows(&graph.read);
    let mine = |k: usize| k % c == j;
    // This replica's column blocks of the product: the read rows of the blocks it multiplies.
    let halo = graph.halo_rows();
    let keep: Vec<bool> = (0..graph.read.len())
        .map(|i| {
            if i < graph.out {
                mine(r)
            } else {
                mine(block_of(halo[i - graph.out]))
            }
        })
        .collect();
    let masked: LayerGraph = graph.keep_columns(&keep);
    // Per block this replica multiplies (but its own): where its halo rows sit among the
    // block's rows, and their run among the read rows.
    let mut received: BTreeMap<u32, (Tensor, std::ops::Range<usize>)> = BTreeMap::new();
    let mut at = 0;
    while at < halo.len() {
        let k = block_of(halo[at]);
        let n = halo[at..].partition_point(|&u| block_of(u) == k);
        if mine(k) {
            let positions: Vec<u32> = halo[at..at + n]
                .iter()
                .map(|u| {
                    blocks[k].binary_search(u).map(|i| i as u32).map_err(|_| {
                        candle_core::Error::Msg(format!("vertex {u} is not in block {k}"))
                    })
                })
                .collect::<candle_core::Result<_>>()?;
            received.insert(k as u32, (Tensor::new(positions, &dev)?, at..at + n));
        }
        at += n;
    }
    // The other block rows: in each replica group their devices receive every block it roots.
    let other_rows: Vec<usize> = (0..rows).filter(|&k| k != r).collect();
    let root = mine(r);
    let train_rows: Vec<(u32, u32)> = input
        .data
        .train
        .iter()
        .filter_map(|&v| {
            own.binary_search(&v)
                .ok()
                .map(|local| (local as u32, input.data.labels[v as usize] as u32))
        })
        .collect();
    let params: u64 = vars.iter().map(|v| v.as_tensor().elem_count() as u64).sum();
    let ring = |members: usize, bytes: u64| {
        (2.0 * (members as f64 - 1.0) / members as f64 * bytes as f64).ceil() as u64
    };
    let placed = input.placement[device] as u32;
    // No turns on shared cores: a backward waits for the other replicas' gradients and their
    // all-reduce mid-op, and a turn held through that wait could starve the replica it waits
    // for. The system's scheduler shares the cores.
    let mut ledger = Ledger::new(slot, placed, meter);
    let positions = lowered.positions(device);
    let mut spans: Vec<Span> = Vec::with_capacity(8 * positions.len());
    let mut inbox = super::transport::handoffs::Inbox::new(dev.clone(), crew.waiting);
    let tag = |payload: Payload, to: Op, from: usize, stage: u32| Tag {
        payload,
        to,
        from_chunk: from as u32,
        from_stage: stage,
    };
    for epoch in 1..=input.config.epochs {
        let start = crew.start_epoch(transport)?;
        ledger.start(&[
            (MemoryCategory::Parameters, 4 * params),
            (MemoryCategory::OptimizerState, 8 * params),
            (
                MemoryCategory::Features,
                super::data::sparse_bytes(&features),
            ),
            (MemoryCategory::Graph, plan.bytes() + masked.bytes()),
        ])?;
        spans.clear();
        let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
        let training = Training {
            seed: input.config.seed,
            epoch,
        };
        let mut stash: Vec<Option<Record>> = (0..n_layers).map(|_| None).collect();
        let mut own_grad: Option<Tensor> = None;
        let mut grads: Option<Vec<Tensor>> = None;
        let mut loss_total = 0.0;
        for position in positions.clone() {
            let op = lowered.op(position);
            inbox.drain(transport, &mut ledger, ns(Instant::now()))?;
            let l = op.stage as usize;
            let began;
            match op.kind {
                OpKind::Forward if l == 0 => {
                    began = ledger.op_starts(&dev, start)?;
                    let out = model.layer_forward(
                        0,
                        StageInput::Sparse(features.clone()),
                        graph,
                        None,
                        Some(training),
                    )?;
                    stash[0] = Some(Record { partial: None, out });
                }
                OpKind::Forward => {
                    let previous = stash[l - 1].as_ref().ok_or_else(|| {
                        candle_core::Error::Msg(format!("{op} before layer {}", l - 1))
                    })?;
                    let h = Var::from_tensor(&previous.out.detach())?;
                    // The root of this block row in the group sends it whole to every member.
                    if root {
                        for &k in &other_rows {
                            let to = k * c + j;
                            let t = tag(
                                Payload::Activation,
                                Op::forward(to as u32, op.stage),
                                device,
                                op.stage - 1,
                            );
                            spans.extend(transport.send(to, t, h.as_tensor(), start)?);
                        }
                    }
                    // Every block this replica multiplies arrives whole; the rows it reads
                    // of it are picked.
                    let mut blocks_in = Vec::new();
                    for k in (0..rows).filter(|&k| k != r && mine(k)) {
                        let t = tag(
                            Payload::Activation,
                            Op::forward(device as u32, op.stage),
                            k * c + j,
                            op.stage - 1,
                        );
                        let block =
                            Var::from_tensor(&inbox.take(transport, t, &mut ledger, start)?)?;
                        let picked = match received.get(&(k as u32)) {
                            Some((at, range)) => {
                                Some((block.as_tensor().index_select(at, 0)?, range.clone()))
                            }
                            None => None,
                        };
                        blocks_in.push((k as u32, block, picked));
                    }
                    began = ledger.op_starts(&dev, start)?;
                    // The read rows: this block row's and the received blocks' where this
                    // replica multiplies them, zeros elsewhere (the masked matrix skips them).
                    let width = h.as_tensor().dim(1)?;
                    let zeros = |n: usize| Tensor::zeros((n, width), h.dtype(), &dev);
                    let mut parts = vec![if root {
                        h.as_tensor().clone()
                    } else {
                        zeros(graph.out)?
                    }];
                    let mut next = graph.out;
                    for (picked, range) in blocks_in.iter().filter_map(|(_, _, p)| p.as_ref()) {
                        let begin = graph.out + range.start;
                        if begin > next {
                            parts.push(zeros(begin - next)?);
                        }
                        parts.push(picked.clone());
                        next = graph.out + range.end;
                    }
                    if graph.read.len() > next {
                        parts.push(zeros(graph.read.len() - next)?);
                    }
                    let x = Tensor::cat(&parts, 0)?;
                    let product = model.layer_aggregate(l, &x, &masked, Some(training))?;
                    synchronize(&dev)?;
                    let posted = ns(Instant::now());
                    let sum = all_reduce(transport, &replicas, product.detach(), &dev)?;
                    if c > 1 {
                        let next = replicas[(j + 1) % c];
                        spans.push(share_span(
                            input,
                            (device, next),
                            Op::forward(next as u32, op.stage),
                            Payload::Activation,
                            ring(c, 4 * sum.elem_count() as u64),
                            posted,
                        ));
                    }
                    let summed = Var::from_tensor(&sum)?;
                    let out = model.layer_combine(
                        l,
                        h.as_tensor(),
                        graph.out_rows(),
                        summed.as_tensor(),
                        Some(training),
                    )?;
                    stash[l] = Some(Record {
                        partial: Some(Partial {
                            own: h,
                            received: blocks_in
                                .into_iter()
                                .map(|(k, block, _)| (k, block))
                                .collect(),
                            product,
                            summed,
                        }),
                        out,
                    });
                }
                OpKind::Backward => {
                    began = ledger.op_starts(&dev, start)?;
                    let record = stash[l].take().ok_or_else(|| {
                        candle_core::Error::Msg(format!("{op} before its forward"))
                    })?;
                    let objective = match own_grad.take() {
                        None => {
                            let loss = cross_entropy(
                                &record.out,
                                &train_rows,
                                input.data.train.len().max(1),
                            )?;
                            if j == 0 {
                                loss_total += f64::from(loss.to_scalar::<f32>()?);
                            }
                            loss
                        }
                        Some(g) => (&record.out * g.detach())?.sum_all()?,
                    };
                    let store = objective.backward()?;
                    let first = grads.is_none();
                    let mut summed = grads.take();
                    // What every replica computes alike (layer 0, biases, activations) counts
                    // once: replica 0's.
                    if j == 0 {
                        summed = Some(accumulate(summed, &store, &vars)?);
                    }
                    if let Some(partial) = record.partial {
                        // The whole aggregation's gradient, and what GraphSAGE's own term gives
                        // the block row's rows, alike on every replica.
                        let d_sum = grad_of(&store, &partial.summed)?;
                        let d_self = grad_of(&store, &partial.own)?;
                        let store = (&partial.product * d_sum)?.sum_all()?.backward()?;
                        // The gradients of the blocks this replica multiplied go back to their
                        // roots; a root adds the group's to its own.
                        for (k, block) in &partial.received {
                            let to = *k as usize * c + j;
                            let g = grad_of(&store, block)?;
                            let t = tag(
                                Payload::Gradient,
                                Op::backward(to as u32, op.stage - 1),
                                device,
                                op.stage,
                            );
                            spans.extend(transport.send(to, t, &g, start)?);
                        }
                        let mut d_own = if root {
                            grad_of(&store, &partial.own)?
                        } else {
                            partial.own.as_tensor().zeros_like()?
                        };
                        if root {
                            for &k in &other_rows {
                                let t = tag(
                                    Payload::Gradient,
                                    Op::backward(device as u32, op.stage - 1),
                                    k * c + j,
                                    op.stage,
                                );
                                d_own = (d_own + inbox.take(transport, t, &mut ledger, start)?)?;
                            }
                        }
                        synchronize(&dev)?;
                        let posted = ns(Instant::now());
                        let sum = all_reduce(transport, &replicas, d_own, &dev)?;
                        if c > 1 {
                            let next = replicas[(j + 1) % c];
                            spans.push(share_span(
                                input,
                                (device, next),
                                Op::backward(next as u32, op.stage - 1),
                                Payload::Gradient,
                                ring(c, 4 * sum.elem_count() as u64),
                                posted,
                            ));
                        }
                        own_grad = Some((sum + d_self)?);
                    }
                    let summed = match summed {
                        Some(g) => g,
                        None => accumulate_parts(None, vec![None; vars.len()], &vars)?,
                    };
                    if first {
                        ledger.change(
                            ns(Instant::now()),
                            MemoryCategory::Gradients,
                            bytes_of(&summed),
                        );
                    }
                    if l == 0 {
                        // This device's share of the ring all-reduce of the weights, to the next.
                        if n_devices > 1 {
                            let next = (device + 1) % n_devices;
                            spans.push(share_span(
                                input,
                                (device, next),
                                Op::optimizer(next as u32, 0),
                                Payload::Weights,
                                ring(n_devices, 4 * params),
                                ns(Instant::now()),
                            ));
                        }
                        transport.start_all_reduce(&everyone, summed.clone())?;
                    }
                    grads = Some(summed);
                }
                OpKind::Optimizer => {
                    let summed = transport.finish_all_reduce(&dev)?;
                    began = ledger.op_starts(&dev, start)?;
                    adam.step(&summed)?;
                    if let Some(g) = grads.take() {
                        let bytes = bytes_of(&g);
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, -bytes);
                    }
                }
                OpKind::InputGrad | OpKind::WeightGrad => {
                    candle_core::bail!("graph parallelism runs whole backwards, not {op}")
                }
            }
            synchronize(&dev)?;
            let ended = Instant::now();
            ledger.op_ends(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        let params = if device == 0 {
            vec![(0, model.values()?)]
        } else {
            Vec::new()
        };
        if !crew.end_epoch(transport, device, &spans, &mut ledger, params, loss_total)? {
            return Ok(());
        }
    }
    crew.finish()
}

/// The sum of `t` over `group`, in the group's order.
fn all_reduce(
    transport: &mut dyn Transport,
    group: &[usize],
    t: Tensor,
    device: &Device,
) -> candle_core::Result<Tensor> {
    transport.start_all_reduce(group, vec![t])?;
    let mut sum = transport.finish_all_reduce(device)?;
    sum.pop()
        .ok_or_else(|| candle_core::Error::Msg("an all-reduce of one tensor gave none".into()))
}
