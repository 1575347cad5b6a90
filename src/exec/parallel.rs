//! The graph-parallel worker (CAGNET 1D): every worker owns a partition and runs every layer
//! for it. `F(p, l)` sends each reader partition the rows of p it reads (halo exchange) or all
//! of p's rows (broadcast); `B(p, l)` sends the gradient of the rows it read back to their
//! owners; which partitions those are is the lowered schedule's ([`crate::schedule::lower`]),
//! and so is every message the worker waits for. The weight gradients are all-reduced by the
//! transport and summed in partition order, so every replica takes the same step; the transfer
//! spans of the all-reduce record the bytes a ring all-reduce moves, `2 (P - 1) / P` of the
//! gradients per partition, on the link to the partition the lowering hands the weights to.
//! The simulator runs the same all-reduce as a collective of steps on the links
//! (`sim::collective`): on a ring the bytes per link agree; on other topologies it may choose a
//! tree or a hierarchical form whose steps cross other links, and only the totals agree.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Tensor, Var};

use super::crew::Crew;
use super::data::ChunkPlan;
use super::device::synchronize;
use super::input::ExecInput;
use super::layers::{cross_entropy, StageInput, Training};
use super::ledger::{bytes_of, compute_span, share_span, Ledger};
use super::optim::{accumulate, grad_of, Adam, AdamConfig};
use super::transport::handoffs::{outgoing, Inbound, Inbox};
use super::transport::{Tag, Transport};
use crate::gnn::Halo;
use crate::schedule::lower::{Lowered, Payload};
use crate::schedule::{DataFlow, OpKind};
use crate::trace::{MemoryCategory, Span};

/// One layer's forward record.
struct LayerStash {
    /// The layer's own input rows (layer > 0), tracked.
    own: Option<Var>,
    /// Rows received from each owner, as leaves (their gradients go back).
    halo: Vec<(u32, Var)>,
    /// The layer's output (own rows).
    out: Tensor,
}

