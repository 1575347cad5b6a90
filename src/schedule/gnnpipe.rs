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
