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

/// How graph parallelism multiplies the sparse adjacency by the dense embeddings (CAGNET's
/// family). Every algorithm runs the same schedule shape (one partition per device, every layer
/// on every device); they differ in what each product moves, which the simulator plays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum GraphAlgorithm {
    /// Block rows, one per device; neighbour rows by halo exchange or broadcast.
    #[default]
    OneD,
    /// P/c block rows, each replicated on `c` devices: broadcasts inside a replica group, then
    /// an all-reduce of the partial products across the c replicas.
    OneHalfD {
        /// The replication factor c (divides P).
        replication: u32,
    },
    /// SUMMA on a sqrt(P) x sqrt(P) grid: the sparse blocks move along rows, the dense blocks
    /// along columns.
    TwoD,
    /// A P^(1/3) cube: all-gathers along two axes, the partial products reduced along fibres.
    ThreeD,
}

impl GraphAlgorithm {
    /// Its name in scenarios (`schedule.algorithm`): `1d`, `1.5d`, `2d`, `3d`.
    pub fn name(self) -> &'static str {
        match self {
            GraphAlgorithm::OneD => "1d",
            GraphAlgorithm::OneHalfD { .. } => "1.5d",
            GraphAlgorithm::TwoD => "2d",
            GraphAlgorithm::ThreeD => "3d",
        }
    }

    /// The suffix of a label (`graph_parallel-1.5d-c2`, `graph_parallel-2d`); empty for 1D.
    pub fn label_suffix(self) -> String {
        match self {
            GraphAlgorithm::OneD => String::new(),
            GraphAlgorithm::OneHalfD { replication } => format!("-1.5d-c{replication}"),
            other => format!("-{}", other.name()),
        }
    }

    /// Parses a label suffix as [`GraphAlgorithm::label_suffix`] writes it (`1.5d-c2`, `2d`,
    /// `3d`).
    pub fn from_suffix(suffix: &str) -> Option<Self> {
        match suffix {
            "1d" => Some(GraphAlgorithm::OneD),
            "2d" => Some(GraphAlgorithm::TwoD),
            "3d" => Some(GraphAlgorithm::ThreeD),
            _ => {
                let c = suffix.strip_prefix("1.5d-c")?.parse::<u32>().ok()?;
                (c >= 1).then_some(GraphAlgorithm::OneHalfD { replication: c })
            }
        }
    }

    /// The side of the grid on `n_devices` devices: sqrt(P) for 2D, P^(1/3) for 3D, the number
    /// of block rows P/c for 1.5D and P for 1D; or why the count does not suit the algorithm.
    pub fn grid_side(self, n_devices: u32) -> Result<u32, String> {
        match self {
            GraphAlgorithm::OneD => Ok(n_devices),
            GraphAlgorithm::OneHalfD { replication: 0 } => {
                Err("the replication must be at least 1".into())
            }
            GraphAlgorithm::OneHalfD { replication } if n_devices % replication == 0 => {
                Ok(n_devices / replication)
            }
            GraphAlgorithm::OneHalfD { replication } => Err(format!(
                "1.5d needs the replication to divide the device count: {replication} does not divide {n_devices}"
            )),
            GraphAlgorithm::TwoD => exact_root(n_devices, 2).ok_or_else(|| {
                format!("2d runs on a square grid: {n_devices} devices is not a perfect square")
            }),
            GraphAlgorithm::ThreeD => exact_root(n_devices, 3).ok_or_else(|| {
                format!("3d runs on a cube: {n_devices} devices is not a perfect cube")
            }),
        }
    }

    /// Every algorithm that runs on `n_devices` devices, in order: 1D, 1.5D for each
    /// replication c with 1 < c < P dividing P, 2D on a square, 3D on a cube (2D and 3D from 4
    /// and 8 devices, where the grid has a side above 1).
    pub fn applicable(n_devices: u32) -> Vec<GraphAlgorithm> {
        let mut out = vec![GraphAlgorithm::OneD];
        out.extend(
            (2..n_devices)
                .filter(|c| n_devices % c == 0)
                .map(|replication| GraphAlgorithm::OneHalfD { replication }),
        );
        for algorithm in [GraphAlgorithm::TwoD, GraphAlgorithm::ThreeD] {
            if algorithm.grid_side(n_devices).is_ok_and(|side| side > 1) {
                out.push(algorithm);
            }
        }
        out
    }
}

/// The integer `k`-th root of `n`, if `n` is a perfect `k`-th power.
fn exact_root(n: u32, k: u32) -> Option<u32> {
    (0..=n)
        .take_while(|r| r.pow(k) <= n)
        .find(|r| r.pow(k) == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_need_squares_cubes_and_dividing_replication() {
        assert_eq!(GraphAlgorithm::TwoD.grid_side(16), Ok(4));
        assert!(GraphAlgorithm::TwoD.grid_side(8).is_err());
        assert_eq!(GraphAlgorithm::ThreeD.grid_side(27), Ok(3));
        assert!(GraphAlgorithm::ThreeD.grid_side(16).is_err());
        let c3 = GraphAlgorithm::OneHalfD { replication: 3 };
        assert_eq!(c3.grid_side(12), Ok(4));
        assert!(c3.grid_side(8).is_err());
        assert_eq!(
            GraphAlgorithm::applicable(8),
            vec![
                GraphAlgorithm::OneD,
                GraphAlgorithm::OneHalfD { replication: 2 },
                GraphAlgorithm::OneHalfD { replication: 4 },
                GraphAlgorithm::ThreeD,
            ]
        );
        for algorithm in GraphAlgorithm::applicable(64) {
            let suffix = algorithm.label_suffix();
            let parsed = GraphAlgorithm::from_suffix(suffix.trim_start_matches('-'));
            if algorithm != GraphAlgorithm::OneD {
                assert_eq!(parsed, Some(algorithm), "{suffix}");
            }
        }
    }
}
