//! Graph parallelism (CAGNET 1D): every device owns a partition and runs every layer for it.

use super::ir::{DataFlow, Op, Schedule, ScheduleKind};
use super::{ScheduleError, MAX_DEVICES};

/// Generates a graph-parallel epoch.
///
/// # Arguments
/// `n_layers` layers; `readers[p]` lists the partitions that read partition p's rows at each
/// layer (every other partition for a broadcast exchange, the partitions with an edge into p for
/// a halo exchange). Partition p runs on device p.
///
/// # Returns
/// Per device p: `F(p, 0..L)`, `B(p, L-1..0)`, `U(p, 0)`. Each layer's forward waits for the rows
/// it reads from other partitions, each backward for the gradients of the rows other partitions
/// read, and each optimizer step for the all-reduce of the weight gradients (the simulator runs
/// its steps on the links). A shape error past [`MAX_DEVICES`] partitions.
///
/// # Complexity
/// O(P·L) ops, O(P²·L) dependencies for a broadcast exchange.
///
/// # Reference
/// Tripathy, Yelick, Buluç, "Reducing Communication in Graph Neural Network Training", SC 2020.
pub fn generate(n_layers: u32, readers: Vec<Vec<u32>>) -> Result<Schedule, ScheduleError> {
    if readers.len() > MAX_DEVICES {
        // A cluster holds more devices, but every layer's exchange grows with the square of the
        // partitions: 4,096 of them would be 16.7 M hand-offs a layer.
        return Err(ScheduleError::Shape(format!(
            "graph parallelism over {} partitions: at most {MAX_DEVICES} (each layer exchanges rows between pairs of partitions)",
            readers.len()
        )));
    }
    let n_parts = readers.len() as u32;
    let orders = (0..n_parts)
        .map(|part| {
            let mut order: Vec<Op> = (0..n_layers)
                .map(|layer| Op::forward(part, layer))
                .collect();
            order.extend((0..n_layers).rev().map(|layer| Op::backward(part, layer)));
            order.push(Op::optimizer(part, 0));
            order
        })
        .collect();
    Schedule::from_orders(
        ScheduleKind::GraphParallel,
        DataFlow::GraphParallel { readers },
        n_layers,
        n_parts,
        orders,
    )
}
