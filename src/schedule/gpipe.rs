//! GPipe: every forward, then every backward, then the optimizer step.

use super::ir::{BackwardOrder, DataFlow, Op, PipelineSpec, Schedule, ScheduleKind};
use super::ScheduleError;

/// Generates GPipe's per-device orders.
///
/// # Arguments
/// `spec`: S stages (stage s on device s), K chunks, and the backward order: `Forward` gives
/// `F(0..K) B(0..K) U` as PyTorch's `ScheduleGPipe`; `Reverse` gives `F(0..K) B(K-1..0) U` as
/// autograd and torchgpipe do.
///
/// # Returns
/// A schedule whose peak stash is K chunks on every stage, or an error for a zero shape.
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
/// Parallelism", NeurIPS 2019.
pub fn generate(spec: &PipelineSpec) -> Result<Schedule, ScheduleError> {
    let orders = (0..spec.n_stages)
        .map(|stage| stage_order(spec, stage))
        .collect();
    Schedule::from_orders(
        ScheduleKind::GPipe,
        DataFlow::PIPELINE,
        spec.n_stages,
        spec.n_chunks,
        orders,
    )
}

/// One stage's GPipe order; shared with GNNPipe's `order: gpipe`.
pub(crate) fn stage_order(spec: &PipelineSpec, stage: u32) -> Vec<Op> {
    let k = spec.n_chunks;
    let mut order = Vec::with_capacity(2 * k as usize + 1);
    order.extend((0..k).map(|chunk| Op::forward(chunk, stage)));
    match spec.backward_order {
        BackwardOrder::Forward => order.extend((0..k).map(|chunk| Op::backward(chunk, stage))),
        BackwardOrder::Reverse => {
            order.extend((0..k).rev().map(|chunk| Op::backward(chunk, stage)))
        }
    }
    order.push(Op::optimizer(0, stage));
    order
}
