//! Graph parallelism's 1.5D, 2D and 3D algorithms (CAGNET) as bulk-synchronous programs: per
//! epoch, each layer's forward and backward product as phases of collectives on the scenario's
//! links, then the weight all-reduce and the optimizer step.
//!
//! The model, for n vertices, nnz adjacency non-zeros (directed edges), width f, P devices and
//! w-byte elements; a non-zero moves as its value and a 4-byte column index. Blocks split rows,
//! columns and non-zeros as evenly as the counts allow (`collective`'s byte chunking: block j of
//! x over k is `floor(x(j+1)/k) - floor(xj/k)`); non-zeros are spread evenly over blocks, as
//! CAGNET's analysis assumes. Layer 0 reads the input features each device holds, as 1D does;
//! every later layer runs two products, forward on the embeddings (width `d_in`) and backward on
//! their gradients (the same width).
//! - **1.5D**, c copies: devices `r*c + j` for block row r of P/c and replica j. Block row k's
//!   embeddings are broadcast inside replica group `k mod c` (the P/c devices with that j), one
//!   phase per round of c block rows, then the partial products of each block row are
//!   all-reduced (ring) across its c replicas.
//! - **2D**, q = sqrt(P): device `i*q + j`. SUMMA stage k broadcasts the sparse block (i, k)
//!   along row i and the dense block (k, j) (n/q rows by f/q columns) along column j.
//! - **3D**, q = P^(1/3): device `(i*q + j)*q + k`. The sparse block (i, k) is all-gathered
//!   along j and the dense block (k, j) along i (ring), the product is computed, and the partial
//!   products (n/q by f/q) are reduce-scattered along the fibre k.
//!
//! Compute is split evenly: a product's piece is its layer's mean 1D op time over the P
//! partitions divided by the product's phases with compute.

use super::{GnnLayout, PlanError, Prediction, Tier, MAX_EPOCH_NS};
use crate::cost::{AnalyticCost, CostModel};
use crate::diag::FieldPath;
use crate::gnn::GraphMetrics;
use crate::scenario::Scenario;
use crate::schedule::graph_parallel::GraphAlgorithm;
use crate::schedule::lower::Payload;
use crate::schedule::{self, Op, Schedule};
use crate::sim::bulk::{self, Phase, PhaseCollective, PhaseCompute, Program};
use crate::sim::collective::{Algorithm, CollectiveKind, Plan};
use crate::trace::MemoryCategory;

/// Bytes of one adjacency non-zero on the wire and in memory: a 4-byte column index and a
/// value of the model's element size.
pub fn nonzero_bytes(element_bytes: u64) -> u64 {
    4 + element_bytes
}

/// Block `j` of `total` split into `parts`, as the collectives split bytes.
fn block(total: u64, parts: u64, j: u64) -> u64 {
    let at = |i: u64| (u128::from(total) * u128::from(i) / u128::from(parts)) as u64;
    at(j + 1) - at(j)
}

/// The sizes one product works on.
struct Sizes {
    n: u64,
    nnz: u64,
    f: u64,
    w: u64,
}

/// Predicts `algorithm` (not 1D) on the prepared 1D broadcast schedule, cost and placement.
#[allow(clippy::too_many_arguments)]
pub(super) fn predict(
    scenario: &Scenario,
    schedule: Schedule,
    placement: Vec<usize>,
    cost: &AnalyticCost,
    algorithm: GraphAlgorithm,
    label: String,
    metrics: GraphMetrics,
    layout: GnnLayout,
) -> Result<Prediction, PlanError> {
    let p = placement.len() as u32;
    let side = algorithm.grid_side(p).map_err(|message| {
        PlanError::Invalid(
            scenario
                .source
                .diagnostic(FieldPath::root().key("schedule").key("algorithm"), message),
        )
    })?;
    let check = schedule::check(&schedule)?;
    let program = program(scenario, cost, &placement, algorithm, side)?;
    let trace = bulk::simulate(&program, super::trace_devices(scenario));
    let end_ns = trace.spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    if end_ns >= MAX_EPOCH_NS {
        return Err(PlanError::Invalid(scenario.source.diagnostic(
            FieldPath::root(),
            format!(
                "the predicted epoch is longer than {MAX_EPOCH_NS} ns (2^62, 146 years), more than the simulator counts in: check the devices' rates and the links against the work"
            ),
        )));
    }
    Ok(Prediction {
        label,
        schedule,
        check,
        trace,
        graph: Some(metrics),
        placement,
        layout: Some(layout),
        cost_tier: Tier::Analytic.describe(),
        extrapolated: Vec::new(),
    })
}

