//! GNNPipe's op order: each stage runs the whole graph chunk by chunk through its layers.
//!
//! A chunk never waits for a neighbour chunk in the forward pass: neighbours not yet recomputed
//! this epoch are read from the history buffer. What the stale reads cost (history memory, the
//! N x d boundary traffic per epoch) is the GNN cost model's business; the knobs that change the
//! dependencies or the op list are here.

use super::ir::{
    BackwardOrder, BackwardSync, DataFlow, Op, OpKind, PipelineSpec, Schedule, ScheduleKind,
    UpdateMode,
};
use super::{gpipe, one_f_one_b, ScheduleError};

/// The per-epoch op order GNNPipe uses on each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GnnPipeOrder {
    /// All forwards, then all backwards (in chunk order), per epoch.
    #[default]
    GPipe,
    /// One forward, one backward after a warm-up.
    OneFOneB,
}

/// How cross-chunk gradient contributions are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GnnPipeBackward {
    /// Dropped, as GNNAutoScale does: backwards wait only for their own chunk's gradient.
    #[default]
    Drop,
    /// Applied one epoch late, as PipeGCN does: same dependencies as `Drop`, plus a buffer of
    /// deferred gradients (a memory cost).
    Deferred,
    /// Exact: a stage's backwards wait for every chunk's gradient from the next stage (a
    /// per-stage barrier that stops backward pipelining), and run in reverse chunk order: the
    /// rows of chunk c are read fresh only by chunks after it, so once those backwards have run
    /// the gradient of chunk c's rows is complete.
    Exact,
}

/// GNNPipe's knobs, since the paper leaves them open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GnnPipeKnobs {
    /// Issue order per epoch.
    pub order: GnnPipeOrder,
    /// Cross-chunk gradients.
    pub backward: GnnPipeBackward,
    /// One optimizer step per epoch or per chunk.
    pub update: UpdateMode,
}

/// Generates GNNPipe's per-device orders.
///
/// # Arguments
/// `spec`: S stages (stage s on device s, each owning consecutive layers), K chunks covering the
/// whole graph; `knobs` pick the issue order, the backward rule and the update frequency.
///
/// # Returns
/// The schedule; with `update: per_chunk` each `B(c, s)` is followed by `U(c, s)`. Exact
/// backward with 1F1B order is refused: it cannot run (see the error).
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Chen, Chen, Qian, "GNNPipe: Scaling Deep GNN Training with Pipelined Model Parallelism", 2023.
pub fn generate(spec: &PipelineSpec, knobs: GnnPipeKnobs) -> Result<Schedule, ScheduleError> {
    if knobs.backward == GnnPipeBackward::Exact
        && knobs.order == GnnPipeOrder::OneFOneB
        && spec.n_stages > 1
        && spec.n_chunks > 1
    {
        // Every backward of a stage waits for every chunk's gradient from the next stage, so no
        // backward can run before every forward: 1F1B's interleaving would deadlock.
        return Err(ScheduleError::Shape(
            "gnnpipe with exact backward needs order gpipe: its backwards wait for every chunk's gradient, so 1F1B's interleaving deadlocks".into(),
        ));
    }
    let spec = &PipelineSpec {
        backward_order: match knobs.backward {
            GnnPipeBackward::Exact => BackwardOrder::Reverse,
            GnnPipeBackward::Drop | GnnPipeBackward::Deferred => BackwardOrder::Forward,
        },
        ..*spec
    };
    let orders = (0..spec.n_stages)
        .map(|stage| {
            let order = match knobs.order {
                GnnPipeOrder::GPipe => gpipe::stage_order(spec, stage),
                GnnPipeOrder::OneFOneB => one_f_one_b::stage_order(spec, stage),
            };
            match knobs.update {
                UpdateMode::PerEpoch => order,
                UpdateMode::PerChunk => order
                    .into_iter()
                    .filter(|op| op.kind != OpKind::Optimizer)
                    .flat_map(|op| {
                        let step = (op.kind == OpKind::Backward)
                            .then(|| Op::optimizer(op.chunk, op.stage));
                        std::iter::once(op).chain(step)
                    })
                    .collect(),
            }
        })
        .collect::<Vec<Vec<Op>>>();
    let flow = DataFlow::Pipeline {
        backward: match knobs.backward {
            GnnPipeBackward::Exact => BackwardSync::Barrier,
            GnnPipeBackward::Drop | GnnPipeBackward::Deferred => BackwardSync::PerChunk,
        },
        update: knobs.update,
    };
    Schedule::from_orders(
        ScheduleKind::GnnPipe,
        flow,
        spec.n_stages,
        spec.n_chunks,
        orders,
    )
}

