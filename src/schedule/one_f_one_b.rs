//! 1F1B (PipeDream-Flush): warm-up forwards, then alternate one forward and one backward.

use super::ir::{DataFlow, Op, PipelineSpec, Schedule, ScheduleKind};
use super::ScheduleError;

/// Generates 1F1B's per-device orders.
///
/// # Arguments
/// `spec`: S stages (stage s on device s) and K chunks; the backward order is ignored.
///
/// # Returns
/// Per stage s: `w = min(S - s - 1, K)` warm-up forwards, then `F(w + i) B(i)` for
/// `i in 0..K-w`, then the remaining backwards in order, then `U(s)`. Peak stash on stage s is
/// `min(S - s, K)` chunks.
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Narayanan et al., "Memory-Efficient Pipeline-Parallel DNN Training" (PipeDream-Flush),
/// ICML 2021; the order Megatron-LM and DeepSpeed run.
pub fn generate(spec: &PipelineSpec) -> Result<Schedule, ScheduleError> {
    let orders = (0..spec.n_stages)
        .map(|stage| stage_order(spec, stage))
        .collect();
    Schedule::from_orders(
        ScheduleKind::OneFOneB,
        DataFlow::PIPELINE,
        spec.n_stages,
        spec.n_chunks,
        orders,
    )
}

/// One stage's 1F1B order; shared with GNNPipe's `order: 1f1b`.
pub(crate) fn stage_order(spec: &PipelineSpec, stage: u32) -> Vec<Op> {
    let k = spec.n_chunks;
    let warmup = (spec.n_stages - stage - 1).min(k);
    let mut order = Vec::with_capacity(2 * k as usize + 1);
    order.extend((0..warmup).map(|chunk| Op::forward(chunk, stage)));
    for i in 0..k - warmup {
        order.push(Op::forward(warmup + i, stage));
        order.push(Op::backward(i, stage));
    }
    order.extend((k - warmup..k).map(|chunk| Op::backward(chunk, stage)));
    order.push(Op::optimizer(0, stage));
    order
}