/// The epoch as phases.
fn program<'a>(
    scenario: &'a Scenario,
    cost: &AnalyticCost,
    placement: &'a [usize],
    algorithm: GraphAlgorithm,
    side: u32,
) -> Result<Program<'a>, PlanError> {
    let w = &cost.workload;
    let network = &scenario.network;
    let p = placement.len();
    let n_layers = w.model.layers.len();
    let element = w.model.element_bytes;
    let mean = |op: fn(u32, u32) -> Op, layer: usize| -> u64 {
        (0..p as u32)
            .map(|d| cost.op_ns(op(d, layer as u32)))
            .sum::<u64>()
            / p as u64
    };
    let mean_stash = |layer: usize| -> u64 {
        (0..p as u32)
            .map(|d| cost.stash(Op::forward(d, layer as u32)).0)
            .sum::<u64>()
            / p as u64
    };
    // 1.5D keeps c times a 1D partition's rows; 2D and 3D a P-th of every layer's output.
    let stash_factor = match algorithm {
        GraphAlgorithm::OneHalfD { replication } => u64::from(replication),
        _ => 1,
    };
    let mut phases = Vec::new();
    let plan = |kind: CollectiveKind, algo: Algorithm, members: Vec<usize>, bytes: u64| {
        Plan::new(&kind, algo, members, bytes, network).map_err(|e| {
            PlanError::Mismatch(format!("graph parallelism's {}: {e}", algorithm.name()))
        })
    };
    for backward in [false, true] {
        let layers: Vec<usize> = if backward {
            (0..n_layers).rev().collect()
        } else {
            (0..n_layers).collect()
        };
        for layer in layers {
            let op: fn(u32, u32) -> Op = if backward { Op::backward } else { Op::forward };
            let total_ns = mean(op, layer);
            let stash = (mean_stash(layer) * stash_factor) as i64;
            let stash = if backward { -stash } else { stash };
            let payload = if backward {
                Payload::Gradient
            } else {
                Payload::Activation
            };
            let sizes = Sizes {
                n: w.n_nodes,
                nnz: w.directed_edges,
                f: w.model.layers[layer].d_in,
                w: element,
            };
            let product = if layer == 0 {
                // The input features are held where they are read: nothing moves.
                vec![(Vec::new(), true)]
            } else {
                product_phases(algorithm, side, p as u32, &sizes)
            };
            let computing = product.iter().filter(|ph| ph.1).count().max(1) as u64;
            let n_phases = product.len();
            for (i, (collectives, computes)) in product.into_iter().enumerate() {
                let mut phase = Phase::default();
                for (kind, algo, members, bytes) in collectives {
                    let members: Vec<usize> =
                        members.iter().map(|&d| placement[d as usize]).collect();
                    phase.collectives.push(PhaseCollective {
                        plan: plan(kind, algo, members, bytes)?,
                        payload,
                        stage: layer as u32,
                    });
                }
                if computes {
                    // The stash is taken by the first piece of a forward and freed by the last
                    // piece of a backward.
                    let first = i == 0;
                    let last = i + 1 == n_phases;
                    phase.compute = (0..p)
                        .map(|d| PhaseCompute {
                            device: d,
                            op: op(d as u32, layer as u32),
                            ns: total_ns / computing,
                            stash_bytes: match (backward, first, last) {
                                (false, true, _) => stash,
                                (true, _, true) => stash,
                                _ => 0,
                            },
                        })
                        .collect();
                }
                phases.push(phase);
            }
            // A backward whose last phase moves data without computing still frees its stash.
            let bare = phases
                .last_mut()
                .filter(|last| backward && layer > 0 && last.compute.is_empty());
            if let Some(last) = bare {
                last.compute = (0..p)
                    .map(|d| PhaseCompute {
                        device: d,
                        op: op(d as u32, layer as u32),
                        ns: 0,
                        stash_bytes: stash,
                    })
                    .collect();
            }
        }
    }
    // Weights: every device holds the whole model; its gradients are all-reduced, then stepped.
    let weight_bytes = w.model.parameters(0..n_layers) * element;
    phases.push(Phase {
        collectives: vec![PhaseCollective {
            plan: plan(
                CollectiveKind::AllReduce,
                Algorithm::Auto,
                placement.to_vec(),
                weight_bytes,
            )?,
            payload: Payload::Weights,
            stage: 0,
        }],
        compute: (0..p)
            .map(|d| PhaseCompute {
                device: d,
                op: Op::optimizer(d as u32, 0),
                ns: cost.op_ns(Op::optimizer(d as u32, 0)),
                stash_bytes: 0,
            })
            .collect(),
    });
    let resident = (0..p)
        .map(|d| resident(cost, algorithm, side, p as u32, d as u32))
        .collect();
    Ok(Program {
        placement,
        network,
        resident,
        phases,
        shape: (n_layers as u32, p as u32),
    })
}