/// Generates GNNPipe's hybrid with graph parallelism: S stages, each a group of G devices that
/// each own one graph partition.
///
/// # Arguments
/// `spec`: S stages and K chunks (a chunk is a chunk of every partition); `knobs`: the issue
/// order (backwards wait per chunk, optimizer steps once per epoch); `stage_layers[s]`: the
/// layers of stage s, contiguous and covering the model in order; `readers[g]`: the partitions
/// that read partition g's rows (the per-layer halo exchange inside a group).
///
/// # Returns
/// A schedule on S·G devices, device `s·G + g` running stage s for partition g, over lanes
/// `l·G + g` (layer l of partition g; see [`DataFlow::Hybrid`]): each of GNNPipe's `F(c, s)`
/// becomes `F(c, l·G + g)` for the stage's layers in order, each `B(c, s)` the same in reverse,
/// and `U(0, s)` one step per layer. Exact backwards and per-chunk steps are refused with more
/// than one partition: their barriers and per-chunk all-reduces are not modelled.
///
/// # Complexity
/// O(L·G·K) ops, plus O(L·G²·K) hand-offs for dense reader lists.
///
/// # Reference
/// Chen, Chen, Qian, "GNNPipe: Scaling Deep GNN Training with Pipelined Model Parallelism", 2023
/// (its hybrid of pipeline and graph parallelism for large graphs).
pub fn generate_hybrid(
    spec: &PipelineSpec,
    knobs: GnnPipeKnobs,
    stage_layers: &[std::ops::Range<usize>],
    readers: Vec<Vec<u32>>,
) -> Result<Schedule, ScheduleError> {
    let partitions = readers.len() as u32;
    if partitions == 0 {
        return Err(ScheduleError::Shape("the hybrid needs a partition".into()));
    }
    if partitions > 1 && knobs.backward == GnnPipeBackward::Exact {
        return Err(ScheduleError::Shape(
            "gnnpipe with partitions runs backward drop or deferred: exact's barrier across a group is not modelled".into(),
        ));
    }
    if partitions > 1 && knobs.update == UpdateMode::PerChunk {
        return Err(ScheduleError::Shape(
            "gnnpipe with partitions steps once per epoch: a per-chunk all-reduce in every group is not modelled".into(),
        ));
    }
    let contiguous = stage_layers.len() == spec.n_stages as usize
        && stage_layers.first().is_some_and(|r| r.start == 0)
        && stage_layers
            .windows(2)
            .all(|w| w[0].end == w[1].start && w[1].start < w[1].end)
        && stage_layers.iter().all(|r| r.start < r.end);
    if !contiguous {
        return Err(ScheduleError::Shape(format!(
            "the hybrid needs {} stages of contiguous layers covering the model",
            spec.n_stages
        )));
    }
    let n_layers = stage_layers.last().map_or(0, |r| r.end) as u32;
    let base = generate(spec, knobs)?;
    let mut orders = Vec::with_capacity((spec.n_stages * partitions) as usize);
    for order in base.orders() {
        for g in 0..partitions {
            let mut lanes = Vec::new();
            for op in order {
                let layers = stage_layers[op.stage as usize].clone();
                let lane = |l: usize| l as u32 * partitions + g;
                match op.kind {
                    OpKind::Forward => {
                        lanes.extend(layers.map(|l| Op::forward(op.chunk, lane(l))));
                    }
                    OpKind::Backward => {
                        lanes.extend(layers.rev().map(|l| Op::backward(op.chunk, lane(l))));
                    }
                    OpKind::Optimizer => {
                        lanes.extend(layers.map(|l| Op::optimizer(0, lane(l))));
                    }
                    OpKind::InputGrad | OpKind::WeightGrad => {
                        unreachable!("GNNPipe runs whole backwards")
                    }
                }
            }
            orders.push(lanes);
        }
    }
    Schedule::from_orders(
        ScheduleKind::GnnPipe,
        DataFlow::Hybrid {
            partitions,
            readers,
        },
        n_layers * partitions,
        spec.n_chunks,
        orders,
    )
}