/// A graph-parallel worker for partition `transport.rank()`.
pub(super) fn work(
    input: &ExecInput<'_>,
    lowered: &Lowered,
    slot: usize,
    transport: &mut dyn Transport,
    crew: &Crew,
) -> candle_core::Result<()> {
    let schedule = input.schedule;
    let DataFlow::GraphParallel { readers } = schedule.flow() else {
        candle_core::bail!("a graph-parallel worker runs a graph-parallel schedule");
    };
    let device = transport.rank();
    let p = device as u32;
    let n_parts = schedule.n_chunks() as usize;
    // The weight all-reduce is over every replica, in partition order.
    let everyone: Vec<usize> = (0..transport.n_ranks()).collect();
    let n_layers = input.model.layers.len();
    let dev = input.compute.device(device).clone();
    let meter = super::memory::DeviceMeter::new(&dev)?;
    let all = 0..n_layers;
    let model = input.stage_model(input.build_model(&dev)?, &all);
    let mut adam = Adam::new(
        model.vars(),
        AdamConfig::new(input.config.lr, input.config.weight_decay),
    )?;
    let members = input.members();
    let plan: ChunkPlan = input.plan(members[device].clone(), all.clone());
    let features = input.data.feature_rows(&plan.layer(0).read);
    let graph = plan.layer(0);
    let own = &plan.vertices;
    // Rows of this partition each reader reads (positions among own rows), ascending.
    let broadcast = input.halo == Halo::Broadcast;
    let send_rows: BTreeMap<u32, Vec<u32>> = readers[device]
        .iter()
        .map(|&q| {
            let rows = (0..own.len() as u32)
                .filter(|&i| {
                    broadcast
                        || input
                            .graph
                            .neighbors(own[i as usize])
                            .iter()
                            .any(|&u| input.part[u as usize] == q)
                })
                .collect();
            (q, rows)
        })
        .collect();
    // For a broadcast, for each owner this partition reads from: the positions in the owner's
    // rows of the halo rows it uses (a halo exchange sends exactly those).
    let halo = graph.halo_rows();
    let mut picked: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if broadcast {
        for q in (0..n_parts as u32).filter(|&q| readers[q as usize].contains(&p)) {
            let theirs = &members[q as usize];
            let rows = halo
                .iter()
                .filter(|&&u| input.part[u as usize] == q)
                .map(|u| {
                    theirs
                        .binary_search(u)
                        .expect("a halo row belongs to its owner") as u32
                })
                .collect();
            picked.insert(q, rows);
        }
    }
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
    let params: u64 = model
        .vars()
        .iter()
        .map(|v| v.as_tensor().elem_count() as u64)
        .sum();
    let allreduce_bytes =
        (2.0 * (n_parts as f64 - 1.0) / n_parts as f64 * params as f64 * 4.0).ceil() as u64;
    let mut inbox = Inbox::new(dev.clone(), crew.waiting);
    let inbound = Inbound::new(lowered, device);
    let placed = input.placement[device] as u32;
    let mut ledger = Ledger::new(slot, placed, meter).sharing(crew.cores.clone());
    let positions = lowered.positions(device);
    let mut spans: Vec<Span> = Vec::with_capacity(4 * positions.len());
    for epoch in 1..=input.config.epochs {
        let start = crew.start_epoch(transport)?;
        let params_bytes = 4 * params;
        ledger.start(&[
            (MemoryCategory::Parameters, params_bytes),
            (MemoryCategory::OptimizerState, 2 * params_bytes),
            (
                MemoryCategory::Features,
                super::data::sparse_bytes(&features),
            ),
            (MemoryCategory::Graph, plan.bytes()),
        ])?;
        spans.clear();
        let ns = |t: Instant| t.duration_since(start).as_nanos() as u64;
        let training = Training {
            seed: input.config.seed,
            epoch,
        };
        let mut stash: Vec<Option<LayerStash>> = (0..n_layers).map(|_| None).collect();
        let mut own_grad: Option<Tensor> = None;
        let mut grads: Option<Vec<Tensor>> = None;
        let mut loss_total = 0.0;
        for (index, position) in positions.clone().enumerate() {
            let op = lowered.op(position);
            inbox.drain(transport, &mut ledger, ns(Instant::now()))?;
            let l = op.stage as usize;
            let mut sends: Vec<(usize, Tag, Tensor)> = Vec::new();
            let began;
            match op.kind {
                OpKind::InputGrad | OpKind::WeightGrad => {
                    unreachable!("graph parallelism has no split backwards (Schedule::from_orders refuses them)")
                }
                OpKind::Forward => {
                    // The rows of every owner this layer reads, in partition order (the order
                    // of the halo rows).
                    let mut received = Vec::new();
                    for incoming in inbound.of(index) {
                        let q = incoming.handoff.from.chunk;
                        let t = inbox.take(transport, incoming.tag(), &mut ledger, start)?;
                        let t = if broadcast {
                            t.index_select(&Tensor::new(rows_of(&picked, q, READS, p)?, &dev)?, 0)?
                        } else {
                            t
                        };
                        received.push((q, Var::from_tensor(&t)?));
                    }
                    began = ledger.op_starts(&dev, start)?;
                    let (own_var, x) = if l == 0 {
                        (None, StageInput::Sparse(features.clone()))
                    } else {
                        let previous = stash[l - 1].as_ref().expect("layers run in order");
                        let own_var = Var::from_tensor(&previous.out.detach())?;
                        let mut parts = vec![own_var.as_tensor().clone()];
                        parts.extend(received.iter().map(|(_, v)| v.as_tensor().clone()));
                        (Some(own_var), StageInput::Dense(Tensor::cat(&parts, 0)?))
                    };
                    let out = model.layer_forward(
                        l,
                        x,
                        graph,
                        graph.attention.as_ref().map(|a| &a.edges),
                        Some(training),
                    )?;
                    for (handoff, to) in outgoing(lowered, position) {
                        let q = handoff.to.chunk;
                        let rows = out.index_select(
                            &Tensor::new(rows_of(&send_rows, q, READ, p)?, &dev)?,
                            0,
                        )?;
                        sends.push((to, Tag::of(&handoff), rows));
                    }
                    stash[l] = Some(LayerStash {
                        own: own_var,
                        halo: received,
                        out,
                    });
                }
                OpKind::Backward => {
                    let mut g_out = None;
                    if l + 1 < n_layers {
                        let mut g = own_grad.take().expect("backwards run from the last layer");
                        // The gradients of this partition's rows its readers used, added in
                        // partition order.
                        for incoming in inbound.of(index) {
                            let q = incoming.handoff.from.chunk;
                            let part = inbox.take(transport, incoming.tag(), &mut ledger, start)?;
                            let at = Tensor::new(rows_of(&send_rows, q, READ, p)?, &dev)?;
                            let part = if broadcast {
                                part.index_select(&at, 0)?
                            } else {
                                part
                            };
                            g = g.index_add(&at, &part, 0)?;
                        }
                        g_out = Some(g);
                    }
                    began = ledger.op_starts(&dev, start)?;
                    let record = stash[l].take().expect("a backward follows its forward");
                    let objective = match g_out {
                        None => {
                            let loss = cross_entropy(
                                &record.out,
                                &train_rows,
                                input.data.train.len().max(1),
                            )?;
                            loss_total += f64::from(loss.to_scalar::<f32>()?);
                            loss
                        }
                        Some(g) => (&record.out * g.detach())?.sum_all()?,
                    };
                    let store = objective.backward()?;
                    let first = grads.is_none();
                    let summed = accumulate(grads.take(), &store, &model.vars())?;
                    if first {
                        let bytes = bytes_of(&summed);
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, bytes);
                    }
                    grads = Some(summed);
                    if let Some(own_var) = &record.own {
                        own_grad = Some(grad_of(&store, own_var)?);
                    }
                    // Stamped before the all-reduce starts: a replica may take its step as soon
                    // as every offer is in.
                    let posted = ns(Instant::now());
                    for (handoff, to) in outgoing(lowered, position) {
                        let q = handoff.to.chunk;
                        match handoff.payload {
                            Payload::Gradient => {
                                let (_, var) = record
                                    .halo
                                    .iter()
                                    .find(|(owner, _)| *owner == q)
                                    .ok_or_else(|| {
                                        candle_core::Error::Msg(format!(
                                            "{op} owes partition {q} a gradient for rows it never \
                                             received"
                                        ))
                                    })?;
                                let mut g = grad_of(&store, var)?;
                                if broadcast {
                                    // The owner takes back a gradient for every row it broadcast.
                                    let rows = members[q as usize].len();
                                    let zeros = Tensor::zeros((rows, g.dim(1)?), g.dtype(), &dev)?;
                                    let index = Tensor::new(rows_of(&picked, q, READS, p)?, &dev)?;
                                    g = zeros.index_add(&index, &g, 0)?;
                                }
                                sends.push((to, Tag::of(&handoff), g));
                            }
                            // This replica's share of the ring all-reduce, to the next one.
                            Payload::Weights => spans.push(share_span(
                                input,
                                (device, to),
                                handoff.to,
                                Payload::Weights,
                                allreduce_bytes,
                                posted,
                            )),
                            Payload::Activation => {
                                candle_core::bail!("{op} hands on no activation")
                            }
                        }
                    }
                    if l == 0 {
                        transport.start_all_reduce(&everyone, grads.clone().unwrap_or_default())?;
                    }
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
            }
            synchronize(&dev)?;
            for (to, tag, tensor) in sends {
                spans.extend(transport.send(to, tag, &tensor, start)?);
            }
            let ended = Instant::now();
            ledger.op_ends(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        // Every partition has taken its step.
        transport.barrier()?;
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

const READ: &str = "is not read by partition";
const READS: &str = "reads nothing of partition";

/// The rows `map` holds for partition `q`; an error saying that partition `p` `what` `q` where
/// the lowering names a partition the data flow does not.
fn rows_of<'m>(
    map: &'m BTreeMap<u32, Vec<u32>>,
    q: u32,
    what: &str,
    p: u32,
) -> candle_core::Result<&'m [u32]> {
    map.get(&q)
        .map(Vec::as_slice)
        .ok_or_else(|| candle_core::Error::Msg(format!("partition {p} {what} {q}")))
}
