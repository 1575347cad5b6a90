//! Graph parallelism on the executor (CAGNET 1D): every worker owns a partition and runs every
//! layer for it. `F(p, l)` sends each reader partition the rows of p it reads (halo exchange) or
//! all of p's rows (broadcast); `B(p, l)` sends the gradient of the rows it read back to their
//! owners. The weight gradients are all-reduced through memory shared by the workers and summed
//! in partition order, so every replica takes the same step; the transfer spans of the
//! all-reduce record the bytes a ring all-reduce moves, `2 (P - 1) / P` of the gradients per
//! partition, as the simulator does.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};

use super::data::ChunkPlan;
use super::device::synchronize;
use super::layers::{cross_entropy, StageInput, Training};
use super::optim::{Adam, AdamConfig};
use super::runner::{
    accumulate, bytes_of, compute_span, grad_of, send, EpochReport, ExecInput, Inbox, Ledger,
    Message, Shared,
};
use crate::gnn::Halo;
use crate::schedule::lower::Payload;
use crate::schedule::{DataFlow, Op, OpKind};
use crate::trace::{MemoryCategory, Span, SpanKind};

/// The weight gradients each partition posts for the all-reduce of one epoch.
pub struct Board {
    posted: Mutex<Posted>,
    ready: Condvar,
}

impl Board {
    /// An empty board for `parts` partitions.
    pub fn new(parts: usize) -> Self {
        Board {
            posted: Mutex::new((0, vec![None; parts])),
            ready: Condvar::new(),
        }
    }
}

/// One layer's forward record.
struct LayerStash {
    /// The layer's own input rows (layer > 0), tracked.
    own: Option<Var>,
    /// Rows received from each owner, as leaves (their gradients go back).
    halo: Vec<(u32, Var)>,
    /// The layer's output (own rows).
    out: Tensor,
}