/// One collective: its kind, algorithm, members (program devices) and bytes.
type Group = (CollectiveKind, Algorithm, Vec<u32>, u64);

/// A product's phases: the collectives of each, and whether the devices compute after it.
fn product_phases(
    algorithm: GraphAlgorithm,
    side: u32,
    p: u32,
    s: &Sizes,
) -> Vec<(Vec<Group>, bool)> {
    let (q, pu) = (u64::from(side), u64::from(p));
    let dense = |rows: u64, cols: u64| rows * cols * s.w;
    let sparse = |nnz: u64| nnz * nonzero_bytes(s.w);
    match algorithm {
        GraphAlgorithm::OneD => Vec::new(),
        GraphAlgorithm::OneHalfD { replication } => {
            let (c, rows) = (replication, side);
            let mut phases = Vec::new();
            // Round t broadcasts block row t*c + j inside replica group j, for every j.
            for t in 0..rows.div_ceil(c) {
                let groups = (0..c)
                    .filter_map(|j| {
                        let k = t * c + j;
                        (k < rows).then(|| {
                            let members = (0..rows).map(|r| r * c + j).collect();
                            let bytes = dense(block(s.n, q, u64::from(k)), s.f);
                            (
                                CollectiveKind::Broadcast { root: k as usize },
                                Algorithm::Auto,
                                members,
                                bytes,
                            )
                        })
                    })
                    .collect();
                phases.push((groups, true));
            }
            if c > 1 {
                let reduce = (0..rows)
                    .map(|r| {
                        (
                            CollectiveKind::AllReduce,
                            Algorithm::Ring,
                            (0..c).map(|j| r * c + j).collect(),
                            dense(block(s.n, q, u64::from(r)), s.f),
                        )
                    })
                    .collect();
                phases.push((reduce, false));
            }
            phases
        }
        GraphAlgorithm::TwoD => (0..side)
            .map(|k| {
                let mut groups: Vec<Group> = Vec::new();
                for i in 0..side {
                    groups.push((
                        CollectiveKind::Broadcast { root: k as usize },
                        Algorithm::Auto,
                        (0..side).map(|j| i * side + j).collect(),
                        sparse(block(s.nnz, pu, u64::from(i * side + k))),
                    ));
                }
                for j in 0..side {
                    groups.push((
                        CollectiveKind::Broadcast { root: k as usize },
                        Algorithm::Auto,
                        (0..side).map(|i| i * side + j).collect(),
                        dense(block(s.n, q, u64::from(k)), block(s.f, q, u64::from(j))),
                    ));
                }
                (groups, true)
            })
            .collect(),
        GraphAlgorithm::ThreeD => {
            let at = |i: u32, j: u32, k: u32| (i * side + j) * side + k;
            let mut gather: Vec<Group> = Vec::new();
            let mut reduce: Vec<Group> = Vec::new();
            for a in 0..side {
                for b in 0..side {
                    // The sparse block (i, k) = (a, b) along j.
                    gather.push((
                        CollectiveKind::AllGather,
                        Algorithm::Ring,
                        (0..side).map(|j| at(a, j, b)).collect(),
                        sparse(block(s.nnz, q * q, u64::from(a * side + b))),
                    ));
                    // The dense block (k, j) = (a, b) along i.
                    gather.push((
                        CollectiveKind::AllGather,
                        Algorithm::Ring,
                        (0..side).map(|i| at(i, b, a)).collect(),
                        dense(block(s.n, q, u64::from(a)), block(s.f, q, u64::from(b))),
                    ));
                    // The partial output block (i, j) = (a, b) along the fibre k.
                    reduce.push((
                        CollectiveKind::ReduceScatter,
                        Algorithm::Ring,
                        (0..side).map(|k| at(a, b, k)).collect(),
                        dense(block(s.n, q, u64::from(a)), block(s.f, q, u64::from(b))),
                    ));
                }
            }
            vec![(gather, true), (reduce, false)]
        }
    }
}

