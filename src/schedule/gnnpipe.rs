//! GNNPipe's op order: each stage runs the whole graph chunk by chunk through its layers.
//!
//! This is the ordering skeleton. The dependencies between chunks are the pipeline's own (F after
//! the previous stage's F, B after the next stage's B): a chunk never waits for a neighbour chunk,
//! because neighbours not yet recomputed this epoch are read from the history buffer. What the
//! stale reads cost (history memory, boundary traffic of N x d per epoch) is the GNN workload's
//! business, not the order's.

use super::ir::{Op, PipelineSpec, Schedule, ScheduleKind};
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

/// Generates GNNPipe's per-device orders.
///
/// # Arguments
/// `spec`: S stages (stage s on device s, each owning consecutive layers), K chunks covering the
/// whole graph; `order` picks GPipe-like or 1F1B-like issue order.
///
/// # Returns
/// A schedule with one optimizer step per stage at the end of the epoch (`update: per_epoch`).
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Chen, Chen, Qian, "GNNPipe: Scaling Deep GNN Training with Pipelined Model Parallelism", 2023.
pub fn generate(spec: &PipelineSpec, order: GnnPipeOrder) -> Result<Schedule, ScheduleError> {
    let orders = (0..spec.n_stages)
        .map(|stage| match order {
            GnnPipeOrder::GPipe => gpipe::stage_order(spec, stage),
            GnnPipeOrder::OneFOneB => one_f_one_b::stage_order(spec, stage),
        })
        .collect::<Vec<Vec<Op>>>();
    Schedule::from_orders(ScheduleKind::GnnPipe, spec.n_stages, spec.n_chunks, orders)
}