/// A graph-parallel worker for partition `device`.
pub(super) fn work(
    input: &ExecInput<'_>,
    device: usize,
    slot: usize,
    inbox: Receiver<Message>,
    shared: Shared,
) -> candle_core::Result<()> {
    let schedule = input.schedule;
    let DataFlow::GraphParallel { readers } = schedule.flow() else {
        candle_core::bail!("a graph-parallel worker runs a graph-parallel schedule");
    };
    let board = shared.board.clone();
    let p = device as u32;
    let n_parts = schedule.n_chunks() as usize;
    let n_layers = input.model.layers.len();
    let dev = input.compute.device(device).clone();
    let meter = super::memory::DeviceMeter::new(&dev, input.compute.is_shared())?;
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
    // For each owner this partition reads from: the positions in the halo of the rows it
    // sends (all of them but for a broadcast, where the used ones are picked).
    let halo = graph.halo_rows();
    let mut owners: Vec<(u32, Vec<u32>)> = Vec::new();
    for q in (0..n_parts as u32).filter(|&q| readers[q as usize].contains(&p)) {
        let picked: Vec<u32> = if broadcast {
            let theirs = &members[q as usize];
            halo.iter()
                .filter(|&&u| input.part[u as usize] == q)
                .map(|u| {
                    theirs
                        .binary_search(u)
                        .expect("a halo row belongs to its owner") as u32
                })
                .collect()
        } else {
            Vec::new()
        };
        owners.push((q, picked));
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
        for &op in order {
            inbox.drain(&mut ledger, ns(Instant::now()))?;
            let l = op.stage as usize;
            let mut sends: Vec<(Payload, Op, Tensor)> = Vec::new();
            let began;
            match op.kind {
                OpKind::InputGrad | OpKind::WeightGrad => {
                    unreachable!("graph parallelism has no split backwards (Schedule::from_orders refuses them)")
                }
                OpKind::Forward => {
                    let mut received = Vec::new();
                    if l > 0 {
                        for (q, picked) in &owners {
                            let t =
                                inbox.take((Payload::Activation, op, *q), &mut ledger, start)?;
                            let t = if broadcast {
                                t.index_select(&Tensor::new(picked.as_slice(), &dev)?, 0)?
                            } else {
                                t
                            };
                            received.push((*q, Var::from_tensor(&t)?));
                        }
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
                    if l + 1 < n_layers {
                        for (&q, rows) in &send_rows {
                            let rows = out.index_select(&Tensor::new(rows.as_slice(), &dev)?, 0)?;
                            sends.push((Payload::Activation, Op::forward(q, op.stage + 1), rows));
                        }
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
                        for (&q, rows) in &send_rows {
                            let part =
                                inbox.take((Payload::Gradient, op, q), &mut ledger, start)?;
                            let index = Tensor::new(rows.as_slice(), &dev)?;
                            let part = if broadcast {
                                part.index_select(&index, 0)?
                            } else {
                                part
                            };
                            g = g.index_add(&index, &part, 0)?;
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
                    for (q, var) in &record.halo {
                        let mut g = grad_of(&store, var)?;
                        if broadcast {
                            // The owner takes back a gradient for every row it broadcast.
                            let (_, picked) = owners
                                .iter()
                                .find(|(owner, _)| owner == q)
                                .expect("rows came from an owner");
                            let rows = members[*q as usize].len();
                            let zeros = Tensor::zeros((rows, g.dim(1)?), g.dtype(), &dev)?;
                            g = zeros.index_add(&Tensor::new(picked.as_slice(), &dev)?, &g, 0)?;
                        }
                        sends.push((Payload::Gradient, Op::backward(*q, op.stage - 1), g));
                    }
                    if l == 0 {
                        // Stamped before posting: a replica may take its step as soon as the
                        // gradients are posted.
                        let posted = ns(Instant::now());
                        if n_parts > 1 {
                            spans.push(allreduce_span(
                                input,
                                device,
                                (device + 1) % n_parts,
                                allreduce_bytes,
                                posted,
                            ));
                        }
                        post(&board, device, grads.clone().unwrap_or_default());
                    }
                }
                OpKind::Optimizer => {
                    let summed = collect(&board, &shared, n_parts, &dev)?;
                    began = ledger.op_starts(&dev, start)?;
                    adam.step(&summed)?;
                    if let Some(g) = grads.take() {
                        let bytes = bytes_of(&g);
                        ledger.change(ns(Instant::now()), MemoryCategory::Gradients, -bytes);
                    }
                }
            }
            synchronize(&dev)?;
            for (payload, to, tensor) in sends {
                spans.extend(send(input, &shared, device, p, payload, to, tensor, start));
            }
            let ended = Instant::now();
            ledger.sample(ns(ended))?;
            spans.push(compute_span(op, placed, ns(began), ns(ended)));
        }
        finish(&board, &shared, n_parts)?;
        let params = if device == 0 {
            vec![(0, model.values()?)]
        } else {
            Vec::new()
        };
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

fn post(board: &Board, device: usize, grads: Vec<Tensor>) {
    let mut posted = board
        .posted
        .lock()
        .expect("no worker panics holding the lock");
    posted.1[device] = Some(grads);
    board.ready.notify_all();
}

/// Waits for every partition's gradients and sums them in partition order.
/// The sum is on `device`: a replica on another GPU sends its gradients over.
fn collect(
    board: &Board,
    shared: &Shared,
    n_parts: usize,
    device: &Device,
) -> candle_core::Result<Vec<Tensor>> {
    let posted = wait_until(board, shared, |posted| posted.1.iter().all(Option::is_some))?;
    let mut sum: Option<Vec<Tensor>> = None;
    for grads in posted.1.iter().take(n_parts).flatten() {
        let grads = grads
            .iter()
            .map(|g| g.to_device(device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        sum = Some(match sum {
            None => grads,
            Some(acc) => acc
                .iter()
                .zip(&grads)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<Vec<_>>>()?,
        });
    }
    Ok(sum.unwrap_or_default())
}

/// Every partition has taken its step: clear the board for the next epoch.
fn finish(board: &Board, shared: &Shared, n_parts: usize) -> candle_core::Result<()> {
    {
        let mut posted = board
            .posted
            .lock()
            .expect("no worker panics holding the lock");
        posted.0 += 1;
        if posted.0 as usize == n_parts {
            *posted = (0, vec![None; n_parts]);
            board.ready.notify_all();
            return Ok(());
        }
    }
    wait_until(board, shared, |posted| posted.0 == 0).map(drop)
}

/// What the board holds: how many partitions are done with the epoch, and each one's posted
/// gradients.
type Posted = (u32, Vec<Option<Vec<Tensor>>>);

/// Waits until `ready` holds of the board (or the run is stopped) and returns it locked.
fn wait_until<'b>(
    board: &'b Board,
    shared: &Shared,
    ready: impl Fn(&Posted) -> bool,
) -> candle_core::Result<std::sync::MutexGuard<'b, Posted>> {
    let mut posted = board
        .posted
        .lock()
        .expect("no worker panics holding the lock");
    while !ready(&posted) {
        if shared.start.is_aborted() {
            candle_core::bail!("the run was stopped");
        }
        posted = board
            .ready
            .wait_timeout(posted, Duration::from_millis(20))
            .expect("no worker panics holding the lock")
            .0;
    }
    Ok(posted)
}

/// The all-reduce's share of one partition, on the link to the next partition of the ring.
fn allreduce_span(input: &ExecInput<'_>, from: usize, to: usize, bytes: u64, now: u64) -> Span {
    let (src, dst) = (input.placement[from], input.placement[to]);
    let route = input.network.route(src, dst);
    Span {
        kind: SpanKind::Transfer(Payload::Weights),
        hop: 0,
        lane_index: route.links.first().map_or(0, |&l| l as u32),
        chunk: to as u32,
        stage: 0,
        device: dst as u32,
        start_ns: now,
        end_ns: now,
        bytes,
        requested_ns: now,
    }
}
