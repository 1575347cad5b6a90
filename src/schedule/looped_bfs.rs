//! Looped BFS: each device runs several stages, placed round-robin, and runs every chunk
//! through one local stage before the next (breadth first), then the backwards in the reverse
//! stage order.
//!
//! The per-device orders are exactly those of PyTorch's `ScheduleLoopedBFS` (torch 2.15, idle
//! slots dropped), checked by `tests/it/torch_orders.rs`.

use super::ir::{DataFlow, Op, Schedule, ScheduleKind};
use super::ScheduleError;

/// Generates Looped BFS on `devices` devices with `per_device` stages each and `n_chunks`
/// chunks.
///
/// Device d holds stages `d, d + P, ...`; it runs `F(0..K)` on each of them in increasing stage
/// order, then `B(K-1..0)` on each in decreasing stage order, then one optimizer step per stage.
/// Peak stash: every chunk on every local stage, `v K`.
///
/// # Complexity
/// O(S·K) time and memory.
///
/// # Reference
/// Lamy-Poirier, "Breadth-First Pipeline Parallelism", MLSys 2023.
pub(crate) fn generate(
    devices: u32,
    per_device: u32,
    n_chunks: u32,
) -> Result<Schedule, ScheduleError> {
    let orders = (0..devices)
        .map(|device| {
            let stages = (0..per_device).map(|i| i * devices + device);
            let mut order = Vec::with_capacity((2 * n_chunks + 1) as usize * per_device as usize);
            for stage in stages.clone() {
                order.extend((0..n_chunks).map(|chunk| Op::forward(chunk, stage)));
            }
            for stage in stages.clone().rev() {
                order.extend((0..n_chunks).rev().map(|chunk| Op::backward(chunk, stage)));
            }
            order.extend(stages.map(|stage| Op::optimizer(0, stage)));
            order
        })
        .collect();
    Schedule::from_orders(
        ScheduleKind::LoopedBfs,
        DataFlow::PIPELINE,
        devices * per_device,
        n_chunks,
        orders,
    )
}