/// What a device holds for the whole epoch: the model with its gradients and optimizer state,
/// its sparse blocks and the input features its layer-0 product reads.
fn resident(
    cost: &AnalyticCost,
    algorithm: GraphAlgorithm,
    side: u32,
    p: u32,
    d: u32,
) -> Vec<(MemoryCategory, u64)> {
    let w = &cost.workload;
    let mut held: Vec<(MemoryCategory, u64)> = cost
        .resident_bytes(&[Op::forward(d, 0)])
        .into_iter()
        .filter(|(category, _)| {
            matches!(
                category,
                MemoryCategory::Parameters
                    | MemoryCategory::Gradients
                    | MemoryCategory::OptimizerState
            )
        })
        .collect();
    let (n, nnz, q) = (w.n_nodes, w.directed_edges, u64::from(side));
    let nonzero = nonzero_bytes(w.model.element_bytes);
    let features = |rows: u64, share: u64| w.feature_bytes(rows as f64).div_ceil(share);
    let (graph, feature) = match algorithm {
        GraphAlgorithm::OneD => (0, 0),
        GraphAlgorithm::OneHalfD { replication } => {
            let (c, rows) = (replication, side);
            let (r, j) = (d / c, d % c);
            // The whole block row r, and the embeddings of replica group j's block rows.
            let read: u64 = (0..rows)
                .filter(|k| k % c == j)
                .map(|k| block(n, q, u64::from(k)))
                .sum();
            (block(nnz, q, u64::from(r)) * nonzero, features(read, 1))
        }
        // Its sparse block, and every row of its column of the features.
        GraphAlgorithm::TwoD => (
            block(nnz, u64::from(p), u64::from(d)) * nonzero,
            features(n, q),
        ),
        GraphAlgorithm::ThreeD => {
            let k = d % side;
            (
                block(nnz, u64::from(p), u64::from(d)) * nonzero,
                features(block(n, q, u64::from(k)), q),
            )
        }
    };
    held.push((MemoryCategory::Features, feature));
    held.push((MemoryCategory::Graph, graph));
    held
}
